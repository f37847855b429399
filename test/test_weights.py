"""Weights resolution, verification and strict loading, and the ``create_model`` entry point.

No network: downloads go through a stand-in for ``torch.hub.download_url_to_file`` that writes
known bytes. Real-architecture tests use ``midas_v21_small_256`` (21 M parameters, built in
well under a second) with random weights saved to a temporary file.
"""
import dataclasses
import hashlib
import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from midas_ros.models import create_model, get_config, weights
from midas_ros.models.weights import (WeightsChecksumError, WeightsFormatError,
                                      WeightsMismatchError, WeightsNotFoundError,
                                      load_weights, resolve_weights)

SMALL = get_config('midas_v21_small_256')
MANIFESTS = Path(__file__).resolve().parents[2] / 'shared' / 'midas_manifests'
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def hub_dir(tmp_path, monkeypatch):
    """An empty torch hub checkpoint cache under a temporary ``$TORCH_HOME``; no weights env."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setattr(torch.hub, '_hub_dir', None)     # undo any torch.hub.set_dir()
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV, raising=False)
    return tmp_path / 'torch_home' / 'hub' / 'checkpoints'


@pytest.fixture
def no_download(monkeypatch):
    """Fail the test if anything tries to download."""
    def refuse(*args, **kwargs):
        raise AssertionError(f'unexpected download: {args}')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', refuse)


def touch(path, data=b'x'):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- resolution order --------------------------------------------------------------------------

def test_resolution_order_path_then_dir_then_env_then_hub(tmp_path, hub_dir, monkeypatch,
                                                          no_download):
    explicit = touch(tmp_path / 'elsewhere' / 'my_midas.pt')
    param_dir, env_dir = tmp_path / 'param', tmp_path / 'env'
    in_param = touch(param_dir / SMALL.file)
    in_env = touch(env_dir / SMALL.file)
    in_hub = touch(hub_dir / SMALL.file)
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(env_dir))

    assert resolve_weights(SMALL, explicit, param_dir) == explicit
    assert resolve_weights(SMALL, None, param_dir) == in_param
    in_param.unlink()
    assert resolve_weights(SMALL, None, param_dir) == in_env
    in_env.unlink()
    assert resolve_weights(SMALL, None, param_dir) == in_hub
    monkeypatch.delenv(weights.WEIGHTS_DIR_ENV)
    assert resolve_weights(SMALL) == in_hub


def test_legacy_hub_file_name_is_found(hub_dir, no_download):
    legacy = touch(hub_dir / SMALL.hub_file)
    assert resolve_weights(SMALL) == legacy
    # The release name is preferred when both are present.
    release = touch(hub_dir / SMALL.file)
    assert resolve_weights(SMALL) == release


def test_missing_explicit_path_is_an_error_not_a_fallback(tmp_path, hub_dir, no_download):
    touch(hub_dir / SMALL.file)
    missing = tmp_path / 'typo.pt'
    with pytest.raises(WeightsNotFoundError, match='does not exist') as err:
        resolve_weights(SMALL, missing)
    assert str(missing) in str(err.value)
    with pytest.raises(WeightsNotFoundError, match='is a directory'):
        resolve_weights(SMALL, tmp_path)


def test_not_found_names_every_place_and_the_url(tmp_path, hub_dir, monkeypatch, no_download):
    param_dir, env_dir = tmp_path / 'param', tmp_path / 'env'
    monkeypatch.setenv(weights.WEIGHTS_DIR_ENV, str(env_dir))
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights(SMALL, None, param_dir)
    message = str(err.value)
    for expected in (SMALL.name, SMALL.file, SMALL.hub_file, str(param_dir), str(env_dir),
                     str(hub_dir), SMALL.url, str(hub_dir / SMALL.file), 'allow_download'):
        assert expected in message, f'{expected!r} missing from:\n{message}'


def test_not_found_says_which_sources_are_unset(hub_dir, no_download):
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights(SMALL)
    assert err.value.args[0].count('(not set)') == 2     # no parameter, no environment variable


# -- download ------------------------------------------------------------------------------

class FakeDownloader:
    """Stand-in for torch.hub.download_url_to_file: writes ``payload`` (or raises ``error``)."""

    def __init__(self, payload=b'official bytes', error=None):
        self.payload, self.error, self.calls = payload, error, []

    def __call__(self, url, dst, hash_prefix=None, progress=True):
        self.calls.append((url, dst, progress))
        if self.error is not None:
            raise self.error
        Path(dst).write_bytes(self.payload)


def test_download_only_when_allowed_and_verified(hub_dir, monkeypatch):
    fake = FakeDownloader()
    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake)
    cfg = dataclasses.replace(SMALL, sha256=hashlib.sha256(fake.payload).hexdigest())

    with pytest.raises(WeightsNotFoundError):
        resolve_weights(cfg)
    assert fake.calls == []

    path = resolve_weights(cfg, allow_download=True, progress=False)
    assert path == hub_dir / cfg.file and path.read_bytes() == fake.payload
    assert fake.calls[0][0] == cfg.url and fake.calls[0][2] is False
    assert sorted(p.name for p in hub_dir.iterdir()) == [cfg.file]   # no partial file left
    # Once cached, it is found without downloading again.
    assert resolve_weights(cfg, allow_download=True) == path and len(fake.calls) == 1


def test_download_with_wrong_hash_is_rejected_and_not_cached(hub_dir, monkeypatch):
    fake = FakeDownloader(payload=b'tampered bytes')
    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake)
    cfg = dataclasses.replace(SMALL, sha256=hashlib.sha256(b'official bytes').hexdigest())
    with pytest.raises(WeightsChecksumError) as err:
        resolve_weights(cfg, allow_download=True, progress=False)
    assert cfg.sha256 in str(err.value) and hashlib.sha256(b'tampered bytes').hexdigest() \
        in str(err.value)
    assert list(hub_dir.iterdir()) == []


def test_failed_download_is_one_not_found_error_with_the_url(hub_dir, monkeypatch):
    fake = FakeDownloader(error=urllib.error.URLError('no route to host'))
    monkeypatch.setattr(torch.hub, 'download_url_to_file', fake)
    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights(SMALL, allow_download=True, progress=False)
    message = str(err.value)
    assert 'no route to host' in message and SMALL.url in message and str(hub_dir) in message
    assert list(hub_dir.iterdir()) == []


def test_hub_name_hash_prefix_is_sha256(tmp_path):
    data = b'checkpoint bytes'
    prefix = hashlib.sha256(data).hexdigest()[:8]
    assert weights.expected_sha256(SMALL, SMALL.hub_file) == SMALL.hub_file.split('-')[1][:8]
    cfg = dataclasses.replace(SMALL, hub_file=f'midas_v21_small-{prefix}.pt')
    good = touch(tmp_path / cfg.hub_file, data)
    assert resolve_weights(cfg, good, check_hash=True) == good
    bad = touch(tmp_path / 'bad' / cfg.hub_file, data + b'!')
    with pytest.raises(WeightsChecksumError, match=prefix):
        resolve_weights(cfg, bad, check_hash=True)
    # Without check_hash a found file is not read (the strict load catches foreign files).
    assert resolve_weights(cfg, bad) == bad


# -- loading -------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def reference_state(tmp_path_factory):
    """Random ``midas_v21_small_256`` weights (BN statistics included) and a file holding them."""
    torch.manual_seed(1)
    model = create_model(SMALL.name, pretrained=False)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            if tensor.is_floating_point():
                tensor.uniform_(0.5, 1.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp('ckpt') / SMALL.file
    torch.save(state, path)
    return state, path


def assert_state_equal(model, state):
    current = model.state_dict()
    assert current.keys() == state.keys()
    assert all(torch.equal(current[k], state[k]) for k in state)


def test_create_model_loads_a_plain_state_dict(reference_state, hub_dir, no_download):
    state, path = reference_state
    model = create_model(SMALL.name, weights=path)
    assert not model.training and model.weights_path == path
    assert_state_equal(model, state)


def test_official_training_wrapper_is_accepted(reference_state, tmp_path):
    state, _ = reference_state
    wrapped = tmp_path / 'wrapped.pt'
    torch.save({'model': state, 'optimizer': {'state': {}, 'param_groups': [{'lr': 1e-5}]}},
               wrapped)
    model = create_model(SMALL.name, pretrained=False)
    load_weights(model, SMALL, wrapped)
    assert_state_equal(model, state)


def test_weights_found_in_the_hub_cache(reference_state, hub_dir, no_download):
    state, path = reference_state
    hub_dir.mkdir(parents=True)
    (hub_dir / SMALL.hub_file).symlink_to(path)
    model = create_model(SMALL.name)
    assert model.weights_path == hub_dir / SMALL.hub_file
    assert_state_equal(model, state)


def test_partly_wrong_file_leaves_the_model_untouched(reference_state, tmp_path):
    """torch's own strict load copies every matching tensor before it reports a bad shape."""
    state, _ = reference_state
    bad = {k: torch.zeros_like(v) for k, v in state.items()}
    key = 'scratch.output_conv.4.weight'
    bad[key] = torch.zeros(2, 32, 1, 1)
    path = tmp_path / 'bad.pt'
    torch.save(bad, path)
    model = create_model(SMALL.name, pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as err:
        load_weights(model, SMALL, path)
    assert_state_equal(model, before)
    message = str(err.value)
    assert '1 mis-shaped' in message and key in message and '[2, 32, 1, 1]' in message
    assert 'missing' not in message and 'unexpected' not in message


def _swin2_tiny_like_keys():
    """Key -> shape of a DPT Swin2-T checkpoint: from the manifest if present, else a sample."""
    manifest = MANIFESTS / 'dpt_swin2_tiny_256.json'
    if manifest.is_file():
        return {k: shape for k, shape, _ in json.loads(manifest.read_text())['keys']}
    return {
        'pretrained.model.patch_embed.proj.weight': [96, 3, 4, 4],
        'pretrained.model.layers.0.blocks.0.attn.qkv.weight': [288, 96],
        'pretrained.model.layers.0.blocks.0.attn.logit_scale': [3, 1, 1],
        'scratch.layer1_rn.weight': [256, 96, 3, 3],
        'scratch.layer4_rn.weight': [256, 768, 3, 3],
        'scratch.refinenet1.out_conv.weight': [256, 256, 1, 1],
        'scratch.output_conv.0.weight': [128, 256, 3, 3],
    }


def test_wrong_variant_file_is_rejected_naming_the_keys(tmp_path):
    # Stride-0 views keep the file tiny while the stored shapes are the real ones.
    foreign = {k: torch.zeros(()).expand(shape) for k, shape in _swin2_tiny_like_keys().items()}
    path = tmp_path / 'dpt_swin2_tiny_256.pt'
    torch.save(foreign, path)
    model = create_model(SMALL.name, pretrained=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as err:
        load_weights(model, SMALL, path)
    assert_state_equal(model, before)
    message = str(err.value)
    n_missing = sum(k not in foreign for k in before)
    n_unexpected = sum(k not in before for k in foreign)
    assert SMALL.name in message and str(path) in message
    assert f'{n_missing} missing' in message and 'pretrained.layer1.0.weight' in message
    assert f'{n_unexpected} unexpected' in message and 'pretrained.model.' in message
    assert 'mis-shaped' in message and 'scratch.layer1_rn.weight' in message
    assert f'+{n_missing - 5} more' in message     # long lists are cut, with a count


@pytest.mark.parametrize('content', [
    b'<html>404 Not Found</html>',        # what a failed download often leaves behind
    None,                                  # a valid checkpoint, truncated
])
def test_not_a_checkpoint_is_a_format_error(reference_state, tmp_path, content):
    path = tmp_path / 'broken.pt'
    if content is None:
        content = reference_state[1].read_bytes()[:100_000]
    path.write_bytes(content)
    with pytest.raises(WeightsFormatError, match='not a readable PyTorch checkpoint'):
        weights.load_state_dict_file(path)


@pytest.mark.parametrize('payload', [torch.zeros(3), [torch.zeros(3)], {}, {'a': 1.0}])
def test_checkpoint_without_a_state_dict_is_a_format_error(tmp_path, payload):
    path = tmp_path / 'odd.pt'
    torch.save(payload, path)
    with pytest.raises(WeightsFormatError, match='does not hold a state_dict'):
        weights.load_state_dict_file(path)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / 'code.pt'
    torch.save({'weight': torch.zeros(1), 'hook': FakeDownloader()}, path)
    with pytest.raises(WeightsFormatError, match='UnpicklingError'):
        weights.load_state_dict_file(path)


# -- create_model --------------------------------------------------------------------------

def test_create_model_fails_fast_before_building(hub_dir, no_download, monkeypatch):
    from midas_ros.models import factory

    def must_not_build(cfg):
        raise AssertionError('built the network before finding its weights')
    monkeypatch.setattr(factory, 'build_model', must_not_build)
    with pytest.raises(WeightsNotFoundError, match=SMALL.url):
        create_model(SMALL.name)


def test_create_model_rejects_bad_arguments():
    with pytest.raises(ValueError, match='midas_v21_small_256'):   # lists the valid names
        create_model('midas_v99')
    with pytest.raises(ValueError, match='pretrained=False'):
        create_model(SMALL.name, pretrained=False, weights='x.pt')


def test_random_small_model_output_and_size():
    model = create_model(SMALL.name, pretrained=False)
    assert model.weights_path is None and not model.training
    assert sum(p.numel() for p in model.parameters()) == SMALL.num_parameters
    with torch.inference_mode():
        out = model(torch.randn(2, 3, 32, 64))
    assert out.shape == (2, 32, 64) and bool((out >= 0).all())


@pytest.mark.skipif(not MANIFESTS.is_dir(), reason='needs ../shared/midas_manifests')
@pytest.mark.parametrize('name', ['midas_v21_small_256', 'midas_v21_384'])
def test_v21_state_dict_equals_the_official_manifest(name):
    manifest = json.loads((MANIFESTS / f'{name}.json').read_text())
    model = create_model(name, pretrained=False)
    ours = [[k, list(v.shape), str(v.dtype).removeprefix('torch.')]
            for k, v in model.state_dict().items()]
    assert ours == manifest['keys']
    assert sum(p.numel() for p in model.parameters()) == manifest['num_parameters'] \
        == get_config(name).num_parameters


def test_importing_the_zoo_does_not_import_torch():
    code = ('import sys, midas_ros.models as m; m.list_models(); '
            'sys.exit(1 if "torch" in sys.modules or "timm" in sys.modules else 0)')
    assert subprocess.run([sys.executable, '-c', code], cwd=REPO).returncode == 0


def test_legacy_pickle_format_checkpoint_loads(tmp_path):
    """Checkpoints saved before torch 1.6 are not zip files (and cannot be memory-mapped)."""
    state = {'scratch.layer1_rn.weight': torch.randn(64, 32, 3, 3)}
    path = tmp_path / 'old.pt'
    torch.save(state, path, _use_new_zipfile_serialization=False)
    loaded = weights.load_state_dict_file(path)
    assert torch.equal(loaded['scratch.layer1_rn.weight'], state['scratch.layer1_rn.weight'])


# -- architectural tables: required in the file, rebuilt, never read from it -----------------

LEVIT = get_config('dpt_levit_224')
LEVIT_TABLE = 'pretrained.model.blocks.0.m.attention_bias_idxs'


@pytest.fixture(scope='module')
def levit_state():
    """Random dpt_levit_224 weights (its index tables: the architecture's) and the model."""
    model = create_model(LEVIT.name, pretrained=False)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not name.endswith('running_var'):
                tensor.add_(0.02 * torch.randn(tensor.shape))
        model.scratch.output_conv[4].bias.fill_(1.0)
    return {k: v.clone() for k, v in model.state_dict().items()}, model


def test_architectural_tables_are_the_index_tables_and_masks():
    tables = weights.architectural_buffers(create_model(LEVIT.name, pretrained=False))
    assert LEVIT_TABLE in tables and len(tables) == 14
    assert all(name.endswith('attention_bias_idxs') for name in tables)   # no BN statistics
    assert weights.architectural_buffers(create_model(SMALL.name, pretrained=False)) == {}


def test_tables_in_the_file_are_not_trusted(levit_state, tmp_path, caplog):
    state, model = levit_state
    tampered = dict(state)
    tampered[LEVIT_TABLE] = torch.zeros_like(state[LEVIT_TABLE])
    path = tmp_path / LEVIT.file
    torch.save(tampered, path)
    with caplog.at_level('WARNING', logger=weights.__name__):
        loaded = create_model(LEVIT.name, weights=path)
    assert torch.equal(loaded.state_dict()[LEVIT_TABLE], state[LEVIT_TABLE])
    assert any(LEVIT_TABLE in r.getMessage() and 'rebuilt' in r.getMessage()
               for r in caplog.records)
    image = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(image), model(image), rtol=0, atol=0)


def test_intact_file_loads_without_a_warning(levit_state, tmp_path, caplog):
    state, _ = levit_state
    path = tmp_path / LEVIT.file
    torch.save(state, path)
    with caplog.at_level('WARNING'):
        create_model(LEVIT.name, weights=path)
    assert not [r for r in caplog.records if r.levelname == 'WARNING']


def test_file_without_its_tables_or_in_another_layout_is_refused(levit_state, tmp_path):
    """A checkpoint re-saved from timm 1.0's LeViT (``stages``, no index tables) is not the
    official format: refused, naming the keys."""
    state, _ = levit_state
    renamed = 'pretrained.model.stages.0.blocks.0.attn.qkv.linear.weight'
    other = {(renamed if k == 'pretrained.model.blocks.0.m.qkv.c.weight' else k): v
             for k, v in state.items() if k != LEVIT_TABLE}
    path = tmp_path / LEVIT.file
    torch.save(other, path)
    with pytest.raises(WeightsMismatchError) as err:
        create_model(LEVIT.name, weights=path)
    message = str(err.value)
    assert '2 missing' in message and LEVIT_TABLE in message
    assert '1 unexpected' in message and renamed in message
