"""The pipeline runner and the demo, end to end as subprocesses (random weights, 8 frames)."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from mcap.reader import make_reader
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from midas_ros import report
from midas_ros.ros_env import config_path
from midas_ros.tools import pipeline
from ros_process import REPO
from test_report import read_ply


def _run(args, tmp_path, timeout):
    log = tmp_path / 'run.log'
    with open(log, 'wb') as out:
        code = subprocess.call([sys.executable, '-m', 'midas_ros'] + args, stdout=out,
                               stderr=subprocess.STDOUT, cwd=REPO, timeout=timeout,
                               env=dict(os.environ, PYTHONUNBUFFERED='1'))
    return code, log.read_text(errors='replace')


def _processes_mentioning(text):
    """PIDs of live processes whose command line contains ``text``."""
    found = []
    for pid in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open(f'/proc/{pid}/cmdline', 'rb') as cmdline:
                if text.encode() in cmdline.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


# -- planning (no processes) -------------------------------------------------------------------

def test_parameter_values_survive_the_command_line():
    assert pipeline.ros_value('0') == "'0'"            # a camera index stays a string
    assert pipeline.ros_value("it's") == "'it''s'"
    assert pipeline.ros_value(True) == 'true'
    assert pipeline.ros_value(['image', 'depth/image']) == "['image', 'depth/image']"


def test_plan_uses_the_launch_yaml_files_then_the_users(tmp_path):
    extra = tmp_path / 'mine.yaml'
    camera, nodes = pipeline.plan('synthetic', [extra], frames=5, record=tmp_path / 'r.mcap')
    names = [node.name for node in nodes]
    assert names == ['synthetic_detector', 'depth_node', 'obstacle_node', 'recorder']
    # Up means subscribed to the inputs: a lifecycle node has its publishers (and warms up)
    # before it subscribes, and a camera started then would lose its first frames. The
    # recorder also waits for the camera topics already in the graph, so that the camera
    # waits for it and the first frame is recorded.
    assert [node.ready_when for node in nodes] == [
        ('ground_truth/detections',), ('image',), ('depth/image',),
        ('depth/image', 'image', 'ground_truth/detections')]
    depth = nodes[1]
    assert depth.params_files == [config_path('depth_node.yaml'), extra.resolve()]
    assert camera.params_files[-1] == extra.resolve()
    assert camera.overrides == {'source': 'synthetic', 'max_frames': 5}
    assert '/ground_truth/depth' not in nodes[-1].overrides['topics']
    assert 'ground_truth/depth' in nodes[-1].overrides['topics']
    command = depth.command()
    assert command[:4] == [sys.executable, '-m', 'midas_ros', 'depth_node']
    assert command.index(str(config_path('depth_node.yaml'))) < command.index(str(extra.resolve()))

    camera, nodes = pipeline.plan('v4l2:2')
    assert camera.overrides['source'] == '2'
    assert [node.name for node in nodes] == ['depth_node', 'obstacle_node']


def test_camera_only_plan_records_what_finetune_reads(tmp_path):
    camera, nodes = pipeline.plan('synthetic', frames=300, record=tmp_path / 'r.mcap',
                                  camera_only=True)
    assert [node.name for node in nodes] == ['recorder']
    assert nodes[0].overrides['topics'] == ['image', 'camera_info', 'ground_truth/depth']
    # Nothing else subscribes the image: the camera waits for the recorder alone.
    assert camera.overrides == {'source': 'synthetic', 'max_frames': 300,
                                'wait_for_subscribers': 1}
    with pytest.raises(ValueError, match='--record'):
        pipeline.plan('synthetic', camera_only=True)


# -- end to end --------------------------------------------------------------------------------

def test_demo_writes_every_artefact(tmp_path):
    output = tmp_path / 'demo'
    started = time.monotonic()
    code, log = _run(['demo', '--output', str(output), '--frames', '8'], tmp_path, 240)
    assert code == 0, log
    assert time.monotonic() - started < 120, log
    assert 'RANDOM WEIGHTS' in log or 'official' in log
    for name in ('depth_node', 'obstacle_node', 'camera_source', 'recorder'):
        assert f'[{name}]' in log                      # logs forwarded with node prefixes

    summary = json.loads((output / 'summary.json').read_text())
    assert summary['frames']['source'] == 8
    assert 1 <= summary['frames']['depth'] <= 8
    assert abs(summary['frames']['processed_fraction'] - summary['frames']['depth'] / 8) < 1e-3
    assert summary['fps'] > 0
    assert summary['latency_ms']['depth']['p50'] > 0
    assert summary['scale_fit']['mode'] == 'ground_plane'
    # The floor geometry came from camera_source's /tf_static, where TF is installed.
    floor_source = summary['scale_fit']['floor_source']
    if importlib.util.find_spec('tf2_ros') is None:
        assert floor_source == 'parameters (tf2_ros not available)'
    else:
        assert floor_source == 'tf base_footprint -> camera_optical_frame', floor_source
    assert summary['scale_fit']['samples'] >= 1
    assert summary['depth_error']['frames'] >= 1
    # With random weights most depth is 'no reading', so in 8 frames it can happen that no
    # obstacle has both a measured and a true distance: 'matched' is 0 then.
    obstacle_error = summary['obstacle_distance_error']
    assert set(obstacle_error) == {'median_abs_rel', 'matched'}
    assert (obstacle_error['median_abs_rel'] is None) == (obstacle_error['matched'] == 0)

    montage = cv2.imread(str(output / 'montage.png'))
    assert montage is not None and montage.shape[1] == 3 * 640
    video = cv2.VideoCapture(summary['artefacts']['video'])
    assert video.isOpened() and video.read()[0]
    # Offline (random weights) every picture says so: a red bar above the panels' titles.
    random_weights = 'RANDOM WEIGHTS' in log
    assert summary['random_weights'] is random_weights
    top = report.PANEL_TITLE_HEIGHT
    assert montage.shape[0] == 480 + top * (2 if random_weights else 1)
    frames = [video.read() for _ in range(summary['artefacts']['video_frames'] - 1)]
    for ok, frame in [(True, montage)] + frames:
        assert ok and frame.shape[0] == montage.shape[0]
        if random_weights:     # lossy codecs: the bar is mostly red, not exactly
            bar = frame[:top, :, :].reshape(-1, 3).astype(int)
            assert np.mean((bar[:, 2] > 150) & (bar[:, 0] < 80) & (bar[:, 1] < 80)) > 0.5
    points, _ = read_ply(output / 'cloud.ply')
    assert len(points) == summary['artefacts']['cloud_points'] > 0

    typestore = get_typestore(Stores.EMPTY)
    decoded = {}
    with open(output / 'recording.mcap', 'rb') as stream:
        for schema, channel, message in make_reader(stream).iter_messages():
            if schema.name not in typestore.fielddefs:
                typestore.register(get_types_from_msg(schema.data.decode(), schema.name))
            if channel.topic not in decoded:
                decoded[channel.topic] = typestore.deserialize_cdr(message.data, schema.name)
    for topic in ('/image', '/depth/image', '/depth/points', '/obstacles', '/detections',
                  '/ground_truth/depth', '/diagnostics'):
        assert topic in decoded, sorted(decoded)
    assert decoded['/depth/image'].encoding == '32FC1'
    assert decoded['/depth/points'].header.frame_id == 'camera_optical_frame'


def test_a_node_that_dies_fails_the_run(tmp_path):
    params = tmp_path / 'broken.yaml'
    params.write_text('depth_node:\n  ros__parameters:\n'
                      '    model.weights: /nonexistent/weights.pt\n')
    code, log = _run(['pipeline', '--params', str(params), '--frames', '3'], tmp_path, 120)
    assert code == 1, log
    assert 'depth_node exited unexpectedly (status 1)' in log
    assert not _processes_mentioning(str(params)), 'nodes left running'


def test_ctrl_c_stops_every_node(tmp_path):
    params = tmp_path / 'random_weights.yaml'
    params.write_text('depth_node:\n  ros__parameters:\n    model.pretrained: false\n'
                      'camera_source:\n  ros__parameters:\n    rate: 5.0\n')
    log_path = tmp_path / 'run.log'
    with open(log_path, 'wb') as out:
        runner = subprocess.Popen([sys.executable, '-m', 'midas_ros', 'pipeline', '--params',
                                   str(params)], stdout=out, stderr=subprocess.STDOUT,
                                  cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED='1'))
        try:
            deadline = time.monotonic() + 90
            while not re.search(r'frames [1-9]\d* out', log_path.read_text()):
                assert runner.poll() is None and time.monotonic() < deadline, \
                    log_path.read_text()
                time.sleep(0.5)
            assert len(_processes_mentioning(str(params))) == 5   # runner + 4 nodes
            runner.send_signal(signal.SIGINT)
            code = runner.wait(timeout=60)
        finally:
            if runner.poll() is None:      # the runner must stop its nodes: never SIGKILL it
                runner.send_signal(signal.SIGINT)
                runner.wait(timeout=60)
    log = log_path.read_text()
    assert code == pipeline.EXIT_INTERRUPTED, log
    assert 'interrupted: stopping' in log
    assert 'did not stop' not in log          # SIGINT was enough for every node
    assert not _processes_mentioning(str(params)), 'nodes left running'


def test_missing_params_file_is_one_line(tmp_path):
    missing = tmp_path / 'nope.yaml'
    code, log = _run(['pipeline', '--params', str(missing)], tmp_path, 30)
    assert code == 2 and log.strip() == f'pipeline: parameter file not found: {missing}'
