"""obstacle_node: its parameters, and end to end as its own process over real DDS.

The process runs exactly as external checks start it (default parameters, ``-r __ns:=...``);
the test publishes depth, camera_info and detections of the known scene of test_fusion.py with
the plain reliable QoS a script would use, and checks every output against the truth.
"""
import math
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, Range
from vision_msgs.msg import Detection2D, Detection2DArray, Detection3DArray
from vision_msgs.msg import ObjectHypothesisWithPose
from visualization_msgs.msg import Marker, MarkerArray

from midas_ros.fusion import Box, fuse
from midas_ros.ros.conversions import (array_to_image, depth_to_metres,
                                       intrinsics_to_camera_info)
from midas_ros.ros.obstacle_node import OBSTACLE_NODE_PARAMS, ObstacleNode
from midas_ros.ros.parameters import defaults
from midas_ros.ros.qos import qos_profile
from ros_process import REPO, NodeProcess, RosTestNode, unique_namespace
from test_fusion import INTRINSICS, PEOPLE, render, true_box, true_centre

FRAME = 'camera_optical_frame'
CONFIG = Path(REPO) / 'config' / 'obstacle_node.yaml'
DETECTION_DELAY = 0.04          # detections are stamped this much after their depth frame


def stamp(seconds):
    return Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)))


def stamp_of(msg):
    """The header stamp; a MarkerArray's is its markers' (an empty one has none)."""
    if isinstance(msg, MarkerArray):
        return msg.markers[0].header.stamp if msg.markers else None
    return msg.header.stamp


def depth_message(depth, when, encoding='32FC1'):
    if encoding == '16UC1':
        depth = np.where(np.isfinite(depth), np.round(depth * 1000.0), 0).astype(np.uint16)
    msg = array_to_image(depth, encoding)
    msg.header.stamp, msg.header.frame_id = stamp(when), FRAME
    return msg


def detections_message(panels, when, classes=None, boxes=None):
    msg = Detection2DArray()
    msg.header.stamp, msg.header.frame_id = stamp(when), 'camera'
    boxes = boxes or [true_box(panel) for panel in panels]
    for index, box in enumerate(boxes):
        detection = Detection2D(id=f'track{index}')
        detection.bbox.center.position.x, detection.bbox.center.position.y = (
            box.center_x, box.center_y)
        detection.bbox.size_x, detection.bbox.size_y = box.width, box.height
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = classes[index] if classes else 'person'
        hypothesis.hypothesis.score = 0.5 + 0.1 * index
        detection.results.append(hypothesis)
        msg.detections.append(detection)
    return msg


# -- parameters (in process, no DDS) ---------------------------------------------------------

def test_yaml_holds_the_node_defaults():
    params = yaml.safe_load(CONFIG.read_text())['/**']['ros__parameters']
    assert params == defaults(OBSTACLE_NODE_PARAMS)


@pytest.fixture
def node_in_process():
    context = rclpy.Context()
    rclpy.init(context=context, args=['--ros-args', '--params-file', str(CONFIG)])
    node = ObstacleNode(context=context)
    yield node
    node.destroy_node()
    rclpy.shutdown(context=context)


def test_params_file_gives_the_declared_defaults(node_in_process):
    for param in OBSTACLE_NODE_PARAMS:
        assert node_in_process.get_parameter(param.name).value == param.default


@pytest.mark.parametrize('changes, reason', [
    ({'max_range': 0.05}, 'max_range'), ({'percentile': 150.0}, 'percentile'),
    ({'inner_fraction': 0.0}, 'inner_fraction'), ({'min_range': math.nan}, 'min_range'),
    ({'input_qos': 'reliable'}, 'read-only'), ({'sync_tolerance': -1.0}, 'sync_tolerance'),
])
def test_absurd_parameters_are_rejected_whole(node_in_process, changes, reason):
    node = node_in_process
    before = (node._config, dict(node._params))
    # A valid change in the same call must not be half-applied.
    request = [Parameter('min_score', value=0.7)] + [
        Parameter(name, value=value) for name, value in changes.items()]
    result = node.set_parameters_atomically(request)
    assert not result.successful and reason in result.reason
    assert (node._config, node._params) == before
    assert node.get_parameter('min_score').value == 0.0


def test_valid_parameters_apply(node_in_process):
    node = node_in_process
    results = node.set_parameters([Parameter('max_range', value=20.0),
                                   Parameter('class_ids', value=['person', 'chair']),
                                   Parameter('buffer_length', value=3)])
    assert all(result.successful for result in results)
    assert node._config.max_range == 20.0 and node._class_ids == {'person', 'chair'}
    assert node.streams[0].pairing.buffer_length == 3


def test_16uc1_and_32fc1_give_the_same_answer():
    depth = render(PEOPLE)
    boxes = [true_box(panel) for panel in PEOPLE]
    metres = fuse(depth_to_metres(depth_message(depth, 1.0)), INTRINSICS, boxes)
    millimetres = fuse(depth_to_metres(depth_message(depth, 1.0, '16UC1')), INTRINSICS, boxes)
    for a, b in zip(metres, millimetres):
        assert a.valid and b.valid
        assert a.distance == pytest.approx(b.distance, abs=1e-3)
        assert a.position == pytest.approx(b.position, abs=2e-3)


# -- end to end ------------------------------------------------------------------------------

class Graph:
    """obstacle_node as its own process, and a probe node publishing scenes to it."""

    def __init__(self, tmp_path):
        self.namespace = unique_namespace('obstacles')
        self.process = NodeProcess('obstacle_node', ['-r', f'__ns:={self.namespace}'],
                                   tmp_path=tmp_path)
        self.probe = RosTestNode('obstacle_probe')
        node = self.probe.node
        self.depth_pub = node.create_publisher(Image, self._topic('depth/image'), 10)
        self.info_pub = node.create_publisher(CameraInfo, self._topic('depth/camera_info'), 10)
        self.detections_pub = node.create_publisher(Detection2DArray,
                                                    self._topic('detections'), 10)
        self.obstacles = self.probe.collect(Detection3DArray, self._topic('obstacles'))
        self.markers = self.probe.collect(MarkerArray, self._topic('obstacles/markers'))
        self.nearest = self.probe.collect(Range, self._topic('obstacles/nearest'))
        self.diagnostics = self.probe.collect(DiagnosticArray, '/diagnostics')
        self.parameters = node.create_client(SetParameters,
                                             self._topic('obstacle_node/set_parameters'))

    def publish_depth(self, depth_msg):
        """A depth frame and its camera_info, as a depth camera sends them."""
        self.info_pub.publish(intrinsics_to_camera_info(INTRINSICS, depth_msg.header))
        self.depth_pub.publish(depth_msg)

    def _topic(self, name):
        return f'{self.namespace}/{name}'

    def wait_until_connected(self, timeout=15.0):
        """Until the node's inputs and outputs are matched with the probe's (what a test
        publishes before that is lost)."""
        node = self.probe.node
        inputs = (self.depth_pub, self.info_pub, self.detections_pub)
        outputs = [self._topic(name) for name in ('obstacles', 'obstacles/markers',
                                                  'obstacles/nearest')]
        assert self.probe.spin_until(
            lambda: all(pub.get_subscription_count() for pub in inputs)
            and all(node.count_publishers(topic) for topic in outputs), timeout), \
            self.process.output()

    def pairing_status(self):
        """{key: value} of the node's newest pairing diagnostics, or {}."""
        for array in reversed(self.diagnostics):
            for status in array.status:
                if status.name == f'{self.namespace}/obstacle_node: pairing':
                    return {kv.key: kv.value for kv in status.values}
        return {}

    def publish_scene(self, depth, when, detections, encoding='32FC1', timeout=15.0,
                      publishers=None):
        """Publish depth + camera_info stamped ``when`` and ``detections`` (every ~0.3 s until
        discovery has happened), and return what came back for the detections' stamp."""
        depth_msg = depth_message(depth, when, encoding)
        info = intrinsics_to_camera_info(INTRINSICS, depth_msg.header)
        depth_pub, info_pub, detections_pub = publishers or (
            self.depth_pub, self.info_pub, self.detections_pub)
        state = {'next': 0.0}

        def step():
            if time.monotonic() >= state['next']:
                depth_pub.publish(depth_msg)
                info_pub.publish(info)
                detections_pub.publish(detections)
                state['next'] = time.monotonic() + 0.3
        return self.wait_for(detections.header.stamp, timeout, step)

    def wait_for(self, wanted, timeout, step=None):
        def find(messages):
            return next((m for m in messages if stamp_of(m) == wanted), None)

        self.probe.spin_until(lambda: all(find(m) for m in (self.obstacles, self.markers,
                                                            self.nearest)), timeout, step)
        return find(self.obstacles), find(self.markers), find(self.nearest)

    def close(self):
        self.probe.close()
        return self.process.stop()


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    graph = Graph(tmp_path_factory.mktemp('obstacle_node'))
    yield graph
    assert graph.close() == 0, graph.process.output()


def assert_obstacles_match(obstacles, panels, tolerance=0.02):
    assert obstacles.header.frame_id == FRAME
    assert len(obstacles.detections) == len(panels)
    for index, (detection, panel) in enumerate(zip(obstacles.detections, panels)):
        centre = detection.bbox.center.position
        error = np.linalg.norm([centre.x, centre.y, centre.z] - true_centre(panel))
        assert error <= tolerance * panel[1], (index, centre, panel)
        assert detection.bbox.size.x == pytest.approx(panel[2], rel=0.1)
        assert detection.bbox.size.y == pytest.approx(panel[3], rel=0.1)
        assert detection.id == f'track{index}'
        result, = detection.results
        assert result.hypothesis.class_id == 'person'
        assert result.hypothesis.score == pytest.approx(0.5 + 0.1 * index)
        assert result.pose.pose.position == centre


def test_people_in_32fc1_and_16uc1_depth(graph):
    depth = render(PEOPLE)
    outputs = {}
    for when, encoding in ((10.0, '32FC1'), (11.0, '16UC1')):
        detections = detections_message(PEOPLE, when + DETECTION_DELAY)
        obstacles, markers, nearest = graph.publish_scene(depth, when, detections, encoding)
        assert obstacles is not None, graph.process.output()
        assert_obstacles_match(obstacles, PEOPLE)
        outputs[encoding] = obstacles

        cubes = [m for m in markers.markers if m.type == Marker.CUBE]
        labels = [m for m in markers.markers if m.type == Marker.TEXT_VIEW_FACING]
        assert len(cubes) == len(labels) == len(PEOPLE)
        assert all(m.action == Marker.ADD and m.header.frame_id == FRAME for m in cubes)
        # A valid (unit) orientation: RViz rejects the all-zero default quaternion.
        assert all(m.pose.orientation.w == 1.0 for m in cubes + labels)
        for label, panel in zip(labels, PEOPLE):
            name, distance, unit = label.text.split()
            assert name == 'person' and unit == 'm'
            assert float(distance) == pytest.approx(panel[1], rel=0.02)
        closest = min(panel[1] for panel in PEOPLE)
        assert nearest.range == pytest.approx(closest, rel=0.02)
        assert nearest.header.frame_id == 'camera_depth_frame'   # x forward, not optical
        assert nearest.min_range <= nearest.range <= nearest.max_range
    for a, b in zip(outputs['32FC1'].detections, outputs['16UC1'].detections):
        assert a.bbox.center.position.z == pytest.approx(b.bbox.center.position.z, abs=2e-3)
        assert a.bbox.center.position.x == pytest.approx(b.bbox.center.position.x, abs=2e-3)


def test_vanished_obstacles_lose_their_markers(graph):
    depth = render(PEOPLE)
    graph.publish_scene(depth, 20.0, detections_message(PEOPLE, 20.0 + DETECTION_DELAY))
    two = PEOPLE[:2]
    obstacles, markers, _ = graph.publish_scene(
        render(two), 21.0, detections_message(two, 21.0 + DETECTION_DELAY))
    assert_obstacles_match(obstacles, two)
    added = {(m.ns, m.id) for m in markers.markers if m.action == Marker.ADD}
    deleted = {(m.ns, m.id) for m in markers.markers if m.action == Marker.DELETE}
    assert added == {(ns, i) for ns in ('obstacles', 'obstacle_labels') for i in (0, 1)}
    assert deleted == {(ns, i) for ns in ('obstacles', 'obstacle_labels') for i in (2, 3)}

    obstacles, markers, nearest = graph.publish_scene(
        render([]), 22.0, detections_message([], 22.0 + DETECTION_DELAY))
    assert obstacles.detections == []
    assert {(m.ns, m.id, m.action) for m in markers.markers} == {
        (ns, i, Marker.DELETE) for ns in ('obstacles', 'obstacle_labels') for i in (0, 1)}
    assert nearest.range == math.inf


def test_boxes_without_depth_and_bad_boxes_are_reported_invalid(graph):
    panel = (0.0, 4.0, 0.5, 1.7)
    depth = render([panel, PEOPLE[0]])
    box = true_box(panel)
    v0, v1, u0, u1 = box.pixel_window(1.0, INTRINSICS.width, INTRINSICS.height)
    depth[v0:v1, u0:u1] = np.nan                   # the sensor saw nothing there
    nan_box = Box(math.nan, 10.0, 5.0, 5.0)
    detections = detections_message(None, 30.0, boxes=[box, nan_box, true_box(PEOPLE[0])])
    obstacles, markers, nearest = graph.publish_scene(depth, 30.0, detections)
    assert len(obstacles.detections) == 3
    for invalid in obstacles.detections[:2]:
        centre = invalid.bbox.center.position
        assert math.isnan(centre.z) and invalid.bbox.size.z == 0.0
    assert obstacles.detections[2].bbox.center.position.z == pytest.approx(PEOPLE[0][1],
                                                                           rel=0.02)
    assert len([m for m in markers.markers if m.type == Marker.CUBE]) == 1
    assert nearest.range == pytest.approx(PEOPLE[0][1], rel=0.02)


def test_bad_depth_and_unpaired_detections_are_warned_about_and_survived(graph):
    depth = render(PEOPLE)
    # An RGB image on the depth topic, then a depth frame 1 s away from its detections.
    rgb = array_to_image(np.zeros((INTRINSICS.height, INTRINSICS.width, 3), np.uint8), 'rgb8')
    rgb.header.stamp = stamp(40.0)
    graph.depth_pub.publish(rgb)
    assert graph.publish_scene(depth, 41.0, detections_message(PEOPLE, 40.0),
                               timeout=2.0)[0] is None
    # Still running, and a good scene afterwards is measured.
    obstacles, _, _ = graph.publish_scene(depth, 42.0, detections_message(PEOPLE, 42.05))
    assert_obstacles_match(obstacles, PEOPLE)
    assert graph.process.alive()
    log = graph.process.output()
    assert "encoding 'rgb8' is not depth" in log
    # An unpaired detection is normal operation, counted in /diagnostics, not logged.
    assert 'dropping detections' not in log and 'paired' not in log
    assert graph.probe.spin_until(lambda: '+1.000 s away' in graph.pairing_status().get(
        'last unpaired reason', ''), 5.0), graph.pairing_status()
    assert int(graph.pairing_status()['unpaired']) >= 1


def test_detections_arriving_before_their_depth_frame_wait_for_it(graph):
    when = 50.0
    detections = detections_message(PEOPLE, when + DETECTION_DELAY)
    for _ in range(3):                      # older depth only: the detections must wait
        graph.detections_pub.publish(detections)
        graph.probe.spin_until(lambda: False, 0.1)
    depth_msg = depth_message(render(PEOPLE), when)
    graph.publish_depth(depth_msg)
    obstacles, _, _ = graph.wait_for(detections.header.stamp, 10.0)
    assert obstacles is not None, graph.process.output()
    assert_obstacles_match(obstacles, PEOPLE)


def test_detections_pair_with_their_own_frame_not_the_previous_one(graph):
    """A detector faster than depth, depth arriving late: the previous frame is within
    sync_tolerance, but the detections wait (as long as the depth stream's observed delays
    allow) for the frame of their own stamp."""
    graph.wait_until_connected()
    when = 65.0
    # The depth stream so far: a frame every 0.1 s, the older ones delivered late (a burst),
    # so the node has seen delays of up to 0.7 s. All of them show another scene.
    for age in np.arange(0.8, 0.05, -0.1):
        graph.publish_depth(depth_message(render(PEOPLE[:1]), when - age))
    graph.probe.spin_until(lambda: False, 0.1)
    detections = detections_message(PEOPLE, when)
    graph.detections_pub.publish(detections)
    graph.probe.spin_until(lambda: False, 0.05)
    own = depth_message(render(PEOPLE), when)
    graph.publish_depth(own)
    obstacles, _, _ = graph.wait_for(detections.header.stamp, 10.0)
    assert obstacles is not None, graph.process.output()
    assert_obstacles_match(obstacles, PEOPLE)


def test_unstamped_detections_use_the_newest_depth_frame(graph):
    panels = PEOPLE[1:3]
    assert graph.publish_scene(render(panels), 80.0, detections_message(panels, 80.0))[0]
    unstamped = detections_message(panels, 0.0)     # 80 s away from every depth frame

    obstacles, _, _ = graph.wait_for(unstamped.header.stamp, 10.0,
                                     lambda: graph.detections_pub.publish(unstamped))
    assert obstacles is not None, graph.process.output()
    assert_obstacles_match(obstacles, panels)


def set_remote_parameters(graph, class_ids, min_score):
    assert graph.parameters.wait_for_service(timeout_sec=10.0)
    request = SetParameters.Request(parameters=[
        ParameterMsg(name='class_ids', value=ParameterValue(
            type=ParameterType.PARAMETER_STRING_ARRAY, string_array_value=class_ids)),
        ParameterMsg(name='min_score', value=ParameterValue(
            type=ParameterType.PARAMETER_DOUBLE, double_value=min_score))])
    future = graph.parameters.call_async(request)
    graph.probe.spin_until(future.done, 10.0)
    assert all(result.successful for result in future.result().results)


def test_class_filter_and_score_threshold_set_at_run_time(graph):
    set_remote_parameters(graph, ['person'], 0.55)
    try:
        classes = ['person', 'person', 'chair', 'person']      # scores 0.5, 0.6, 0.7, 0.8
        obstacles, _, _ = graph.publish_scene(render(PEOPLE), 60.0,
                                              detections_message(PEOPLE, 60.0, classes))
        assert [detection.id for detection in obstacles.detections] == ['track1', 'track3']
    finally:
        set_remote_parameters(graph, [], 0.0)


def test_best_effort_publishers_are_followed(graph):
    """Input QoS 'auto': a best-effort publisher joining the reliable ones turns the
    subscriptions best effort, so its messages are received too."""
    publishers = [graph.probe.node.create_publisher(msg_type, graph._topic(topic),
                                                    qos_profile('sensor_data', depth=5))
                  for msg_type, topic in ((Image, 'depth/image'),
                                          (CameraInfo, 'depth/camera_info'),
                                          (Detection2DArray, 'detections'))]
    obstacles, _, _ = graph.publish_scene(render(PEOPLE), 70.0,
                                          detections_message(PEOPLE, 70.0), publishers=publishers)
    assert obstacles is not None, graph.process.output()
    assert_obstacles_match(obstacles, PEOPLE)
    assert 'depth/image best_effort' in graph.process.output()
