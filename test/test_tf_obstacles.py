"""obstacle_node's ``target_frame`` with real tf2_ros over DDS.

obstacle_node runs as its own process (default parameters, as external checks start it); the
test publishes the robot's static transforms base_link -> camera_link -> optical frame (names
unique to this run), the known scene of test_fusion.py and its detections, and checks that the
obstacles published in base_link are the optical-frame ones moved by the known transform.
"""
import math
import time
import uuid

import numpy as np
import pytest
from geometry_msgs.msg import TransformStamped
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters
from visualization_msgs.msg import Marker

from midas_ros.ros.conversions import intrinsics_to_camera_info
from test_fusion import INTRINSICS, PEOPLE, render
from test_obstacle_node import Graph, depth_message, detections_message, stamp, stamp_of

tf2_ros = pytest.importorskip(
    'tf2_ros', reason='tf2_ros is not installed (plain PyPI venv): install ../shared/ros2_src '
    'or a ROS 2 distribution to test the TF paths')

TAG = uuid.uuid4().hex[:6]
BASE, LINK, OPTICAL = f'base_link_{TAG}', f'camera_link_{TAG}', f'camera_optical_frame_{TAG}'
# camera_link in base_link: 25 cm ahead, 5 cm right, 1.1 m up, pitched 12 deg down, yawed 4.
LINK_XYZ, LINK_PITCH, LINK_YAW = (0.25, -0.05, 1.1), math.radians(12.0), math.radians(4.0)


def rot_y(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def base_from_optical():
    """The rig's 4x4 transform, composed here from the two joints (not with package code)."""
    link_from_optical = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)
    transform = np.eye(4)
    transform[:3, :3] = rot_z(LINK_YAW) @ rot_y(LINK_PITCH) @ link_from_optical
    transform[:3, 3] = LINK_XYZ
    return transform


def quaternion_of(rotation):
    """(x, y, z, w) of a rotation matrix (trace method; fine away from 180 degrees)."""
    w = math.sqrt(1.0 + np.trace(rotation)) / 2.0
    return np.array([(rotation[2, 1] - rotation[1, 2]) / (4 * w),
                     (rotation[0, 2] - rotation[2, 0]) / (4 * w),
                     (rotation[1, 0] - rotation[0, 1]) / (4 * w), w])


def static_transform(parent, child, xyz, rotation):
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    msg.transform.translation.x, msg.transform.translation.y, msg.transform.translation.z = xyz
    r = msg.transform.rotation
    r.x, r.y, r.z, r.w = (float(v) for v in quaternion_of(rotation))
    return msg


@pytest.fixture(scope='module')
def graph(tmp_path_factory):
    graph = Graph(tmp_path_factory.mktemp('obstacle_tf'))
    graph.static_tf = tf2_ros.StaticTransformBroadcaster(graph.probe.node)
    graph.static_tf.sendTransform([
        static_transform(BASE, LINK, LINK_XYZ, rot_z(LINK_YAW) @ rot_y(LINK_PITCH)),
        static_transform(LINK, OPTICAL, (0.0, 0.0, 0.0),
                         np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float))])
    yield graph
    assert graph.close() == 0, graph.process.output()


def set_target_frame(graph, frame):
    assert graph.parameters.wait_for_service(timeout_sec=10.0)
    request = SetParameters.Request(parameters=[ParameterMsg(
        name='target_frame', value=ParameterValue(type=ParameterType.PARAMETER_STRING,
                                                  string_value=frame))])
    future = graph.parameters.call_async(request)
    graph.probe.spin_until(future.done, 10.0)
    assert all(result.successful for result in future.result().results)


def publish_scene(graph, when, panels=PEOPLE, timeout=15.0, frame=OPTICAL):
    """Depth (in ``frame``) + camera_info + detections stamped ``when``, re-sent until
    ``obstacles/nearest`` of that stamp arrives; what came back for that stamp."""
    depth_msg = depth_message(render(panels), when)
    depth_msg.header.frame_id = frame
    info = intrinsics_to_camera_info(INTRINSICS, depth_msg.header)
    detections = detections_message(panels, when)
    wanted = detections.header.stamp
    state = {'next': 0.0}

    def step():
        if time.monotonic() >= state['next']:
            graph.depth_pub.publish(depth_msg)
            graph.info_pub.publish(info)
            graph.detections_pub.publish(detections)
            state['next'] = time.monotonic() + 0.3

    def find(messages):
        return next((m for m in messages if stamp_of(m) == wanted), None)
    graph.probe.spin_until(lambda: find(graph.nearest) is not None, timeout, step)
    # The other two come in the same callback, just before the Range: a moment for delivery.
    graph.probe.spin_until(lambda: find(graph.obstacles) and find(graph.markers), 1.0)
    return find(graph.obstacles), find(graph.markers), find(graph.nearest)


def centres(array):
    return np.array([[d.bbox.center.position.x, d.bbox.center.position.y,
                      d.bbox.center.position.z] for d in array.detections])


def test_obstacles_in_base_link_are_the_optical_ones_moved_by_the_transform(graph):
    """(b) target_frame:=base_link: every number moved by the known transform, to 1 mm."""
    optical, optical_markers, optical_range = publish_scene(graph, 200.0)
    assert optical is not None, graph.process.output()[-3000:]
    assert optical.header.frame_id == OPTICAL
    set_target_frame(graph, BASE)
    try:
        moved, markers, nearest = publish_scene(graph, 201.0)
    finally:
        set_target_frame(graph, '')
    assert moved is not None, graph.process.output()[-3000:]
    transform = base_from_optical()
    expected = centres(optical) @ transform[:3, :3].T + transform[:3, 3]
    assert moved.header.frame_id == BASE
    assert np.abs(centres(moved) - expected).max() < 1e-3
    assert len(moved.detections) == len(PEOPLE)
    # Every obstacle stands on the floor ahead of the robot: base_link heights and x make sense.
    assert (centres(moved)[:, 0] > 2.0).all() and (np.abs(centres(moved)[:, 2]) < 2.0).all()
    rotation = quaternion_of(transform[:3, :3])
    for before, after in zip(optical.detections, moved.detections):
        assert after.header.frame_id == BASE
        q = after.bbox.center.orientation
        assert abs(abs(np.dot([q.x, q.y, q.z, q.w], rotation)) - 1.0) < 1e-6
        assert (after.bbox.size.x, after.bbox.size.y, after.bbox.size.z) == (
            before.bbox.size.x, before.bbox.size.y, before.bbox.size.z)
        assert after.results[0].pose.pose.position == after.bbox.center.position
    cubes = [m for m in markers.markers if m.type == Marker.CUBE]
    labels = [m for m in markers.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert all(m.header.frame_id == BASE for m in markers.markers)
    cube_centres = np.array([[m.pose.position.x, m.pose.position.y, m.pose.position.z]
                             for m in cubes])
    assert np.abs(cube_centres - expected).max() < 1e-3
    # Labels above their boxes: higher in base_link (z up) than the box centres.
    assert all(label.pose.position.z > cube.pose.position.z + 0.2
               for label, cube in zip(labels, cubes))
    # The Range keeps its own frame (x forward at the camera) and number.
    assert nearest.header.frame_id == optical_range.header.frame_id == 'camera_depth_frame'
    assert nearest.range == pytest.approx(optical_range.range, abs=1e-6)
    assert optical_markers.markers[0].header.frame_id == OPTICAL


def test_missing_transform_publishes_no_obstacles(graph):
    """(d) No transform to target_frame: no obstacles or markers for that detection (never
    optical numbers labelled base_link), a warning saying why; the Range still comes."""
    set_target_frame(graph, f'nowhere_{TAG}')
    try:
        obstacles, markers, nearest = publish_scene(graph, 210.0)
    finally:
        set_target_frame(graph, '')
    assert nearest is not None and math.isfinite(nearest.range)
    assert obstacles is None and markers is None
    assert all(m.header.frame_id != f'nowhere_{TAG}' for m in graph.obstacles)
    assert 'obstacles and markers not published: no transform' in graph.process.output()
    # The node is fine: with the frame back, the next detection is published.
    obstacles, _, _ = publish_scene(graph, 211.0)
    assert obstacles is not None and obstacles.header.frame_id == OPTICAL


def test_empty_detections_are_published_in_target_frame(graph):
    set_target_frame(graph, BASE)
    try:
        obstacles, _, nearest = publish_scene(graph, 220.0, panels=[])
    finally:
        set_target_frame(graph, '')
    assert obstacles is not None and obstacles.header.frame_id == BASE
    assert not obstacles.detections and nearest.range == math.inf


def test_a_moving_camera_is_looked_up_at_the_detection_stamp(graph):
    """A tilting head: the transform between two TF samples is interpolated at the detection
    stamp, so the obstacles are where the camera looked at that instant."""
    head, optical = f'head_{TAG}', f'head_optical_{TAG}'
    link_from_optical = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)
    graph.static_tf.sendTransform([
        static_transform(BASE, LINK, LINK_XYZ, rot_z(LINK_YAW) @ rot_y(LINK_PITCH)),
        static_transform(LINK, OPTICAL, (0.0, 0.0, 0.0), link_from_optical),
        static_transform(head, optical, (0.0, 0.0, 0.0), link_from_optical)])
    broadcaster = tf2_ros.TransformBroadcaster(graph.probe.node)
    samples = []
    for when, pitch in ((229.9, 0.0), (230.1, 0.2)):       # pitch 0.1 rad at 230.0
        sample = static_transform(BASE, head, (0.1, 0.0, 1.2 + pitch), rot_y(pitch))
        sample.header.stamp = stamp(when)
        samples.append(sample)
    graph.probe.spin_until(lambda: broadcaster.pub_tf.get_subscription_count() > 0, 10.0)
    set_target_frame(graph, BASE)
    try:
        for _ in range(3):      # volatile /tf: the first samples may precede discovery
            broadcaster.sendTransform(samples)
            graph.probe.spin_until(lambda: False, 0.2)
        moved, _, _ = publish_scene(graph, 230.0, frame=optical)
    finally:
        set_target_frame(graph, '')
    assert moved is not None and moved.header.frame_id == BASE, graph.process.output()[-3000:]
    optical_centres = centres(publish_scene(graph, 231.0)[0])   # same scene, optical frame
    at_stamp = np.eye(4)
    at_stamp[:3, :3] = rot_y(0.1) @ link_from_optical
    at_stamp[:3, 3] = (0.1, 0.0, 1.3)
    expected = optical_centres @ at_stamp[:3, :3].T + at_stamp[:3, 3]
    assert np.abs(centres(moved) - expected).max() < 1e-3


def test_the_transform_at_the_detection_stamp_is_waited_for(graph):
    """Public report d: odometry on /tf arrives after the depth frame and its detections.
    obstacle_node waits (bounded, without blocking the executor that receives /tf) for the
    transform at the detection's stamp instead of dropping the obstacles ('extrapolation into
    the future'); placed with the transform interpolated at that stamp."""
    odom = f'odom_{TAG}'
    broadcaster = tf2_ros.TransformBroadcaster(graph.probe.node)
    graph.probe.spin_until(lambda: broadcaster.pub_tf.get_subscription_count() > 0, 10.0)

    def odometry(when, x):
        sample = static_transform(odom, BASE, (x, 0.0, 0.0), np.eye(3))
        sample.header.stamp = stamp(when)
        return sample
    optical_centres = centres(publish_scene(graph, 239.0)[0])
    set_target_frame(graph, odom)
    try:
        for _ in range(3):      # volatile /tf: the first samples may precede discovery
            broadcaster.sendTransform(odometry(239.9, 1.0))
            graph.probe.spin_until(lambda: False, 0.2)
        when = 240.0
        depth_msg = depth_message(render(PEOPLE), when)
        depth_msg.header.frame_id = OPTICAL
        info = intrinsics_to_camera_info(INTRINSICS, depth_msg.header)
        detections = detections_message(PEOPLE, when)
        graph.depth_pub.publish(depth_msg)
        graph.info_pub.publish(info)
        graph.detections_pub.publish(detections)

        def arrived(messages):
            return next((m for m in messages if stamp_of(m) == detections.header.stamp), None)
        assert graph.probe.spin_until(lambda: arrived(graph.nearest), 10.0)
        graph.probe.spin_until(lambda: False, 0.05)    # the odometry comes 50 ms later
        broadcaster.sendTransform(odometry(240.1, 1.2))
        assert graph.probe.spin_until(lambda: arrived(graph.obstacles), 5.0), \
            graph.process.output()[-3000:]
    finally:
        set_target_frame(graph, '')
    moved = arrived(graph.obstacles)
    assert moved.header.frame_id == odom
    transform = base_from_optical()
    transform[0, 3] += 1.1          # odom <- base_link at 240.0: x interpolated to 1.1 m
    expected = optical_centres @ transform[:3, :3].T + transform[:3, 3]
    assert np.abs(centres(moved) - expected).max() < 1e-3
