"""The conventions robots meet, replayed through depth_node and obstacle_node over real DDS:
REP 117/118 special values and rectified CameraInfo (P) in both nodes.

depth_node runs random weights with a fixed scale whose ``a`` is negligible, so its depth is
``1 / b`` everywhere whatever the network says: a scene at a known distance.
"""
import math
import time

import numpy as np
import pytest
from rcl_interfaces.msg import Parameter as ParameterMsg
from rcl_interfaces.msg import ParameterType, ParameterValue
from rcl_interfaces.srv import SetParametersAtomically
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


def set_parameters(probe, node_path, values):
    """Set ``values`` (floats, bools or strings) in one atomic request; the result."""
    client = probe.node.create_client(SetParametersAtomically,
                                      f'{node_path}/set_parameters_atomically')
    assert client.wait_for_service(timeout_sec=30)
    parameters = []
    for name, value in values.items():
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, str):
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=float(value))
        parameters.append(ParameterMsg(name=name, value=pv))
    future = client.call_async(SetParametersAtomically.Request(parameters=parameters))
    probe.spin_until(future.done, 10)
    return future.result().result


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
        self.image_pub = self.probe.node.create_publisher(Image, self.topic('image'),
                                                          qos_profile('sensor_data'))
        self.info_pub = self.probe.node.create_publisher(CameraInfo, self.topic('camera_info'),
                                                         qos_profile('sensor_data'))

    def topic(self, name):
        return f'{self.namespace}/{name}'

    def frame(self, when, info, topics=tuple(DEPTH_OUTPUTS), timeout=90.0):
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

        def step():
            if time.monotonic() >= state['next']:
                self.info_pub.publish(info)
                self.image_pub.publish(image)
                state['next'] = time.monotonic() + 0.3
        assert self.probe.spin_until(lambda: all(found().values()), timeout, step), \
            self.process.output()[-3000:]
        return found()

    def set(self, values):
        result = set_parameters(self.probe, f'{self.namespace}/depth_node', values)
        assert result.successful, result.reason

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

    def topic(self, name):
        return f'{self.namespace}/{name}'

    def measure(self, depth, when, info, boxes, timeout=20.0):
        """Publish depth + info + detections stamped ``when`` until the outputs for it come
        back; (Detection3DArray, Range)."""
        depth_msg = array_to_image(depth.astype(np.float32), '32FC1')
        depth_msg.header.stamp, depth_msg.header.frame_id = stamp(when), 'camera_optical_frame'
        info.header = depth_msg.header
        detections = detections_message(None, when, boxes=boxes)
        state = {'next': 0.0}

        def find(messages):
            return next((m for m in messages if m.header.stamp == depth_msg.header.stamp), None)

        def step():
            if time.monotonic() >= state['next']:
                self.info_pub.publish(info)
                self.depth_pub.publish(depth_msg)
                self.detections_pub.publish(detections)
                state['next'] = time.monotonic() + 0.3
        assert self.probe.spin_until(lambda: find(self.obstacles) and find(self.nearest),
                                     timeout, step), self.process.output()[-3000:]
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
