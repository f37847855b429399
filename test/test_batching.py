"""Frames of several cameras as one network batch: the estimator on the CPU with torch, the
TensorRT runner (batch-1 engines) with the fake TensorRT / CUDA modules, and DepthNetwork."""
import sys

import numpy as np
import pytest
import torch

from fake_gpu import FakeCuda, fake_tensorrt
from midas_ros.backends import create_runner
from midas_ros.backends.base import run_batch
from midas_ros.depth_pipeline import DepthNetwork
from midas_ros.inference import DepthEstimator
from midas_ros.models.registry import get_config
from test_backends import TinyDepthNet, textured_image

SMALL = get_config('midas_v21_small_256')


def test_torch_batch_equals_frame_by_frame_on_the_cpu():
    estimator = DepthEstimator(SMALL.name, device='cpu', model=TinyDepthNet())
    images = [textured_image(48, 64, seed) for seed in range(3)]
    expected = [estimator.predict(image).copy() for image in images]
    outs = [np.empty((48, 64), np.float32) for _ in images]
    results = estimator.predict_batch(images, 'rgb', outs=outs)
    assert all(result is out for result, out in zip(results, outs))
    for result, reference in zip(results, expected):
        np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-6)
    assert set(estimator.last_timings) >= {'upload', 'preprocess', 'inference'}
    with pytest.raises(ValueError, match='one size'):
        estimator.predict_batch([images[0], textured_image(24, 32)], 'rgb')


def test_tensorrt_batch_runs_each_frame_of_a_batch_1_engine(monkeypatch, tmp_path):
    cuda = FakeCuda(monkeypatch)
    trt = fake_tensorrt('10.3.0', cuda)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    runner = create_runner('tensorrt', TinyDepthNet(), SMALL, torch.device('cuda', 1), 'fp32',
                           tmp_path)
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn((3, 3, 48, 64), generator=generator)
    expected = [runner(inputs[i:i + 1])[0].clone() for i in range(3)]
    out = run_batch(runner, inputs, torch.empty((3, 48, 64)))
    for index in range(3):      # each frame copied out before the engine's buffer is reused
        torch.testing.assert_close(out[index], expected[index])
    assert len(trt.log['runs']) == 6


class RecordingEstimator:
    """Counts network calls; the relative depth is the image's first channel."""

    device = 'cuda:0'
    last_timings = {}

    def __init__(self):
        self.calls = []

    def predict(self, image, channel_order, out):
        self.calls.append(1)
        out[...] = image[..., 0]
        return out

    def predict_batch(self, images, channel_order, outs):
        self.calls.append(len(images))
        for image, out in zip(images, outs):
            out[...] = image[..., 0]
        return outs


def test_depth_network_batches_on_cuda_only_up_to_max_batch():
    estimator = RecordingEstimator()
    images = [np.full((4, 6, 3), value, np.uint8) for value in (1, 2, 3)]
    results = DepthNetwork(estimator, max_batch=4).infer_batch(images, 'rgb')
    assert estimator.calls == [3]
    assert [r.relative[0, 0] for r in results] == [1, 2, 3]
    assert all(r.timings['batch'] == 3 for r in results)
    estimator.calls.clear()
    DepthNetwork(estimator, max_batch=1).infer_batch(images, 'rgb')
    assert estimator.calls == [1, 1, 1]
    estimator.device = 'cpu'
    estimator.calls.clear()
    DepthNetwork(estimator, max_batch=4).infer_batch(images, 'rgb')
    assert estimator.calls == [1, 1, 1]      # the CPU runs lanes, not batches
