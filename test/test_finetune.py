"""finetune and evaluate on MCAP recordings: reading, bad input, a short run, depth_node.

Recordings are written with the project's MCAP writer from real sensor_msgs messages (CDR from
rclpy), frames of the synthetic scene at 64x48 (its true depth and intrinsics).
"""
import json
import math
import os

import cv2
import numpy as np
import pytest
import torch
from rclpy.serialization import serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from midas_ros.recording import McapRecording
from midas_ros.ros.conversions import (array_to_image, image_to_array,
                                       intrinsics_to_camera_info)
from midas_ros.ros.qos import qos_profile
from midas_ros.synthetic import SceneConfig, SyntheticScene
from midas_ros.tools import evaluate, finetune
from midas_ros.training import DatasetError
from midas_ros.training.rgbd_bag import RgbdPairReader
from midas_ros.training.trainer import atomic_write
from ros_process import NodeProcess, RosTestNode, unique_namespace

WIDTH, HEIGHT = 64, 48
FRAME_NS = 100_000_000    # 10 Hz


def _scene():
    # A short loop, so that a dozen frames see the room from many sides.
    return SyntheticScene(SceneConfig(width=WIDTH, height=HEIGHT, loop_frames=24))


def write_recording(path, frames=12, depth_encoding='32FC1', compressed=False,
                    depth_offset_ns=0, depth_size=None, image_encoding='rgb8', start_s=100):
    """An MCAP like the recorder writes: /cam/image (or image/compressed), /cam/camera_info,
    /cam/depth. Returns the rendered frames."""
    scene = _scene()
    rendered = []
    image_topic = '/cam/image/compressed' if compressed else '/cam/image'
    with McapRecording(path) as recording:
        recording.add_topic(image_topic, 'sensor_msgs/msg/CompressedImage' if compressed
                            else 'sensor_msgs/msg/Image')
        recording.add_topic('/cam/camera_info', 'sensor_msgs/msg/CameraInfo')
        recording.add_topic('/cam/depth', 'sensor_msgs/msg/Image')
        for index in range(frames):
            frame = scene.render(index)
            rendered.append(frame)
            stamp = start_s * 1_000_000_000 + index * FRAME_NS
            depth = frame.depth
            if depth_size is not None:
                depth = cv2.resize(depth, depth_size, interpolation=cv2.INTER_NEAREST)
            if depth_encoding == '16UC1':
                depth = np.round(depth * 1000).astype(np.uint16)
            elif depth_encoding == 'rgb8':      # a colour image where depth should be
                depth = frame.rgb
            if compressed:
                image = CompressedImage(format='rgb8; png compressed bgr8')
                image.data = cv2.imencode('.png', cv2.cvtColor(frame.rgb,
                                                               cv2.COLOR_RGB2BGR))[1].tobytes()
            elif image_encoding == 'rgb8':
                image = array_to_image(frame.rgb, 'rgb8')
            else:
                image = array_to_image(frame.depth, image_encoding)
            depth_msg = array_to_image(depth, depth_encoding)
            info = intrinsics_to_camera_info(frame.intrinsics)
            for msg, offset in ((image, 0), (info, 0), (depth_msg, depth_offset_ns)):
                msg.header.frame_id = 'camera_optical_frame'
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp + offset,
                                                                        1_000_000_000)
            recording.write(image_topic, serialize_message(image), stamp)
            recording.write('/cam/camera_info', serialize_message(info), stamp)
            recording.write('/cam/depth', serialize_message(depth_msg), stamp + depth_offset_ns)
    return rendered


# -- reading -------------------------------------------------------------------------------------

def test_pairs_hold_the_recorded_image_and_depth(tmp_path):
    bag = tmp_path / 'rec.mcap'
    rendered = write_recording(bag, frames=5, depth_encoding='16UC1', compressed=True,
                               depth_offset_ns=3_000_000)
    reader = RgbdPairReader([bag], '/cam/image/compressed', '/cam/depth', tolerance_s=0.005)
    assert (reader.report.pairs, reader.report.images, reader.report.depths) == (5, 5, 5)
    assert reader.report.max_offset_s == pytest.approx(0.003)
    pairs = list(reader.pairs())
    for pair, frame in zip(pairs, rendered):
        np.testing.assert_array_equal(pair.rgb, frame.rgb)     # png: lossless, RGB order
        # Millimetres back to metres; no reading (0) and beyond max_depth are NaN.
        valid = np.isfinite(pair.depth)
        np.testing.assert_allclose(pair.depth[valid], frame.depth[valid], atol=6e-4)
        assert np.array_equal(valid, (frame.depth >= 0.1) & (frame.depth <= 20.0))
    # A tolerance below the 3 ms offset pairs nothing: a clear error.
    with pytest.raises(DatasetError, match='within 2 ms'):
        RgbdPairReader([bag], '/cam/image/compressed', '/cam/depth', tolerance_s=0.002)


def test_depth_of_another_size_is_resampled_with_the_camera_info(tmp_path):
    bag = tmp_path / 'rec.mcap'
    rendered = write_recording(bag, frames=3, depth_size=(WIDTH // 2, HEIGHT // 2))
    with pytest.raises(DatasetError, match='--camera-info'):
        list(RgbdPairReader([bag], '/cam/image', '/cam/depth').pairs())
    pairs = list(RgbdPairReader([bag], '/cam/image', '/cam/depth', '/cam/camera_info').pairs())
    half = cv2.resize(rendered[1].depth, (WIDTH // 2, HEIGHT // 2),
                      interpolation=cv2.INTER_NEAREST)
    assert pairs[1].depth.shape == (HEIGHT, WIDTH)
    # Camera pixel (2v + 1, 2u + 1) sees the centre of depth pixel (v, u).
    np.testing.assert_array_equal(pairs[1].depth[1::2, 1::2], half)


def test_the_documented_recording_command_gives_pairs(tmp_path):
    """pipeline --camera-only (camera_source + recorder over DDS) records what finetune reads."""
    import subprocess
    import sys
    bag = tmp_path / 'synthetic.mcap'
    params = tmp_path / 'small.yaml'
    params.write_text('camera_source:\n  ros__parameters:\n    width: 64\n    height: 48\n')
    run = subprocess.run([sys.executable, '-m', 'midas_ros', 'pipeline', '--camera-only',
                          '--frames', '6', '--record', str(bag), '--params', str(params)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    reader = RgbdPairReader([bag], '/image', '/ground_truth/depth', '/camera_info')
    pairs = list(reader.pairs())
    assert len(pairs) >= 4 and reader.report.max_offset_s == 0.0
    assert reader.camera.width == 64
    scene = _scene_at_default_loop()
    # Each recorded pair is a frame of the scene: its depth is that frame's true depth.
    truths = [scene.render(i).depth for i in range(8)]
    for pair in pairs:
        assert pair.rgb.shape == (48, 64, 3)
        assert any(np.allclose(pair.depth, t, equal_nan=True) for t in truths)


def _scene_at_default_loop():
    return SyntheticScene(SceneConfig(width=WIDTH, height=HEIGHT))


# -- bad input: one line, exit status 2, nothing written ------------------------------------------

@pytest.fixture(scope='module')
def good_bag(tmp_path_factory):
    bag = tmp_path_factory.mktemp('bags') / 'good.mcap'
    write_recording(bag, frames=12)
    return bag


def _bad_input(capsys, tmp_path, argv):
    out = tmp_path / 'out'
    code = finetune.main(argv + ['--out', str(out / 'ft.pt'), '--device', 'cpu'])
    error = capsys.readouterr().err.strip()
    assert code == 2, error
    assert len(error.splitlines()) == 1 and error.startswith('finetune: error: ')
    assert not out.exists()
    return error


def test_a_topic_not_in_the_bag_lists_the_image_topics(capsys, tmp_path, good_bag):
    error = _bad_input(capsys, tmp_path, ['--bag', str(good_bag), '--image', '/camera/rgb',
                                          '--depth', '/cam/depth', '--random-weights'])
    assert '/camera/rgb' in error and '/cam/image (Image)' in error and '/cam/depth' in error


def test_no_pairs_within_the_tolerance(capsys, tmp_path):
    bag = tmp_path / 'late.mcap'
    write_recording(bag, frames=4, depth_offset_ns=40_000_000)
    error = _bad_input(capsys, tmp_path, ['--bag', str(bag), '--image', '/cam/image',
                                          '--depth', '/cam/depth', '--random-weights'])
    assert 'within 20 ms' in error and '40.0 ms apart' in error


def test_an_encoding_it_cannot_read(capsys, tmp_path, good_bag):
    bag = tmp_path / 'float_camera.mcap'
    write_recording(bag, frames=12, image_encoding='32FC1')
    error = _bad_input(capsys, tmp_path, ['--bag', str(bag), '--image', '/cam/image',
                                          '--depth', '/cam/depth', '--random-weights'])
    assert "'32FC1' cannot be read as colour" in error
    # Depth in a colour encoding.
    bag = tmp_path / 'colour_depth.mcap'
    write_recording(bag, frames=12, depth_encoding='rgb8')
    error = _bad_input(capsys, tmp_path, ['--bag', str(bag), '--image', '/cam/image',
                                          '--depth', '/cam/depth', '--random-weights'])
    assert 'depth image encoding must be 32FC1' in error


def test_a_truncated_mcap(capsys, tmp_path, good_bag):
    bag = tmp_path / 'cut.mcap'
    bag.write_bytes(good_bag.read_bytes()[:good_bag.stat().st_size // 2])
    error = _bad_input(capsys, tmp_path, ['--bag', str(bag), '--image', '/cam/image',
                                          '--depth', '/cam/depth', '--random-weights'])
    assert 'not a readable MCAP file' in error and 'cut.mcap' in error


def test_weights_of_another_model(capsys, tmp_path, good_bag):
    weights = tmp_path / 'other.pt'
    torch.save({'pretrained.layer1.weight': torch.zeros(3)}, weights)
    error = _bad_input(capsys, tmp_path, ['--bag', str(good_bag), '--image', '/cam/image',
                                          '--depth', '/cam/depth', '--weights', str(weights),
                                          '--split-gap', '1'])
    assert "does not match MiDaS model 'midas_v21_small_256'" in error


def test_a_validation_split_too_small(capsys, tmp_path, good_bag):
    error = _bad_input(capsys, tmp_path, ['--bag', str(good_bag), '--image', '/cam/image',
                                          '--depth', '/cam/depth', '--random-weights',
                                          '--val-fraction', '0.05'])
    assert 'validation split too small' in error


def test_an_interrupted_write_keeps_the_previous_file(tmp_path):
    target = tmp_path / 'ft.pt'
    target.write_bytes(b'complete')

    def interrupted(path):
        path.write_bytes(b'half')
        raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, interrupted)
    assert target.read_bytes() == b'complete' and os.listdir(tmp_path) == ['ft.pt']


# -- a short fine-tune, then evaluate and depth_node with its checkpoint ------------------------

@pytest.fixture(scope='module')
def finetuned(tmp_path_factory, good_bag):
    out = tmp_path_factory.mktemp('finetune') / 'ft.pt'
    code = finetune.main(['--bag', str(good_bag), '--image', '/cam/image', '--depth',
                          '/cam/depth', '--random-weights', '--out', str(out), '--device',
                          'cpu', '--steps', '3', '--batch', '2', '--lr', '1e-3',
                          '--val-every', '3', '--val-fraction', '0.25', '--val-blocks', '1',
                          '--split-gap', '1', '--batch-norm', 'frozen'])
    assert code == 0
    return out


def _training_loss(weights, bag, split_train):
    """Mean loss of the model on the training frames (the network as depth_node runs it)."""
    from midas_ros.models import create_model, get_config
    from midas_ros.models.transforms import DevicePreprocessor
    from midas_ros.training.losses import training_loss
    cfg = get_config('midas_v21_small_256')
    model = create_model(cfg.name, pretrained=weights is not None, weights=weights)
    preprocess = DevicePreprocessor(cfg, 'cpu', channels_last=False)
    losses = []
    with torch.inference_mode():
        for index, pair in enumerate(RgbdPairReader([bag], '/cam/image', '/cam/depth').pairs()):
            if index not in split_train:
                continue
            net_input = preprocess(torch.from_numpy(pair.rgb), 'rgb')
            prediction = model(net_input)
            depth = torch.from_numpy(cv2.resize(pair.depth, prediction.shape[:0:-1],
                                                interpolation=cv2.INTER_NEAREST))[None]
            losses.append(training_loss('relative_inverse_depth', prediction, depth,
                                        torch.isfinite(depth)).item())
    return float(np.mean(losses))


def test_finetune_lowers_the_training_loss_and_reports(finetuned, good_bag):
    report = json.loads(finetuned.with_suffix('.json').read_text())
    assert report['pairs']['pairs'] == 12
    assert report['split'] == {'train': 7, 'validation': 3, 'gap_frames': 2,
                               'validation_blocks': [[4, 6]]}
    for when in ('before', 'after'):
        metrics = report['validation'][when]
        assert set(metrics) >= {'abs_rel', 'rmse', 'delta1'}
        assert all(math.isfinite(metrics[k]) for k in ('abs_rel', 'rmse', 'delta1'))
    assert report['checkpoint']['step'] == 3 and report['training']['steps_done'] == 3
    assert report['args']['lr'] == 1e-3 and 'torch' in report['versions']
    train = set(range(12)) - {3, 4, 5, 6, 7}       # 3 validation frames, 1 gap frame each side
    before = _training_loss(None, good_bag, train)
    after = _training_loss(str(finetuned), good_bag, train)
    assert after < before, (before, after)


def test_resume_continues_the_run(finetuned, good_bag, tmp_path):
    import shutil
    out = tmp_path / 'ft.pt'
    for suffix in ('', '.resume'):
        shutil.copy(str(finetuned) + suffix, str(out) + suffix)
    shutil.copy(finetuned.with_suffix('.json'), out.with_suffix('.json'))
    code = finetune.main(['--bag', str(good_bag), '--image', '/cam/image', '--depth',
                          '/cam/depth', '--resume', str(out), '--device', 'cpu', '--steps', '4',
                          '--batch', '2', '--lr', '1e-3', '--val-every', '3',
                          '--val-fraction', '0.25', '--val-blocks', '1', '--split-gap', '1'])
    assert code == 0
    report = json.loads(out.with_suffix('.json').read_text())
    assert report['resumed_from_step'] == 3 and report['checkpoint']['step'] == 4
    first = json.loads(finetuned.with_suffix('.json').read_text())
    assert report['validation']['before'] == first['validation']['before']


def test_evaluate_prints_and_writes_the_same_numbers(finetuned, good_bag, tmp_path, capsys):
    result_path = tmp_path / 'eval.json'
    code = evaluate.main(['--bag', str(good_bag), '--image', '/cam/image', '--depth',
                          '/cam/depth', '--weights', str(finetuned), '--device', 'cpu',
                          '--camera-info', '/cam/camera_info', '--scale-mode', 'ground_plane',
                          '--camera-height', '0.8', '--camera-pitch-deg', '8.0',
                          '--json', str(result_path)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    result = json.loads(result_path.read_text())
    assert result['relative']['frames'] == 12
    assert f"AbsRel {result['relative']['abs_rel']:.4f}" in printed
    assert result['metric']['scale_mode'] == 'ground_plane' and 'coverage' in result['metric']
    # Validation frames scored by finetune and by evaluate agree (same network path).
    report = json.loads(finetuned.with_suffix('.json').read_text())
    assert report['validation']['after']['frames'] == 3


def test_depth_node_loads_the_checkpoint_strictly_and_runs_it(finetuned, tmp_path):
    from midas_ros.inference import DepthEstimator
    namespace = unique_namespace('ft')
    process = NodeProcess('depth_node', [
        '-r', f'__ns:={namespace}', '-p', f'model.weights:={finetuned}', '-p', 'device:=cpu',
        '-p', 'model.backend:=torch'], tmp_path=tmp_path)
    probe = RosTestNode('finetune_probe')
    try:
        received = probe.collect(Image, f'{namespace}/depth/relative',
                                 qos_profile('sensor_data', depth=5))
        image_pub = probe.node.create_publisher(Image, f'{namespace}/image',
                                                qos_profile('sensor_data'))
        info_pub = probe.node.create_publisher(CameraInfo, f'{namespace}/camera_info',
                                               qos_profile('sensor_data'))
        frame = _scene().render(5)
        image = array_to_image(frame.rgb, 'rgb8')
        image.header.frame_id = 'camera_optical_frame'
        image.header.stamp.sec = 7
        info = intrinsics_to_camera_info(frame.intrinsics)
        info.header = image.header
        state = {'next': 0.0}

        def send():
            import time
            if time.monotonic() >= state['next']:
                info_pub.publish(info)
                image_pub.publish(image)
                state['next'] = time.monotonic() + 0.3
        assert probe.spin_until(lambda: received, 180, send), process.output()[-3000:]
    finally:
        probe.close()
        process.stop()
    assert 'Traceback' not in process.output()
    published, _ = image_to_array(received[0])
    expected = DepthEstimator('midas_v21_small_256', 'cpu', weights=str(finetuned),
                              backend='torch').predict(frame.rgb, 'rgb')
    # The node ran the fine-tuned network, not the random or official one.
    np.testing.assert_allclose(published, expected, rtol=1e-3,
                               atol=1e-3 * float(np.abs(expected).max()))
    random = DepthEstimator('midas_v21_small_256', 'cpu', pretrained=False,
                            backend='torch').predict(frame.rgb, 'rgb')
    assert not np.allclose(published, random, rtol=1e-2, atol=1e-2 * float(
        np.abs(random).max()))
