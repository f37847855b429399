"""The navigation outputs over DDS, from both nodes, against the ground truth of
test/navigation_scene.py: depth_cloud_node fed the network-like depth as an RGB-D camera would
publish it, depth_node fed the same scene through its exact stand-in network."""
import math
import time

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2

from exact_depth import InProcessDepthNode, encoded_image, level_from_optical, transform_msg
from midas_ros.geometry import quaternion_from_rotation
from midas_ros.ros.conversions import (array_to_image, cloud_to_xyz, image_to_array,
                                       intrinsics_to_camera_info)
from midas_ros.ros.qos import qos_profile
from navigation_scene import (CAMERA_HEIGHT, CAMERA_X, PITCH_DEG, Scene, flying_and_kept,
                              obstacle_distances, scan_errors, surface_distance)
from ros_process import NodeProcess, RosTestNode, unique_namespace

FRAME = 'nav_cam_optical_frame'
TOPICS = {'depth/points': PointCloud2, 'depth/obstacle_points': PointCloud2,
          'depth/scan': LaserScan, 'depth/confidence': Image}
FLOOR_PARAMETERS = {'scale.camera_height': CAMERA_HEIGHT, 'scale.camera_pitch_deg': PITCH_DEG,
                    'scan.enabled': True, 'scan.mode': 'height_band', 'cloud.color': False}


@pytest.fixture(scope='module')
def scene():
    return Scene()


def _outputs(probe, namespace, publishers, messages, stamp, timeout=60):
    received = {topic: probe.collect(msg_type, f'{namespace}/{topic}',
                                     qos_profile('sensor_data', depth=5))
                for topic, msg_type in TOPICS.items()}
    state = {'next': 0.0}

    def step():
        if time.monotonic() >= state['next']:
            for publisher, message in zip(publishers, messages):
                publisher.publish(message)
            state['next'] = time.monotonic() + 0.3

    def complete():
        return all(any(m.header.stamp == stamp for m in msgs) for msgs in received.values())
    assert probe.spin_until(complete, timeout, step), {t: len(m) for t, m in received.items()}
    return {topic: [m for m in msgs if m.header.stamp == stamp][-1]
            for topic, msgs in received.items()}


def _check(scene, outputs):
    points = cloud_to_xyz(outputs['depth/points'])
    flying, kept = flying_and_kept(scene, points)
    assert flying < 0.01 and kept >= 0.95, (flying, kept)
    obstacles = outputs['depth/obstacle_points']
    assert obstacles.height == 1 and [f.name for f in obstacles.fields] == ['x', 'y', 'z']
    assert obstacles.header.frame_id == FRAME       # no ground frame in TF: the optical one
    xyz = cloud_to_xyz(obstacles).reshape(-1, 3)
    assert len(xyz) > 100
    assert obstacle_distances(scene, xyz).max() < 0.1 + 0.05 * math.sqrt(3)
    scan = outputs['depth/scan']
    for box, (nearest, median) in scan_errors(scan.ranges, scan.angle_min,
                                              scan.angle_increment).items():
        assert median < 0.02 and abs(nearest) < 0.02, (box, nearest, median)
    confidence, encoding = image_to_array(outputs['depth/confidence'])
    assert encoding == '32FC1' and confidence.shape == scene.depth.shape
    assert confidence.min() >= 0.0 and confidence.max() <= 1.0
    assert (confidence[np.isnan(points[..., 2])] < 0.5).all()


def test_depth_cloud_node_from_a_depth_camera(scene, tmp_path):
    namespace = unique_namespace('nav_cloud')
    ros_args = ['-r', f'__ns:={namespace}', '-p', 'input_qos:=sensor_data']
    for name, value in FLOOR_PARAMETERS.items():
        ros_args += ['-p', f'{name}:={str(value).lower() if isinstance(value, bool) else value}']
    process = NodeProcess('depth_cloud_node', ros_args, tmp_path=tmp_path)
    probe = RosTestNode('nav_cloud_probe')
    try:
        depth_pub = probe.node.create_publisher(Image, f'{namespace}/depth/image',
                                                qos_profile('sensor_data'))
        info_pub = probe.node.create_publisher(CameraInfo, f'{namespace}/depth/camera_info',
                                               qos_profile('sensor_data'))
        depth = array_to_image(scene.depth, '32FC1')
        depth.header.frame_id = FRAME
        depth.header.stamp.sec = 50
        info = intrinsics_to_camera_info(scene.intrinsics, depth.header)
        # The calibration first (the node assumes camera.hfov_deg until one arrives).
        probe.collect(TOPICS['depth/points'], f'{namespace}/depth/points')
        # Once the node is up (its publishers exist from configure, its subscriptions right
        # after): a node starting slower than the calibration is sent would measure the first
        # depth image with the guess.
        assert probe.spin_until(
            lambda: probe.node.count_publishers(f'{namespace}/depth/points') > 0, 60)
        probe.spin_until(lambda: False, 2.0, lambda: info_pub.publish(info))
        outputs = _outputs(probe, namespace, [info_pub, depth_pub], [info, depth],
                           depth.header.stamp)
        _check(scene, outputs)
        # A colour image on depth/image: one clear warning, the node keeps running.
        wrong = array_to_image(scene.rgb, 'rgb8', depth.header)
        probe.spin_until(lambda: 'depth/image skipped' in process.output(), 10,
                         lambda: depth_pub.publish(wrong))
        assert "'rgb8'" in process.output() and process.alive()
        # Half the size with the full-size CameraInfo: the intrinsics are scaled.
        half = array_to_image(np.ascontiguousarray(scene.depth[::2, ::2]), '32FC1',
                              depth.header)
        half.header.stamp.sec = 49
        small = _outputs(probe, namespace, [info_pub, depth_pub], [info, half],
                         half.header.stamp)
        assert small['depth/points'].width == scene.intrinsics.width // 2
        assert 'scaling the intrinsics' in process.output()
        # Millimetres (16UC1, 0 = no reading) give the same cloud within a millimetre.
        millimetres = np.rint(np.nan_to_num(scene.depth, posinf=0) * 1000).astype(np.uint16)
        depth16 = array_to_image(millimetres, '16UC1', depth.header)
        depth16.header.stamp.sec = 51
        again = _outputs(probe, namespace, [info_pub, depth_pub], [info, depth16],
                         depth16.header.stamp)
        a, b = cloud_to_xyz(outputs['depth/points']), cloud_to_xyz(again['depth/points'])
        both = np.isfinite(a[..., 2]) & np.isfinite(b[..., 2])
        assert both.mean() > 0.9 and np.abs(a[both] - b[both]).max() < 2e-3
        # The floor from TF (base_footprint below the camera): the obstacle cloud comes in
        # that frame, z being the height above the floor.
        import tf2_ros
        static = tf2_ros.StaticTransformBroadcaster(probe.node)
        static.sendTransform(transform_msg(
            'base_footprint', FRAME, (0.0, 0.0, CAMERA_HEIGHT),
            quaternion_from_rotation(level_from_optical(math.radians(PITCH_DEG)))))
        assert probe.set_parameters_atomically(f'{namespace}/depth_cloud_node', {
            'scale.ground_frame': 'base_footprint'}).successful
        depth.header.stamp.sec = 52
        placed = _outputs(probe, namespace, [info_pub, depth_pub], [info, depth],
                          depth.header.stamp)['depth/obstacle_points']
        assert placed.header.frame_id == 'base_footprint'
        xyz = cloud_to_xyz(placed).reshape(-1, 3).astype(np.float64)
        assert len(xyz) > 100 and xyz[:, 2].min() >= 0.1 - 0.05 and xyz[:, 2].max() <= 2.05
        world = xyz + [CAMERA_X, 0.0, 0.0]
        assert surface_distance(world, include_floor=False).max() < 0.1 + 0.05 * math.sqrt(3)
        assert process.alive() and 'Traceback' not in process.output()
    finally:
        probe.close()
        process.stop()


def test_depth_node_publishes_the_same_outputs(scene):
    namespace = unique_namespace('nav_depth')
    parameters = dict(FLOOR_PARAMETERS, **{
        'model.pretrained': False, 'device': 'cpu', 'inference.warmup_size': [0, 0],
        'scale.mode': 'fixed', 'scale.a': 1.0, 'scale.b': 0.0, 'scale.time_constant': 0.0})
    node = InProcessDepthNode(namespace, parameters)
    probe = RosTestNode('nav_depth_probe')
    try:
        image_pub = probe.node.create_publisher(Image, f'{namespace}/image',
                                                qos_profile('sensor_data'))
        info_pub = probe.node.create_publisher(CameraInfo, f'{namespace}/camera_info',
                                               qos_profile('sensor_data'))
        stamp = probe.node.get_clock().now().to_msg()
        # The stand-in network outputs exactly the inverse depth the image carries.
        image = encoded_image((1.0 / scene.depth).astype(np.float64), stamp, FRAME)
        info = intrinsics_to_camera_info(scene.intrinsics, image.header)
        _check(scene, _outputs(probe, namespace, [info_pub, image_pub], [info, image], stamp))
    finally:
        probe.close()
        node.close()


def test_depth_cloud_node_lifecycle_and_parameters():
    """Managed like the other nodes: no publishers before configure, inputs only while active;
    a parameter change that cannot work is refused whole."""
    import rclpy
    from lifecycle_msgs.msg import State
    from rclpy.lifecycle import TransitionCallbackReturn
    from rclpy.parameter import Parameter

    from midas_ros.ros.depth_cloud_node import DepthCloudNode
    context = rclpy.Context()
    namespace = unique_namespace('nav_life')
    rclpy.init(context=context, args=['--ros-args', '-p', 'autostart:=false',
                                      '-p', 'input_qos:=sensor_data', '-r', f'__ns:={namespace}'])
    node = DepthCloudNode(context=context)
    try:
        node.start()

        def topics():
            name = node.get_name()
            published = {t for t, _ in node.get_publisher_names_and_types_by_node(
                name, namespace) if t.startswith(f'{namespace}/depth/')}
            subscribed = {t for t, _ in node.get_subscriber_names_and_types_by_node(
                name, namespace) if t.startswith(f'{namespace}/depth/')}
            return published, subscribed
        outputs = {f'{namespace}/{topic}' for topic in TOPICS}
        inputs = {f'{namespace}/depth/image', f'{namespace}/depth/camera_info'}
        assert node._state_machine.current_state[0] == State.PRIMARY_STATE_UNCONFIGURED
        assert topics() == (set(), set())
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert topics() == (outputs, set())
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        assert topics() == (outputs, inputs)
        refused = node.set_parameters_atomically([
            Parameter('scan.min_height', value=2.0), Parameter('filter.edge_radius', value=3)])
        assert not refused.successful and 'scan.min_height' in refused.reason
        assert node.values['filter.edge_radius'] == 2 and node.values['scan.min_height'] == 0.1
        assert node.set_parameters([Parameter('scan.mode', value='height_band')])[0].successful
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
        assert topics() == (outputs, set())
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        assert topics() == (set(), set())
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
