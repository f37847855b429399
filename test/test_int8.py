"""int8 on the CPU: calibration sources, the quantized graph's cache key, the accuracy gate, the
fallback to fp32, and the one-line errors of bad calibration inputs.

Quantization runs for real (ONNX Runtime's static QDQ, NNCF for OpenVINO) on the tiny stand-in
network of test_backends (two convolutions: quantizes in about a second); the calibration images
are tiny as well. The accuracy figures are checked against outputs made with a known error.
"""
import logging

import numpy as np
import pytest
import torch
from test_backends import SMALL, TinyDepthNet, textured_image

from midas_ros.backends import ArtefactCache
from midas_ros.backends.quantize import CalibrationSet, create_int8_runner
from midas_ros.calibration_images import CalibrationError, load_calibration_images
from midas_ros.inference import DepthEstimator, choose_precision
from midas_ros.models.registry import get_config
from midas_ros.quantization import compare_relative, split_held_out

cv2 = pytest.importorskip('cv2')
WIDTH, HEIGHT = 64, 48       # camera frames; the small variant's network input is 256x192
TOPIC = '/camera/image_raw'


class Log:
    """Collects what the calibrator logs (an rclpy logger's or logging's info/warning)."""

    def __init__(self):
        self.infos, self.warnings = [], []

    def info(self, text):
        self.infos.append(text)

    def warning(self, text):
        self.warnings.append(text)


@pytest.fixture(scope='module')
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp('int8_cache')


def frames(count, width=WIDTH, height=HEIGHT):
    return [textured_image(height, width, seed) for seed in range(count)]


def int8_estimator(cache_dir, backend='onnxruntime', **kwargs):
    kwargs.setdefault('int8_background', False)
    return DepthEstimator(SMALL, device='cpu', model=TinyDepthNet(), backend=backend,
                          cache_dir=cache_dir, precision='int8', **kwargs)


def image_folder(path, images):
    path.mkdir()
    for index, image in enumerate(images):
        cv2.imwrite(str(path / f'{index:03d}.png'), image)
    return path


def image_recording(path, images, topic=TOPIC):
    """An MCAP recording of rgb8 sensor_msgs/Image messages on ``topic``."""
    pytest.importorskip('mcap')
    from rclpy.serialization import serialize_message

    from midas_ros.recording import McapRecording
    from midas_ros.ros.conversions import array_to_image
    with McapRecording(path, compression='none') as recording:
        recording.add_topic(topic, 'sensor_msgs/msg/Image')
        for index, image in enumerate(images):
            recording.write(topic, serialize_message(array_to_image(image, 'rgb8')),
                            (index + 1) * 10**8)
    return path


# ----------------------------------------------------------------------------- accuracy


def test_accuracy_figures_after_scale_and_shift_alignment():
    reference = np.linspace(1.0, 3.0, 400, dtype=np.float32).reshape(20, 20)
    # Scale and shift are free: an affine copy is exact.
    exact = compare_relative([2.5 * reference - 7.0], [reference])
    assert exact.median < 1e-6 and exact.p95 < 1e-6 and exact.delta1 == 1.0
    # A 10 % error on a quarter of the pixels: the least-squares alignment spreads part of it
    # over the others (median ~2.7 %), the 95th percentile keeps most of it.
    noisy = reference.copy()
    noisy.ravel()[::4] *= 1.10
    figures = compare_relative([noisy], [reference])
    assert 0.01 < figures.median < 0.04 and 0.05 < figures.p95 < 0.12 and figures.delta1 == 1.0
    assert figures.frames == 1
    # The far field / sky (inverse depth ~0) is left out: its relative error is unbounded.
    sky = np.concatenate([reference, np.zeros_like(reference)])
    wrong_sky = np.concatenate([reference, np.full_like(reference, 0.01)])
    assert compare_relative([wrong_sky], [sky]).p95 < 0.02


def test_held_out_split():
    calibration, held = split_held_out(list(range(8)))
    assert held == [3, 7] and calibration == [0, 1, 2, 4, 5, 6]
    assert split_held_out([0, 1]) == ([0], [1])
    with pytest.raises(CalibrationError, match='at least 2 frames'):
        split_held_out([0])


# ----------------------------------------------------------------------------- sources


def test_calibration_from_a_folder_spreads_over_it(tmp_path):
    folder = image_folder(tmp_path / 'images', frames(6))
    (folder / 'notes.txt').write_text('not an image')
    images = load_calibration_images(str(folder), 3)
    assert [label for label, _, _ in images] == ['000.png', '002.png', '005.png']
    assert all(order == 'bgr' and image.shape == (HEIGHT, WIDTH, 3)
               for _, image, order in images)


def test_calibration_from_a_recording_topic(tmp_path):
    recorded = frames(5)
    path = image_recording(tmp_path / 'run.mcap', recorded)
    images = load_calibration_images(f'{path}:{TOPIC}', 10)
    assert len(images) == 5 and images[0][2] == 'rgb'
    np.testing.assert_array_equal(images[4][1], recorded[4])
    # Without a topic: the recording's only image topic.
    assert len(load_calibration_images(str(path), 2)) == 2


def test_bad_calibration_sources_are_one_line_errors(tmp_path):
    (tmp_path / 'empty').mkdir()
    path = image_recording(tmp_path / 'run.mcap', frames(2))
    cases = {str(tmp_path / 'empty'): 'holds no images',
             f'{path}:/other/image': f"has no image topic '/other/image'.*{TOPIC}",
             str(tmp_path / 'missing.mcap'): 'does not exist',
             str(tmp_path / 'nothing_here'): 'neither a folder of images nor an MCAP'}
    for source, message in cases.items():
        with pytest.raises(CalibrationError, match=message) as error:
            load_calibration_images(source, 4)
        assert '\n' not in str(error.value)


def test_estimator_rejects_a_bad_source_at_construction(tmp_path, cache_dir):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(CalibrationError, match='holds no images'):
        int8_estimator(cache_dir, calibration=str(tmp_path / 'empty'))


def test_torch_and_gpu_refuse_int8_with_a_reason(cache_dir):
    with pytest.raises(ValueError, match='torch has no int8 CPU path'):
        int8_estimator(cache_dir, backend='torch')
    with pytest.raises(ValueError, match='int8 runs on the CPU'):
        choose_precision('int8', torch.device('cuda', 0), get_config(SMALL))


# ----------------------------------------------------------------------------- cache key


def test_cache_key_changes_with_the_calibration_data(cache_dir):
    cfg, model, cache = get_config(SMALL), TinyDepthNet(), ArtefactCache(cache_dir)
    one = CalibrationSet.of([np.zeros((1, 3, 8, 8), np.float32)])
    same = CalibrationSet.of([np.zeros((1, 3, 8, 8), np.float32)])
    other = CalibrationSet.of([np.ones((1, 3, 8, 8), np.float32)])
    keys = {name: create_int8_runner('onnxruntime', model, cfg, torch.device('cpu'), cache,
                                     calibration).target()
            for name, calibration in (('one', one), ('same', same), ('other', other))}
    assert keys['one'] == keys['same'] != keys['other']
    assert one.digest[:16] in keys['one']


# ----------------------------------------------------------------------------- quantization


def test_live_frames_calibrate_then_int8_runs_in_every_lane(cache_dir):
    """The node's path: background quantization while fp32 serves; warm-up frames are no
    calibration frames; the replica (a second lane) takes its own int8 session."""
    log = Log()
    estimator = int8_estimator(cache_dir, calibration_frames=4, int8_max_error=0.5,
                               int8_background=True, logger=log)
    replica = estimator.replica()
    estimator.warmup(WIDTH, HEIGHT)
    assert estimator.int8.state == 'collecting' and not estimator.int8._inputs
    images = frames(5)
    fp32 = [estimator.predict(image) for image in images[:2]]
    for image in images[2:4]:
        replica.predict(image)
    assert estimator.int8.wait(120), estimator.int8.reason
    assert estimator.int8.state == 'int8', estimator.int8.reason
    assert estimator.precision == 'fp32'          # swapped at the next frame, in its thread
    int8 = estimator.predict(images[0])
    replica.predict(images[1])
    assert estimator.precision == replica.precision == 'int8'
    assert estimator.runner is not replica.runner
    figures = compare_relative([int8], [fp32[0]])
    assert figures.p95 < 0.5 and figures.delta1 > 0.9
    assert 'int8' in estimator.int8.artefact.name and 'cal' in estimator.int8.artefact.name
    diagnostics = estimator.int8.diagnostics()
    assert diagnostics['int8'].startswith('int8:') and 'int8 p95 relative error' in diagnostics
    assert len(log.infos) == 1 and 'held-out' in log.infos[0] and not log.warnings


def test_cameras_of_two_sizes_share_one_calibration(cache_dir):
    """depth_node's several cameras feeding one network: live frames of each network input size
    are kept apart, the first size with enough frames is quantized, and a camera of another
    aspect ratio keeps running the fp32 graph (int8 is not dropped for the other one)."""
    log = Log()
    estimator = int8_estimator(cache_dir, calibration_frames=3, int8_max_error=0.5, logger=log)
    wide, square = frames(3), frames(3, width=48, height=48)   # 256x192 / 256x256 networks
    fp32_square = []
    for wide_frame, square_frame in zip(wide, square):   # the cameras take turns
        estimator.predict(wide_frame)
        if estimator.int8.state == 'collecting':
            fp32_square.append(estimator.predict(square_frame))
    assert len(fp32_square) == 2    # the square camera's third frame came after quantizing
    assert estimator.int8.state == 'int8', estimator.int8.reason
    assert estimator.int8.size == (256, 192) and 'of 256x192' in estimator.int8.reason
    estimator.predict(wide[0])
    assert estimator.precision == 'int8' and estimator.runner is not estimator._fp32_runner
    np.testing.assert_allclose(estimator.predict(square[0]), fp32_square[0], rtol=1e-5)
    assert estimator.precision == 'int8' and estimator.int8.state == 'int8'
    assert len(log.infos) == 1 and not log.warnings


def test_accuracy_gate_keeps_fp32_with_one_warning(tmp_path, cache_dir):
    log = Log()
    folder = image_folder(tmp_path / 'images', frames(4))
    estimator = int8_estimator(cache_dir, calibration=str(folder), int8_max_error=1e-9,
                               logger=log)
    reference = estimator.predict(frames(1)[0])   # the first frame quantizes (folder source)
    assert estimator.int8.state == 'fp32' and estimator.precision == 'fp32'
    again = estimator.predict(frames(1)[0])
    np.testing.assert_array_equal(again, reference)
    assert len(log.warnings) == 1
    assert 'above inference.int8_max_error' in log.warnings[0] and '\n' not in log.warnings[0]
    assert estimator.int8.accuracy.p95 > 1e-9
    assert 'int8 refused' in estimator.precision_reason


def test_calibration_images_of_another_size_are_refused(tmp_path, cache_dir):
    log = Log()
    folder = image_folder(tmp_path / 'images', frames(3, width=48, height=48))
    estimator = int8_estimator(cache_dir, calibration=str(folder), logger=log)
    estimator.predict(frames(1)[0])
    assert estimator.int8.state == 'fp32' and estimator.precision == 'fp32'
    assert len(log.warnings) == 1 and "images of the camera's size" in log.warnings[0]


def test_recording_calibration_and_fallback_when_int8_fails_to_run(tmp_path, cache_dir):
    log = Log()
    path = image_recording(tmp_path / 'run.mcap', frames(4))
    estimator = int8_estimator(cache_dir, calibration=f'{path}:{TOPIC}', int8_max_error=0.5,
                               logger=log)
    fp32 = estimator.predict(frames(1)[0])
    assert estimator.int8.state == 'int8', estimator.int8.reason
    estimator.predict(frames(1)[0])
    assert estimator.precision == 'int8'

    def broken(net_input):
        raise RuntimeError('lost the session')
    estimator.runner._run = broken
    after = estimator.predict(frames(1)[0])
    assert estimator.precision == 'fp32' and 'int8 failed to run' in estimator.precision_reason
    np.testing.assert_allclose(after, fp32, rtol=1e-5)


def test_openvino_int8_with_nncf(cache_dir, caplog):
    pytest.importorskip('openvino')
    pytest.importorskip('nncf')
    estimator = int8_estimator(cache_dir, backend='openvino', calibration_frames=3,
                               int8_max_error=0.5)
    with caplog.at_level(logging.INFO, logger='midas_ros.quantization'):
        for image in frames(4):
            estimator.predict(image)
    assert estimator.int8.state == 'int8', estimator.int8.reason
    assert estimator.precision == 'int8' and 'openvino' in estimator.int8.artefact.name
    assert (estimator.int8.artefact / 'model.xml').is_file()
    assert any('int8 accepted' in record.message for record in caplog.records)


# ----------------------------------------------------------------------------- the node


def test_depth_node_serves_int8_and_reports_its_accuracy(tmp_path, monkeypatch):
    """depth_node as users run it, over real DDS: calibrated on a folder at warm-up, its
    outputs come from the int8 graph and /diagnostics carries the measured accuracy."""
    pytest.importorskip('onnxruntime')
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from test_depth_node import _latest_depth_status, _send_until
    from ros_process import NodeProcess, RosTestNode, unique_namespace

    from midas_ros.ros.conversions import array_to_image, image_to_array
    from midas_ros.ros.qos import qos_profile
    monkeypatch.setenv('MIDAS_ROS_CACHE', str(tmp_path / 'cache'))
    folder = image_folder(tmp_path / 'images', frames(4))
    namespace = unique_namespace('int8')
    params = {'model.pretrained': 'false', 'device': 'cpu', 'model.backend': 'onnxruntime',
              'inference.precision': 'int8', 'inference.calibration': str(folder),
              'inference.calibration_frames': '4', 'inference.int8_max_error': '1000.0',
              'inference.warmup_size': f'[{WIDTH}, {HEIGHT}]', 'diagnostics.period': '0.5'}
    ros_args = ['-r', f'__ns:={namespace}']
    for name, value in params.items():
        ros_args += ['-p', f'{name}:={value}']
    process = NodeProcess('depth_node', ros_args, tmp_path=tmp_path)
    probe = RosTestNode('int8_probe')
    try:
        depth = probe.collect(Image, f'{namespace}/depth/relative', qos_profile('sensor_data'))
        diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
        image_pub = probe.node.create_publisher(Image, f'{namespace}/image',
                                                qos_profile('sensor_data'))
        image = array_to_image(frames(1)[0], 'rgb8')

        def int8_status():
            values = _latest_depth_status(diagnostics, namespace)
            return depth and values.get('precision', '').startswith('int8') and values
        assert _send_until(probe, [image_pub], [image], int8_status, 240), \
            (_latest_depth_status(diagnostics, namespace), process.output())
        values = int8_status()
        assert values['int8'].startswith('int8: onnxruntime int8 calibrated on 3 inputs')
        assert 0.0 <= float(values['int8 p95 relative error'])
        assert 0.0 < float(values['int8 delta1']) <= 1.0
        relative, _ = image_to_array(depth[-1])
        assert relative.shape == (HEIGHT, WIDTH) and np.isfinite(relative).all()
    finally:
        probe.close()
        process.stop()


def test_depth_node_cameras_share_one_int8_network(tmp_path, monkeypatch):
    """Two cameras (``cameras: [front, rear]``) over real DDS: one calibration at warm-up for
    the network they share, both served by the int8 graph, each camera's status carrying the
    network's int8 figures."""
    pytest.importorskip('onnxruntime')
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image
    from test_depth_node import _send_until
    from ros_process import NodeProcess, RosTestNode, unique_namespace

    from midas_ros.ros.conversions import array_to_image
    from midas_ros.ros.qos import qos_profile
    monkeypatch.setenv('MIDAS_ROS_CACHE', str(tmp_path / 'cache'))
    folder = image_folder(tmp_path / 'images', frames(4))
    namespace = unique_namespace('int8_cameras')
    cameras = ('front', 'rear')
    params = {'cameras': '[front,rear]', 'model.pretrained': 'false', 'device': 'cpu',
              'model.backend': 'onnxruntime', 'inference.precision': 'int8',
              'inference.calibration': str(folder), 'inference.calibration_frames': '4',
              'inference.int8_max_error': '1000.0',
              'inference.warmup_size': f'[{WIDTH}, {HEIGHT}]', 'diagnostics.period': '0.5'}
    ros_args = ['-r', f'__ns:={namespace}']
    for name, value in params.items():
        ros_args += ['-p', f'{name}:={value}']
    process = NodeProcess('depth_node', ros_args, tmp_path=tmp_path)
    probe = RosTestNode('int8_cameras_probe')
    try:
        depth = {camera: probe.collect(Image, f'{namespace}/{camera}/depth/relative',
                                       qos_profile('sensor_data')) for camera in cameras}
        diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
        publishers = [probe.node.create_publisher(Image, f'{namespace}/{camera}/image',
                                                  qos_profile('sensor_data'))
                      for camera in cameras]
        images = [array_to_image(image, 'rgb8') for image in frames(2)]

        def statuses():
            latest = {}
            for msg in diagnostics:
                for status in msg.status:
                    for camera in cameras:
                        if status.name == f'{namespace}/depth_node: depth {camera}':
                            latest[camera] = {kv.key: kv.value for kv in status.values}
            return latest

        def served():
            latest = statuses()
            return all(depth[c] and latest.get(c, {}).get('precision', '').startswith('int8')
                       and int(latest[c]['frames processed']) > 0 for c in cameras)
        assert _send_until(probe, publishers, images, served, 240), \
            (statuses(), process.output())
        latest = statuses()
        for camera in cameras:
            assert latest[camera]['int8'].startswith(
                'int8: onnxruntime int8 calibrated on 3 inputs of 256x192'), latest[camera]
            assert latest[camera]['cameras sharing the network'] == '2'
        # One network, one measurement: the same figures in both cameras' statuses.
        keys = ('int8', 'int8 p95 relative error', 'int8 delta1')
        assert [latest['front'][k] for k in keys] == [latest['rear'][k] for k in keys]
        assert process.output().count('int8 accepted') == 1
    finally:
        probe.close()
        process.stop()


# ----------------------------------------------------------------------------- benchmark


def test_benchmark_prints_fp32_and_int8_per_backend_and_threads(capsys, monkeypatch, tmp_path):
    """`benchmark --precisions fp32,int8`, on the stand-in network (the table, not the speed)."""
    import midas_ros.models
    from midas_ros.tools import benchmark
    monkeypatch.setattr(midas_ros.models, 'create_model', lambda *a, **k: TinyDepthNet())
    status = benchmark.main(['--precisions', 'fp32,int8', '--backends', 'onnxruntime',
                             '--thread-counts', '1,2', '--width', str(WIDTH), '--height',
                             str(HEIGHT), '--frames', '2', '--warmup', '0',
                             '--calibration-frames', '4', '--cache-dir', str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    rows = [[cell.strip() for cell in line.strip('|').split('|')]
            for line in out.splitlines() if line.startswith('| midas_v21_small_256 |')]
    assert [row[1:4] for row in rows] == [['onnxruntime', '1', '256x192'],
                                          ['onnxruntime', '2', '256x192']]
    for row in rows:
        fp32, int8 = (float(row[i].split('/')[0]) for i in (4, 5))
        assert fp32 > 0 and int8 > 0
        # The times are printed to 0.1 ms and the speed-up to 0.01: sub-millisecond forwards of
        # the stand-in network leave the ratio of the printed times that far from it.
        speed_up = float(row[6].rstrip('x'))
        assert (fp32 - 0.05) / (int8 + 0.05) - 0.005 <= speed_up \
            <= (fp32 + 0.05) / max(int8 - 0.05, 1e-9) + 0.005
        assert 'delta1' not in row[8] and row[8].count('%') == 2
    assert rows[1][7] == '0.0 (cached)'    # the second thread count reuses the int8 graph
    assert 'VNNI' in out and 'random weights (int8 gate off)' in out


def test_node_benchmark_int8_parameters(tmp_path):
    from midas_ros.tools import benchmark
    from midas_ros.tools.int8_benchmark import node_parameters
    args = benchmark.build_parser().parse_args(
        ['--node', '--precision', 'int8', '--width', str(WIDTH), '--height', str(HEIGHT),
         '--calibration-frames', '3'])
    params = node_parameters(args, str(tmp_path))
    assert params['inference.precision'] == 'int8'
    assert params['inference.int8_max_error'] == 1000.0   # random weights: speed, no gate
    assert len(load_calibration_images(params['inference.calibration'], 10)) == 3
    # --cameras N: the node of N cameras and the N single-camera nodes all run int8.
    settings = benchmark.benchmark_settings(benchmark.synthetic_frames(WIDTH, HEIGHT, 1)[2])
    for command in (benchmark.node_command('/ns', args, settings, ['cam0', 'cam1'], params),
                    benchmark.node_command('/ns/cam0', args, settings, extra=params)):
        assert 'inference.precision:=int8' in command
        assert f"inference.calibration:={params['inference.calibration']}" in command
    assert 'cameras:=[cam0,cam1]' in benchmark.node_command('/ns', args, settings,
                                                            ['cam0', 'cam1'], params)
    with pytest.raises(SystemExit):
        benchmark.main(['--node', '--precisions', 'fp32,int8'])


@pytest.mark.parametrize('name', [SMALL, 'dpt_levit_224'])
def test_random_weights_give_a_positive_varying_inverse_depth(name):
    """What int8 is measured against with random weights (node, benchmark): with PyTorch's
    default initialization the head's final ReLU zeroed most pixels (all of dpt_levit_224's)."""
    from midas_ros.models import create_model
    model = create_model(name, pretrained=False)
    cfg = get_config(name)
    with torch.inference_mode():
        output = model(torch.randn(1, 3, cfg.net_h, cfg.net_w,
                                   generator=torch.Generator().manual_seed(0)))
    assert (output > 0).all() and output.std() > 0.05 * output.mean()
