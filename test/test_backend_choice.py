"""backend 'auto': which runtime it picks here and why, and the fp32 parity check behind it."""
import logging

import numpy as np
import pytest
import torch

from midas_ros.backends import BackendError
from midas_ros.backends.choice import ParityCheckedRunner, choose_backend
from midas_ros.inference import DepthEstimator

CPU, CUDA = torch.device('cpu'), torch.device('cuda', 0)


def only(*installed):
    """A find_spec that knows only the packages ``installed``."""
    return lambda name: object() if name in installed else None


def test_cpu_prefers_openvino_then_onnxruntime_then_torch():
    everything = only('onnxruntime', 'openvino', 'onnx')
    assert choose_backend(CPU, 'fp32', everything).backend == 'openvino'
    choice = choose_backend(CPU, 'fp32', only('onnxruntime', 'onnx'))
    assert choice.backend == 'onnxruntime' and 'openvino needs openvino' in choice.reason
    choice = choose_backend(CPU, 'fp32', only('onnxruntime', 'openvino'))   # no exporter
    assert choice.backend == 'torch' and 'needs onnx' in choice.reason
    assert choose_backend(CPU, 'fp32', only()).backend == 'torch'


def test_cpu_half_precision_skips_the_fp32_only_runtime():
    assert choose_backend(CPU, 'bf16', only('onnxruntime', 'openvino', 'onnx')).backend == \
        'openvino'
    choice = choose_backend(CPU, 'bf16', only('onnxruntime', 'onnx'))
    assert choice.backend == 'torch' and 'onnxruntime runs fp32 only' in choice.reason


def test_cuda_takes_the_torch_gpu_path():
    choice = choose_backend(CUDA, 'fp16', only('onnxruntime', 'openvino', 'onnx', 'tensorrt'))
    assert choice.backend == 'torch' and 'cuda:0' in choice.reason


class Doubling(torch.nn.Module):
    """1x3xHxW -> 1xHxW: 2 r + g, as a 1x1 convolution (exportable, has parameters)."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Conv2d(3, 1, 1, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor([2.0, 1.0, 0.0]).view(1, 3, 1, 1))

    def forward(self, x):
        return self.mix(x).squeeze(1)


def test_parity_check_passes_a_matching_runner_once_per_size():
    model = Doubling()
    calls = []

    def runner(net_input):
        calls.append(tuple(net_input.shape))
        return model(net_input)
    checked = ParityCheckedRunner(runner, model)
    x = torch.rand(1, 3, 8, 12)
    for _ in range(3):
        torch.testing.assert_close(checked(x), model(x))
    assert checked.deviation == 0.0


def test_parity_check_rejects_a_deviating_runner():
    model = Doubling()
    checked = ParityCheckedRunner(lambda x: model(x) * 1.2, model)
    with pytest.raises(BackendError, match='deviates from torch fp32'):
        checked(torch.rand(1, 3, 8, 12) + 0.5)


def test_auto_estimator_reports_its_choice_and_matches_torch(tmp_path):
    auto = DepthEstimator('midas_v21_small_256', device='cpu', model=Doubling(), backend='auto',
                          cache_dir=tmp_path)
    expected = choose_backend(CPU, 'fp32').backend
    assert auto.backend == auto.backend_choice.backend == expected
    assert auto.requested_backend == 'auto' and auto.backend_choice.reason
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    reference = DepthEstimator('midas_v21_small_256', device='cpu', model=Doubling(),
                               backend='torch').predict(image)
    np.testing.assert_allclose(auto.predict(image), reference, rtol=1e-5, atol=1e-5)
    explicit = DepthEstimator('midas_v21_small_256', device='cpu', model=Doubling(),
                              backend='torch')
    assert explicit.backend_choice.backend == 'torch'
    assert 'explicitly' in explicit.backend_choice.reason


def test_auto_falls_back_to_torch_when_parity_fails(tmp_path, monkeypatch, caplog):
    import midas_ros.inference as inference
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    reference = DepthEstimator('midas_v21_small_256', device='cpu', model=Doubling(),
                               backend='torch').predict(image)

    real_create_runner = inference.create_runner

    def bad_runner(backend, model, *args, **kwargs):
        if backend == 'torch':              # the fallback
            return real_create_runner(backend, model, *args, **kwargs)

        def run(net_input):
            return model(net_input) + 1.0    # a constant offset: far from torch's output
        return run
    monkeypatch.setattr(inference, 'choose_backend',
                        lambda device, precision: inference.BackendChoice('onnxruntime', 'test'))
    monkeypatch.setattr(inference, 'create_runner', bad_runner)
    monkeypatch.setattr(inference.CpuBudget, 'detect', lambda: inference.CpuBudget(2))
    estimator = DepthEstimator('midas_v21_small_256', device='cpu', model=Doubling(),
                               backend='auto', cache_dir=tmp_path, parallel_frames=0)
    assert estimator.parallel_frames == 2      # auto, for the exported runtime
    assert estimator.thread_plan.intra_op == 1  # the two frames share the two cores
    with caplog.at_level(logging.WARNING):
        depth = estimator.predict(image)
    assert estimator.backend == 'torch'
    assert 'deviates' in estimator.backend_choice.reason
    assert 'falling back to torch' in caplog.text
    np.testing.assert_allclose(depth, reference, rtol=1e-5, atol=1e-5)
    # torch runs one frame at a time: the lanes 'auto' planned for the runtime are given up,
    # and that frame has both cores again.
    assert (estimator.parallel_frames, estimator.thread_plan.frames) == (1, 1)
    assert estimator.thread_plan.intra_op == 2
    assert 'fallback' in estimator.parallel_frames_reason


def test_parallel_frames_run_replicas_of_one_network(tmp_path):
    """Two lanes (``parallel_frames=2``): one network's weights, sessions of their own, each
    lane's result equal to torch's for its own image while both run at once."""
    import threading

    from midas_ros.depth_pipeline import DepthPipeline
    estimator = DepthEstimator('midas_v21_small_256', device='cpu', model=Doubling(),
                               backend='auto', cache_dir=tmp_path, parallel_frames=2)
    assert estimator.parallel_frames == 2 and 'explicitly' in estimator.parallel_frames_reason
    assert estimator.thread_plan.frames == 2
    pipeline = DepthPipeline(estimator)
    lane0, lane1 = pipeline.estimators
    assert lane0 is estimator and lane1 is not estimator
    assert lane1._model is estimator._model                  # the weights are shared
    assert (lane1.backend, lane1.thread_plan) == (estimator.backend, estimator.thread_plan)
    assert not any((64, 48) in lane.warmed_up for lane in pipeline.estimators)
    pipeline.warmup(64, 48)
    assert all((64, 48) in lane.warmed_up for lane in pipeline.estimators)
    assert pipeline.lanes == 2

    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(2)]
    torch_path = DepthEstimator('midas_v21_small_256', device='cpu', model=Doubling(),
                                backend='torch')
    expected = [torch_path.predict(image) for image in images]
    results = [None, None]

    def run(lane):
        for _ in range(20):
            results[lane] = pipeline.infer(images[lane], 'rgb', lane).relative.copy()
    threads = [threading.Thread(target=run, args=(lane,)) for lane in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for lane in (0, 1):
        np.testing.assert_allclose(results[lane], expected[lane], rtol=1e-5, atol=1e-5)
