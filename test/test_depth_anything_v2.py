"""Depth Anything V2 in the zoo: official layouts load strictly, ``infer`` matches the official
code.

The oracle is the official code itself, vendored unmodified in ``official_depth_anything_v2/``
(no timm: it runs in both CI environments). Checkpoints are synthesized from the key/shape lists
of the manifests made by running the official code at a561b84 (``../shared``; vendored as
``depth_anything_v2_manifests.json``), loaded strictly into the official network, saved as a
``.pth`` and run through the official ``infer_image`` on the CPU in fp32. ``infer`` must write
the same depth within 1e-3 of its range. The fast suite covers the Small size (relative at 518,
both metric sets at reduced input sizes, a max_depth override); ``MIDAS_SLOW_TESTS=1`` runs
every checkpoint at 518.
"""
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from midas_ros.models import create_model, get_config, list_models, resolve_config
from midas_ros.models.factory import build_model
from midas_ros.models.transforms import network_input_size
from midas_ros.models.weights import check_state_dict
from midas_ros.tools import infer

HERE = Path(__file__).resolve().parent
MANIFESTS = json.loads((HERE / 'depth_anything_v2_manifests.json').read_text())
NAMES = tuple(name for name in list_models() if name.startswith('depth_anything_v2'))
SLOW = os.environ.get('MIDAS_SLOW_TESTS') == '1'
TOLERANCE = 1e-3    # of the reference depth's range
IMAGE_SIZE = (60, 80)


def test_the_nine_official_checkpoints_are_registered():
    assert sorted(NAMES) == sorted(MANIFESTS)
    for name in NAMES:
        cfg, manifest = get_config(name), MANIFESTS[name]
        assert cfg.output == manifest['kind']
        assert cfg.max_depth == manifest.get('max_depth')
        assert cfg.license == manifest['license']
        assert cfg.num_parameters == manifest['num_parameters']
        assert cfg.file == manifest['checkpoint_file']
        assert cfg.url.startswith('https://huggingface.co/depth-anything/Depth-Anything-V2-')
        assert cfg.url.endswith(f'/resolve/main/{cfg.file}')
        assert (cfg.net_w, cfg.net_h, cfg.multiple_of) == (518, 518, 14)


@pytest.mark.parametrize('name', NAMES)
def test_official_layout_loads_strictly(name):
    """Every key and shape of the official file, no more, no fewer (on the meta device: no
    memory, so the Large models cost nothing)."""
    with torch.device('meta'):
        model = build_model(get_config(name))
        state = {key: torch.empty(shape) for key, shape, _ in MANIFESTS[name]['keys']}
    assert list(model.state_dict()) == list(state)      # same names, same order
    check_state_dict(model, state, get_config(name))    # what load_weights checks first
    model.load_state_dict(state, strict=True, assign=True)
    assert sum(p.numel() for p in model.parameters()) == MANIFESTS[name]['num_parameters']


def test_a_checkpoint_of_another_size_is_refused(tmp_path):
    path = tmp_path / 'depth_anything_v2_vits.pth'
    torch.save(synthesized_weights('depth_anything_v2_metric_hypersim_vits'), path)
    model = create_model('depth_anything_v2_metric_hypersim_vits', weights=path)
    assert model.weights_path == path
    from midas_ros.models import WeightsMismatchError
    with pytest.raises(WeightsMismatchError, match='depth_anything_v2_vitb'):
        create_model('depth_anything_v2_vitb', weights=path)


@pytest.mark.parametrize('size, expected', [((400, 600), (784, 518)), ((300, 451), (784, 518)),
                                            ((720, 1280), (924, 518)), ((600, 400), (518, 784))])
def test_network_input_size_is_the_official_lower_bound_rule(size, expected):
    cfg = get_config('depth_anything_v2_vits')
    assert network_input_size(cfg, size[1], size[0]) == expected


def test_input_size_and_max_depth_are_validated():
    assert resolve_config('depth_anything_v2_vits', input_size=266).net_h == 266
    assert resolve_config('depth_anything_v2_metric_vkitti_vits', max_depth=40).max_depth == 40
    for bad in (0.5, 100, -14):
        with pytest.raises(ValueError, match='multiple of 14'):
            resolve_config('depth_anything_v2_vits', input_size=bad)
    with pytest.raises(ValueError, match='own input size'):
        resolve_config('midas_v21_small_256', input_size=266)
    with pytest.raises(ValueError, match='metric models only'):
        resolve_config('depth_anything_v2_vits', max_depth=10)
    with pytest.raises(ValueError, match='positive'):
        resolve_config('depth_anything_v2_metric_vkitti_vits', max_depth=-1)


def scene_image():
    """A textured rgb8 image with a disc: edges and gradients in every channel."""
    rng = np.random.default_rng(7)
    height, width = IMAGE_SIZE
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x ^ y) & 255], axis=-1)
    image[(x - width / 3) ** 2 + (y - height / 2) ** 2 < (height / 4) ** 2] = (250, 30, 90)
    return np.clip(image + rng.integers(-8, 9, image.shape), 0, 255).astype(np.uint8)


def synthesized_weights(name, seed=3):
    """A state dict in the official layout of ``name``, from its manifest alone: seeded noise
    (norm weights and layer scales around 1), the relative head's last bias lifting the depth
    above the final ReLU's zero."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape, dtype in MANIFESTS[name]['keys']:
        assert dtype == 'float32'
        noise = 0.02 * torch.randn(shape, generator=generator)
        around_one = key.endswith('gamma') or ('norm' in key and key.endswith('weight'))
        state[key] = noise + 1.0 if around_one else noise
    if MANIFESTS[name]['kind'] == 'relative':
        state['depth_head.scratch.output_conv2.2.bias'].fill_(1.0)
    return state


def official_depth(name, state, bgr, input_size, max_depth=None):
    """The official pipeline: ``DepthAnythingV2(**model_configs[encoder])`` (metric: with
    ``max_depth``), strict ``load_state_dict``, ``infer_image`` on the CPU in fp32."""
    manifest = MANIFESTS[name]
    kwargs = dict(encoder=manifest['encoder'], features=manifest['features'],
                  out_channels=manifest['out_channels'])
    if manifest['kind'] == 'metric':
        from official_depth_anything_v2.dpt_metric import DepthAnythingV2
        kwargs['max_depth'] = max_depth or manifest['max_depth']
    else:
        from official_depth_anything_v2.dpt import DepthAnythingV2
    model = DepthAnythingV2(**kwargs)
    assert list(model.state_dict()) == list(state)     # the manifest is the official layout
    model.load_state_dict(state, strict=True)
    model.eval()
    # infer_image sends the image to CUDA whenever there is one; the reference is CPU fp32.
    cuda_available = torch.cuda.is_available
    torch.cuda.is_available = lambda: False
    try:
        return model.infer_image(bgr, input_size)
    finally:
        torch.cuda.is_available = cuda_available


# One case at the official 518 (a 37x49 patch grid: the position embedding resized by the
# official scale factor); the metric ones at reduced sizes to keep CI short (a 518 forward is
# seconds on two cores). MIDAS_SLOW_TESTS=1: every checkpoint at 518.
CASES = [('depth_anything_v2_vits', 0, 0.0),
         ('depth_anything_v2_metric_hypersim_vits', 140, 0.0),
         ('depth_anything_v2_metric_vkitti_vits', 182, 40.0)]
if SLOW:
    CASES = [(name, 0, 0.0) for name in NAMES] + CASES[1:]


@pytest.mark.parametrize('name, input_size, max_depth', CASES)
def test_infer_matches_the_official_pipeline(tmp_path, name, input_size, max_depth):
    rgb = scene_image()
    image = tmp_path / 'scene.png'
    cv2.imwrite(str(image), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    state = synthesized_weights(name)
    weights = tmp_path / get_config(name).file
    torch.save(state, weights)
    reference = official_depth(name, state, cv2.imread(str(image)), input_size or 518,
                               max_depth)
    argv = ['--model', name, '--weights', str(weights), '--device', 'cpu',
            '--output', str(tmp_path / 'out'), str(image)]
    if input_size:
        argv += ['--input-size', str(input_size)]
    if max_depth:
        argv += ['--max-depth', str(max_depth)]
    assert infer.main(argv) == 0
    depth = np.load(tmp_path / 'out' / 'scene.npy')
    assert depth.shape == reference.shape == IMAGE_SIZE and depth.dtype == np.float32
    value_range = float(reference.max() - reference.min())
    assert value_range > 0
    error = float(np.abs(depth - reference).max())
    assert error <= TOLERANCE * value_range, f'{name}: {error / value_range:.2e} of the range'
    if get_config(name).output == 'metric':     # metres, within (0, max_depth)
        top = max_depth or get_config(name).max_depth
        assert 0 < depth.min() and depth.max() < top
