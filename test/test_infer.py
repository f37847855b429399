"""DepthEstimator (the inference engine) and the offline ``infer`` command."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from midas_ros.inference import (
    STAGES, DepthEstimator, resolve_device, resolve_precision)
from midas_ros.models.registry import get_config
from midas_ros.models.transforms import reference_preprocess
from midas_ros.tools import infer

REPO = Path(__file__).resolve().parent.parent
MODEL = 'midas_v21_small_256'
# Weighted sum of the normalized channels: a "network" whose output is known in closed form.
CHANNEL_WEIGHTS = (0.5, -0.25, 1.0)


class ChannelMix(torch.nn.Module):
    """1x1 convolution to one channel, then a 3x3 blur: N x H x W out, like MiDaS."""

    def __init__(self):
        super().__init__()
        self.mix = torch.nn.Conv2d(3, 1, 1, bias=False)
        self.blur = torch.nn.Conv2d(1, 1, 3, padding=1, bias=False, padding_mode='replicate')
        with torch.no_grad():
            self.mix.weight.copy_(torch.tensor(CHANNEL_WEIGHTS).view(1, 3, 1, 1))
            self.blur.weight.fill_(1 / 9)

    def forward(self, x):
        return self.blur(self.mix(x)).squeeze(1)


def textured_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x ^ y) & 255], axis=-1)
    image[(x - width / 3) ** 2 + (y - height / 2) ** 2 < (height / 4) ** 2] = (250, 30, 90)
    return np.clip(image + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)


def stub_estimator(**kwargs):
    return DepthEstimator(MODEL, device='cpu', model=ChannelMix(), **kwargs)


def test_uniform_image_gives_the_closed_form_value():
    cfg = get_config(MODEL)
    colour = np.array([200, 100, 30])
    image = np.empty((45, 70, 3), np.uint8)
    image[...] = colour
    expected = np.dot(CHANNEL_WEIGHTS, (colour / 255 - np.array(cfg.mean)) / np.array(cfg.std))
    depth = stub_estimator().predict(image)
    assert depth.dtype == np.float32 and depth.shape == (45, 70)
    np.testing.assert_allclose(depth, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('channels_last', [True, False])
def test_predict_matches_the_reference_pipeline(channels_last):
    model = ChannelMix()
    estimator = DepthEstimator(MODEL, device='cpu', model=model, channels_last=channels_last)
    for height, width in ((48, 64), (77, 51)):
        rgb = textured_image(height, width)
        with torch.no_grad():
            prediction = model(torch.from_numpy(reference_preprocess(rgb, estimator.config)))
            expected = torch.nn.functional.interpolate(
                prediction.unsqueeze(1), size=(height, width), mode='bicubic',
                align_corners=False)[0, 0].numpy()
        depth = estimator.predict(rgb)
        assert np.abs(depth - expected).max() < 1e-4 * np.ptp(expected)
        exact = estimator.predict_preprocessed(
            reference_preprocess(rgb, estimator.config), height, width)
        # The official input exactly; the upsampling is OpenCV's cubic kernel, torch's to float
        # rounding (``upsample_prediction``).
        assert np.abs(exact - expected).max() < 2e-5 * np.ptp(expected)
        assert set(estimator.last_timings) == set(STAGES)
        assert all(seconds >= 0 for seconds in estimator.last_timings.values())


def test_channel_orders_give_the_same_depth():
    estimator = stub_estimator()
    rgb = textured_image(40, 60, seed=2)
    expected = estimator.predict(rgb, 'rgb')
    alpha = np.full((40, 60, 1), 9, np.uint8)
    np.testing.assert_array_equal(estimator.predict(rgb[..., ::-1], 'bgr'), expected)
    np.testing.assert_array_equal(
        estimator.predict(np.concatenate([rgb[..., ::-1], alpha], axis=2), 'bgra'), expected)
    gray = rgb[..., 0]
    np.testing.assert_array_equal(estimator.predict(gray, 'mono'),
                                  estimator.predict(np.dstack([gray] * 3), 'rgb'))


def test_results_are_owned_by_the_caller_and_out_is_filled_in_place():
    estimator = stub_estimator()
    first_image, second_image = textured_image(30, 40, 1), textured_image(30, 40, 7)
    first = estimator.predict(first_image)
    kept = first.copy()
    second = estimator.predict(second_image)
    np.testing.assert_array_equal(first, kept)       # not overwritten by the next frame
    assert not np.array_equal(first, second)
    out = np.empty((30, 40), np.float32)
    assert estimator.predict(second_image, out=out) is out
    np.testing.assert_array_equal(out, second)
    with pytest.raises(ValueError, match='out must be'):
        estimator.predict(second_image, out=np.empty((30, 41), np.float32))


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="device must be"):
        resolve_device('tpu')
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match='CUDA is not available'):
            resolve_device('cuda:0')
    assert resolve_device('auto').type == ('cuda' if torch.cuda.is_available() else 'cpu')
    with pytest.raises(ValueError, match='precision must be'):
        stub_estimator(precision='fp8')
    with pytest.raises(ValueError, match='unknown MiDaS model'):
        DepthEstimator('midas_v99', device='cpu', model=ChannelMix())
    with pytest.raises(ValueError, match='channel'):
        stub_estimator().predict(np.zeros((8, 8, 3), np.uint8), 'rgba')
    with pytest.raises(ValueError, match='uint8'):
        stub_estimator().predict(np.zeros((8, 8, 3), np.float32))


def test_precision_policy(monkeypatch):
    cfg = get_config(MODEL)
    cpu, cuda = torch.device('cpu'), torch.device('cuda', 0)
    capability = {'value': (7, 5)}
    monkeypatch.setattr(torch.cuda, 'get_device_capability', lambda device: capability['value'])
    assert resolve_precision('auto', cpu, cfg) == 'fp32'
    assert resolve_precision('auto', cuda, cfg) == 'fp16'
    unsafe = dataclasses.replace(cfg, half_precision_safe=False)
    # Half-unsafe variants (Swin) get bf16 where the GPU runs it natively (sm_80+), else fp32,
    # whatever torch.cuda.is_bf16_supported says (True for emulated bf16 too).
    monkeypatch.setattr(torch.cuda, 'is_bf16_supported', lambda *args, **kwargs: True)
    assert resolve_precision('auto', cuda, unsafe) == 'fp32'
    capability['value'] = (8, 7)   # Jetson Orin
    assert resolve_precision('auto', cuda, unsafe) == 'bf16'
    assert resolve_precision('bf16', cpu, cfg) == 'bf16'


def test_cpu_threads_are_applied():
    before = torch.get_num_threads()
    try:
        stub_estimator(cpu_threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA device')
@pytest.mark.parametrize('precision', ['fp32', 'fp16'])
def test_cuda_path_matches_cpu(precision):
    rgb = textured_image(120, 160, 3)
    expected = stub_estimator().predict(rgb)
    gpu = DepthEstimator(MODEL, device='cuda', model=ChannelMix(), precision=precision)
    for _ in range(2):   # the second frame reuses the pinned buffers
        depth = gpu.predict(rgb[..., ::-1], 'bgr')
    tolerance = 1e-4 if precision == 'fp32' else 5e-3
    assert np.abs(depth - expected).max() < tolerance * np.ptp(expected)


@pytest.fixture(scope='module')
def random_weights(tmp_path_factory):
    """A random-weight checkpoint of the real small model, and that model."""
    create_model = pytest.importorskip('midas_ros.models').create_model
    model = create_model(MODEL, pretrained=False)
    path = tmp_path_factory.mktemp('weights') / f'{MODEL}.pt'
    torch.save(model.state_dict(), path)
    return path, model


def test_infer_command_end_to_end(tmp_path, random_weights):
    weights, model = random_weights
    rgb = textured_image(48, 64, seed=5)
    image_path = tmp_path / 'scene.png'
    cv2.imwrite(str(image_path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    broken = tmp_path / 'broken.jpg'
    broken.write_bytes(b'not an image')
    output = tmp_path / 'out'
    result = subprocess.run(
        [sys.executable, '-m', 'midas_ros', 'infer', '--model', MODEL, '--weights', str(weights),
         '--device', 'cpu', '--output', str(output), str(broken), str(image_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=dict(os.environ, PYTHONPATH=str(REPO)))
    # The unreadable file is reported in one line and fails the run; the good one is still done.
    assert result.returncode == 1, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith('infer: error')]
    assert len(errors) == 1 and 'broken.jpg' in errors[0]
    assert 'Traceback' not in result.stderr
    depth = np.load(output / 'scene.npy')
    assert depth.dtype == np.float32 and depth.shape == (48, 64)
    assert np.isfinite(depth).all() and np.ptp(depth) > 0
    colour = cv2.imread(str(output / 'scene.png'))
    assert colour.shape == (48, 64, 3)
    assert not (output / 'broken.npy').exists()
    estimator = DepthEstimator(MODEL, device='cpu', model=model)
    expected = estimator.predict(rgb)
    assert np.abs(depth - expected).max() <= 1e-3 * np.abs(expected).max()


def test_infer_missing_weights_is_one_line(tmp_path, capsys):
    image_path = tmp_path / 'scene.png'
    cv2.imwrite(str(image_path), textured_image(16, 16))
    status = infer.main(['--model', MODEL, '--weights', str(tmp_path / 'nowhere.pt'),
                         '--device', 'cpu', '--output', str(tmp_path / 'out'), str(image_path)])
    assert status == 1
    stderr = capsys.readouterr().err.strip()
    assert stderr.startswith('infer: error: cannot load') and 'nowhere.pt' in stderr
