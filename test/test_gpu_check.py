"""``gpu_check``: says so and exits 0 without CUDA; its matrix, table and JSON, run on the CPU."""
import json

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
    from midas_ros.__main__ import EXECUTABLES
    assert dict(EXECUTABLES)['gpu_check'] == 'midas_ros.tools.gpu_check:main'


def test_cpu_matrix_compares_each_backend_with_cpu_fp32(tmp_path, capsys, monkeypatch):
    """The tool itself, on the CPU: a bf16 torch row and an ONNX Runtime row of the small model
    (real network, seeded random weights), table printed and JSON saved."""
    pytest.importorskip('onnxruntime')
    monkeypatch.setattr(gpu_check, 'CPU_COMBINATIONS',
                        (('torch', 'bf16'), ('onnxruntime', 'fp32'), ('tensorrt', 'fp16')))
    output = tmp_path / 'cpu.json'
    status = gpu_check.main(['--device', 'cpu', '--models', 'midas_v21_small_256', '--width',
                             '64', '--height', '48', '--frames', '1', '--output', str(output),
                             '--cache-dir', str(tmp_path / 'cache')])
    printed = capsys.readouterr().out
    result = json.loads(output.read_text())
    rows = {(row['backend'], row['requested']): row for row in result['rows']}
    bf16, ort, trt = rows['torch', 'bf16'], rows['onnxruntime', 'fp32'], rows['tensorrt', 'fp16']
    assert bf16['status'] == 'ok' and 0 < bf16['max_deviation'] <= 0.08
    assert ort['status'] == 'ok' and ort['max_deviation'] < 1e-4
    assert bf16['ms_per_frame'] > 0 and bf16['warmup_s'] > 0
    # TensorRT cannot run on a CPU: a failed row with its one-line reason, and exit status 1.
    assert trt['status'] == 'failed' and 'needs a CUDA device' in trt['detail']
    assert status == 1
    assert 'midas_v21_small_256  torch' in printed and 'saved ' + str(output) in printed
