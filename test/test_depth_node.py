"""depth_node end to end: its own process, real DDS, every output checked against its input.

Runs the exact command external checks use (random weights on CPU) under a fresh namespace.
"""
import math
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2

from midas_ros.backends.choice import choose_backend
from midas_ros.depth_edges import DepthEdgeFilter
from midas_ros.geometry import DepthToScan, Intrinsics
from midas_ros.ros.conversions import (array_to_image, cloud_to_rgb, cloud_to_xyz,
                                       image_to_array, intrinsics_to_camera_info)
from midas_ros.ros.qos import qos_profile
from ros_process import NodeProcess, RosTestNode, unique_namespace

WIDTH, HEIGHT = 640, 480
INTRINSICS = Intrinsics(WIDTH, HEIGHT, 500.0, 510.0, 315.0, 245.0)
OUTPUTS = {'depth/image': Image, 'depth/relative': Image, 'depth/colormap': Image,
           'depth/camera_info': CameraInfo, 'depth/points': PointCloud2, 'depth/scan': LaserScan}


def textured_image(width=WIDTH, height=HEIGHT, seed=0):
    """A photo-like rgb8 test image: gradients, stripes and noise."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([128 + 100 * np.sin(u / 23.0), 255 * v / height,
                      128 + 80 * np.cos((u + v) / 17.0)], axis=-1)
    image += rng.normal(0, 8, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope='module')
def depth_node(tmp_path_factory):
    namespace = unique_namespace('depth')
    process = NodeProcess('depth_node', [
        '-r', f'__ns:={namespace}', '-p', 'model.pretrained:=false', '-p', 'device:=cpu',
        '-p', 'scan.enabled:=true'], tmp_path=tmp_path_factory.mktemp('depth_node'))
    probe = RosTestNode('depth_probe')
    for topic, msg_type in OUTPUTS.items():
        probe.collect(msg_type, f'{namespace}/{topic}', qos_profile('sensor_data', depth=5))
    image_pub = probe.node.create_publisher(Image, f'{namespace}/image',
                                            qos_profile('sensor_data'))
    info_pub = probe.node.create_publisher(CameraInfo, f'{namespace}/camera_info',
                                           qos_profile('sensor_data'))
    yield namespace, process, probe, image_pub, info_pub
    probe.close()
    process.stop()


def _stamp(seconds):
    return Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)))


def _send_until(probe, publishers, messages, condition, timeout):
    """Publish ``messages`` every ~0.2 s (DDS discovery takes a moment) until ``condition``."""
    state = {'next': 0.0}

    def step():
        now = time.monotonic()
        if now >= state['next']:
            for publisher, message in zip(publishers, messages):
                publisher.publish(message)
            state['next'] = now + 0.2
    return probe.spin_until(condition, timeout, step)


def _received_with_stamp(probe, namespace, topic, stamp):
    return [m for m in probe.received[f'{namespace}/{topic}'] if m.header.stamp == stamp]


def test_every_output_matches_the_input(depth_node):
    namespace, process, probe, image_pub, info_pub = depth_node
    rgb = textured_image()
    stamp = _stamp(100.25)
    image = array_to_image(rgb, 'rgb8')
    image.header.stamp, image.header.frame_id = stamp, 'test_cam_optical_frame'
    info = intrinsics_to_camera_info(INTRINSICS)
    info.header = image.header

    def all_outputs():
        return all(_received_with_stamp(probe, namespace, topic, stamp) for topic in OUTPUTS)
    assert _send_until(probe, [info_pub, image_pub], [info, image], all_outputs, 120), \
        f'not every output arrived; node log:\n{process.output()[-3000:]}'

    outputs = {topic: _received_with_stamp(probe, namespace, topic, stamp)[-1]
               for topic in OUTPUTS}
    for topic, msg in outputs.items():
        expected_frame = 'camera_depth_frame' if topic == 'depth/scan' else image.header.frame_id
        assert msg.header.frame_id == expected_frame, topic
    depth_msg, relative_msg = outputs['depth/image'], outputs['depth/relative']
    assert (depth_msg.encoding, relative_msg.encoding) == ('32FC1', '32FC1')
    assert outputs['depth/colormap'].encoding == 'bgr8'
    for msg in (depth_msg, relative_msg, outputs['depth/colormap']):
        assert (msg.width, msg.height) == (WIDTH, HEIGHT)
    depth, _ = image_to_array(depth_msg)
    relative, _ = image_to_array(relative_msg)
    valid = np.isfinite(depth)
    # Random weights: the network's ReLU output is 0 (infinitely far: +inf, REP 118) in places.
    assert valid.sum() > 100
    assert np.all(depth[valid] > 0)
    assert np.all(relative[valid] > 0) and np.all(depth[relative <= 0] == np.inf)
    # Metric depth is 1 / (a r + b): with the uncalibrated default (b = 0) depth * r is constant.
    product = depth[valid].astype(np.float64) * relative[valid]
    assert np.allclose(product, np.median(product), rtol=1e-4)

    info_out = outputs['depth/camera_info']
    assert (info_out.width, info_out.height) == (WIDTH, HEIGHT)
    assert np.allclose(info_out.k, INTRINSICS.k())

    cloud = outputs['depth/points']
    assert (cloud.height, cloud.width) == (HEIGHT, WIDTH)
    assert [f.name for f in cloud.fields] == ['x', 'y', 'z', 'rgb']
    xyz = cloud_to_xyz(cloud)
    # Depth edges (the core's filter with the default radius and rtol) are no-reading points.
    edges = DepthEdgeFilter().edges(depth)
    assert np.array_equal(np.isnan(xyz[..., 2]), ~valid | edges)
    valid &= ~edges
    np.testing.assert_allclose(xyz[..., 2][valid], depth[valid], rtol=1e-6)
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    fx, fy, cx, cy = info_out.k[0], info_out.k[4], info_out.k[2], info_out.k[5]
    np.testing.assert_allclose(xyz[..., 0][valid], ((u - cx) / fx * depth)[valid], rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(xyz[..., 1][valid], ((v - cy) / fy * depth)[valid], rtol=1e-4,
                               atol=1e-5)
    assert np.array_equal(cloud_to_rgb(cloud), rgb)

    scan = outputs['depth/scan']
    assert len(scan.ranges) == WIDTH
    assert scan.angle_min < 0 < scan.angle_max   # index 0 looks right, the last one left
    # The scan is the core's depth -> scan conversion of the published depth without edges.
    filtered = np.where(edges, np.float32(np.nan), depth)
    expected = DepthToScan(INTRINSICS, 1, scan.range_min, scan.range_max).convert(filtered)
    assert scan.angle_min == pytest.approx(expected.angle_min)
    assert scan.angle_increment == pytest.approx(expected.angle_increment)
    np.testing.assert_array_equal(np.asarray(scan.ranges, np.float32), expected.ranges)


def _set_parameters(probe, namespace, values):
    return probe.set_parameters_atomically(f'{namespace}/depth_node', values)


def test_bad_parameters_are_rejected_whole(depth_node):
    namespace, process, probe, _, _ = depth_node
    result = _set_parameters(probe, namespace, {'scale.mode': 'magic'})
    assert not result.successful and 'magic' in result.reason
    # depth.min is fine alone, but not above depth.max: nothing of the pair may apply.
    result = _set_parameters(probe, namespace, {'depth.min': 50.0, 'depth.max': 30.0})
    assert not result.successful and 'depth.min' in result.reason
    result = _set_parameters(probe, namespace, {'depth.max': math.nan})
    assert not result.successful
    result = _set_parameters(probe, namespace, {'scale.mode': 'fixed', 'scale.a': 0.5})
    assert result.successful, result.reason
    result = _set_parameters(probe, namespace, {'scale.mode': 'uncalibrated'})
    assert result.successful, result.reason


def _bad_images():
    rgb = textured_image(64, 48)
    wrong_encoding = array_to_image(rgb, 'rgb8')
    wrong_encoding.encoding = 'yuv422_yuy2'
    short_step = array_to_image(rgb, 'rgb8')
    short_step.step = 10
    truncated = array_to_image(rgb, 'rgb8')
    truncated.data = truncated.data[:100]
    empty = Image(encoding='rgb8')
    depth_as_camera = array_to_image(np.ones((48, 64), np.float32), '32FC1')
    return {'unsupported image encoding': wrong_encoding, 'step 10': short_step,
            'data holds 100 bytes': truncated, 'zero-size': empty,
            # A depth image is refused naming only the encodings depth_node can use.
            "'32FC1' (supported: rgb8, bgr8, rgba8, bgra8, mono8)": depth_as_camera}


def test_bad_input_is_reported_and_the_node_keeps_running(depth_node):
    namespace, process, probe, image_pub, info_pub = depth_node
    for index, (reason, bad) in enumerate(_bad_images().items()):
        bad.header.stamp = _stamp(200 + index)
        image_pub.publish(bad)
        probe.spin_until(lambda: reason in process.output(), 10)
        assert reason in process.output(), f'no warning for {reason!r}'
    # A CameraInfo with zero focal length, then a new resolution mid-stream: still served.
    broken_info = intrinsics_to_camera_info(INTRINSICS)
    broken_info.k, broken_info.p = [0.0] * 9, [0.0] * 12
    small = array_to_image(textured_image(320, 240), 'rgb8')
    stamp = small.header.stamp = _stamp(300.5)
    small.header.frame_id = 'test_cam_optical_frame'
    assert _send_until(
        probe, [info_pub, image_pub], [broken_info, small],
        lambda: all(_received_with_stamp(probe, namespace, topic, stamp)
                    for topic in ('depth/image', 'depth/camera_info')), 60), \
        process.output()[-3000:]
    out = _received_with_stamp(probe, namespace, 'depth/image', stamp)[-1]
    assert (out.width, out.height) == (320, 240)
    assert 'camera_info unusable' in process.output()
    info_out = _received_with_stamp(probe, namespace, 'depth/camera_info', stamp)[-1]
    assert info_out.k[0] > 0   # the field-of-view default, not the broken K
    assert process.alive()


def _start_and_wait(ros_args, tmp_path, env=None, timeout=60):
    command = [sys.executable, '-m', 'midas_ros', 'depth_node', '--ros-args',
               '-r', f"__ns:={unique_namespace('fail')}", *ros_args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})), cwd=str(tmp_path))


def test_unknown_model_fails_at_start_listing_the_valid_ones(tmp_path):
    result = _start_and_wait(['-p', 'model.name:=midas_v9_tiny', '-p', 'model.pretrained:=false',
                              '-p', 'device:=cpu'], tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert 'midas_v9_tiny' in output and 'dpt_swin2_tiny_256' in output
    assert 'Traceback' not in output


def test_missing_weights_fail_at_start_saying_where_it_looked(tmp_path):
    result = _start_and_wait(['-p', 'device:=cpu'], tmp_path,
                             env={'TORCH_HOME': str(tmp_path / 'torch'),
                                  'MIDAS_WEIGHTS_DIR': str(tmp_path / 'weights')})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert str(tmp_path / 'torch') in output and str(tmp_path / 'weights') in output
    assert 'https://github.com/isl-org/MiDaS/releases/download/v2_1/midas_v21_small_256.pt' \
        in output
    assert 'Traceback' not in output


def test_fixed_scale_set_at_run_time_gives_exactly_that_depth(depth_node):
    namespace, process, probe, image_pub, info_pub = depth_node
    result = _set_parameters(probe, namespace, {'scale.mode': 'fixed', 'scale.a': 20.0,
                                                'scale.b': 0.05, 'scale.time_constant': 0.0})
    assert result.successful, result.reason
    image = array_to_image(textured_image(), 'rgb8')
    stamp = image.header.stamp = _stamp(400.0)
    info = intrinsics_to_camera_info(INTRINSICS)
    info.header = image.header
    topics = ('depth/image', 'depth/relative')
    assert _send_until(probe, [info_pub, image_pub], [info, image],
                       lambda: all(_received_with_stamp(probe, namespace, t, stamp)
                                   for t in topics), 60), process.output()[-3000:]
    depth, _ = image_to_array(_received_with_stamp(probe, namespace, 'depth/image', stamp)[-1])
    relative, _ = image_to_array(
        _received_with_stamp(probe, namespace, 'depth/relative', stamp)[-1])
    expected = 1.0 / (20.0 * relative.astype(np.float64) + 0.05)
    in_range = (expected >= 0.1) & (expected <= 20.0)     # depth.min / depth.max defaults
    assert in_range.any()
    np.testing.assert_allclose(depth[in_range], expected[in_range], rtol=1e-5)
    # REP 118, never NaN: beyond depth.max (or a r + b <= 0: at or beyond infinity) +inf,
    # nearer than depth.min -inf.
    assert np.all(depth[(expected > 20.0) | (expected < 0)] == np.inf)
    assert np.all(depth[(expected > 0) & (expected < 0.1)] == -np.inf)


def _latest_depth_status(diagnostics, namespace):
    """{key: value} of the newest depth_node status in ``diagnostics`` (messages), or {}."""
    name = f'{namespace}/depth_node: depth'
    for msg in reversed(diagnostics):
        for status in msg.status:
            if status.name == name:
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_diagnostics_report_scale_and_frame_statistics(depth_node):
    namespace, process, probe, _, _ = depth_node
    received = probe.collect(DiagnosticArray, '/diagnostics')
    assert probe.spin_until(lambda: _latest_depth_status(received, namespace), 10), \
        [s.name for m in received for s in m.status]
    values = _latest_depth_status(received, namespace)
    for key in ('scale mode', 'frames processed', 'frames dropped', 'frame rate (Hz)',
                'fit inlier ratio', 'fit residual', 'scale a', 'scale b',
                'intake per received frame (ms)', 'time deserialize (ms)', 'frames superseded'):
        assert key in values, key
    assert int(values['frames processed']) >= 1
    # model.backend auto (the default): the runtime chosen, why, and the thread budget.
    assert values['backend'] == choose_backend(torch.device('cpu'), 'fp32').backend
    assert values['backend reason']
    assert 'usable CPU(s)' in values['threads'] and 'passive waiting' in values['threads']


def test_without_subscribers_the_network_does_not_run(tmp_path):
    namespace = unique_namespace('lazy')
    process = NodeProcess('depth_node', ['-r', f'__ns:={namespace}', '-p',
                                         'model.pretrained:=false', '-p', 'device:=cpu',
                                         '-p', 'diagnostics.period:=0.5'], tmp_path=tmp_path)
    probe = RosTestNode('lazy_probe')
    try:
        diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
        image_pub = probe.node.create_publisher(Image, f'{namespace}/image',
                                                qos_profile('sensor_data'))
        image = array_to_image(textured_image(64, 48), 'rgb8')

        def counts():
            values = _latest_depth_status(diagnostics, namespace)
            return (int(values.get('frames skipped (no subscribers)', 0)),
                    int(values.get('frames processed', 0)))
        assert _send_until(probe, [image_pub], [image], lambda: counts()[0] >= 3, 60), \
            process.output()[-2000:]
        assert counts()[1] == 0
        # A subscriber appears: frames are processed again.
        probe.collect(Image, f'{namespace}/depth/image', qos_profile('sensor_data'))
        assert _send_until(probe, [image_pub], [image], lambda: counts()[1] >= 1, 60)
    finally:
        probe.close()
        process.stop()


def test_sparse_mode_projects_laser_anchors_into_the_image(depth_node):
    """A forward-looking 2D lidar at the camera (scale.anchor_extrinsic all zeros): its rays
    within the field of view land on the principal row and are all used by the fit."""
    namespace, process, probe, image_pub, info_pub = depth_node
    result = _set_parameters(probe, namespace, {'scale.mode': 'sparse'})
    assert result.successful, result.reason
    scan_pub = probe.node.create_publisher(LaserScan, f'{namespace}/anchors',
                                           qos_profile('sensor_data'))
    rays = 101
    half_fov = math.atan2(WIDTH / 2, INTRINSICS.fx) * 0.8
    scan = LaserScan(angle_min=-half_fov, angle_max=half_fov,
                     angle_increment=2 * half_fov / (rays - 1), range_min=0.1, range_max=30.0,
                     ranges=[3.0] * rays)
    # Plus rays behind the camera, which must not count.
    behind = LaserScan(angle_min=math.pi - 0.1, angle_max=math.pi + 0.1, angle_increment=0.01,
                       range_min=0.1, range_max=30.0, ranges=[3.0] * 21)
    received = probe.collect(DiagnosticArray, '/diagnostics')

    def samples():
        values = _latest_depth_status(received, namespace)
        return values.get('scale mode'), int(values.get('fit samples', 0))
    image = array_to_image(textured_image(), 'rgb8')
    info = intrinsics_to_camera_info(INTRINSICS)
    try:
        assert _send_until(probe, [scan_pub, info_pub, image_pub], [scan, info, image],
                           lambda: samples() == ('sparse', rays), 60), \
            (samples(), process.output()[-2000:])
        assert _send_until(probe, [scan_pub, info_pub, image_pub], [behind, info, image],
                           lambda: samples() == ('sparse', 0), 60), samples()
    finally:
        assert _set_parameters(probe, namespace, {'scale.mode': 'uncalibrated'}).successful


def test_a_30_hz_camera_gets_its_outputs_in_order(depth_node):
    """With frames in parallel (``inference.parallel_frames`` auto: 2 here when ONNX Runtime
    or OpenVINO is installed and 2 CPUs are usable) lanes finish in any order; what is
    published must still follow the camera: stamps only increase, on every output."""
    from midas_ros.cpu_budget import CpuBudget, parallel_frames
    namespace, process, probe, image_pub, info_pub = depth_node
    received = probe.collect(DiagnosticArray, '/diagnostics')
    image = array_to_image(textured_image(seed=3), 'rgb8')
    image.header.frame_id = 'test_cam_optical_frame'
    info = intrinsics_to_camera_info(INTRINSICS)
    state = {'sent': 0, 'next': time.monotonic()}

    def camera():
        if state['sent'] < 90 and time.monotonic() >= state['next']:
            image.header.stamp = _stamp(1000.0 + state['sent'] / 30.0)
            info.header = image.header
            info_pub.publish(info)
            image_pub.publish(image)
            state['sent'] += 1
            state['next'] += 1 / 30.0
    probe.spin_until(lambda: state['sent'] >= 90, 30, camera)
    probe.spin_until(lambda: False, 2.0)           # the last frames' outputs
    for topic in ('depth/image', 'depth/points', 'depth/camera_info'):
        stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9
                  for m in probe.received[f'{namespace}/{topic}']
                  if m.header.stamp.sec >= 1000]     # this test's frames only
        assert len(stamps) >= 5, (topic, len(stamps), process.output()[-2000:])
        assert all(b > a for a, b in zip(stamps, stamps[1:])), (topic, stamps)
    values = _latest_depth_status(received, namespace)
    assert values, 'no diagnostics from depth_node'
    expected, _ = parallel_frames(0, CpuBudget.detect(), 'cpu', values['backend'], 0)
    if expected > 1:
        assert f'{expected} frames in parallel' in values['threads'], values['threads']
