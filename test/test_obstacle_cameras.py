"""obstacle_node with ``cameras``: each camera's depth + detections -> its own obstacles, over
real DDS, with a per-camera ``range_frame_id``; one camera's scene never reaches another's."""
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Image, Range
from vision_msgs.msg import Detection2DArray, Detection3DArray

from midas_ros.depth_outputs import camera_topic
from midas_ros.ros.conversions import intrinsics_to_camera_info
from ros_process import NodeProcess, RosTestNode, unique_namespace
from test_fusion import INTRINSICS, PEOPLE, render
from test_obstacle_node import assert_obstacles_match, depth_message, detections_message

SCENES = {'front': PEOPLE[:2], 'rear': PEOPLE[2:]}


@pytest.fixture(scope='module')
def rig(tmp_path_factory):
    namespace = unique_namespace('obstacle_cams')
    process = NodeProcess('obstacle_node', [
        '-r', f'__ns:={namespace}', '-p', 'cameras:=[front,rear]',
        '-p', 'rear.range_frame_id:=rear_camera_depth_frame'],
        tmp_path=tmp_path_factory.mktemp('obstacle_cameras'))
    probe = RosTestNode('obstacle_cams_probe')
    node = probe.node
    probe.pubs = {camera: (node.create_publisher(Image, f'{namespace}/{camera}/depth/image', 10),
                           node.create_publisher(CameraInfo,
                                                 f'{namespace}/{camera}/depth/camera_info', 10),
                           node.create_publisher(Detection2DArray,
                                                 f'{namespace}/{camera}/detections', 10))
                  for camera in SCENES}
    for camera in SCENES:
        probe.collect(Detection3DArray, f'{namespace}/{camera_topic(camera, "obstacles")}')
        probe.collect(Range, f'{namespace}/{camera_topic(camera, "obstacles/nearest")}')
    probe.diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    yield namespace, process, probe
    probe.close()
    assert process.stop() == 0, process.output()


def test_each_camera_measures_its_own_scene(rig):
    namespace, process, probe = rig
    messages = {}
    for offset, (camera, panels) in enumerate(SCENES.items()):
        depth = depth_message(render(panels), 20.0 + offset)
        messages[camera] = (depth, intrinsics_to_camera_info(INTRINSICS, depth.header),
                            detections_message(panels, 20.04 + offset))
    state = {'next': 0.0}

    def step():
        if time.monotonic() >= state['next']:
            for camera, (depth, info, detections) in messages.items():
                depth_pub, info_pub, detections_pub = probe.pubs[camera]
                depth_pub.publish(depth)
                info_pub.publish(info)
                detections_pub.publish(detections)
            state['next'] = time.monotonic() + 0.3

    def received(camera, topic):
        wanted = messages[camera][2].header.stamp
        return [m for m in probe.received[f'{namespace}/{camera}/{topic}']
                if m.header.stamp == wanted]

    def arrived():
        return all(received(camera, topic) for camera in SCENES
                   for topic in ('obstacles', 'obstacles/nearest'))
    assert probe.spin_until(arrived, 30, step), process.output()
    for camera, panels in SCENES.items():
        obstacles = received(camera, 'obstacles')[-1]
        assert_obstacles_match(obstacles, panels)
        nearest = received(camera, 'obstacles/nearest')[-1]
        assert nearest.range == pytest.approx(min(p[1] for p in panels), rel=0.02)
    assert received('front', 'obstacles/nearest')[-1].header.frame_id == 'camera_depth_frame'
    assert received('rear', 'obstacles/nearest')[-1].header.frame_id == \
        'rear_camera_depth_frame'
    # One status per camera, at the node's next diagnostics period (not before).
    wanted = {f'{namespace}/obstacle_node: pairing {camera}' for camera in SCENES}

    def statuses():
        return {status.name for array in probe.diagnostics for status in array.status}
    assert probe.spin_until(lambda: wanted <= statuses(), 10), statuses()
