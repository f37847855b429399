"""The robot path, run for real: rosdep, colcon build, ros2 launch, the ros2 CLI, lifecycle.

What a robot team does, step by step, with the real tools (see test/robot_workspace.py):
rosdep resolves every key of package.xml offline for jazzy and kilted on ubuntu:noble;
``colcon build`` installs the package into a scratch workspace; the installed executables run
under ``ros2 launch`` with the workspace's ``install/setup.bash`` sourced; ``ros2 param``,
``ros2 node info`` and ``ros2 lifecycle`` drive the running nodes; Ctrl-C (SIGINT to the process
group, twice) ends everything with status 0 and no traceback. Weights are an official-layout
checkpoint (random values) found through ``$MIDAS_WEIGHTS_DIR``, as on a robot.

One colcon build serves the session; each launch is shared by the tests of its fixture.
"""
import math
import os
import re
import subprocess
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import yaml
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from vision_msgs.msg import Detection2DArray, Detection3DArray
from visualization_msgs.msg import MarkerArray

from midas_ros.geometry import Intrinsics
from midas_ros.ros.conversions import array_to_image, intrinsics_to_camera_info
from midas_ros.ros.qos import qos_profile
from robot_workspace import (REPO, ROS2_SRC, Launch, colcon_workspace, missing_ros2_tools,
                             ros2, sourced_environment, tool)
from ros_process import RosTestNode

_MISSING = missing_ros2_tools()
pytestmark = pytest.mark.skipif(_MISSING is not None, reason=str(_MISSING))

SMALL = 'midas_v21_small_256'
OTHER_MODEL = 'dpt_levit_224'
WIDTH, HEIGHT = 320, 240
INTRINSICS = Intrinsics(WIDTH, HEIGHT, 260.0, 250.0, 158.0, 121.0)
DEPTH_TOPICS = ('depth/image', 'depth/relative', 'depth/colormap', 'depth/camera_info',
                'depth/points')
RVIZ_TYPES = {'rviz_default_plugins/Image': Image, 'rviz_default_plugins/PointCloud2':
              PointCloud2, 'rviz_default_plugins/MarkerArray': MarkerArray}
STARTUP_S = 240     # a model build on a busy 2-core machine


# -- fixtures --------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def workspace(tmp_path_factory):
    return colcon_workspace(tmp_path_factory.mktemp('robot'))


@pytest.fixture(scope='module')
def weights_dir(tmp_path_factory):
    """An official-layout midas_v21_small_256 checkpoint (random values), as a robot has it."""
    import torch

    from midas_ros.models import create_model
    folder = tmp_path_factory.mktemp('weights')
    torch.manual_seed(0)
    torch.save(create_model(SMALL, pretrained=False).state_dict(), folder / f'{SMALL}.pt')
    return folder


@pytest.fixture(scope='module')
def robot_env(workspace, weights_dir, tmp_path_factory):
    """The sourced workspace; weights only through $MIDAS_WEIGHTS_DIR (an empty torch hub)."""
    env = sourced_environment(workspace)
    env['MIDAS_WEIGHTS_DIR'] = str(weights_dir)
    env['TORCH_HOME'] = str(tmp_path_factory.mktemp('empty_torch_home'))
    env['ROS_LOG_DIR'] = str(tmp_path_factory.mktemp('ros_log'))
    return env


@pytest.fixture(scope='module', autouse=True)
def ros2_daemon(robot_env):
    """The ros2 CLI's graph daemon for this run's domain, stopped when the module ends."""
    status, output = ros2(robot_env, 'daemon', 'start')
    assert status == 0, output
    yield
    ros2(robot_env, 'daemon', 'stop')


@pytest.fixture(scope='module')
def probe():
    node = RosTestNode('robot_probe')
    yield node
    node.close()


def cli(env, *args, timeout=60):
    """``ros2 <group> <verb> ...`` through the module's ``ros2`` daemon (each call then costs
    about a second, not a discovery), with time for a node to appear on a busy machine."""
    options = ['--timeout', '10'] if args[0] == 'param' else []
    deadline = time.monotonic() + 20
    while True:
        status, output = ros2(env, args[0], args[1], *options, *args[2:], timeout=timeout)
        # The daemon may not have seen a node that has just started yet.
        if 'Node not found' not in output or time.monotonic() > deadline:
            return status, output
        time.sleep(0.5)


def start_launch(env, tmp_path_factory, launch_file, arguments, ready, count=1):
    log = tmp_path_factory.mktemp('launch') / f'{launch_file}.log'
    launch = Launch(env, launch_file, arguments, log)
    deadline = time.monotonic() + STARTUP_S
    while launch.output().count(ready) < count and time.monotonic() < deadline:
        if launch.process.poll() is not None:
            break
        time.sleep(0.3)
    if launch.output().count(ready) < count:
        launch.kill()
        pytest.fail(f"'{ready}' not logged {count}x:\n{launch.output()[-5000:]}")
    return launch


def assert_clean_stop(launch, processes):
    """Every process of the launch finished with status 0 and no output has a traceback."""
    output = launch.output()
    assert launch.returncode == 0, output[-5000:]
    for name in processes:
        assert re.search(rf'\[INFO\] \[{name}-\d+\]: process has finished cleanly', output), \
            f'{name} did not end with status 0:\n{output[-5000:]}'
    assert 'Traceback' not in output and 'KeyboardInterrupt' not in output, output[-5000:]


def camera_frame(stamp_s):
    rng = np.random.default_rng(int(stamp_s))
    pixels = rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    image = array_to_image(pixels, 'rgb8')
    image.header.stamp.sec = int(stamp_s)
    image.header.frame_id = 'rig_camera_optical_frame'
    info = intrinsics_to_camera_info(INTRINSICS)
    info.header = image.header
    return image, info


class CameraFeed:
    """The probe as a camera on ``image_topic``/``info_topic``, collecting the depth outputs."""

    def __init__(self, probe, image_topic, info_topic, output_namespace):
        self.probe = probe
        self.image_pub = probe.node.create_publisher(Image, image_topic,
                                                     qos_profile('sensor_data'))
        self.info_pub = probe.node.create_publisher(CameraInfo, info_topic,
                                                    qos_profile('sensor_data'))
        self.outputs = {}
        types = {'depth/camera_info': CameraInfo, 'depth/points': PointCloud2}
        for topic in DEPTH_TOPICS:
            name = f'{output_namespace}/{topic}'
            self.outputs[topic] = probe.collect(types.get(topic, Image), name,
                                                qos_profile('sensor_data', depth=5))
        self.sent = 0

    def send(self):
        self.sent += 1
        image, info = camera_frame(1000 + self.sent)
        self.info_pub.publish(info)
        self.image_pub.publish(image)
        return image.header.stamp

    def run(self, condition, timeout, period=0.25):
        """Send a frame every ``period`` s while spinning until ``condition()``."""
        state = {'next': 0.0}

        def step():
            if time.monotonic() >= state['next']:
                self.send()
                state['next'] = time.monotonic() + period
        return self.probe.spin_until(condition, timeout, step)

    def count(self):
        return sum(len(messages) for messages in self.outputs.values())

    def silent_for(self, seconds):
        """Frames sent for ``seconds``: True if no output arrived meanwhile."""
        before = self.count()
        self.run(lambda: False, seconds)
        return self.count() == before


# -- rosdep and colcon -----------------------------------------------------------------------

def test_rosdep_resolves_every_key_for_jazzy_and_kilted_on_noble(tmp_path):
    """rosdep offline against the snapshot, as ../shared/ros2_src/README.md shows."""
    snapshot = ROS2_SRC / 'rosdep'
    if not (snapshot / 'index-v4.yaml').is_file():
        pytest.skip(f'no rosdep snapshot at {snapshot} (../shared/ros2_src)')
    sources = tmp_path / 'sources.list.d'
    sources.mkdir()
    (sources / '20-default.list').write_text(
        f'yaml file://{snapshot}/base.yaml\nyaml file://{snapshot}/python.yaml\n')
    env = dict(os.environ, ROSDEP_SOURCE_PATH=str(sources), ROS_HOME=str(tmp_path),
               ROSDISTRO_INDEX_URL=f'file://{snapshot}/index-v4.yaml', ROS_PYTHON_VERSION='3')
    src = tmp_path / 'src'
    src.mkdir()
    (src / 'midas_ros').symlink_to(REPO)

    def rosdep(*args):
        result = subprocess.run([tool('rosdep'), *args], env=env, capture_output=True,
                                text=True, timeout=300)
        return result.returncode, result.stdout + result.stderr

    status, output = rosdep('update')
    assert status == 0, output
    status, output = rosdep('keys', '--from-paths', str(src), '--ignore-src')
    assert status == 0, output
    keys = sorted(output.split())
    manifest = ElementTree.parse(REPO / 'package.xml').getroot()
    declared = {e.text for e in manifest if e.tag.endswith('depend')}
    assert set(keys) == declared
    for distro in ('jazzy', 'kilted'):
        status, output = rosdep('resolve', *keys, '--rosdistro', distro, '--os', 'ubuntu:noble')
        assert status == 0 and 'ERROR' not in output, output
        # '#ROSDEP[key]', '#installer', 'package' per key.
        resolved = {key: (installer, package) for key, installer, package in
                    re.findall(r'#ROSDEP\[(\S+)\]\s*\n#(\w+)\s*\n(\S+)', output)}
        assert set(resolved) == set(keys), output
        assert resolved['python3-timm-pip'] == ('pip', 'timm')
        assert resolved['rclpy'] == ('apt', f'ros-{distro}-rclpy')


def test_colcon_build_installs_what_ros2_run_and_launch_need(workspace, robot_env):
    install = workspace / 'install' / 'midas_ros'
    from midas_ros.executables import EXECUTABLES
    for name, _ in EXECUTABLES:
        assert os.access(install / 'lib' / 'midas_ros' / name, os.X_OK), name
    share = install / 'share' / 'midas_ros'
    assert (share / 'package.xml').read_text() == (REPO / 'package.xml').read_text()
    for folder in ('launch', 'config'):
        for source in (REPO / folder).iterdir():
            assert (share / folder / source.name).read_bytes() == source.read_bytes()
    assert (install / 'share' / 'ament_index' / 'resource_index' / 'packages' /
            'midas_ros').is_file()
    # In the sourced environment the installed package, not this source tree, is imported.
    result = subprocess.run([tool('python'), '-c', 'import midas_ros; print(midas_ros.__file__)'],
                            env=robot_env, capture_output=True, text=True, cwd='/')
    assert Path(result.stdout.strip()).is_relative_to(install), result.stdout + result.stderr
    status, output = ros2(robot_env, 'pkg', 'prefix', 'midas_ros')
    assert status == 0 and Path(output.strip()) == install, output


# -- depth.launch.py on a robot's camera topics ----------------------------------------------

@pytest.fixture(scope='module')
def rig_launch(robot_env, tmp_path_factory):
    """The launch external checks run: namespace /rig, camera remapped, CPU, official weights
    from $MIDAS_WEIGHTS_DIR."""
    launch = start_launch(robot_env, tmp_path_factory, 'depth.launch.py', [
        'namespace:=/rig', 'image:=/rig/cam/image_raw', 'camera_info:=/rig/cam/camera_info',
        'device:=cpu'], ready='depth_node active')
    yield launch
    launch.kill()


def test_depth_launch_turns_the_remapped_camera_into_rig_depth(rig_launch, probe):
    feed = CameraFeed(probe, '/rig/cam/image_raw', '/rig/cam/camera_info', '/rig')
    assert feed.run(lambda: all(feed.outputs.values()), 120), rig_launch.output()[-3000:]
    output = rig_launch.output()
    # Official-layout weights from $MIDAS_WEIGHTS_DIR (no random-weights warning), on the CPU.
    assert f'model {SMALL} on cpu' in output and 'RANDOM' not in output
    info = feed.outputs['depth/camera_info'][-1]
    assert np.allclose(info.k, INTRINSICS.k()), 'camera_info remap: K of the sent CameraInfo'
    depth = feed.outputs['depth/image'][-1]
    assert (depth.width, depth.height, depth.encoding) == (WIDTH, HEIGHT, '32FC1')
    assert depth.header.frame_id == 'rig_camera_optical_frame'


def test_ros2_param_get_and_set_against_the_running_node(rig_launch, robot_env):
    node = '/rig/depth_node'
    status, output = cli(robot_env, 'param', 'get', node, 'device')
    assert status == 0 and 'cpu' in output, output
    status, output = cli(robot_env, 'param', 'set', node, 'depth.max', '15.0')
    assert status == 0 and 'Set parameter successful' in output, output
    status, output = cli(robot_env, 'param', 'get', node, 'depth.max')
    assert '15.0' in output, output
    # Refused with the reason, nothing applied.
    for name, value, reason in (('scale.mode', 'bogus', "'bogus' is not one of"),
                                ('depth.max', '-1.0', 'depth.max'),
                                ('model.name', 'dpt_large_384', 'read-only')):
        status, output = cli(robot_env, 'param', 'set', node, name, value)
        assert 'Setting parameter failed' in output and reason in output, output
    status, output = cli(robot_env, 'param', 'get', node, 'scale.mode')
    assert 'auto' in output, output     # the default, unchanged by the refused set
    status, output = cli(robot_env, 'param', 'get', node, 'depth.max')
    assert '15.0' in output, output


def _node_info(env, node):
    """{section: set of names} of ``ros2 node info``."""
    status, output = cli(env, 'node', 'info', node)
    assert status == 0, output
    sections, current = {}, None
    for line in output.splitlines():
        if line.strip().endswith(':') and not line.startswith('    '):
            current = line.strip()[:-1]
            sections[current] = set()
        elif current and ':' in line:
            sections[current].add(line.strip().split(':')[0])
    return sections


LIFECYCLE_SERVICES = ('change_state', 'get_state', 'get_available_states',
                      'get_available_transitions', 'get_transition_graph')
PARAMETER_SERVICES = ('describe_parameters', 'get_parameter_types', 'get_parameters',
                      'list_parameters', 'set_parameters', 'set_parameters_atomically')


def test_ros2_node_info_lists_the_documented_topics_and_services(rig_launch, robot_env):
    info = _node_info(robot_env, '/rig/depth_node')
    assert {'/rig/cam/image_raw', '/rig/cam/camera_info', '/rig/anchors'} <= info['Subscribers']
    assert {f'/rig/{topic}' for topic in DEPTH_TOPICS + ('depth/scan',)} | {'/diagnostics'} \
        <= info['Publishers']
    services = {f'/rig/depth_node/{name}' for name in LIFECYCLE_SERVICES + PARAMETER_SERVICES}
    assert services <= info['Service Servers'], info['Service Servers']


def test_param_dump_restarts_the_node_which_a_lifecycle_manager_then_drives(
        rig_launch, robot_env, probe, tmp_path, tmp_path_factory):
    """ros2 param dump -> Ctrl-C -> the dump as params_file with autostart:=false, another
    model and random weights -> ros2 lifecycle walks it through every transition."""
    node = '/rig/depth_node'
    status, output = cli(robot_env, 'param', 'set', node, 'depth.max', '15.0')
    assert status == 0 and 'Set parameter successful' in output, output
    status, dump = cli(robot_env, 'param', 'dump', node)
    assert status == 0, dump
    params_file = tmp_path / 'depth_node_dump.yaml'
    params_file.write_text(dump)
    assert yaml.safe_load(dump)[node]['ros__parameters']['depth']['max'] == 15.0
    rig_launch.ctrl_c()
    assert_clean_stop(rig_launch, ['depth_node'])

    launch = start_launch(robot_env, tmp_path_factory, 'depth.launch.py', [
        'namespace:=/rig', 'image:=/rig/cam/image_raw', 'camera_info:=/rig/cam/camera_info',
        'device:=cpu', f'params_file:={params_file}', f'model:={OTHER_MODEL}',
        'pretrained:=false', 'autostart:=false'], ready='waiting for a lifecycle manager')
    try:
        _lifecycle_walk(launch, robot_env, probe, node)
    finally:
        launch.kill()


def _lifecycle_state(env, node):
    status, output = cli(env, 'lifecycle', 'get', node)
    assert status == 0, output
    return output.split()[0]


def _transition(env, node, transition):
    status, output = cli(env, 'lifecycle', 'set', node, transition, timeout=240)
    assert status == 0 and 'Transitioning successful' in output, output


def _resident_mib(launch, process_name):
    """Resident memory (MiB) of a process the launch started."""
    pid = re.search(rf'\[{process_name}-\d+\]: process started with pid \[(\d+)\]',
                    launch.output()).group(1)
    status = Path(f'/proc/{pid}/status').read_text()
    return int(re.search(r'VmRSS:\s+(\d+) kB', status).group(1)) / 1024


def _lifecycle_walk(launch, env, probe, node):
    feed = CameraFeed(probe, '/rig/cam/image_raw', '/rig/cam/camera_info', '/rig')
    assert _lifecycle_state(env, node) == 'unconfigured'
    # The dump is the node's start-up configuration; the launch arguments override it.
    for name, expected in (('depth.max', '15.0'), ('model.name', OTHER_MODEL),
                           ('model.pretrained', 'False'), ('autostart', 'False')):
        status, output = cli(env, 'param', 'get', node, name)
        assert expected in output, (name, output)
    assert 'depth_node ready' not in launch.output()     # no model before configure
    assert feed.silent_for(1.0) and feed.image_pub.get_subscription_count() == 0

    _transition(env, node, 'configure')
    assert _lifecycle_state(env, node) == 'inactive'
    assert f'depth_node ready: model {OTHER_MODEL} on cpu' in launch.output()
    assert 'RANDOM network weights' in launch.output()
    # Inactive: not subscribed, so no frame is decoded or inferred; outputs silent.
    assert feed.silent_for(1.5) and feed.image_pub.get_subscription_count() == 0

    _transition(env, node, 'activate')
    assert _lifecycle_state(env, node) == 'active'
    assert feed.run(lambda: all(feed.outputs.values()), 120), launch.output()[-3000:]

    _transition(env, node, 'deactivate')
    assert _lifecycle_state(env, node) == 'inactive'
    assert probe.spin_until(lambda: feed.image_pub.get_subscription_count() == 0, 10)
    probe.spin_until(lambda: False, 1.0)    # outputs already on their way
    assert feed.silent_for(2.0)

    rss_configured = _resident_mib(launch, 'depth_node')
    _transition(env, node, 'cleanup')
    assert _lifecycle_state(env, node) == 'unconfigured'
    assert 'cleaned up' in launch.output()
    # The model's memory is given back (its weights alone are about 200 MiB).
    assert _resident_mib(launch, 'depth_node') < rss_configured - 100
    _transition(env, node, 'shutdown')
    # Finalized: the node ends by itself (status 0), and with it the launch.
    launch.wait(60)
    assert_clean_stop(launch, ['depth_node'])


# -- pipeline.launch.py: the synthetic scene end to end, as RViz shows it ----------------------

@pytest.fixture(scope='module')
def pipeline_launch(robot_env, tmp_path_factory):
    launch = start_launch(robot_env, tmp_path_factory, 'pipeline.launch.py',
                          ['camera_source:=true'], ready='activated', count=2)
    yield launch
    launch.kill()


def test_pipeline_with_camera_source_delivers_obstacles(pipeline_launch, probe):
    obstacles = probe.collect(Detection3DArray, '/obstacles', 10)
    measured = lambda: any(  # noqa: E731
        any(math.isfinite(d.bbox.center.position.z) for d in msg.detections)
        for msg in obstacles)
    assert probe.spin_until(measured, 120), pipeline_launch.output()[-4000:]


def _rviz_displays():
    config = yaml.safe_load((REPO / 'config' / 'midas.rviz').read_text())
    manager = config['Visualization Manager']
    displays = [d for d in manager['Displays'] if 'Topic' in d and d.get('Enabled', True)]
    return manager['Global Options']['Fixed Frame'], displays


def test_rviz_shows_only_published_topics_in_a_frame_the_outputs_use(pipeline_launch, probe):
    fixed_frame, displays = _rviz_displays()
    assert displays
    received = {}
    for display in displays:
        topic = display['Topic']['Value']
        reliable = display['Topic'].get('Reliability Policy') == 'Reliable'
        qos = QoSProfile(depth=5, reliability=QoSReliabilityPolicy.RELIABLE if reliable
                         else QoSReliabilityPolicy.BEST_EFFORT)
        received[topic] = probe.collect(RVIZ_TYPES[display['Class']], topic, qos)
    from tf2_msgs.msg import TFMessage
    static = probe.collect(TFMessage, '/tf_static', QoSProfile(
        depth=10, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
        reliability=QoSReliabilityPolicy.RELIABLE))

    def markers_with_content():
        return any(msg.markers for msg in received.get('/obstacles/markers', [None]) or [])
    assert probe.spin_until(lambda: all(received.values()) and markers_with_content(), 120), \
        {topic: len(messages) for topic, messages in received.items()}
    frames = set()
    for topic, messages in received.items():
        for msg in messages:
            headers = [m.header for m in msg.markers] if isinstance(msg, MarkerArray) \
                else [msg.header]
            frames.update(header.frame_id for header in headers)
    for msg in static:
        for transform in msg.transforms:
            frames.update((transform.header.frame_id, transform.child_frame_id))
    assert fixed_frame in frames, (fixed_frame, frames)


def test_obstacle_node_info_and_clean_stop_of_the_whole_pipeline(pipeline_launch, robot_env):
    info = _node_info(robot_env, '/obstacle_node')
    assert {'/depth/image', '/depth/camera_info', '/detections'} <= info['Subscribers']
    assert {'/obstacles', '/obstacles/markers', '/obstacles/nearest'} <= info['Publishers']
    services = {f'/obstacle_node/{name}' for name in LIFECYCLE_SERVICES + PARAMETER_SERVICES}
    assert services <= info['Service Servers']
    pipeline_launch.ctrl_c()
    assert_clean_stop(pipeline_launch, ['camera_source', 'synthetic_detector', 'depth_node',
                                        'obstacle_node'])


# -- pipeline.launch.py: every argument ------------------------------------------------------

def test_every_pipeline_argument_has_its_effect(robot_env, probe, tmp_path, tmp_path_factory):
    """namespace, image, camera_info, detections remaps, the four parameter files and
    autostart:=false, then ros2 lifecycle brings both managed nodes up and obstacles flow."""
    files = {
        'depth_params': {'/**/depth_node': {'model.pretrained': False, 'cloud.decimation': 4}},
        'obstacle_params': {'/**/obstacle_node': {'min_score': 0.25}},
        'source_params': {'/**/camera_source': {'rate': 12.0}},
        'scene_params': {'/**/synthetic_detector': {'latency_ms': 5.0}},
    }
    arguments = ['namespace:=/pl', 'camera_source:=true', 'image:=cam/image',
                 'camera_info:=cam/info', 'detections:=det', 'autostart:=false']
    for argument, content in files.items():
        path = tmp_path / f'{argument}.yaml'
        path.write_text(yaml.safe_dump({key: {'ros__parameters': values}
                                        for key, values in content.items()}))
        arguments.append(f'{argument}:={path}')
    launch = start_launch(robot_env, tmp_path_factory, 'pipeline.launch.py', arguments,
                          ready='waiting for a lifecycle manager', count=2)
    try:
        for node, name, expected in (('/pl/depth_node', 'cloud.decimation', '4'),
                                     ('/pl/depth_node', 'model.pretrained', 'False'),
                                     ('/pl/obstacle_node', 'min_score', '0.25'),
                                     ('/pl/camera_source', 'rate', '12.0'),
                                     ('/pl/synthetic_detector', 'latency_ms', '5.0')):
            status, output = cli(robot_env, 'param', 'get', node, name)
            assert status == 0 and expected in output, (node, name, output)
        for node in ('/pl/depth_node', '/pl/obstacle_node'):
            assert _lifecycle_state(robot_env, node) == 'unconfigured'
        detections = probe.collect(Detection2DArray, '/pl/det', 10)
        obstacles = probe.collect(Detection3DArray, '/pl/obstacles', 10)
        images = probe.collect(Image, '/pl/cam/image', qos_profile('sensor_data'))
        infos = probe.collect(CameraInfo, '/pl/cam/info', qos_profile('sensor_data'))
        assert probe.spin_until(lambda: images and infos and detections, 60), \
            launch.output()[-3000:]
        assert not obstacles
        for node in ('/pl/obstacle_node', '/pl/depth_node'):
            _transition(robot_env, node, 'configure')
            _transition(robot_env, node, 'activate')
        assert probe.spin_until(lambda: any(msg.detections for msg in obstacles), 120), \
            launch.output()[-4000:]
    finally:
        launch.ctrl_c()
    assert_clean_stop(launch, ['camera_source', 'synthetic_detector', 'depth_node',
                               'obstacle_node'])
