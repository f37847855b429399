"""``gpu_check``: says so and exits 0 without CUDA; its matrix, table and JSON, run on the CPU."""
import json

import numpy as np
import pytest
import torch

from midas_ros.tools import gpu_check


def test_without_cuda_it_says_so_and_exits_0(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    output = tmp_path / 'result.json'
    assert gpu_check.main(['--output', str(output)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith('gpu_check: CUDA is not available here (')
    assert 'nothing to check' in printed and not output.exists()


def test_dispatcher_runs_it():
    from midas_ros.executables import EXECUTABLES
    assert dict(EXECUTABLES)['gpu_check'] == 'midas_ros.tools.gpu_check:main'


def test_cpu_matrix_compares_each_backend_with_cpu_fp32(tmp_path, capsys, monkeypatch):
    """The tool itself, on the CPU: a bf16 torch row and a TensorRT row that cannot run here;
    table printed and JSON saved. (A tiny stand-in network: bf16 MiDaS on this CPU takes half
    a minute per frame.)"""
    from test_backends import TinyDepthNet
    monkeypatch.setattr(gpu_check, 'CPU_COMBINATIONS', (('torch', 'bf16'), ('tensorrt', 'fp16')))
    monkeypatch.setattr(gpu_check, 'load_model', lambda name, weights_dir: TinyDepthNet())
    output = tmp_path / 'cpu.json'
    status = gpu_check.main(['--device', 'cpu', '--models', 'midas_v21_small_256', '--width',
                             '64', '--height', '48', '--frames', '1', '--output', str(output),
                             '--cache-dir', str(tmp_path / 'cache')])
    printed = capsys.readouterr().out
    result = json.loads(output.read_text())
    rows = {(row['backend'], row['requested']): row for row in result['rows']}
    bf16, trt = rows['torch', 'bf16'], rows['tensorrt', 'fp16']
    assert bf16['status'] == 'ok' and 0 < bf16['max_deviation'] <= bf16['tolerance']
    assert bf16['ms_per_frame'] > 0 and bf16['warmup_s'] > 0
    # TensorRT cannot run on a CPU: a failed row with its one-line reason, and exit status 1.
    assert trt['status'] == 'failed' and 'needs a CUDA device' in trt['detail']
    assert status == 1
    assert 'midas_v21_small_256  torch' in printed and 'saved ' + str(output) in printed


def test_exported_backend_row_measures_its_deviation(tmp_path):
    """An ONNX Runtime row (tiny stand-in network: the export takes a moment, not a minute)."""
    pytest.importorskip('onnxruntime')
    from midas_ros.inference import DepthEstimator
    from test_backends import TinyDepthNet
    image = gpu_check.camera_view(64, 48)
    model = TinyDepthNet()
    reference = DepthEstimator('midas_v21_small_256', device='cpu', model=TinyDepthNet()).predict(
        image)
    row = gpu_check.check_combination('midas_v21_small_256', model, 'onnxruntime', 'fp32', 'cpu',
                                      image, reference, 2, tmp_path)
    assert row.status == 'ok' and row.precision == 'fp32' and row.max_deviation < 1e-5
    shifted = gpu_check.check_combination('midas_v21_small_256', model, 'onnxruntime', 'fp32',
                                          'cpu', image, reference + 0.02 * np.ptp(reference), 1,
                                          tmp_path)
    assert shifted.status == 'deviates' and shifted.max_deviation == pytest.approx(0.02, 1e-3)
