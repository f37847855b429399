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
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fake_gpu import FakeCuda, fake_tensorrt
from midas_ros.models import create_model, get_config, list_models, registry, resolve_config
from midas_ros.models.depth_anything_v2 import bicubic_matrix
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


@pytest.fixture(scope='module')
def small_checkpoint(tmp_path_factory):
    """A synthesized depth_anything_v2_metric_hypersim_vits.pth (99 MB), made once."""
    name = 'depth_anything_v2_metric_hypersim_vits'
    path = tmp_path_factory.mktemp('weights') / get_config(name).file
    torch.save(synthesized_weights(name), path)
    return path


def test_a_checkpoint_of_another_size_is_refused(small_checkpoint):
    from midas_ros.models import WeightsMismatchError
    with pytest.raises(WeightsMismatchError, match='depth_anything_v2_vitb'):
        create_model('depth_anything_v2_vitb', weights=small_checkpoint)


def test_download_from_the_registry_url_into_the_hub_cache(small_checkpoint, tmp_path,
                                                           monkeypatch):
    """The download path, with the registry's URL replaced by a local file URL."""
    name = 'depth_anything_v2_metric_hypersim_vits'
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)
    monkeypatch.delenv('MIDAS_WEIGHTS_DIR', raising=False)
    local = replace(get_config(name), url=small_checkpoint.as_uri())
    monkeypatch.setattr(registry, 'get_config', lambda requested: local)
    from midas_ros.models import WeightsNotFoundError
    with pytest.raises(WeightsNotFoundError, match='huggingface.co|file:'):
        create_model(name)      # not found, and no download unless allowed
    model = create_model(name, allow_download=True)
    cached = tmp_path / 'torch_home' / 'hub' / 'checkpoints' / local.file
    assert model.weights_path == cached and cached.stat().st_size == \
        small_checkpoint.stat().st_size
    assert create_model(name).weights_path == cached     # found there from now on


def test_non_commercial_licence_is_logged_once_per_variant(caplog):
    from midas_ros.models import _licences_logged, log_licence
    _licences_logged.discard('depth_anything_v2_metric_vkitti_vitl')
    with caplog.at_level(logging.INFO, logger='midas_ros.models'):
        log_licence(get_config('depth_anything_v2_vits'))                    # Apache-2.0
        for _ in range(2):
            log_licence(get_config('depth_anything_v2_metric_vkitti_vitl'))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == ["weights of 'depth_anything_v2_metric_vkitti_vitl' are licensed "
                     'CC-BY-NC-4.0 by their authors: non-commercial use only']


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


@pytest.mark.parametrize('grid', [(5, 7), (37, 49), (66, 37)])
def test_position_embedding_resize_is_the_official_bicubic_scale_factor_resize(grid):
    """The matrix form equals F.interpolate(scale_factor=(g + 0.1) / 37, bicubic) exactly
    (float64); the official code runs it in float32, within 3e-6 of the range."""
    table = torch.randn(1, 8, 37, 37, dtype=torch.float64)
    factors = tuple((g + 0.1) / 37 for g in grid)
    expected = F.interpolate(table, scale_factor=factors, mode='bicubic', antialias=False)
    rows, columns = (bicubic_matrix(g, 37, f) for g, f in zip(grid, factors))
    torch.testing.assert_close(rows @ table @ columns.T, expected, rtol=0, atol=1e-12)


@pytest.fixture(scope='module')
def metric_small_12m():
    """depth_anything_v2_metric_hypersim_vits with random weights and max_depth 12 m, and its
    torch output for a 64x48 image at model.input_size 70."""
    from midas_ros.inference import DepthEstimator
    name = 'depth_anything_v2_metric_hypersim_vits'
    model = create_model(name, pretrained=False, max_depth=12.0)
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    expected = DepthEstimator(name, device='cpu', model=model, input_size=70,
                              max_depth=12.0).predict(image)
    return name, model, image, expected


@pytest.mark.parametrize('backend', ['onnxruntime', 'openvino'])
def test_exported_backends_run_at_the_configured_input_size(backend, metric_small_12m,
                                                            tmp_path):
    """Exported at model.input_size (70: a 70x98 network input for a 64x48 image), with the
    metric head's max_depth in the graph and in the cache key, and equal to torch."""
    pytest.importorskip(backend)
    from midas_ros.inference import DepthEstimator
    name, model, image, expected = metric_small_12m
    estimator = DepthEstimator(name, device='cpu', model=model, input_size=70,
                               max_depth=12.0, backend=backend, cache_dir=tmp_path)
    depth = estimator.predict(image)
    assert estimator.backend == backend and estimator.backend_error is None
    assert [p.name.split('-')[:3] for p in tmp_path.iterdir()] == [[name, 'max12m', '98x70']]
    assert np.all((depth > 0) & (depth < 12.0))
    assert np.abs(depth - expected).max() < 1e-3 * np.ptp(expected)


def test_tensorrt_builds_the_typed_fp16_graph_on_a_fake_gpu(monkeypatch, tmp_path):
    """The GPU path (fake CUDA and TensorRT 11, see fake_gpu): auto precision is fp16 as for
    the other ViTs, and the real Depth Anything V2 graph exports typed fp16 at input_size."""
    from midas_ros.backends import create_runner
    from midas_ros.inference import choose_precision
    cuda = FakeCuda(monkeypatch)
    trt = fake_tensorrt('11.1.0', cuda)
    monkeypatch.setitem(sys.modules, 'tensorrt', trt)
    name = 'depth_anything_v2_metric_vkitti_vits'
    cfg = resolve_config(name, input_size=70)
    gpu = torch.device('cuda', 1)
    precision, reason = choose_precision('auto', gpu, cfg)
    assert precision == 'fp16' and 'safe in fp16' in reason
    runner = create_runner('tensorrt', create_model(name, pretrained=False), cfg, gpu,
                           precision, tmp_path)
    output = runner(torch.randn(1, 3, 70, 98))
    assert output.shape == (1, 70, 98)
    # Weights in fp16; the position-embedding resize stays float32, as the official code
    # computes it (pos_embed.float()) whatever the network's precision.
    assert len(trt.log['parsed']) == 1 and 'FLOAT16' in trt.log['parsed'][0]
    assert f'{name}-max80m-98x70-fp16-tensorrt-11.1.0-' in runner.artefact.name
