"""The robot path for tests: a colcon workspace holding this package, its sourced environment,
``ros2 launch`` as a process group, and the ``ros2`` CLI.

The ROS 2 tools (ros2 CLI, launch_ros, colcon, rosdep) are not on PyPI; ``python3 dev.py setup``
installs them from ``../shared/ros2_src`` where that folder exists (CI). Without them the tests
that need them skip, naming what is missing. ``$MIDAS_ROS2_SRC`` points at another copy of
``ros2_src`` (default: ``../shared/ros2_src`` beside the repository).
"""
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
ROS2_SRC = Path(os.environ.get('MIDAS_ROS2_SRC', REPO.parent / 'shared' / 'ros2_src'))
INSTALLER = '../shared/ros2_src/install.sh .venv (python3 dev.py setup runs it when ../shared ' \
    'exists)'
# What a colcon build must not copy: environments, build outputs, caches.
_NOT_SOURCES = shutil.ignore_patterns('.venv*', '.git', 'build', 'install', 'log', 'out',
                                      '__pycache__', '.pytest_cache', '*.egg-info', '.cache')


def missing_ros2_tools():
    """Why the robot-path tests cannot run here, or None when the tools are installed."""
    absent = [tool for tool in ('ros2', 'colcon', 'rosdep')
              if shutil.which(tool, path=str(VENV_BIN)) is None]
    absent += [module for module in ('launch', 'launch_ros', 'ros2lifecycle', 'ros2param')
               if importlib.util.find_spec(module) is None]
    if absent:
        return f"ROS 2 tools not installed ({', '.join(absent)}): {INSTALLER}"
    return None


def tool(name):
    return str(VENV_BIN / name)


_build_lock = threading.Lock()
_built = {}


def colcon_workspace(root):
    """``root/ws`` with this package in ``src/midas_ros``, built by ``colcon build`` once per
    test session (the robot's second step); returns the workspace path."""
    with _build_lock:
        if 'ws' not in _built:
            ws = Path(root) / 'ws'
            shutil.copytree(REPO, ws / 'src' / 'midas_ros', ignore=_NOT_SOURCES)
            env = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
            env.pop('PYTHONPATH', None)
            result = subprocess.run([tool('colcon'), 'build'], cwd=ws, env=env,
                                    capture_output=True, text=True, timeout=600)
            assert result.returncode == 0, f'colcon build failed:\n{result.stdout}\n' \
                f'{result.stderr}'
            _built['ws'] = ws
            _built['build_output'] = result.stdout + result.stderr
        return _built['ws']


def sourced_environment(ws):
    """os.environ after ``source install/setup.bash``, as a robot's shell has it; the test
    run's source tree is taken off PYTHONPATH so that the installed package is what runs."""
    base = dict(os.environ, PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    base.pop('PYTHONPATH', None)
    output = subprocess.run(['bash', '-c', 'source install/setup.bash && env -0'], cwd=ws,
                            env=base, capture_output=True, check=True, timeout=60).stdout
    env = dict(item.split('=', 1) for item in output.decode().split('\0') if '=' in item)
    env['PYTHONUNBUFFERED'] = '1'
    return env


def ros2(env, *args, timeout=60):
    """``ros2 <args>``: (exit status, stdout + stderr)."""
    result = subprocess.run([tool('ros2'), *args], env=env, capture_output=True, text=True,
                            timeout=timeout)
    return result.returncode, result.stdout + result.stderr


class Launch:
    """``ros2 launch midas_ros <file> <arguments>``, leader of its own process group (as in a
    terminal), output in a file."""

    def __init__(self, env, launch_file, arguments, log_path):
        self.log_path = Path(log_path)
        self._log = open(self.log_path, 'wb')
        self.process = subprocess.Popen(
            [tool('ros2'), 'launch', 'midas_ros', launch_file, *arguments], env=env,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        self.returncode = None

    def output(self):
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors='replace')

    def wait_for_output(self, text, timeout):
        """True once ``text`` is in the output (False after ``timeout`` s or if it ended)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.process.poll() is not None:
                return text in self.output()
            time.sleep(0.2)
        return False

    def ctrl_c(self, timeout=40.0):
        """Ctrl-C as a terminal sends it (SIGINT to the whole group; launch forwards another
        to each node within milliseconds), then wait; the exit status of launch."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)
            time.sleep(0.03)
            try:
                os.killpg(self.process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        return self.wait(timeout)

    def wait(self, timeout):
        try:
            self.returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.returncode = self.process.wait()
            raise AssertionError(f'launch did not end within {timeout} s:\n{self.output()}')
        finally:
            self._log.close()
        return self.returncode

    def kill(self):
        """Last resort at teardown (a test failed before stopping it)."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait()
        if not self._log.closed:
            self._log.close()
