"""``ros2 launch`` from the venv, as a new user runs it after ``dev.py setup`` and ``source
.venv/bin/activate`` (no colcon build): the launch files' network arguments, a node that cannot
start ending the launch with one line, and Ctrl-C (once, twice) and SIGTERM ending every process
within 10 s while a CPU core is busy, with no traceback.

The package is registered by dev.py's own function into a scratch prefix pointing at this
checkout, ahead of the venv on ``AMENT_PREFIX_PATH`` (the shared venv may point at another
checkout).
"""
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import dev
from robot_workspace import REPO, VENV_BIN, Launch, missing_ros2_tools
from test_robot_path import STARTUP_S, start_launch

STOP_S = 10.0
needs_ros2 = pytest.mark.skipif(missing_ros2_tools() is not None,
                                reason=str(missing_ros2_tools()))


def test_activate_puts_the_venv_on_the_ament_prefix_path_once(tmp_path):
    venv = tmp_path / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', '--without-pip', str(venv)], check=True)
    dev._activate_sets_ament_prefix_path(venv)
    dev._activate_sets_ament_prefix_path(venv)          # a second setup adds nothing
    activate = venv / 'bin' / 'activate'
    assert activate.read_text().count(dev._ACTIVATE_BEGIN) == 1
    for before, after in (('', f'{venv}'), ('/opt/ros/kilted', f'{venv}:/opt/ros/kilted')):
        env = dict(os.environ, AMENT_PREFIX_PATH=before)
        out = subprocess.run(['bash', '-c', f'source {activate}; source {activate}; '
                              'echo "$AMENT_PREFIX_PATH"'], env=env, capture_output=True,
                             text=True, check=True).stdout.strip()
        assert out == after


@pytest.fixture(scope='module')
def venv_env(tmp_path_factory):
    """The environment of a shell that sourced the venv's activate, with this checkout
    registered as midas_ros (dev.register_ament_package) first on AMENT_PREFIX_PATH."""
    prefix = tmp_path_factory.mktemp('prefix')
    dev.register_ament_package(prefix, sys.executable)
    venv = Path(sys.executable).parent.parent
    env = dict(os.environ, AMENT_PREFIX_PATH=f'{prefix}:{venv}', VIRTUAL_ENV=str(venv),
               PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
               PYTHONPATH=str(REPO), PYTHONUNBUFFERED='1',
               ROS_LOG_DIR=str(tmp_path_factory.mktemp('ros_log')))
    return env


@pytest.fixture
def busy_core():
    """One CPU core kept busy (what a robot's other work does) while the test runs."""
    spinner = subprocess.Popen([sys.executable, '-c', 'while True: pass'])
    yield
    spinner.kill()
    spinner.wait()


def group_gone_within(launch, seconds):
    """True once no process of ``launch``'s group is left (launch and every node). Launch
    itself is reaped first (an exited child stays a zombie, still signalable, until then)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        launch.process.poll()
        try:
            os.killpg(launch.process.pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def params_file(tmp_path, node, values):
    import yaml
    path = tmp_path / f'{node}.yaml'
    path.write_text(yaml.safe_dump({f'/**/{node}': {'ros__parameters': values}}))
    return path


@needs_ros2
@pytest.mark.parametrize('ready, signals', [
    ('depth_node active', (signal.SIGINT,)),
    ('depth_node active', (signal.SIGINT, signal.SIGINT)),
    ('RANDOM network weights', (signal.SIGINT,))],      # while the network is being built
    ids=['ctrl-c', 'ctrl-c-twice', 'ctrl-c-while-starting'])
def test_depth_launch_from_the_venv_stops_on_ctrl_c_with_a_busy_core(
        venv_env, tmp_path, tmp_path_factory, busy_core, ready, signals):
    fast = params_file(tmp_path, 'depth_node', {'inference.warmup_size': [0, 0]})
    launch = start_launch(venv_env, tmp_path_factory, 'depth.launch.py',
                          ['namespace:=/venvdepth', 'pretrained:=false', 'device:=cpu',
                           f'params_file:={fast}'], ready=ready)
    output = launch.output()
    assert 'RANDOM network weights' in output, output[-3000:]
    if ready == 'depth_node active':
        assert 'model midas_v21_small_256 on cpu' in output, output[-3000:]
    started = time.monotonic()
    for number, signum in enumerate(signals):      # as a terminal sends Ctrl-C: to the group
        if number:
            time.sleep(0.03)
        os.killpg(launch.process.pid, signum)
    assert group_gone_within(launch, STOP_S), launch.output()[-5000:]
    assert launch.wait(1.0) == 0 and time.monotonic() - started < STOP_S
    output = launch.output()
    assert re.search(r'\[depth_node-\d+\]: process has finished cleanly', output), output
    for bad in ('Traceback', 'KeyboardInterrupt', 'Task exception', 'escalating'):
        assert bad not in output, output[-5000:]


@needs_ros2
def test_a_node_that_cannot_start_ends_the_whole_launch_with_one_line(venv_env, tmp_path):
    """No weights anywhere (pretrained by default): depth_node cannot start; camera_source,
    synthetic_detector and obstacle_node stop too, and one line says which node and why."""
    env = dict(venv_env, MIDAS_WEIGHTS_DIR=str(tmp_path / 'no_weights'),
               TORCH_HOME=str(tmp_path / 'empty_torch_home'))
    launch = Launch(env, 'pipeline.launch.py', ['namespace:=/venvfail', 'camera_source:=true',
                                                'device:=cpu'], tmp_path / 'fail.log')
    try:
        launch.wait(STARTUP_S)
    finally:
        launch.kill()
    assert group_gone_within(launch, STOP_S)
    output = launch.output()
    lines = [line for line in output.splitlines() if 'stopping the launch' in line]
    assert len(lines) == 1, output[-5000:]
    assert re.search(r'\[ERROR\] \[midas_ros\]: /venvfail/depth_node exited with status 1: '
                     r'cannot start: no weights found .*\. \(details above\); stopping the '
                     r'launch$', lines[0]), lines[0]
    for name in ('camera_source', 'synthetic_detector', 'obstacle_node'):
        assert re.search(rf'\[{name}-\d+\]: process has finished cleanly', output), \
            f'{name}:\n{output[-5000:]}'
    assert 'Traceback' not in output, output[-5000:]


@needs_ros2
@pytest.mark.parametrize('content, named', [
    ({'sync_tolerance': 'soon'}, 'sync_tolerance'),
    ('/**:\n  ros__parameters:\n    sync_tolerance: [1,\n', "Couldn't parse params file")],
    ids=['bad-value', 'yaml-syntax'])
def test_a_bad_parameter_file_ends_the_launch_naming_the_parameter(
        venv_env, tmp_path, content, named):
    if isinstance(content, dict):
        bad = params_file(tmp_path, 'obstacle_node', content)
    else:
        bad = tmp_path / 'broken.yaml'
        bad.write_text(content)
    launch = Launch(venv_env, 'pipeline.launch.py', ['namespace:=/venvbad', 'pretrained:=false',
                                                     'device:=cpu', f'obstacle_params:={bad}'],
                    tmp_path / 'bad.log')
    try:
        launch.wait(STARTUP_S)
    finally:
        launch.kill()
    assert group_gone_within(launch, STOP_S)
    lines = [line for line in launch.output().splitlines() if 'stopping the launch' in line]
    assert len(lines) == 1 and '/venvbad/obstacle_node exited with status 1' in lines[0] \
        and named in lines[0], launch.output()[-5000:]
    assert 'Traceback' not in launch.output(), launch.output()[-5000:]


@needs_ros2
def test_sigterm_to_launch_alone_ends_every_node(venv_env, tmp_path, tmp_path_factory,
                                                 busy_core):
    """SIGTERM to the ros2 launch process only (``kill PID``, a service manager): launch
    cancels its run without stopping its processes (launch's own behaviour); the nodes end
    with it (midas_ros.ros.node_main.end_with_the_parent), cleanly, within 10 s."""
    fast = params_file(tmp_path, 'depth_node', {'inference.warmup_size': [0, 0]})
    launch = start_launch(venv_env, tmp_path_factory, 'pipeline.launch.py',
                          ['namespace:=/venvterm', 'camera_source:=true', 'pretrained:=false',
                           'device:=cpu', f'depth_params:={fast}'], ready='depth_node active')
    os.kill(launch.process.pid, signal.SIGTERM)
    assert group_gone_within(launch, STOP_S), launch.output()[-5000:]
    launch.wait(1.0)
    assert 'Traceback' not in launch.output(), launch.output()[-5000:]


@pytest.mark.parametrize('argument, parameters', [
    ('front,rear', {'cameras': ['front', 'rear']}),
    ('[front, rear]', {'cameras': ['front', 'rear']}), ('', {})])
def test_the_cameras_argument_is_passed_only_when_set(argument, parameters):
    """Both launch files hand depth_node and obstacle_node ``cameras`` only when the argument
    names some: an empty list cannot be a launch parameter, and the file's own must stand."""
    launch = pytest.importorskip('launch')
    from midas_ros.ros.launch_support import camera_overrides
    context = launch.LaunchContext()
    context.launch_configurations['cameras'] = argument
    assert camera_overrides(context) == parameters


@pytest.mark.parametrize('given, parameters', [
    ({}, {}),
    ({'weights': '/data/ft.pt', 'pretrained': 'false'},
     {'model.weights': '/data/ft.pt', 'model.pretrained': False}),
    ({'model': 'dpt_levit_224', 'device': 'cpu'}, {'model.name': 'dpt_levit_224',
                                                   'device': 'cpu'})])
def test_network_arguments_override_the_file_only_when_given(given, parameters):
    """model, device, pretrained and weights (a fine-tuned checkpoint) reach depth_node's
    parameters typed as its file would give them, and only when given."""
    launch = pytest.importorskip('launch')
    from midas_ros.ros.launch_support import NETWORK_ARGUMENTS, network_overrides
    context = launch.LaunchContext()
    for argument, _, _ in NETWORK_ARGUMENTS:
        context.launch_configurations[argument] = given.get(argument, '')
    assert network_overrides(context) == parameters
