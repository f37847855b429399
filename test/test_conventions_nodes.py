"""The conventions robots meet, replayed through depth_node and obstacle_node over real DDS:
REP 117/118 special values and rectified CameraInfo (P) in both nodes.

depth_node runs random weights with a fixed scale whose ``a`` is negligible, so its depth is
``1 / b`` everywhere whatever the network says: a scene at a known distance.
"""
import math
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2, Range
from vision_msgs.msg import Detection2DArray, Detection3DArray

from midas_ros.ros.conversions import array_to_image, cloud_to_xyz, image_to_array
from midas_ros.ros.qos import qos_profile
from ros_process import NodeProcess, RosTestNode, unique_namespace
from test_camera_info_projection import camera_info
from test_obstacle_node import detections_message, stamp
from midas_ros.fusion import Box

WIDTH, HEIGHT = 640, 480
DEPTH_OUTPUTS = {'depth/image': Image, 'depth/camera_info': CameraInfo,
                 'depth/points': PointCloud2, 'depth/scan': LaserScan}


class DepthGraph:
    """depth_node as its own process; a probe publishing images and collecting outputs."""

    def __init__(self, tmp_path, extra=()):
        self.namespace = unique_namespace('conv')
        self.process = NodeProcess('depth_node', [
            '-r', f'__ns:={self.namespace}', '-p', 'model.pretrained:=false',
            '-p', 'device:=cpu', '-p', 'scan.enabled:=true', '-p', 'scale.mode:=fixed',
            '-p', 'scale.a:=1e-9', '-p', f'scale.b:={1 / 30}', '-p', 'scale.time_constant:=0.0',
            '-p', 'depth.max:=20.0', '-p', 'scan.range_max:=10.0', *extra], tmp_path=tmp_path)
        self.probe = RosTestNode('conv_probe')
        for topic, msg_type in DEPTH_OUTPUTS.items():
            self.probe.collect(msg_type, self.topic(topic), qos_profile('sensor_data', depth=5))
        self.diagnostics = self.probe.collect(DiagnosticArray, '/diagnostics')
        self.image_pub = self.probe.node.create_publisher(Image, self.topic('image'),
                                                          qos_profile('sensor_data'))
        self.info_pub = self.probe.node.create_publisher(CameraInfo, self.topic('camera_info'),
                                                         qos_profile('sensor_data'))

    def topic(self, name):
        return f'{self.namespace}/{name}'

    def frame(self, when, info, topics=tuple(DEPTH_OUTPUTS), timeout=90.0, step=None):
        """Publish an image stamped ``when`` with ``info`` until every topic of ``topics`` came
        back for it; {topic: message}."""
        image = array_to_image(np.full((HEIGHT, WIDTH, 3), 90, np.uint8), 'rgb8')
        image.header.stamp, image.header.frame_id = stamp(when), 'camera_optical_frame'
        info.header = image.header
        state = {'next': 0.0}

        def found():
            return {topic: next((m for m in self.probe.received[self.topic(topic)]
                                 if m.header.stamp == image.header.stamp), None)
                    for topic in topics}

        def publish():
            if step is not None:
                step()
            if time.monotonic() >= state['next']:
                self.info_pub.publish(info)
                self.image_pub.publish(image)
                state['next'] = time.monotonic() + 0.3
        assert self.probe.spin_until(lambda: all(found().values()), timeout, publish), \
            self.process.output()[-3000:]
        return found()

    def set(self, values):
        result = self.probe.set_parameters_atomically(f'{self.namespace}/depth_node', values)
        assert result.successful, result.reason

    def status(self):
        """{key: value} of this node's newest diagnostics status, or {}."""
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name.startswith(f'{self.namespace}/depth_node'):
                    values = {kv.key: kv.value for kv in status.values}
                    return dict(values, message=status.message)
        return {}

    def close(self):
        self.probe.close()
        return self.process.stop()


@pytest.fixture(scope='module')
def depth_graph(tmp_path_factory):
    graph = DepthGraph(tmp_path_factory.mktemp('conventions'))
    yield graph
    graph.close()


def test_depth_node_beyond_and_below_the_limits(depth_graph):
    """The issue's example over DDS: 30 m everywhere with depth.max 20 and scan.range_max 10
    is +inf in the image and the scan (not NaN); 0.05 m is -inf; the cloud is NaN points."""
    out = depth_graph.frame(10.0, camera_info())
    depth, _ = image_to_array(out['depth/image'])
    assert np.all(depth == np.inf)
    scan = out['depth/scan']
    assert len(scan.ranges) == WIDTH and np.all(np.asarray(scan.ranges) == np.inf)
    assert np.isnan(cloud_to_xyz(out['depth/points'])).all()

    depth_graph.set({'scale.b': 1 / 0.05})
    out = depth_graph.frame(11.0, camera_info())
    depth, _ = image_to_array(out['depth/image'])
    assert np.all(depth == -np.inf)
    assert np.all(np.asarray(out['depth/scan'].ranges) == -np.inf)
    assert np.isnan(cloud_to_xyz(out['depth/points'])).all()

    # A neighbour: 15 m is a depth (within depth.max) but beyond the scan's range_max.
    depth_graph.set({'scale.b': 1 / 15})
    out = depth_graph.frame(12.0, camera_info())
    depth, _ = image_to_array(out['depth/image'])
    np.testing.assert_allclose(depth, 15.0, rtol=1e-4)
    assert np.all(np.asarray(out['depth/scan'].ranges) == np.inf)


def test_depth_node_computes_with_p_of_a_rectified_image(depth_graph):
    depth_graph.set({'scale.b': 0.5})          # 2 m everywhere
    out = depth_graph.frame(20.0, camera_info())
    info = out['depth/camera_info']
    # Exactly what was used: P's projection, as K and P, without distortion.
    np.testing.assert_allclose(info.k, [500, 0, 310, 0, 500, 235, 0, 0, 1])
    np.testing.assert_allclose(info.p, [500, 0, 310, 0, 0, 500, 235, 0, 0, 0, 1, 0])
    assert not any(info.d)
    xyz = cloud_to_xyz(out['depth/points'])
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    np.testing.assert_allclose(xyz[..., 2], 2.0, rtol=1e-4)
    np.testing.assert_allclose(xyz[..., 0], (u - 310.0) / 500.0 * 2.0, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(xyz[..., 1], (v - 235.0) / 500.0 * 2.0, rtol=1e-3, atol=1e-4)
    # Rectified images with D != 0 and P set are normal: no distortion warning.
    assert 'distortion' not in depth_graph.process.output()

    # P unset (all zero): K is the camera; a distorted one is then warned about, once.
    out = depth_graph.frame(21.0, camera_info(p=[0.0] * 12))
    np.testing.assert_allclose(out['depth/camera_info'].k, [620, 0, 332, 0, 618, 251, 0, 0, 1])
    # Binning: the image is a binned 1280x960 sensor's.
    binned = camera_info(k=[1240, 0, 664, 0, 1236, 502, 0, 0, 1],
                         p=[1000, 0, 620, 0, 0, 1000, 470, 0, 0, 0, 1, 0], width=1280,
                         height=960)
    binned.binning_x = binned.binning_y = 2
    out = depth_graph.frame(22.0, binned)
    # As image_geometry bins: fx' / 2, cx' / 2.
    np.testing.assert_allclose(out['depth/camera_info'].k, [500, 0, 310, 0, 500, 235, 0, 0, 1])
    log = depth_graph.process.output()
    assert log.count('lens distortion and no projection matrix P') == 1


class ObstacleGraph:
    """obstacle_node as its own process, fed by a probe."""

    def __init__(self, tmp_path, ros_args=()):
        self.namespace = unique_namespace('convobs')
        self.process = NodeProcess('obstacle_node', ['-r', f'__ns:={self.namespace}',
                                                     *ros_args], tmp_path=tmp_path)
        self.probe = RosTestNode('convobs_probe')
        node = self.probe.node
        self.depth_pub = node.create_publisher(Image, self.topic('depth/image'), 10)
        self.info_pub = node.create_publisher(CameraInfo, self.topic('depth/camera_info'), 10)
        self.detections_pub = node.create_publisher(Detection2DArray, self.topic('detections'),
                                                    10)
        self.obstacles = self.probe.collect(Detection3DArray, self.topic('obstacles'))
        self.nearest = self.probe.collect(Range, self.topic('obstacles/nearest'))
        self.diagnostics = self.probe.collect(DiagnosticArray, '/diagnostics')

    def topic(self, name):
        return f'{self.namespace}/{name}'

    def pairing_status(self):
        """{key: value} of the node's newest pairing diagnostics (and 'level'), or {}."""
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name == f'{self.namespace}/obstacle_node: pairing':
                    values = {kv.key: kv.value for kv in status.values}
                    return dict(values, level=status.level, message=status.message)
        return {}

    def measure(self, depth, when, info, boxes, timeout=20.0, step=None, skip=0):
        """Publish depth + info + detections stamped ``when`` until the outputs for it come
        back (among those after the first ``skip``); (Detection3DArray, Range)."""
        depth_msg = array_to_image(depth.astype(np.float32), '32FC1')
        depth_msg.header.stamp, depth_msg.header.frame_id = stamp(when), 'camera_optical_frame'
        info.header = depth_msg.header
        detections = detections_message(None, when, boxes=boxes)
        state = {'next': 0.0}

        def find(messages):
            return next((m for m in messages[skip:]
                         if m.header.stamp == depth_msg.header.stamp), None)

        def publish():
            if step is not None:
                step()
            if time.monotonic() >= state['next']:
                self.info_pub.publish(info)
                self.depth_pub.publish(depth_msg)
                self.detections_pub.publish(detections)
                state['next'] = time.monotonic() + 0.3
        assert self.probe.spin_until(lambda: find(self.obstacles) and find(self.nearest),
                                     timeout, publish), self.process.output()[-3000:]
        return find(self.obstacles), find(self.nearest)

    def close(self):
        self.probe.close()
        return self.process.stop()


@pytest.fixture(scope='module')
def obstacle_graph(tmp_path_factory):
    graph = ObstacleGraph(tmp_path_factory.mktemp('conventions_obstacles'),
                          ['-p', 'max_range:=20.0'])
    yield graph
    graph.close()


def test_obstacle_node_reads_p_of_a_rectified_image(obstacle_graph):
    """The issue's example: an obstacle at (0.40, 0.20, 2.0) in image_rect, K and D of the raw
    camera, P of the rectified one."""
    depth = np.full((HEIGHT, WIDTH), 6.0, np.float32)
    depth[255:316, 380:441] = 2.0           # around (410, 285) = P's projection of it
    obstacles, nearest = obstacle_graph.measure(depth, 30.0, camera_info(),
                                                [Box(410.0, 285.0, 61.0, 61.0)])
    centre = obstacles.detections[0].bbox.center.position
    np.testing.assert_allclose([centre.x, centre.y, centre.z], [0.40, 0.20, 2.0], atol=0.0021)
    assert nearest.range == pytest.approx(2.0)


@pytest.mark.parametrize('fill, expected', [(0.05, -math.inf), (30.0, math.inf),
                                            (math.nan, math.inf)])
def test_obstacle_node_too_near_and_too_far(obstacle_graph, fill, expected):
    """A box all nearer than min_range reports -inf (REP 117 too close), all beyond max_range
    +inf; a box without readings has no distance (NaN centre) and the Range says +inf."""
    when = {0.05: 40.0, 30.0: 41.0}.get(fill, 42.0)
    depth = np.full((HEIGHT, WIDTH), fill, np.float32)
    obstacles, nearest = obstacle_graph.measure(depth, when, camera_info(),
                                                [Box(320.0, 240.0, 80.0, 80.0)])
    assert math.isnan(obstacles.detections[0].bbox.center.position.z)
    assert nearest.range == expected


def test_a_scan_that_cannot_be_made_costs_only_the_scan(depth_graph):
    """The issue's example: scan.height 480 while cy = 200: depth image, cloud and camera_info
    keep flowing, with one warning per change and a diagnostics entry."""
    depth_graph.set({'scan.height': 480, 'scale.b': 0.5})    # accepted: the camera may change
    low_cy = camera_info(p=[500.0, 0, 310, 0, 0, 500, 200, 0, 0, 0, 1, 0])
    topics = ('depth/image', 'depth/points', 'depth/camera_info')
    for when in (50.0, 51.0, 52.0):
        out = depth_graph.frame(when, low_cy, topics)
        depth, _ = image_to_array(out['depth/image'])
        assert np.allclose(depth, 2.0, rtol=1e-4)
        assert np.allclose(cloud_to_xyz(out['depth/points'])[..., 2], 2.0, rtol=1e-4)
    assert not [m for m in depth_graph.probe.received[depth_graph.topic('depth/scan')]
                if 50 <= m.header.stamp.sec <= 52]
    assert depth_graph.probe.spin_until(
        lambda: 'output depth/scan' in depth_graph.status(), 5.0)
    status = depth_graph.status()
    assert 'does not fit' in status['output depth/scan'] and 'depth/scan' in status['message']
    log = depth_graph.process.output()
    assert log.count('depth/scan skipped') == 1, log[-3000:]
    # Another change that still cannot work: one more warning (its reason changed).
    depth_graph.set({'scan.height': 470})
    depth_graph.frame(53.0, low_cy, topics)
    assert depth_graph.process.output().count('depth/scan skipped') == 2
    # A change that works: the scan returns, said once.
    depth_graph.set({'scan.height': 1})
    out = depth_graph.frame(54.0, low_cy)
    assert len(out['depth/scan'].ranges) == WIDTH
    assert depth_graph.process.output().count('depth/scan published again') == 1


class SimClock:
    """A /clock publisher driving nodes that run with use_sim_time."""

    def __init__(self, probe):
        self.publisher = probe.node.create_publisher(Clock, '/clock', 10)
        self.seconds = 0.0

    def publish(self):
        self.publisher.publish(Clock(clock=stamp(self.seconds)))


def test_obstacle_node_forgets_depth_frames_when_sim_time_jumps_back(tmp_path):
    """The issue's example: a simulator reset; a detection stamped 100.0 after it must be
    measured in the new frame stamped 100.0 (3 m), not the pre-reset one (2 m)."""
    graph = ObstacleGraph(tmp_path, ['-p', 'use_sim_time:=true'])
    clock = SimClock(graph.probe)
    try:
        clock.seconds = 200.0
        box = Box(320.0, 240.0, 80.0, 80.0)
        two_m = np.full((HEIGHT, WIDTH), 2.0, np.float32)
        before, _ = graph.measure(two_m, 100.0, camera_info(), [box], step=clock.publish)
        assert before.detections[0].bbox.center.position.z == pytest.approx(2.0)

        clock.seconds = 50.0          # the reset
        assert graph.probe.spin_until(
            lambda: 'ROS time jumped back 150.000 s' in graph.process.output(), 20.0,
            clock.publish), graph.process.output()[-3000:]
        count = len(graph.obstacles)
        detections = detections_message(None, 100.0, boxes=[box])
        graph.detections_pub.publish(detections)
        # No frame of the new time line yet: the detection waits, nothing is measured.
        graph.probe.spin_until(lambda: False, 1.0, clock.publish)
        assert len(graph.obstacles) == count
        after, _ = graph.measure(np.full((HEIGHT, WIDTH), 3.0, np.float32), 100.0,
                                 camera_info(), [box], step=clock.publish, skip=count)
        assert after.detections[0].bbox.center.position.z == pytest.approx(3.0)
        log = graph.process.output()
        assert log.count('forgot the buffered depth frames') == 1
        assert 'WARN' not in log, log
    finally:
        graph.close()


def test_a_publisher_that_appears_while_sim_time_stands_still_is_followed(tmp_path):
    """Input QoS 'auto' watches the graph for publishers: on the steady clock, because under
    use_sim_time a /clock that stands still (a paused bag) would stop a ROS-time timer, and a
    detector that starts after obstacle_node would never be subscribed (seen in CI)."""
    namespace = unique_namespace('convclk')
    process = NodeProcess('obstacle_node', ['-r', f'__ns:={namespace}', '-p',
                                            'use_sim_time:=true'], tmp_path=tmp_path)
    probe = RosTestNode('convclk_probe')
    clock = SimClock(probe)
    clock.seconds = 200.0       # and never again: simulated time stands still
    try:
        assert probe.spin_until(lambda: 'activated' in process.output(), 60.0, clock.publish)
        probe.node.create_publisher(Detection2DArray, f'{namespace}/detections', 10)
        assert probe.spin_until(
            lambda: f'subscribed to {namespace}/detections' in process.output(), 10.0,
            clock.publish), process.output()[-3000:]
    finally:
        probe.close()
        process.stop()


def test_depth_node_clears_its_time_line_when_sim_time_jumps_back(tmp_path):
    graph = DepthGraph(tmp_path, ['-p', 'use_sim_time:=true'])
    clock = SimClock(graph.probe)
    try:
        clock.seconds = 200.0
        graph.frame(200.0, camera_info(), ('depth/image',), step=clock.publish)
        clock.seconds = 50.0
        assert graph.probe.spin_until(
            lambda: 'ROS time jumped back 150.000 s' in graph.process.output(), 20.0,
            clock.publish), graph.process.output()[-3000:]
        out = graph.frame(50.0, camera_info(), ('depth/image',), step=clock.publish)
        assert out['depth/image'] is not None
        assert graph.process.output().count('cleared the scale smoothing') == 1
    finally:
        graph.close()


def test_obstacle_node_pairs_late_slow_depth_with_the_nearest_frame(obstacle_graph):
    """The issue's example (b) over DDS: detections at 10 Hz, depth for every third frame
    arriving 0.35 s after its frame. Every detection is measured in the depth frame nearest in
    stamp (the depth value says which frame it was), and steady operation logs nothing."""
    graph = obstacle_graph
    box = Box(320.0, 240.0, 80.0, 80.0)
    info = camera_info()
    # Discovery first: one scene measured end to end.
    graph.measure(np.full((HEIGHT, WIDTH), 1.0, np.float32), 60.0, info, [box])
    log_before = len(graph.process.output())
    start = time.time() + 0.5
    events = []                # (wall time, kind, stamp seconds, frame index)
    for k in range(30):
        events.append((start + 0.1 * k + 0.03, 'detections', start + 0.1 * k, None))
    for j in range(10):
        events.append((start + 0.3 * j + 0.35, 'depth', start + 0.3 * j, j))
    events.sort()
    depth_of = {j: 1.0 + 0.25 * j for j in range(10)}
    for when, kind, stamp_s, index in events:
        graph.probe.spin_until(lambda: time.time() >= when, 5.0)
        header_stamp = stamp(stamp_s)
        if kind == 'depth':
            msg = array_to_image(np.full((HEIGHT, WIDTH), depth_of[index], np.float32),
                                 '32FC1')
            msg.header.stamp, msg.header.frame_id = header_stamp, 'camera_optical_frame'
            info.header = msg.header
            graph.info_pub.publish(info)
            graph.depth_pub.publish(msg)
        else:
            graph.detections_pub.publish(detections_message(None, stamp_s, boxes=[box]))
    frame_stamps = [start + 0.3 * j for j in range(10)]

    def measured():
        return {(m.header.stamp.sec, m.header.stamp.nanosec): m for m in graph.obstacles}
    wanted = [stamp(start + 0.1 * k) for k in range(27)]
    assert graph.probe.spin_until(
        lambda: all((s.sec, s.nanosec) in measured() for s in wanted), 10.0), \
        graph.process.output()[-2000:]
    wrong = []
    for k, s in enumerate(wanted):
        t = start + 0.1 * k
        nearest = min(range(10), key=lambda j: (abs(frame_stamps[j] - t), -j))
        z = measured()[(s.sec, s.nanosec)].detections[0].bbox.center.position.z
        if abs(z - depth_of[nearest]) > 1e-3:
            wrong.append((k, z, depth_of[nearest]))
    assert not wrong, wrong
    new_log = graph.process.output()[log_before:]
    assert 'WARN' not in new_log, new_log
    assert graph.probe.spin_until(lambda: int(graph.pairing_status().get('paired', 0)) >= 28,
                                  5.0), graph.pairing_status()
    status = graph.pairing_status()
    assert status['level'] == DiagnosticStatus.OK
    assert float(status['depth delay (s)']) == pytest.approx(0.35, abs=0.15)
    assert float(status['depth period (s)']) == pytest.approx(0.3, abs=0.01)
    assert 0.0 <= float(status['wait mean (s)']) <= float(status['wait max (s)']) <= 1.0


def test_obstacle_node_warns_only_when_nothing_has_paired_for_seconds(obstacle_graph):
    """Detections without any depth frame near them: counted as unpaired at once, but the
    only WARN comes after 5 s of nothing paired, and says why."""
    graph = obstacle_graph
    box = Box(320.0, 240.0, 80.0, 80.0)
    log_before = len(graph.process.output())
    start = time.monotonic()
    unpaired_before = int(graph.pairing_status().get('unpaired', 0))
    warned_at = None
    while time.monotonic() - start < 8.0 and warned_at is None:
        graph.detections_pub.publish(detections_message(None, time.time() + 100.0,
                                                        boxes=[box]))
        graph.probe.spin_until(lambda: False, 0.1)
        if 'no detection paired' in graph.process.output()[log_before:]:
            warned_at = time.monotonic() - start
    assert warned_at is not None and warned_at >= 4.5, warned_at
    log = graph.process.output()[log_before:]
    assert log.count('WARN') == 1 and 'depth frame is' in log, log
    assert int(graph.pairing_status()['unpaired']) > unpaired_before + 10
    # The status that goes with the warning (published right after it).
    assert graph.probe.spin_until(
        lambda: graph.pairing_status()['level'] == DiagnosticStatus.WARN, 3.0)
