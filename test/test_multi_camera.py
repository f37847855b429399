"""One depth_node, several cameras, one network, over real DDS.

Three cameras of different sizes, intrinsics and frame ids, with per-camera parameter overrides;
the network decodes the relative inverse depth each image carries (``exact_depth``), so each
camera's outputs are checked against its own ground truth and geometry. Also: each camera's
share of a network slower than the cameras, a camera that stops, a camera sending bad frames,
and a bad per-camera runtime parameter.
"""
import time

import numpy as np
import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from exact_depth import ExactDepthNode, ExactNetwork, InProcessDepthNode, encoded_image
from midas_ros.geometry import Intrinsics
from midas_ros.ros.conversions import (array_to_image, cloud_to_xyz, image_to_array,
                                       intrinsics_to_camera_info)
from midas_ros.depth_outputs import camera_topic
from midas_ros.ros.qos import qos_profile
from ros_process import RosTestNode, unique_namespace

NETWORK_S = 0.03        # the shared network's time per frame: slower than the cameras
CAMERAS = {
    'front': (Intrinsics.from_fov(80, 60, 70.0), 'front_optical'),
    'rear': (Intrinsics(48, 36, 40.0, 42.0, 23.0, 17.5), 'rear_optical'),
    'left': (Intrinsics.from_fov(32, 24, 90.0), 'left_optical'),
}


class SlowExactNetwork(ExactNetwork):
    def predict(self, image, channel_order='rgb', out=None):
        time.sleep(NETWORK_S)
        return super().predict(image, channel_order, out)


class SlowExactDepthNode(ExactDepthNode):
    def _create_estimator(self, values):
        return SlowExactNetwork()


def truth(intrinsics, offset):
    """A slanted plane: metres per pixel, different per camera."""
    v, u = np.mgrid[0:intrinsics.height, 0:intrinsics.width]
    return 1.5 + offset + u / intrinsics.width + 0.5 * v / intrinsics.height


def stamp(seconds):
    return Time(sec=int(seconds), nanosec=int(round((seconds % 1) * 1e9)))


@pytest.fixture(scope='module')
def rig():
    namespace = unique_namespace('multi')
    node = InProcessDepthNode(namespace, {
        'cameras': list(CAMERAS), 'inference.warmup_size': [0, 0],
        'scale.mode': 'fixed', 'scale.a': 1.0, 'scale.time_constant': 0.0,
        'rear.scale.a': 2.0,                    # rear: depth = 1 / (2 relative)
        'rear.frame_id': 'rear_depth_optical',  # rear: outputs in another frame
        'front.cloud.color': False,             # front: a cloud without colours
    }, node_class=SlowExactDepthNode)
    probe = RosTestNode('multi_probe')
    sensor = qos_profile('sensor_data', depth=50)
    for camera in CAMERAS:
        for topic, msg_type in (('depth/image', Image), ('depth/points', PointCloud2),
                                ('depth/camera_info', CameraInfo)):
            probe.collect(msg_type, f'{namespace}/{camera_topic(camera, topic)}', sensor)
    probe.diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    probe.images = {camera: probe.node.create_publisher(Image, f'{namespace}/{camera}/image',
                                                        qos_profile('sensor_data'))
                    for camera in CAMERAS}
    probe.infos = {camera: probe.node.create_publisher(
        CameraInfo, f'{namespace}/{camera}/camera_info', qos_profile('sensor_data'))
        for camera in CAMERAS}
    yield namespace, node, probe
    probe.close()
    node.close()


def frame_of(camera, when, offset=0.0):
    intrinsics, frame_id = CAMERAS[camera]
    image = encoded_image(1.0 / truth(intrinsics, offset), when, frame_id)
    info = intrinsics_to_camera_info(intrinsics)
    info.header = image.header
    return image, info


def received(probe, namespace, camera, topic):
    return probe.received[f'{namespace}/{camera_topic(camera, topic)}']


def publish(probe, camera, image, info):
    probe.infos[camera].publish(info)
    probe.images[camera].publish(image)


def camera_status(probe, namespace, camera):
    for array in reversed(probe.diagnostics):
        for status in array.status:
            if status.name.startswith(namespace) and status.name.endswith(f'depth {camera}'):
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_each_camera_gets_its_own_geometry_and_overrides(rig):
    namespace, node, probe = rig
    when = {'front': stamp(10.5), 'rear': stamp(11.25)}
    frames = {camera: frame_of(camera, when[camera], offset)
              for camera, offset in (('front', 0.0), ('rear', 1.0))}
    wanted = [(camera, topic) for camera in frames
              for topic in ('depth/image', 'depth/points', 'depth/camera_info')]

    def arrived():
        return all(any(m.header.stamp == when[c] for m in received(probe, namespace, c, t))
                   for c, t in wanted)
    state = {'next': 0.0}

    def step():
        if time.monotonic() >= state['next']:
            for camera, (image, info) in frames.items():
                publish(probe, camera, image, info)
            state['next'] = time.monotonic() + 0.2
    assert probe.spin_until(arrived, 60, step), 'not every camera output arrived'

    for camera, offset, scale_a, frame_id, colour in (
            ('front', 0.0, 1.0, 'front_optical', False),
            ('rear', 1.0, 2.0, 'rear_depth_optical', True)):
        intrinsics = CAMERAS[camera][0]
        expected = truth(intrinsics, offset) / scale_a
        latest = {topic: [m for m in received(probe, namespace, camera, topic)
                          if m.header.stamp == when[camera]][-1]
                  for topic in ('depth/image', 'depth/points', 'depth/camera_info')}
        depth = image_to_array(latest['depth/image'])[0]
        assert depth.shape == (intrinsics.height, intrinsics.width), camera
        np.testing.assert_allclose(depth, expected, rtol=1e-4, err_msg=camera)
        assert {m.header.frame_id for m in latest.values()} == {frame_id}, camera
        info = latest['depth/camera_info']
        assert (info.width, info.height) == (intrinsics.width, intrinsics.height)
        np.testing.assert_allclose(info.k, [intrinsics.fx, 0, intrinsics.cx, 0, intrinsics.fy,
                                            intrinsics.cy, 0, 0, 1])
        cloud = latest['depth/points']
        assert ('rgb' in [f.name for f in cloud.fields]) is colour, camera
        xyz = cloud_to_xyz(cloud).reshape(intrinsics.height, intrinsics.width, 3)
        v, u = np.mgrid[0:intrinsics.height, 0:intrinsics.width]
        np.testing.assert_allclose(xyz[..., 2], expected, rtol=1e-4)
        np.testing.assert_allclose(xyz[..., 0], (u - intrinsics.cx) / intrinsics.fx * expected,
                                   rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(xyz[..., 1], (v - intrinsics.cy) / intrinsics.fy * expected,
                                   rtol=1e-4, atol=1e-6)


def test_fair_share_a_stopped_camera_and_a_bad_camera(rig):
    namespace, node, probe = rig
    frames = {camera: frame_of(camera, stamp(20.0)) for camera in ('front', 'rear')}
    bad = array_to_image(np.zeros((24, 32), np.uint16), 'mono16')   # not a camera image
    bad.header.frame_id = 'left_optical'
    publishing = {'cameras': ('front', 'rear')}
    times = {camera: [] for camera in ('front', 'rear')}
    for camera in times:
        received(probe, namespace, camera, 'depth/image').clear()

    def step():     # every camera much faster than the network (~33 frames/s for all)
        for camera in publishing['cameras']:
            publish(probe, camera, *frames[camera])
        probe.images['left'].publish(bad)
        for camera in times:
            arrivals = received(probe, namespace, camera, 'depth/image')
            times[camera] += [time.monotonic()] * len(arrivals)
            arrivals.clear()

    probe.spin_until(lambda: False, 4.0, step)
    counts = {camera: len(t) for camera, t in times.items()}
    assert min(counts.values()) >= 10, counts
    total = sum(counts.values())
    for camera, count in counts.items():    # each camera 1/2 of the frames, within 15 %
        assert abs(count / total - 0.5) <= 0.15 * 0.5, counts

    stopped = time.monotonic()
    publishing['cameras'] = ('front',)
    probe.spin_until(lambda: False, 2.5, step)
    front_after = [t for t in times['front'] if t >= stopped + 1.0]
    # Within a second front has the whole network: its rate is the two cameras' rate before.
    assert len(front_after) / 1.5 >= 0.7 * total / 4.0, (len(front_after), total)

    left = camera_status(probe, namespace, 'left')
    assert int(left.get('frames failed', 0)) > 0, left
    assert left.get('frames processed') == '0'
    front = camera_status(probe, namespace, 'front')
    assert front.get('frames failed') == '0' and int(front['frames processed']) > 0, front


def test_a_bad_value_for_one_camera_is_refused_whole_and_node_values_follow(rig):
    namespace, node, probe = rig
    depth_node = node.node
    cameras = {camera.name: camera for camera in depth_node.cameras}
    before = dict(cameras['rear'].values)
    results = depth_node.set_parameters_atomically([
        Parameter('front.depth.max', value=30.0), Parameter('rear.depth.min', value=50.0)])
    assert not results.successful
    assert 'camera rear' in results.reason and 'depth.min' in results.reason
    assert cameras['rear'].values == before
    assert cameras['front'].values['depth.max'] == 20.0     # nothing applied anywhere
    assert depth_node.get_parameter('front.depth.max').value == 20.0

    # The node's own value reaches the cameras that did not set theirs (and their parameter
    # shows it); rear keeps its own scale.a.
    assert depth_node.set_parameters([Parameter('scale.a', value=0.5)])[0].successful
    assert cameras['front'].values['scale.a'] == 0.5
    assert cameras['left'].values['scale.a'] == 0.5
    assert depth_node.get_parameter('front.scale.a').value == 0.5
    assert cameras['rear'].values['scale.a'] == 2.0
    # Once set, a camera's own value stays its own.
    assert depth_node.set_parameters([Parameter('left.scale.a', value=3.0)])[0].successful
    assert depth_node.set_parameters([Parameter('scale.a', value=1.0)])[0].successful
    assert cameras['left'].values['scale.a'] == 3.0
    assert cameras['front'].values['scale.a'] == 1.0
    # max_rate per camera is checked like any parameter.
    assert not depth_node.set_parameters([Parameter('rear.max_rate', value=-1.0)])[0].successful


def test_a_camera_whose_time_goes_back_starts_afresh_alone(rig):
    """rear's stamps jump back (its driver restarted): rear keeps publishing, front's frames
    and counts are untouched."""
    namespace, node, probe = rig
    cameras = {camera.name: camera for camera in node.node.cameras}
    front_before = cameras['front'].stats['processed']
    back = stamp(2.0)
    frames = {'front': frame_of('front', stamp(40.0)), 'rear': frame_of('rear', back)}

    def arrived():
        return any(m.header.stamp == back for m in received(probe, namespace, 'rear',
                                                            'depth/image'))
    state = {'next': 0.0}

    def step():
        if time.monotonic() >= state['next']:
            for camera, (image, info) in frames.items():
                publish(probe, camera, image, info)
            state['next'] = time.monotonic() + 0.1
    assert probe.spin_until(arrived, 20, step)
    assert cameras['rear']._last_stamp == pytest.approx(2.0)
    assert cameras['front'].stats['processed'] > front_before
    assert cameras['front']._last_stamp == pytest.approx(40.0)


def test_a_navigation_override_takes_effect_on_one_camera_only(rig):
    """``front.filter.edge_radius: 0`` set at run time: front's cloud and confidence keep the
    pixels at a depth step, rear (the node's edge filter) leaves them out (NaN points,
    confidence 0); a bad navigation value for rear is refused naming the camera."""
    namespace, node, probe = rig
    depth_node = node.node
    cameras = {camera.name: camera for camera in depth_node.cameras}
    rear_before = dict(cameras['rear'].values)
    results = depth_node.set_parameters_atomically([
        Parameter('front.filter.edge_radius', value=0),
        Parameter('rear.obstacle_points.min_height', value=5.0)])   # above max_height
    assert not results.successful
    assert 'camera rear' in results.reason and 'obstacle_points.min_height' in results.reason
    assert cameras['rear'].values == rear_before
    assert cameras['front'].values['filter.edge_radius'] == 2
    assert depth_node.set_parameters([Parameter('front.filter.edge_radius', value=0)])[0] \
        .successful
    assert cameras['front'].values['filter.edge_radius'] == 0
    assert cameras['rear'].values['filter.edge_radius'] == 2
    assert depth_node.get_parameter('filter.edge_radius').value == 2

    sensor = qos_profile('sensor_data', depth=50)
    for camera in ('front', 'rear'):
        probe.collect(Image, f'{namespace}/{camera}/depth/confidence', sensor)
    when = stamp(60.0)
    frames = {}
    for camera in ('front', 'rear'):
        intrinsics, frame_id = CAMERAS[camera]
        step = np.full((intrinsics.height, intrinsics.width), 1.5)
        step[:, intrinsics.width // 2:] = 3.0      # a wall 1.5 m behind a near half
        image = encoded_image(1.0 / step, when, frame_id)
        info = intrinsics_to_camera_info(intrinsics)
        info.header = image.header
        frames[camera] = image, info, step

    def latest(camera, topic):
        found = [m for m in received(probe, namespace, camera, topic) if m.header.stamp == when]
        return found[-1] if found else None

    def arrived():
        return all(latest(camera, topic) is not None for camera in frames
                   for topic in ('depth/points', 'depth/confidence'))
    state = {'next': 0.0}

    def step():
        if time.monotonic() >= state['next']:
            for camera, (image, info, _) in frames.items():
                publish(probe, camera, image, info)
            state['next'] = time.monotonic() + 0.2
    assert probe.spin_until(arrived, 30, step), 'no points or confidence from both cameras'

    for camera, filtered in (('front', False), ('rear', True)):
        intrinsics = CAMERAS[camera][0]
        expected = frames[camera][2] / cameras[camera].values['scale.a']
        z = cloud_to_xyz(latest(camera, 'depth/points')).reshape(
            intrinsics.height, intrinsics.width, 3)[..., 2]
        confidence = image_to_array(latest(camera, 'depth/confidence'))[0]
        middle = intrinsics.width // 2
        at_step = slice(middle - 1, middle + 1)
        away = np.r_[0:middle - 3, middle + 3:intrinsics.width]
        np.testing.assert_allclose(z[:, away], expected[:, away], rtol=1e-4, err_msg=camera)
        assert (confidence[:, away] > 0).all(), camera
        if filtered:
            assert np.isnan(z[:, at_step]).all() and (confidence[:, at_step] == 0).all()
        else:
            np.testing.assert_allclose(z[:, at_step], expected[:, at_step], rtol=1e-4)
            np.testing.assert_allclose(confidence[:, at_step], confidence[:, away].max())
