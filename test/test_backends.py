"""Network backends: parity with torch, the artefact cache, the export command and fallback.

Parity runs real MiDaS graphs (random, seeded weights) through each installed runtime; cache and
fallback behaviour use a tiny stand-in network, which exports in a fraction of a second.
"""
import logging
import sys

import numpy as np
import pytest
import torch

from midas_ros.backends import BackendError, create_runner
from midas_ros.backends import onnx_export
from midas_ros.backends.cache import ArtefactCache
from midas_ros.inference import DepthEstimator
from midas_ros.models.registry import get_config
from midas_ros.models.transforms import network_input_size
from midas_ros.tools import export as export_tool

CPU = torch.device('cpu')
SMALL = 'midas_v21_small_256'
CPU_BACKENDS = ('onnxruntime', 'openvino')
PARITY_TOLERANCE = 1e-3   # max |backend - torch| / max |torch|, fp32


def installed(package):
    return pytest.mark.skipif(not _imports(package), reason=f'{package} is not installed')


def _imports(package):
    try:
        __import__(package)
        return True
    except ImportError:
        return False


def relative_deviation(output, reference):
    output, reference = np.asarray(output, np.float64), np.asarray(reference, np.float64)
    return np.abs(output - reference).max() / np.abs(reference).max()


class TinyDepthNet(torch.nn.Module):
    """A MiDaS-shaped stand-in (1x3xHxW -> 1xHxW): conv, ReLU, conv, squeeze."""

    def __init__(self, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv1 = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 1, 3, padding=1)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)

    def forward(self, x):
        return self.conv2(torch.relu(self.conv1(x))).squeeze(1) + 2.0


@pytest.fixture
def export_counter(monkeypatch):
    """Counts ONNX exports (each exported backend exports through ``export_onnx``)."""
    calls = []
    real = onnx_export.export_onnx

    def counting(model, cfg, net_w, net_h, path):
        calls.append((net_w, net_h))
        return real(model, cfg, net_w, net_h, path)
    for module in ('onnxruntime_backend', 'openvino_backend'):
        monkeypatch.setattr(f'midas_ros.backends.{module}.export_onnx', counting)
    return calls


def textured_image(height, width, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x * y) % 256], axis=-1)
    return np.clip(image + rng.integers(-20, 21, image.shape), 0, 255).astype(np.uint8)


def tiny_estimator(backend, cache_dir, seed=0, **kwargs):
    return DepthEstimator(SMALL, device='cpu', model=TinyDepthNet(seed), backend=backend,
                          cache_dir=cache_dir, **kwargs)


# ----------------------------------------------------------------------------- parity

_MODELS = {}


def midas_model(name):
    """Seeded random weights, built once per variant for the whole module."""
    if name not in _MODELS:
        from midas_ros.models import create_model
        model = create_model(name, pretrained=False)
        # With random weights the DPT head's ReLUs can zero the whole output (dpt_levit_224
        # does), and zeros match anything: make the head linear so parity compares real values.
        head = model.scratch.output_conv
        for index, layer in enumerate(head):
            if isinstance(layer, torch.nn.ReLU):
                head[index] = torch.nn.Identity()
        _MODELS[name] = model
    return _MODELS[name]


@pytest.mark.parametrize('variant', [SMALL, 'dpt_levit_224'])
@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_backend_matches_torch_fp32(backend, variant, tmp_path):
    pytest.importorskip(backend)
    cfg = get_config(variant)
    model = midas_model(variant)
    net_w, net_h = network_input_size(cfg, 640, 480)
    net_input = torch.randn((1, 3, net_h, net_w), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(net_input).numpy()
        runner = create_runner(backend, model, cfg, CPU, 'fp32', tmp_path)
        output = runner(net_input).numpy()
    assert output.shape == expected.shape == (1, net_h, net_w)
    assert relative_deviation(output, expected) < PARITY_TOLERANCE
    # Random weights leave the output nearly flat (dpt_levit_224: spread 4% of its maximum), so
    # also hold the error to the spread: a wrong graph cannot hide behind a large constant.
    spread = np.ptp(expected)
    assert spread > 1e-3 * np.abs(expected).max()
    assert np.abs(output - expected).max() < PARITY_TOLERANCE * spread


@pytest.mark.parametrize('backend', CPU_BACKENDS)
def test_estimator_output_matches_torch_path(backend, tmp_path):
    pytest.importorskip(backend)
    image = textured_image(45, 70)
    expected = tiny_estimator('torch', tmp_path).predict(image)
    estimator = tiny_estimator(backend, tmp_path)
    out = np.empty((45, 70), np.float32)
    assert estimator.predict(image, out=out) is out
    assert estimator.backend == backend
    assert relative_deviation(out, expected) < PARITY_TOLERANCE


@pytest.mark.skipif(not torch.cuda.is_available() or not _imports('tensorrt'),
                    reason='TensorRT needs a CUDA GPU and the tensorrt package')
def test_tensorrt_matches_torch_fp32(tmp_path):
    cfg = get_config(SMALL)
    model = midas_model(SMALL)
    net_w, net_h = network_input_size(cfg, 640, 480)
    net_input = torch.randn((1, 3, net_h, net_w), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model(net_input).numpy()
        runner = create_runner('tensorrt', model, cfg, torch.device('cuda'), 'fp32', tmp_path)
        output = runner(net_input.cuda()).cpu().numpy()
    assert relative_deviation(output, expected) < PARITY_TOLERANCE


def test_tensorrt_without_cuda_is_one_clear_error(tmp_path):
    with pytest.raises(BackendError, match='CUDA'):
        create_runner('tensorrt', TinyDepthNet(), get_config(SMALL), CPU, 'fp32', tmp_path)


# ------------------------------------------------------------------------------ cache

@installed('onnxruntime')
def test_second_estimator_loads_from_cache_without_export(tmp_path, export_counter):
    image = textured_image(48, 64)
    first = tiny_estimator('onnxruntime', tmp_path)
    expected = first.predict(image)
    artefact = first.runner.artefact
    built = artefact.stat().st_mtime_ns
    assert export_counter == [(256, 192)]
    second = tiny_estimator('onnxruntime', tmp_path)
    np.testing.assert_array_equal(second.predict(image), expected)
    assert export_counter == [(256, 192)]   # no second export
    assert second.runner.artefact == artefact and artefact.stat().st_mtime_ns == built
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith('.')] == [artefact.name]


@installed('onnxruntime')
def test_changed_weights_make_a_new_artefact(tmp_path, export_counter):
    image = textured_image(48, 64)
    first = tiny_estimator('onnxruntime', tmp_path, seed=0)
    first.predict(image)
    other = tiny_estimator('onnxruntime', tmp_path, seed=1)
    depth = other.predict(image)
    assert len(export_counter) == 2
    assert other.runner.artefact != first.runner.artefact
    # The new weights' output, not the cached graph of the old ones.
    expected = tiny_estimator('torch', tmp_path, seed=1).predict(image)
    assert relative_deviation(depth, expected) < PARITY_TOLERANCE


@installed('openvino')
def test_new_image_size_exports_for_the_new_network_size(tmp_path, export_counter):
    estimator = tiny_estimator('openvino', tmp_path)
    torch_path = tiny_estimator('torch', tmp_path)
    landscape, portrait = textured_image(48, 64), textured_image(64, 48, seed=1)
    estimator.predict(landscape)
    landscape_artefact = estimator.runner.artefact
    depth = estimator.predict(portrait)
    assert export_counter == [(256, 192), (192, 256)]
    assert estimator.runner.artefact != landscape_artefact and landscape_artefact.is_dir()
    assert relative_deviation(depth, torch_path.predict(portrait)) < PARITY_TOLERANCE
    estimator.predict(landscape)   # back to the first size: from the cache
    assert len(export_counter) == 2 and estimator.runner.artefact == landscape_artefact


def test_checkpoint_hash_is_remembered_until_the_file_changes(tmp_path, monkeypatch):
    from midas_ros.models import weights
    hashed = []
    real = weights.file_sha256
    monkeypatch.setattr(weights, 'file_sha256', lambda path: hashed.append(path) or real(path))
    checkpoint = tmp_path / 'model.pt'
    checkpoint.write_bytes(b'\x01' * 4096)
    model = TinyDepthNet()
    model.weights_path = checkpoint
    cache = ArtefactCache(tmp_path / 'cache')
    first = cache.weights_fingerprint(model)
    assert ArtefactCache(tmp_path / 'cache').weights_fingerprint(model) == first
    assert len(hashed) == 1   # the second start read the sidecar
    checkpoint.write_bytes(b'\x01' * 2048 + b'\x02' + b'\x01' * 2047)   # same size, new content
    assert cache.weights_fingerprint(model) != first and len(hashed) == 2


def test_artefact_key_names_the_timm_and_torch_that_built_the_graph(monkeypatch):
    """A graph exported under one timm is not reused under another (module code is in it)."""
    from importlib import metadata
    from midas_ros.backends import cache
    args = (SMALL, 'onnxruntime', '1.32.0', '', 256, 192, 'fp32', 'ab' * 32)
    key = cache.artefact_key(*args)
    assert f"timm{metadata.version('timm')}" in key
    assert f"torch{metadata.version('torch')}" in key
    monkeypatch.setattr(cache, 'library_version',
                        lambda name: 'other' if name == 'timm' else metadata.version(name))
    assert cache.artefact_key(*args) != key


def test_failed_build_leaves_no_artefact(tmp_path):
    cache = ArtefactCache(tmp_path)

    def failing(directory):
        (directory / 'model.onnx').write_bytes(b'partial')
        raise BackendError('export failed')
    with pytest.raises(BackendError):
        cache.get_or_build('key', failing)
    assert list(tmp_path.iterdir()) == []
    assert cache.get_or_build('key', lambda d: (d / 'model.onnx').write_bytes(b'ok')).is_dir()
    assert (tmp_path / 'key' / 'model.onnx').read_bytes() == b'ok'


# --------------------------------------------------------------------------- fallback

def test_missing_package_is_one_error_naming_the_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)   # makes the import fail
    with pytest.raises(BackendError, match=r'pip install onnxruntime=='):
        tiny_estimator('onnxruntime', tmp_path)


@installed('onnxruntime')
def test_missing_onnx_exporter_package_is_named_at_the_first_frame(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnx', None)
    estimator = tiny_estimator('onnxruntime', tmp_path)
    with pytest.raises(BackendError, match=r'pip install onnx=='):
        estimator.predict(textured_image(30, 40))


def test_missing_package_falls_back_to_torch_when_allowed(tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, 'openvino', None)
    image = textured_image(30, 40)
    with caplog.at_level(logging.WARNING, logger='midas_ros.inference'):
        estimator = tiny_estimator('openvino', tmp_path, backend_fallback=True)
    assert estimator.backend == 'torch' and estimator.requested_backend == 'openvino'
    assert 'falling back to torch' in caplog.text and 'pip install openvino' in caplog.text
    np.testing.assert_allclose(estimator.predict(image),
                               tiny_estimator('torch', tmp_path).predict(image), rtol=1e-5)


@installed('onnxruntime')
@pytest.mark.parametrize('fallback', [False, True])
def test_failed_export_at_first_frame(tmp_path, monkeypatch, fallback, caplog):
    attempts = []

    def broken_export(*args, **kwargs):
        attempts.append(1)
        raise RuntimeError('Unsupported: ONNX export of operator foo')
    monkeypatch.setattr(torch.onnx, 'export', broken_export)
    image = textured_image(30, 40)
    estimator = tiny_estimator('onnxruntime', tmp_path, backend_fallback=fallback)
    if not fallback:
        for _ in range(2):   # the second frame fails at once: no second export attempt
            with pytest.raises(BackendError, match='exporting MiDaS model .* failed'):
                estimator.predict(image)
        assert len(attempts) == 1
        return
    with caplog.at_level(logging.WARNING, logger='midas_ros.inference'):
        depth = estimator.predict(image)
    assert estimator.backend == 'torch' and 'Unsupported' in caplog.text
    np.testing.assert_allclose(depth, tiny_estimator('torch', tmp_path).predict(image), rtol=1e-5)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith('.')]


def test_unknown_backend_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match='backend must be one of'):
        tiny_estimator('tflite', tmp_path)


# ----------------------------------------------------------------------------- export

@installed('openvino')
def test_export_command_writes_openvino_ir_matching_torch(tmp_path):
    import openvino
    output = tmp_path / 'out' / 'small.xml'
    status = export_tool.main(['--model', SMALL, '--pretrained', 'false', '--format', 'openvino',
                               '--width', '320', '--height', '240', '--output', str(output),
                               '--cache-dir', str(tmp_path / 'cache')])
    assert status == 0 and output.is_file() and output.with_suffix('.bin').is_file()
    from midas_ros.models import create_model
    model = create_model(SMALL, pretrained=False)   # the same seeded weights
    net_w, net_h = network_input_size(get_config(SMALL), 320, 240)
    net_input = torch.randn((1, 3, net_h, net_w), generator=torch.Generator().manual_seed(2))
    compiled = openvino.Core().compile_model(str(output), 'CPU',
                                             {'INFERENCE_PRECISION_HINT': 'f32'})
    with torch.inference_mode():
        expected = model(net_input).numpy()
    assert relative_deviation(compiled(net_input.numpy())[0], expected) < PARITY_TOLERANCE


def test_export_command_reports_a_bad_size_in_one_line(capsys):
    status = export_tool.main(['--model', SMALL, '--pretrained', 'false', '--format', 'onnx',
                               '--width', '0', '--height', '480', '--output', '/nonexistent/x'])
    assert status == 1
    assert 'export: error:' in capsys.readouterr().err
