"""Model zoo architectures: official checkpoint layout, parameter counts, forward semantics.

Parametrized over ``registry.list_models()``, so a newly registered variant is tested at once.
When the official-checkpoint manifests (``<repo>/../shared/midas_manifests``, and
``depth_anything_v2_manifests``) are present, each
variant's state_dict must have exactly their key names and shapes; without them the invariants
derivable from the registry (parameter count, output shape and sign) still run.

Each model is built once (module-scoped, parametrized fixture: pytest runs all tests of one
variant before building the next, so one model at a time is held). Forward passes run at a reduced
size where the backbone allows any size, else at the network size; those on large fixed-size
models are slow on CPU and need ``MIDAS_SLOW_TESTS=1``.
"""
import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch
from torch import nn
import torch.nn.functional as F

from midas_ros.models import registry
from midas_ros.models.blocks import (FeatureFusionBlockCustom, ResidualConvUnit,
                                     ResidualConvUnitCustom, make_scratch)
from midas_ros.models.factory import build_model
from midas_ros.models.weights import architectural_buffers

SHARED = Path(__file__).resolve().parents[1].parent / 'shared'
MANIFESTS = (SHARED / 'midas_manifests', SHARED / 'depth_anything_v2_manifests')
SLOW = os.environ.get('MIDAS_SLOW_TESTS') == '1'
# Models up to this size run forward at their network size in the fast suite.
SMALL_MODEL_PARAMETERS = 60_000_000
# Variants that keep the aspect ratio accept any multiple of their patch grid (32, or 14 for
# Depth Anything V2): test them on a small, non-square input (also exercises the
# position-embedding / relative-bias resizing).
REDUCED_INPUT = {32: (64, 96), 14: (70, 98)}


def forward_input_size(cfg):
    return REDUCED_INPUT[cfg.multiple_of] if cfg.keep_aspect_ratio else (cfg.net_h, cfg.net_w)


def forward_is_slow(cfg):
    return not cfg.keep_aspect_ratio and cfg.num_parameters > SMALL_MODEL_PARAMETERS


def load_manifest(name):
    for path in (folder / f'{name}.json' for folder in MANIFESTS):
        if path.is_file():
            return json.loads(path.read_text())
    pytest.skip(f"no official-checkpoint manifest {name}.json in "
                f"{' or '.join(map(str, MANIFESTS))}")


def zoo():
    """The variants built here. Depth Anything V2 Base and Large (relative and metric) only
    with MIDAS_SLOW_TESTS=1: building them costs a minute on two cores, their architecture is
    the Small one's with other widths, and test_depth_anything_v2.py checks their official
    layouts on the meta device."""
    return [name for name in registry.list_models()
            if SLOW or not (registry.get_config(name).arch == 'depth_anything_v2'
                            and registry.get_config(name).backbone != 'vits')]


@pytest.fixture(scope='module', params=zoo())
def built(request):
    """(config, model) for one registered variant; built once for all tests of that variant."""
    cfg = registry.get_config(request.param)
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def test_parameter_count_matches_registry(built):
    cfg, model = built
    assert sum(p.numel() for p in model.parameters()) == cfg.num_parameters


def test_state_dict_matches_official_manifest(built):
    cfg, model = built
    manifest = load_manifest(cfg.name)
    expected = {name: tuple(shape) for name, shape, _ in manifest['keys']}
    actual = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    assert sorted(set(expected) - set(actual)) == [], 'keys missing from the model'
    assert sorted(set(actual) - set(expected)) == [], 'keys the official checkpoint lacks'
    assert {k: v for k, v in actual.items() if expected[k] != v} == {}, 'shape mismatches'
    assert set(manifest['architectural_buffers']) <= set(actual)
    assert manifest['num_parameters'] == cfg.num_parameters


def test_architectural_tables_are_those_of_the_manifest(built):
    """The tables the loader rebuilds instead of reading (weights.architectural_buffers) are
    exactly the ones the official checkpoints carry as architecture, not as training."""
    cfg, model = built
    manifest = load_manifest(cfg.name)
    assert set(architectural_buffers(model)) == set(manifest['architectural_buffers'])


def test_dpt_decoder_follows_official_layout(built):
    """Without the manifests: the decoder keys and head widths derivable from the config."""
    cfg, model = built
    if cfg.arch != 'dpt':
        pytest.skip('not a DPT')
    levels = range(1, len(cfg.hooks) + 1)
    unit = [f'resConfUnit{u}.conv{c}.{p}' for u in (1, 2) for c in (1, 2)
            for p in ('weight', 'bias')]
    expected = {f'scratch.layer{n}_rn.weight' for n in levels}
    expected |= {f'scratch.refinenet{n}.{k}' for n in levels
                 for k in unit + ['out_conv.weight', 'out_conv.bias']}
    expected |= {f'scratch.output_conv.{i}.{p}' for i in (0, 2, 4) for p in ('weight', 'bias')}
    state = model.state_dict()
    scratch = {k for k in state if k.startswith('scratch.')
               and not k.startswith('scratch.stem_transpose.')}
    assert scratch == expected
    assert all(k.startswith(('pretrained.', 'scratch.')) for k in state)
    head_1 = cfg.head_features_1 or cfg.features
    assert state['scratch.output_conv.0.weight'].shape == (head_1 // 2, head_1, 3, 3)
    assert state['scratch.output_conv.4.weight'].shape == (1, cfg.head_features_2, 1, 1)


def test_strict_load_of_manifest_shaped_tensors(built):
    cfg, model = built
    manifest = load_manifest(cfg.name)
    dtypes = {'float32': torch.float32, 'int64': torch.int64}
    saved = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    # Zeros (lazily mapped pages: cheap even for 344M parameters) for the learned tensors, so the
    # copy is visible; index tables keep their architecture-defined values.
    state = {name: torch.zeros(shape, dtype=dtypes[dtype])
             if dtypes[dtype].is_floating_point else saved[name]
             for name, shape, dtype in manifest['keys']}
    probe = next(name for name, _, dtype in manifest['keys']
                 if dtype == 'float32' and saved[name].abs().sum() > 0)
    try:
        model.load_state_dict(state, strict=True)
        assert model.state_dict()[probe].abs().sum() == 0
    finally:  # the other tests of this variant share the model
        model.load_state_dict(saved, strict=True)


def test_strict_load_rejects_missing_or_misshapen_tensor(built):
    _, model = built
    state = model.state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point() and v.dim() >= 2)
    missing = {k: v for k, v in state.items() if k != name}
    with pytest.raises(RuntimeError, match='Missing key'):
        model.load_state_dict(missing, strict=True)
    misshapen = dict(state)
    misshapen[name] = torch.zeros(*state[name].shape[:-1], state[name].shape[-1] + 1)
    with pytest.raises(RuntimeError, match='size mismatch'):
        model.load_state_dict(misshapen, strict=True)


def test_forward_gives_nonnegative_depth_per_sample(built):
    cfg, model = built
    if forward_is_slow(cfg) and not SLOW:
        pytest.skip('forward of a large fixed-size model is slow on CPU; MIDAS_SLOW_TESTS=1')
    height, width = forward_input_size(cfg)
    images = torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        batch = model(images)
        single = model(images[1:])
    assert batch.shape == (2, height, width)
    assert batch.dtype == torch.float32
    assert torch.isfinite(batch).all() and (batch >= 0).all()
    # Samples must not mix inside the network (reshapes of attention / token layouts).
    torch.testing.assert_close(single[0], batch[1], rtol=1e-4, atol=1e-5)


def test_fixed_size_backbones_reject_other_sizes():
    cfg = registry.get_config('dpt_levit_224')
    model = build_model(cfg)
    with pytest.raises(ValueError, match='224x224'):
        model(torch.zeros(1, 3, 256, 256))


def test_unsupported_variant_is_refused():
    cfg = dataclasses.replace(registry.get_config('dpt_levit_224'), supported=False,
                              unsupported_reason='its backbone is unavailable')
    with pytest.raises(ValueError, match='not supported: its backbone is unavailable'):
        build_model(cfg)


# --- decoder blocks -----------------------------------------------------------------------------

def _zero_convs(module):
    for conv in module.modules():
        if isinstance(conv, nn.Conv2d):
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)
    return module


def test_residual_units_skip_semantics():
    x = torch.randn(2, 4, 5, 6)
    # MidasNet v2.1's unit adds relu(x) (the official in-place ReLU); DPT's adds x itself.
    assert torch.equal(_zero_convs(ResidualConvUnit(4))(x), F.relu(x))
    assert torch.equal(_zero_convs(ResidualConvUnitCustom(4, nn.ReLU()))(x), x)
    unit = ResidualConvUnit(4)
    x_before = x.clone()
    unit(x)
    assert torch.equal(x, x_before), 'the unit must not modify its input'


def test_fusion_block_output_size_and_width():
    block = FeatureFusionBlockCustom(8, nn.ReLU(), expand=True)
    x = torch.randn(1, 8, 5, 7)
    assert block(x).shape == (1, 4, 10, 14)
    assert block(x, torch.randn(1, 8, 5, 7), size=(9, 13)).shape == (1, 4, 9, 13)


def test_make_scratch_widths():
    scratch = make_scratch([3, 5, 7, 11], 16, expand=True)
    assert [scratch.layer1_rn.out_channels, scratch.layer4_rn.out_channels] == [16, 128]
    assert [scratch.layer1_rn.in_channels, scratch.layer4_rn.in_channels] == [3, 11]
    assert not hasattr(make_scratch([3, 5, 7], 16), 'layer4_rn')


# --- transformer pieces against their straightforward definitions -------------------------------

def test_project_readout_equals_concatenated_projection():
    from midas_ros.models.backbones.vit import ProjectReadout
    readout = ProjectReadout(6)
    tokens = torch.randn(2, 1 + 12, 6)
    linear = readout.project[0]
    cls = tokens[:, :1].expand(-1, 12, -1)
    expected = F.gelu(linear(torch.cat((tokens[:, 1:], cls), dim=-1)))
    torch.testing.assert_close(readout(tokens), expected)


def test_position_embedding_resize():
    from midas_ros.models.backbones.vit import resize_position_embedding
    # A position embedding linear in the column index stays linear and keeps its class token.
    columns = torch.arange(4.0).repeat(4).reshape(1, 16, 1)
    pos = torch.cat((torch.full((1, 1, 1), 7.0), columns), dim=1)
    assert resize_position_embedding(pos, (4, 4)) is pos
    resized = resize_position_embedding(pos, (2, 8))
    assert resized.shape == (1, 1 + 16, 1)
    assert resized[0, 0, 0] == 7.0
    grid = resized[0, 1:, 0].reshape(2, 8)
    torch.testing.assert_close(grid[0], grid[1])
    assert (grid[0, 1:] >= grid[0, :-1]).all() and grid[0, 0] == 0 and grid[0, -1] == 3


def test_beit_block_is_the_textbook_block_and_runs_on_other_grids():
    from midas_ros.models.backbones.beit import Block, gen_relative_position_index, \
        relative_position_bias
    torch.manual_seed(0)
    block = Block(dim=16, num_heads=2, window_size=(4, 4), init_values=0.1).eval()
    with torch.no_grad():
        for p in block.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    attn = block.attn
    tokens = torch.randn(2, 1 + 16, 16)
    bias = relative_position_bias(attn, (4, 4), attn.relative_position_index)
    # softmax(q k^T / sqrt(d) + bias) v, spelled out; pre-norm branches scaled by gamma.
    q, k, v = F.linear(block.norm1(tokens), attn.qkv.weight,
                       torch.cat((attn.q_bias, torch.zeros(16), attn.v_bias))).chunk(3, dim=-1)
    q, k, v = (t.reshape(2, 17, 2, 8).transpose(1, 2) for t in (q, k, v))
    weights = (q @ k.transpose(-2, -1) / 8 ** 0.5 + bias).softmax(dim=-1)
    expected = tokens + block.gamma_1 * attn.proj((weights @ v).transpose(1, 2).reshape(2, 17, 16))
    expected = expected + block.gamma_2 * block.mlp(block.norm2(expected))
    torch.testing.assert_close(block(tokens, bias), expected)
    # The class token's row and column use the table's last three entries.
    index = gen_relative_position_index((4, 4))
    assert index[0, 1:].unique().tolist() == [49] and index[1:, 0].unique().tolist() == [50]
    assert index[0, 0] == 51 and index[1:, 1:].max() == 48
    # A 3x5 grid: bias sized for its 16 tokens, class-token entries carried over unchanged.
    bias = relative_position_bias(attn, (3, 5), gen_relative_position_index((3, 5)))
    assert bias.shape == (1, 2, 16, 16)
    torch.testing.assert_close(bias[0, :, 0, 0], attn.relative_position_bias_table[-1])
    assert block(torch.randn(1, 16, 16), bias).shape == (1, 16, 16)


@pytest.mark.filterwarnings('ignore:torch.meshgrid')   # timm 0.6.13's own call
def test_index_tables_equal_the_installed_timm_ones():
    """Same tables as timm's own generators (0.6.13 and 1.0 both export them)."""
    from timm.models import beit as timm_beit, swin_transformer as timm_swin
    from midas_ros.models.backbones import beit, swin
    for grid in ((4, 4), (3, 5), (24, 24)):
        assert torch.equal(beit.gen_relative_position_index(grid),
                           timm_beit.gen_relative_position_index(grid))
        assert torch.equal(swin.relative_position_index(grid),
                           timm_swin.get_relative_position_index(*grid))


def test_swin_window_mask_separates_the_rolled_regions():
    from midas_ros.models.backbones.swin import shifted_window_mask
    mask = shifted_window_mask((8, 8), (4, 4), (2, 2))
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()                       # the top-left window is one region
    assert set(mask.unique().tolist()) == {-100.0, 0.0}
    assert torch.equal(mask, mask.transpose(1, 2))
    # The bottom-right window holds four regions of 4 tokens each: 4 x 4 allowed pairs per row.
    assert ((mask[3] == 0).sum(dim=1) == 4).all()
