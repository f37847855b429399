"""depth_node with a metric Depth Anything V2 model, over real DDS, in every scale mode.

1. The real node process with ``depth_anything_v2_metric_hypersim_vits`` (random weights, CPU,
   ``model.input_size`` 70 to keep it fast): started in ``ground_plane`` mode, switched through
   every mode at run time; each frame's depth and diagnostics say what the mode does.
2. An in-process node whose "metric network" returns 0.8 x the ray-traced depth of a floor
   scene (a checkpoint trained on another camera): ``metric`` publishes those metres as they
   are, ``ground_plane`` corrects them with ONE factor to the truth.
"""
import math
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image

from exact_depth import (HEIGHT_M, PITCH_DEG, ExactDepthNode, ExactNetwork,
                         InProcessDepthNode, depth_for, depth_probe, encoded_image, render,
                         status_after)
from midas_ros.geometry import Intrinsics
from midas_ros.models.registry import get_config
from midas_ros.ros.conversions import array_to_image, image_to_array, intrinsics_to_camera_info
from midas_ros.ros.qos import qos_profile
from ros_process import NodeProcess, RosTestNode, unique_namespace

MODEL = 'depth_anything_v2_metric_hypersim_vits'
MAX_DEPTH = get_config(MODEL).max_depth


@pytest.fixture(scope='module')
def metric_node(tmp_path_factory):
    namespace = unique_namespace('metric')
    process = NodeProcess('depth_node', [
        '-r', f'__ns:={namespace}', '-p', f'model.name:={MODEL}', '-p', 'model.pretrained:=false',
        '-p', 'model.input_size:=70', '-p', 'model.backend:=torch', '-p', 'device:=cpu',
        '-p', 'inference.warmup_size:=[0, 0]', '-p', 'scale.mode:=ground_plane',
        '-p', 'depth.max:=30.0'], tmp_path=tmp_path_factory.mktemp('metric_node'))
    probe = RosTestNode('metric_probe')
    probe.collect(Image, f'{namespace}/depth/image', qos_profile('sensor_data', depth=5))
    probe.collect(Image, f'{namespace}/depth/relative', qos_profile('sensor_data', depth=5))
    probe.collect(DiagnosticArray, '/diagnostics')
    image_pub = probe.node.create_publisher(Image, f'{namespace}/image',
                                            qos_profile('sensor_data'))
    info_pub = probe.node.create_publisher(CameraInfo, f'{namespace}/camera_info',
                                           qos_profile('sensor_data'))
    yield namespace, process, probe, image_pub, info_pub
    probe.close()
    process.stop()


def _frame(probe, namespace, image_pub, info_pub, seconds, timeout=120):
    """Publish one 96x64 frame stamped ``seconds`` until its depth and relative depth arrive,
    then wait for the node's next diagnostics: (depth, relative, status key values)."""
    rng = np.random.default_rng(int(seconds))
    image = array_to_image(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), 'rgb8')
    image.header.stamp = Time(sec=int(seconds))
    image.header.frame_id = 'camera_optical_frame'
    info = intrinsics_to_camera_info(Intrinsics.from_fov(96, 64, 70.0))
    info.header = image.header
    topics = [f'{namespace}/depth/image', f'{namespace}/depth/relative']
    state = {'next': 0.0}

    def step():
        if time.monotonic() >= state['next']:
            info_pub.publish(info)
            image_pub.publish(image)
            state['next'] = time.monotonic() + 0.3

    def stamped(topic):
        return [m for m in probe.received[topic] if m.header.stamp == image.header.stamp]

    assert probe.spin_until(lambda: all(stamped(t) for t in topics), timeout, step), \
        f'no depth for the frame; node log:\n{probe.log()[-3000:]}'
    diagnostics = probe.received['/diagnostics']
    diagnostics.clear()     # the next status is about this frame (the last one processed)

    def status():
        for array in diagnostics:
            for entry in array.status:
                if entry.name.startswith(namespace):
                    return {kv.key: kv.value for kv in entry.values}
        return None
    assert probe.spin_until(lambda: status() is not None, 10.0), 'no diagnostics'
    depth, relative = (np.asarray(image_to_array(stamped(t)[-1])[0]) for t in topics)
    return depth, relative, status()


def test_metric_model_in_every_scale_mode(metric_node):
    namespace, process, probe, image_pub, info_pub = metric_node
    probe.log = process.output
    expectations = [   # (mode set, mode run, what 'scale fit' says)
        (None, 'ground_plane', "one factor fitted (ground_plane) to the network's metres"),
        ('sparse', 'sparse', "one factor fitted (sparse) to the network's metres"),
        ('fixed', 'fixed', "fixed a, b on the network's inverse metres"),
        ('uncalibrated', 'uncalibrated', 'not metric: the median pixel put at'),
        ('metric', 'metric', "the network's metres, unscaled"),
        ('auto', 'metric', "the network's metres, unscaled"),
    ]
    for index, (mode, runs, fit) in enumerate(expectations):
        if mode is not None:
            result = probe.set_parameters_atomically(f'{namespace}/depth_node',
                                                     {'scale.mode': mode})
            assert result.successful, result.reason
        depth, metres, status = _frame(probe, namespace, image_pub, info_pub, 10 + index)
        assert status['scale mode'] == runs, status
        assert fit in status['scale fit'], status
        assert status['network output'] == 'metres'
        # depth/relative is the network's output: metres of a sigmoid head, in (0, max_depth).
        assert metres.shape == (64, 96) and np.all((metres > 0) & (metres < MAX_DEPTH))
        # Every mode scales the metres by one factor (b = 0): depth = metres / a.
        a = float(status['scale a'])
        assert float(status['scale b']) == 0.0 and a > 0
        shown = np.isfinite(depth)
        assert shown.mean() > 0.5
        np.testing.assert_allclose(depth[shown], metres[shown] / a, rtol=1e-4)
        if runs == 'metric':
            assert a == 1.0 and status['metric scale factor'] == '1'
    assert process.alive()
    assert 'Traceback' not in process.output()


class MetricExactNetwork(ExactNetwork):
    """A metric network that sees the scene 0.8x too near: the image carries those metres
    (fixed point, metres / 4 so that up to 16 m fit the code)."""

    config = get_config(MODEL)

    def predict(self, image, channel_order='rgb', out=None):
        out = super().predict(image, channel_order, out)
        out *= 4.0
        return out


class MetricExactDepthNode(ExactDepthNode):
    def _create_estimator(self, values):
        return MetricExactNetwork()


FACTOR = 0.8


def test_ground_plane_corrects_a_metric_model_with_one_factor():
    namespace = unique_namespace('metric_exact')
    truth = render(math.radians(PITCH_DEG))
    metres = np.minimum(FACTOR * truth, 15.9)
    node = InProcessDepthNode(namespace, {
        'scale.mode': 'metric', 'scale.camera_height': HEIGHT_M,
        'scale.camera_pitch_deg': PITCH_DEG, 'scale.time_constant': 0.0, 'depth.max': 30.0,
        'inference.warmup_size': [0, 0]}, node_class=MetricExactDepthNode)
    probe = depth_probe('metric_exact_probe', namespace)
    try:
        sent = encoded_image(metres / 4.0, Time(sec=5), 'camera_optical_frame')
        depth = depth_for(probe, sent, sent.header.stamp)
        valid = np.isfinite(depth)
        np.testing.assert_allclose(depth[valid], metres[valid], rtol=1e-5)   # as they are
        node.set(scale__mode='ground_plane')
        sent = encoded_image(metres / 4.0, Time(sec=6), 'camera_optical_frame')
        depth = depth_for(probe, sent, sent.header.stamp)
        status = status_after(probe, namespace, 'scale mode')
        floor = (FACTOR * truth < 15.9) & np.isfinite(depth)
        assert floor.mean() > 0.5
        # The fixed-point code quantizes the metres by 2.4e-7 m: the floor comes back true.
        np.testing.assert_allclose(depth[floor], truth[floor], rtol=2e-3)
        assert status['scale mode'] == 'ground_plane' and status['fit accepted'] == 'True'
        assert float(status['scale b']) == 0.0
        assert float(status['metric scale factor']) == pytest.approx(1 / FACTOR, rel=2e-3)
    finally:
        probe.close()
        node.close()
