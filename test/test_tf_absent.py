"""Without tf2_ros (a plain PyPI venv): nothing imports it at module import, and the nodes run
on their parameters with one info line. Runs everywhere; where tf2_ros is installed it is
hidden from the code under test (``sys.modules['tf2_ros'] = None`` makes its import fail)."""
import math
import subprocess
import sys

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from std_msgs.msg import Header

from exact_depth import (HEIGHT_M, PITCH_DEG, InProcessDepthNode, depth_for, depth_probe,
                         encoded_image, median_error, now, render, status_after)
from midas_ros.fusion import Box, Obstacle
from midas_ros.ros.obstacle_node import ObstacleNode
from midas_ros.ros.tf_frames import TF2_MISSING
from ros_process import REPO, unique_namespace

NODE_MODULES = ('midas_ros.ros.depth_node', 'midas_ros.ros.obstacle_node',
                'midas_ros.ros.camera_source', 'midas_ros.ros.tf_frames')


def test_node_modules_do_not_import_tf2_ros():
    code = ('import sys\n'
            f'for name in {NODE_MODULES!r}:\n'
            '    __import__(name)\n'
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tf2_ros', 'tf2_py', "
            "'launch', 'launch_ros')))\n")
    result = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '[]'


@pytest.fixture
def no_tf2(monkeypatch):
    monkeypatch.setitem(sys.modules, 'tf2_ros', None)


def test_depth_node_runs_on_parameters_with_one_info_line(no_tf2, capfd):
    namespace = unique_namespace('notf')
    node = InProcessDepthNode(namespace, {
        'scale.mode': 'ground_plane', 'scale.ground_frame': 'base_footprint',
        'scale.camera_height': HEIGHT_M, 'scale.camera_pitch_deg': PITCH_DEG,
        'cloud.enabled': False, 'diagnostics.period': 0.1})
    probe = depth_probe('notf_probe', namespace)
    try:
        assert not node.node.tf.available
        truth = render(math.radians(PITCH_DEG))
        for _ in range(2):
            when = now(probe)
            image = encoded_image(1.1 / truth + 0.2, when, 'camera_optical_frame')
            assert median_error(depth_for(probe, image, when), truth) < 0.02
        status = status_after(probe, namespace, 'floor source')
        assert status['floor source'] == 'parameters (tf2_ros not available)'
        assert float(status['camera pitch (deg)']) == pytest.approx(PITCH_DEG, abs=1e-3)
    finally:
        probe.close()
        node.close()
    log = capfd.readouterr()
    text = log.out + log.err
    assert text.count(TF2_MISSING) == 1, text
    assert '[WARN]' not in text and '[ERROR]' not in text, text


def test_obstacle_node_keeps_the_depth_frame_with_one_info_line(no_tf2, capfd):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = ObstacleNode(context=context, parameter_overrides=[
            Parameter('target_frame', value='base_link')])
        assert not node.tf.available
        obstacle = Obstacle(Box(10, 10, 4, 4, 'person', 1.0), True, 2.0, (0.1, 0.2, 2.0),
                            (0.3, 0.4, 0.2))
        header = Header(frame_id='camera_optical_frame')
        for _ in range(3):
            placed = node._in_target_frame(node.streams[0], header, [obstacle])
            assert placed[0].frame_id == 'camera_optical_frame'
            assert np.allclose(placed[1], [(0.1, 0.2, 2.0)])
        node.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    text = ''.join(capfd.readouterr())
    assert text.count(TF2_MISSING) == 1, text
    assert text.count("target_frame 'base_link' needs tf2_ros") == 1, text
