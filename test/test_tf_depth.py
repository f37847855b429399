"""depth_node geometry from the robot's TF tree, with real tf2_ros over DDS.

The test publishes the robot's transforms (static ``camera_link -> optical``, dynamic
``base_footprint -> camera_link`` with a pitching camera, a lidar known only to TF) from its own
node; depth_node's TransformListener receives them over DDS. The network is replaced by an
exact one: each image carries, in its 24 bits per pixel, the scene's true relative inverse depth
(the true inverse depth through an affine map that changes per frame, as MiDaS's does), so
every metric claim is checked against depth ray-traced here, independently of the package.
"""
import math
import uuid

import numpy as np
import pytest
from sensor_msgs.msg import PointCloud2, PointField

from exact_depth import (HEIGHT_M, INTRINSICS, OPTICAL_IN_LINK, PITCH_DEG, InProcessDepthNode,
                         depth_for, depth_probe, encoded_image, median_error, now, quaternion,
                         render, status_after, transform_msg)
from midas_ros.ros.qos import qos_profile
from ros_process import unique_namespace

tf2_ros = pytest.importorskip(
    'tf2_ros', reason='tf2_ros is not installed (plain PyPI venv): install ../shared/ros2_src '
    'or a ROS 2 distribution to test the TF paths')
from midas_ros.ros.tf_frames import TransformUnavailable  # noqa: E402


@pytest.fixture(scope='module')
def rig():
    """Frames unique to this run, the node under test, and a probe that publishes TF."""
    tag = uuid.uuid4().hex[:6]
    names = ('base_footprint', 'camera_link', 'camera_optical_frame', 'lidar')
    frames = {name: f'{name}_{tag}' for name in names}
    namespace = unique_namespace('tfdepth')
    node = InProcessDepthNode(namespace, {
        'scale.mode': 'ground_plane', 'scale.camera_height': HEIGHT_M,
        'scale.camera_pitch_deg': PITCH_DEG, 'scale.time_constant': 0.0,
        'scale.anchor_type': 'points', 'scale.anchor_timeout': 10.0,
        'depth.max': 30.0, 'cloud.enabled': False, 'diagnostics.period': 0.1})
    probe = depth_probe('tf_probe', namespace)
    probe.static_tf = tf2_ros.StaticTransformBroadcaster(probe.node)
    probe.tf = tf2_ros.TransformBroadcaster(probe.node)
    probe.static_tf.sendTransform(transform_msg(frames['camera_link'],
                                                frames['camera_optical_frame'], (0, 0, 0),
                                                OPTICAL_IN_LINK))
    probe.anchor_pub = probe.node.create_publisher(PointCloud2, f'{namespace}/anchors',
                                                   qos_profile('sensor_data'))
    # Dynamic transforms are volatile: start only once the node's listener is matched and
    # has the static one.

    def ready():
        try:
            node.node.tf.lookup(frames['camera_link'], frames['camera_optical_frame'])
        except TransformUnavailable:
            return False
        return probe.tf.pub_tf.get_subscription_count() > 0
    assert probe.spin_until(ready, 20.0), 'the node never received the static transform'
    yield node, probe, frames, namespace
    probe.close()
    node.close()


def test_ground_plane_follows_a_pitching_camera_through_tf(rig):
    """(a) Pitch oscillating +-5 deg: ground_plane from TF stays within 2% of the truth on every
    frame; the parameter mode (fixed 10 deg pitch) does not."""
    node, probe, frames, namespace = rig
    offsets = [0.0, 5.0, -5.0, 3.5, -3.5, 5.0]
    rng = np.random.default_rng(3)
    errors = {'tf': [], 'parameters': []}
    for mode in ('tf', 'parameters'):
        node.set(scale__ground_frame=frames['base_footprint'] if mode == 'tf' else '')
        for offset in offsets:
            pitch = math.radians(PITCH_DEG + offset)
            when = now(probe)
            camera = transform_msg(frames['base_footprint'], frames['camera_link'],
                                   (0.3, 0.0, HEIGHT_M), quaternion(0, pitch, 0), when)
            truth = render(pitch)
            alpha, beta = rng.uniform(0.8, 1.5), rng.uniform(0.05, 0.3)
            image = encoded_image(alpha / truth + beta, when, frames['camera_optical_frame'])
            errors[mode].append(median_error(depth_for(probe, image, when, [camera]), truth))
            if mode == 'tf':
                status = status_after(probe, namespace, 'floor source')
                assert status['floor source'].startswith('tf '), status
                assert float(status['camera pitch (deg)']) == pytest.approx(
                    PITCH_DEG + offset, abs=0.01)
                assert float(status['camera height (m)']) == pytest.approx(HEIGHT_M, abs=1e-4)
                assert float(status['camera roll (deg)']) == pytest.approx(0.0, abs=0.01)
    assert max(errors['tf']) < 0.02, errors
    assert max(errors['parameters']) > 0.05, errors
    assert errors['parameters'][0] < 0.02, errors   # at the assumed pitch it is right, of course


def test_ground_plane_honours_the_roll_from_tf(rig):
    """A chassis rolled 6 degrees (right side down): TF's roll is used, the parameters' 0 is
    not, and /diagnostics reports it."""
    node, probe, frames, namespace = rig
    node.set(scale__ground_frame=frames['base_footprint'])
    pitch, roll = math.radians(PITCH_DEG), math.radians(6.0)
    when = now(probe)
    camera = transform_msg(frames['base_footprint'], frames['camera_link'], (0.0, 0.0, HEIGHT_M),
                           quaternion(roll, pitch, 0), when)
    truth = render(pitch, roll)
    image = encoded_image(1.2 / truth + 0.1, when, frames['camera_optical_frame'])
    try:
        assert median_error(depth_for(probe, image, when, [camera]), truth) < 0.02
        status = status_after(probe, namespace, 'floor source')
        assert float(status['camera roll (deg)']) == pytest.approx(6.0, abs=0.01), status
        assert float(status['camera pitch (deg)']) == pytest.approx(PITCH_DEG, abs=0.01)
        node.set(scale__ground_frame='')
        when = now(probe)
        image = encoded_image(1.2 / truth + 0.1, when, frames['camera_optical_frame'])
        assert median_error(depth_for(probe, image, when), truth) > 0.02
    finally:
        node.set(scale__ground_frame='')


def test_ground_plane_falls_back_to_the_parameters_without_a_transform(rig):
    """(d) An unknown ground frame: depth still comes, from the parameters, and /diagnostics
    says so with the height and pitch it used."""
    node, probe, frames, namespace = rig
    node.set(scale__ground_frame=f"nowhere_{frames['base_footprint']}")
    when = now(probe)
    truth = render(math.radians(PITCH_DEG))
    image = encoded_image(1.2 / truth + 0.1, when, frames['camera_optical_frame'])
    assert median_error(depth_for(probe, image, when), truth) < 0.02
    status = status_after(probe, namespace, 'floor source')
    assert status['floor source'].startswith('parameters (no transform'), status
    assert float(status['camera pitch (deg)']) == pytest.approx(PITCH_DEG, abs=1e-3)
    assert float(status['camera height (m)']) == pytest.approx(HEIGHT_M, abs=1e-4)
    node.set(scale__ground_frame='')


def xyz_cloud(points, frame, when):
    points = np.ascontiguousarray(points, dtype='<f4')
    msg = PointCloud2(height=1, width=len(points), is_bigendian=False, point_step=12,
                      row_step=12 * len(points), is_dense=True, data=points.tobytes())
    msg.fields = [PointField(name=axis, offset=4 * index, datatype=PointField.FLOAT32, count=1)
                  for index, axis in enumerate('xyz')]
    msg.header.frame_id, msg.header.stamp = frame, when
    return msg


# The lidar in the camera body frame (camera_link): 12 cm behind, 20 cm left, 15 cm above,
# yawed 10 degrees left and pitched 5 degrees down.
LIDAR_XYZ, LIDAR_RPY = (-0.12, 0.2, 0.15), (0.0, math.radians(5.0), math.radians(10.0))


def test_sparse_anchors_from_a_frame_known_only_to_tf(rig):
    """(c) Lidar points in a frame only TF knows land where scale.anchor_extrinsic with the same
    pose puts them: both give the exact scale; without the transform they fall back."""
    node, probe, frames, namespace = rig
    probe.static_tf.sendTransform([
        transform_msg(frames['camera_link'], frames['camera_optical_frame'], (0, 0, 0),
                      OPTICAL_IN_LINK),
        transform_msg(frames['camera_link'], frames['lidar'], LIDAR_XYZ,
                      quaternion(*LIDAR_RPY))])
    pitch = math.radians(PITCH_DEG)
    truth = render(pitch)
    alpha, beta = 1.3, 0.2
    # Points the lidar measures: the true surface at 60 scattered pixels, in the lidar frame
    # (optical -> camera_link -> lidar, composed here with our own rotation code).
    rng = np.random.default_rng(5)
    rows = rng.integers(10, INTRINSICS.height, 60)
    cols = rng.integers(0, INTRINSICS.width, 60)
    z = truth[rows, cols]
    optical = np.stack([(cols - INTRINSICS.cx) / INTRINSICS.fx * z,
                        (rows - INTRINSICS.cy) / INTRINSICS.fy * z, z], axis=1)
    link_from_optical = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)
    roll, lidar_pitch, yaw = LIDAR_RPY
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(lidar_pitch), math.sin(lidar_pitch)
    link_from_lidar = (np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
                       @ np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]]))
    in_link = optical @ link_from_optical.T
    in_lidar = (in_link - np.array(LIDAR_XYZ)) @ link_from_lidar   # R^T (p - t)
    node.set(scale__mode='sparse', scale__ground_frame='')
    try:
        results = {}
        for case, frame, extrinsic in (
                ('tf', frames['lidar'], [0.0] * 6),
                ('extrinsic', '', [*LIDAR_XYZ, *LIDAR_RPY]),
                ('fallback', f"unknown_{frames['lidar']}", [0.0] * 6)):
            node.set(scale__anchor_extrinsic=[float(v) for v in extrinsic])
            when = now(probe)
            probe.anchor_pub.publish(xyz_cloud(in_lidar, frame, when))
            probe.spin_until(lambda: False, 0.3)
            image = encoded_image(alpha / truth + beta, when, frames['camera_optical_frame'])
            depth = depth_for(probe, image, when)
            status = status_after(probe, namespace, 'anchor transform source')
            results[case] = (median_error(depth, truth), status)
        error, status = results['tf']
        assert status['anchor transform source'] == (
            f"tf {frames['lidar']} -> {frames['camera_optical_frame']}"), status
        assert error < 1e-3 and int(status['fit samples']) == 60, results
        error, status = results['extrinsic']
        assert status['anchor transform source'].startswith('scale.anchor_extrinsic'), status
        assert error < 1e-3 and int(status['fit samples']) == 60, results
        assert float(results['tf'][1]['scale a']) == pytest.approx(
            float(status['scale a']), rel=1e-4)
        # Unknown frame: the (here wrong, all-zero) extrinsic is used, and it shows.
        error, status = results['fallback']
        assert error > 0.01, results
        assert status['anchor transform source'].startswith(
            'scale.anchor_extrinsic (no transform'), status
    finally:
        node.set(scale__mode='ground_plane', scale__anchor_extrinsic=[0.0] * 6)
