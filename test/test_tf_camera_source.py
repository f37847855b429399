"""camera_source's /tf_static for the synthetic rig, read back with a real tf2_ros listener."""
import math
import uuid

import numpy as np
import pytest

from midas_ros.synthetic import CameraPose, SceneConfig
from ros_process import NodeProcess, RosTestNode, unique_namespace

tf2_ros = pytest.importorskip(
    'tf2_ros', reason='tf2_ros is not installed (plain PyPI venv): install ../shared/ros2_src '
    'or a ROS 2 distribution to test the TF paths')
from midas_ros.ros.tf_frames import FrameTransforms, TransformUnavailable  # noqa: E402


def test_synthetic_rig_on_tf_static_matches_the_scene(tmp_path):
    optical = f'optical_{uuid.uuid4().hex[:6]}'
    process = NodeProcess('camera_source', [
        '-r', f"__ns:={unique_namespace('rig')}", '-p', 'width:=64', '-p', 'height:=48',
        '-p', 'rate:=2.0', '-p', f'frame_id:={optical}'], tmp_path=tmp_path)
    probe = RosTestNode('rig_probe')
    frames = FrameTransforms(probe.node)
    found = {}

    def looked_up():
        try:
            found['optical'] = frames.lookup('base_footprint', optical)
            found['depth'] = frames.lookup('camera_link', 'camera_depth_frame')
        except TransformUnavailable:
            return False
        return True
    try:
        assert probe.spin_until(looked_up, 30.0), process.output()
    finally:
        probe.close()
        process.stop()
    # The scene's own camera pose at the start of its path, heading along world x from the
    # origin, is the optical frame in base_footprint (the robot stands at the origin).
    config = SceneConfig()
    pose = CameraPose.from_yaw_pitch(0.0, 0.0, config.camera_height, 0.0,
                                     math.radians(config.camera_pitch_deg))
    assert np.allclose(found['optical'][:3, :3], pose.rotation, atol=1e-9)
    assert np.allclose(found['optical'][:3, 3], pose.position, atol=1e-9)
    assert np.allclose(found['depth'], np.eye(4))
    assert 'tf2_ros not available' not in process.output()
