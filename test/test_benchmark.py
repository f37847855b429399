"""The measuring tools: the benchmark runs and prints its tables; the metric evaluator's numbers
are right on inputs whose answers are known."""
import math

import numpy as np
import pytest

from midas_ros.geometry import Intrinsics
from midas_ros.synthetic import SceneConfig, SyntheticScene
from midas_ros.tools import benchmark
from midas_ros.tools.evaluate_metric import (CameraSetup, MetricEvaluator, depth_metrics,
                                             format_table, valid_truth)


# ------------------------------------------------------------------------------- evaluator


def test_depth_metrics_match_hand_computed_values():
    truth = np.array([[1.0, 2.0, 4.0], [8.0, np.nan, 5.0]])
    predicted = np.array([[1.1, 2.0, 2.0], [8.0, 3.0, np.nan]])
    valid = valid_truth(truth, 0.1, 20.0)
    metrics = depth_metrics(predicted, truth, valid)
    # Scored: (1.1 vs 1), (2 vs 2), (2 vs 4), (8 vs 8); 5 m has no prediction, NaN no truth.
    assert metrics.abs_rel == pytest.approx((0.1 + 0.0 + 0.5 + 0.0) / 4)
    assert metrics.rmse == pytest.approx(math.sqrt((0.01 + 0.0 + 4.0 + 0.0) / 4))
    assert metrics.delta1 == pytest.approx(3 / 4)   # ratio 2 fails, 1.1 passes
    assert metrics.coverage == pytest.approx(4 / 5)


def test_depth_metrics_need_valid_truth():
    truth = np.full((2, 2), np.nan)
    with pytest.raises(ValueError, match='no valid ground-truth'):
        depth_metrics(np.ones((2, 2)), truth, valid_truth(truth, 0.1, 20.0))


def _scene_frames(count, width=96, height=72):
    scene = SyntheticScene(SceneConfig(width=width, height=height))
    camera = CameraSetup(scene.intrinsics, scene.config.camera_height,
                         scene.config.camera_pitch_deg)
    return [scene.render(30 * i).depth for i in range(count)], camera


def _distorted_relative(depth, a, b):
    """A relative inverse depth the modes must undo: 1 / depth = a * relative + b."""
    return ((1.0 / depth - b) / a).astype(np.float32)


def test_evaluator_recovers_a_known_affine_distortion():
    depths, camera = _scene_frames(3)
    evaluator = MetricEvaluator(camera, anchors=200, anchor_outliers=0.2)
    # A different unknown affine per frame, as MiDaS output has.
    for depth, (a, b) in zip(depths, [(0.02, 0.05), (0.05, 0.01), (0.01, 0.1)]):
        evaluator.add(_distorted_relative(depth, a, b), depth)
    reports = evaluator.reports
    assert [len(r.metrics) for r in reports.values()] == [3, 3, 3, 3]
    for mode in ('oracle', 'sparse'):   # sparse despite 20 % outlier anchors
        assert reports[mode].mean().abs_rel < 0.01, mode
    assert reports['ground_plane'].mean().abs_rel < 0.03
    # The fixed mode holds frame 1's scale: exact there, wrong once the affine changes.
    fixed = reports['fixed'].metrics
    assert fixed[0].abs_rel < 0.01
    assert min(m.abs_rel for m in fixed[1:]) > 0.1
    table = format_table(reports)
    assert table.count('\n') == 1 + len(reports)
    assert '| sparse | 3 |' in table


def test_evaluator_counts_frames_without_a_scale():
    intrinsics = Intrinsics.from_fov(32, 24, 60.0)
    evaluator = MetricEvaluator(CameraSetup(intrinsics, 1.0, 10.0), modes=('sparse',),
                                anchors=50)
    depth = np.full((24, 32), 2.0, np.float32)
    # A relative map that is nowhere positive cannot give a positive scale.
    evaluator.add(np.full((24, 32), -1.0, np.float32), depth)
    assert evaluator.reports['sparse'].failed == 1
    assert evaluator.reports['sparse'].mean() is None
    with pytest.raises(ValueError, match='must both be'):
        evaluator.add(np.ones((10, 10), np.float32), depth)


# ------------------------------------------------------------------------------- benchmark


def test_median_p90_and_rss_slope():
    assert benchmark.median_p90(range(1, 11)) == pytest.approx((5.5, 9.1))
    # 3 MB per minute on top of 500 MB, sampled every second for two minutes.
    samples = [(t, 500.0 + 3.0 * t / 60.0) for t in range(121)]
    start, end, peak, slope = benchmark.rss_summary(samples)
    assert (start, end, peak) == pytest.approx((500.0, 506.0, 506.0))
    assert slope == pytest.approx(3.0)


def test_child_arguments_drop_the_model_list():
    argv = ['--models', 'a,b', '--frames', '2', '--models=c', '--device', 'cpu']
    assert benchmark._strip_models(argv) == ['--frames', '2', '--device', 'cpu']


def test_benchmark_prints_the_tables_for_two_frames(capsys):
    status = benchmark.main(['--models', 'midas_v21_small_256', '--width', '64', '--height',
                             '48', '--frames', '2', '--warmup', '1', '--threads', '1'])
    out = capsys.readouterr().out
    assert status == 0
    assert 'Hardware: ' in out and 'random weights' in out
    row = next(line for line in out.splitlines() if line.startswith('| midas_v21_small_256 |'))
    cells = [cell.strip() for cell in row.strip('|').split('|')]
    assert cells[:4] == ['midas_v21_small_256', 'v2.1', '256x192', '21.3']
    assert cells[-1] == '2'   # timed frames
    assert float(cells[4]) > 0   # model-only ms
    median, p90 = (float(v) for v in cells[5].split('/'))
    assert 0 < median <= p90
    for stage in ('decode', 'preprocess', 'inference', 'scale', 'colormap', 'cloud', 'scan',
                  'messages', 'serialize', 'end to end', 'model only'):
        assert f'| {stage} |' in out, stage


def test_benchmark_refuses_a_backend_it_does_not_have(capsys):
    status = benchmark.main(['--width', '64', '--height', '48', '--frames', '1', '--warmup',
                             '0', '--backend', 'no_such_backend', '--threads', '1'])
    assert status == 1
    assert 'no_such_backend' in capsys.readouterr().err


def test_node_benchmark_refuses_an_output_the_node_does_not_have(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(['--node', '--outputs', 'depth/image,depth/pointz'])
    assert '--outputs: depth/pointz; choose from depth/image' in capsys.readouterr().err


def test_percentiles_and_process_cpu_time():
    assert benchmark.percentiles(range(1, 101)) == pytest.approx([50.5, 90.1, 99.01])
    import os
    import time
    before = benchmark.process_cpu_seconds(os.getpid())
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert benchmark.process_cpu_seconds(os.getpid()) - before >= 0.15
    assert benchmark.process_cpu_seconds(2 ** 22 + 12345) is None   # no such process


def test_busy_load_runs_bounded_and_stops():
    load = benchmark.BusyLoad(2, seconds=30)
    try:
        assert all(p.poll() is None for p in load.processes)
        processes = list(load.processes)
    finally:
        load.stop()
    assert all(p.poll() is not None for p in processes) and not load.processes
    bounded = benchmark.BusyLoad(1, seconds=0)   # exits by itself at its time bound
    assert bounded.processes[0].wait(timeout=20) == 0


def test_official_child_environment_keeps_openmp_defaults(monkeypatch):
    monkeypatch.setenv('OMP_WAIT_POLICY', 'PASSIVE')   # what this process set for itself
    monkeypatch.setattr(benchmark, '_USER_OMP_WAIT_POLICY', None)
    assert 'OMP_WAIT_POLICY' not in benchmark.official_environment()
    monkeypatch.setattr(benchmark, '_USER_OMP_WAIT_POLICY', 'ACTIVE')
    assert benchmark.official_environment()['OMP_WAIT_POLICY'] == 'ACTIVE'


def test_cameras_benchmark_needs_a_streaming_rate(capsys):
    with pytest.raises(SystemExit):
        benchmark.main(['--node', '--cameras', '3'])
    assert '--cameras N (>= 1) above 1 needs --node and --rate' in capsys.readouterr().err


def test_cameras_result_compares_one_node_with_separate_processes(capsys):
    one = benchmark.CamerasResult('one depth_node, 2 cameras', 1, elapsed_s=10.0,
                                  published={'cam0': 300, 'cam1': 300},
                                  completed={'cam0': 60, 'cam1': 40},
                                  latency_ms={'cam0': [100.0] * 60, 'cam1': [200.0] * 40},
                                  cpu_s=15.0, rss_mb=[1300.0])
    separate = benchmark.CamerasResult('2 single-camera depth_node processes', 2,
                                       elapsed_s=10.0, published={'cam0': 300, 'cam1': 300},
                                       completed={'cam0': 30, 'cam1': 30},
                                       latency_ms={'cam0': [300.0], 'cam1': [300.0]},
                                       cpu_s=19.0, rss_mb=[1000.0, 1000.0])
    args = benchmark.build_parser().parse_args(['--node', '--cameras', '2', '--rate', '30'])
    benchmark.print_cameras_result([one, separate], args, '/tmp/log', '7')
    out = capsys.readouterr().out
    assert '| one depth_node, 2 cameras | cam0 | 6.00 | 100 | 100 | 100 | 300 |' in out
    assert '| one depth_node, 2 cameras | 10.00 | 0.40 / 0.60 | 150 | 1300 | 1300 |' in out
    assert '| 2 single-camera depth_node processes | 6.00 | 0.50 / 0.50 | 190 | 2000 |' in out
    assert '10.00 frames/s in all vs 6.00 with 2 processes (1.67x)' in out
    assert 'RSS 1300 MB = 1.30x one single-camera node (1000 MB), 0.65x the 2 processes' in out
