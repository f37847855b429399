"""Preprocessing: the official resize rule, and torch-on-device vs the OpenCV reference."""
import math

import numpy as np
import pytest
import torch

from midas_ros.models.registry import get_config, list_models
from midas_ros.models.transforms import (
    DevicePreprocessor, network_input_size, reference_preprocess, upsample_prediction)

# Worst case measured: 2.2e-5 of the input's range (non-integer scale ratios; the two resize
# implementations compute source coordinates in float32 vs float64).
DEVICE_TOLERANCE = 1e-4

SIZES = [(640, 480), (480, 640), (1280, 720), (720, 1280), (97, 61), (61, 97), (31, 17),
         (256, 256), (384, 384), (4000, 3000), (3000, 4000), (7680, 4320), (1, 1), (500, 333)]


def photo_like(height, width, seed=0):
    """A synthetic photograph: smooth gradients, hard-edged discs and stripes, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width * 200, y / height * 180 + 30,
                      (x + y) / (width + height) * 120 + 60], axis=-1)
    for _ in range(10):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        radius = rng.uniform(3, 0.3 * min(height, width) + 4)
        image[(x - cx) ** 2 + (y - cy) ** 2 < radius ** 2] = rng.uniform(0, 255, 3)
    image[(x // 13 + y // 11) % 5 == 0] *= 0.5
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def rederived_size(cfg, width, height):
    """The resize rule re-derived from its description (not from the implementation's code)."""
    multiple = cfg.multiple_of
    if not cfg.keep_aspect_ratio:
        scale_w, scale_h = cfg.net_w / width, cfg.net_h / height
    elif cfg.resize_mode == 'upper_bound':        # fit inside the net size
        scale_w = scale_h = min(cfg.net_w / width, cfg.net_h / height)
    elif cfg.resize_mode == 'lower_bound':        # cover the net size
        scale_w = scale_h = max(cfg.net_w / width, cfg.net_h / height)
    else:                                         # 'minimal': the scale closest to 1 wins
        candidates = (cfg.net_h / height, cfg.net_w / width)   # height wins ties
        scale_w = scale_h = min(candidates, key=lambda s: abs(1 - s))

    def side(length, limit):
        value = round(length / multiple) * multiple      # Python rounds ties to even, as numpy
        if cfg.resize_mode == 'upper_bound' and value > limit:
            value = math.floor(length / multiple) * multiple
        if cfg.resize_mode == 'lower_bound' and value < limit:
            value = math.ceil(length / multiple) * multiple
        return value

    return side(scale_w * width, cfg.net_w), side(scale_h * height, cfg.net_h)


@pytest.mark.parametrize('name', list_models())
def test_network_input_size_matches_the_rule(name):
    cfg = get_config(name)
    rng = np.random.default_rng(1)
    sizes = SIZES + [tuple(int(v) for v in rng.integers(8, 5000, 2)) for _ in range(300)]
    for width, height in sizes:
        expected = rederived_size(cfg, width, height)
        if min(expected) <= 0:
            with pytest.raises(ValueError, match='too elongated'):
                network_input_size(cfg, width, height)
            continue
        net_w, net_h = network_input_size(cfg, width, height)
        assert (net_w, net_h) == expected, (width, height)
        assert net_w % cfg.multiple_of == 0 and net_h % cfg.multiple_of == 0
        if cfg.resize_mode == 'upper_bound':
            assert net_w <= cfg.net_w and net_h <= cfg.net_h
        if cfg.resize_mode == 'lower_bound':
            assert net_w >= cfg.net_w and net_h >= cfg.net_h
        if not cfg.keep_aspect_ratio:
            assert (net_w, net_h) == (cfg.net_w, cfg.net_h)


def test_network_input_size_examples():
    # Worked by hand from the rules: 640x480 fits 256x256 as 256x192 (upper bound); 'minimal'
    # scales 640x480 by 0.8 (closer to 1 than 0.6) to 512x384; Swin2 stretches to its size.
    assert network_input_size(get_config('midas_v21_small_256'), 640, 480) == (256, 192)
    assert network_input_size(get_config('midas_v21_small_256'), 480, 640) == (192, 256)
    assert network_input_size(get_config('dpt_beit_base_384'), 640, 480) == (512, 384)
    assert network_input_size(get_config('dpt_swin2_tiny_256'), 640, 480) == (256, 256)
    with pytest.raises(ValueError, match='empty'):
        network_input_size(get_config('dpt_levit_224'), 0, 10)


@pytest.mark.parametrize('name', ['midas_v21_small_256', 'dpt_beit_base_384',
                                  'dpt_swin2_tiny_256', 'dpt_levit_224'])
@pytest.mark.parametrize('width,height', [(640, 480), (480, 640), (500, 333), (97, 61)])
def test_device_preprocessing_matches_reference(name, width, height):
    cfg = get_config(name)
    rgb = photo_like(height, width, seed=width)
    reference = reference_preprocess(rgb, cfg)
    assert reference.dtype == np.float32
    assert reference.shape == (1, 3) + network_input_size(cfg, width, height)[::-1]
    for channels_last in (True, False):
        result = DevicePreprocessor(cfg, 'cpu', channels_last)(torch.from_numpy(rgb), 'rgb')
        assert result.shape == reference.shape and result.dtype == torch.float32
        error = np.abs(result.numpy() - reference).max() / np.ptp(reference)
        assert error < DEVICE_TOLERANCE, error


def test_reference_normalizes_with_the_variant_statistics():
    # A uniform image stays uniform through the resize: each channel must come out as
    # (value / 255 - mean) / std exactly as the variant defines them.
    for name in ('midas_v21_small_256', 'dpt_beit_base_384'):
        cfg = get_config(name)
        rgb = np.empty((48, 64, 3), np.uint8)
        rgb[...] = (10, 128, 250)
        expected = (np.array([10, 128, 250]) / 255 - np.array(cfg.mean)) / np.array(cfg.std)
        reference = reference_preprocess(rgb, cfg)
        np.testing.assert_allclose(reference[0].reshape(3, -1).T, np.broadcast_to(
            expected, (reference[0, 0].size, 3)), rtol=1e-6, atol=1e-6)
        device = DevicePreprocessor(cfg)(torch.from_numpy(rgb), 'rgb').numpy()
        np.testing.assert_allclose(device, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('channels_last', [True, False])
def test_channel_orders_are_equivalent(channels_last):
    cfg = get_config('midas_v21_small_256')
    rgb = photo_like(120, 160, seed=3)
    preprocess = DevicePreprocessor(cfg, 'cpu', channels_last)
    expected = preprocess(torch.from_numpy(rgb), 'rgb').clone()
    alpha = np.full(rgb.shape[:2] + (1,), 77, np.uint8)
    variants = {
        'bgr': rgb[..., ::-1],
        'rgba': np.concatenate([rgb, alpha], axis=2),
        'bgra': np.concatenate([rgb[..., ::-1], alpha], axis=2),
    }
    for order, image in variants.items():
        result = preprocess(torch.from_numpy(np.ascontiguousarray(image)), order)
        torch.testing.assert_close(result, expected, rtol=0, atol=0, msg=order)
    gray = rgb[..., 1]
    expected_mono = preprocess(torch.from_numpy(np.repeat(gray[..., None], 3, axis=2)), 'rgb')
    expected_mono = expected_mono.clone()
    torch.testing.assert_close(preprocess(torch.from_numpy(gray), 'mono'), expected_mono,
                               rtol=0, atol=0)


def test_buffers_are_reused_and_follow_size_changes():
    cfg = get_config('midas_v21_small_256')
    preprocess = DevicePreprocessor(cfg)
    small, large = photo_like(60, 80, 1), photo_like(120, 90, 2)
    first = preprocess(torch.from_numpy(small), 'rgb')
    pointer = first.data_ptr()
    assert preprocess(torch.from_numpy(small), 'rgb').data_ptr() == pointer
    resized = preprocess(torch.from_numpy(large), 'rgb')
    assert resized.shape[2:] == network_input_size(cfg, 90, 120)[::-1]
    assert np.abs(resized.numpy() - reference_preprocess(large, cfg)).max() < 1e-3


def test_bad_images_are_rejected_with_a_message():
    cfg = get_config('midas_v21_small_256')
    preprocess = DevicePreprocessor(cfg)
    with pytest.raises(ValueError, match='uint8'):
        preprocess(torch.zeros((8, 8, 3), dtype=torch.float32), 'rgb')
    with pytest.raises(ValueError, match='4 channel'):
        preprocess(torch.zeros((8, 8, 3), dtype=torch.uint8), 'rgba')
    with pytest.raises(ValueError, match='channel order'):
        preprocess(torch.zeros((8, 8, 3), dtype=torch.uint8), 'yuv')
    with pytest.raises(ValueError, match='empty'):
        preprocess(torch.zeros((0, 8, 3), dtype=torch.uint8), 'rgb')
    with pytest.raises(ValueError, match='too elongated'):
        preprocess(torch.zeros((2, 2000, 3), dtype=torch.uint8), 'rgb')
    with pytest.raises(ValueError, match='RGB uint8'):
        reference_preprocess(np.zeros((8, 8), np.uint8), cfg)


@pytest.mark.parametrize('size', [(97, 131), (480, 640), (10, 13)])
def test_upsample_prediction_is_the_official_bicubic(size):
    """The official ``F.interpolate`` bicubic (up and down, odd ratios, borders included) to
    float rounding, written into ``out``."""
    prediction = torch.rand(2, 24, 32) * 100
    expected = torch.nn.functional.interpolate(
        prediction.unsqueeze(1), size=size, mode='bicubic', align_corners=False)
    out = torch.full((2, 1) + size, float('nan'))
    assert upsample_prediction(prediction, *size, out=out) is out
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5 * 100)
    torch.testing.assert_close(upsample_prediction(prediction, *size), out, rtol=0, atol=0)
    with pytest.raises(ValueError, match='contiguous'):
        upsample_prediction(prediction, *size, out=out.transpose(2, 3).contiguous()
                            .transpose(2, 3))
