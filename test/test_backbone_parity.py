"""The project's BEiT, Swin and LeViT encoders against timm 0.6.13's, the official code's.

midas_ros builds these three encoder families itself (``midas_ros.models.backbones``) so that the
official checkpoints load whatever timm is installed. Here, with timm 0.6.13 installed (the pinned
environment), each variant is built twice -- with the project's encoder and with timm 0.6.13's
(``timm_reference``) -- both load the same random official-layout state_dict strictly, and the
feature pyramids and depth maps must agree: features within 1e-4 of their magnitude, depth within
1e-3 of its range (fp32, CPU). test_robot_parity.py then checks the project's encoders under the
current timm against this reference. Large variants need ``MIDAS_SLOW_TESTS=1``.
"""
import os

import pytest
import torch

from make_reference import random_official_weights
from midas_ros.models.factory import build_model
from midas_ros.models.registry import get_config, list_models
from midas_ros.models.weights import architectural_buffers
from timm_reference import REFERENCE_BACKBONES, REFERENCE_TIMM, reference_model

timm = pytest.importorskip('timm')
pytestmark = [
    pytest.mark.skipif(timm.__version__ != REFERENCE_TIMM,
                       reason=f'the reference encoders need timm {REFERENCE_TIMM}'),
    pytest.mark.filterwarnings('ignore:torch.meshgrid'),   # timm 0.6.13's own calls
]

SLOW = os.environ.get('MIDAS_SLOW_TESTS') == '1'
FAST = {'dpt_beit_base_384', 'dpt_swin2_tiny_256', 'dpt_levit_224'}
OWN_ENCODERS = [name for name in list_models()
                if get_config(name).backbone.startswith(tuple(REFERENCE_BACKBONES))]
# BEiT runs at any multiple of 16: at its pretraining grid (timm's own block forward) and on a
# non-square grid (the official resized relative-position tables).
BEIT_SIZES = ((384, 384), (64, 96))


def cases():
    for name in OWN_ENCODERS:
        cfg = get_config(name)
        sizes = BEIT_SIZES if cfg.backbone.startswith('beit') else ((cfg.net_h, cfg.net_w),)
        marks = () if name in FAST or SLOW else pytest.mark.skip(
            reason='large model on CPU: MIDAS_SLOW_TESTS=1')
        for size in sizes:
            yield pytest.param(name, size, marks=marks, id=f'{name}-{size[0]}x{size[1]}')


@pytest.mark.parametrize('name, size', list(cases()))
def test_encoder_and_depth_match_timm_0_6_13(name, size):
    cfg = get_config(name)
    torch.manual_seed(0)
    reference = reference_model(cfg)
    state = random_official_weights(reference, seed=1)
    ours = build_model(cfg)
    # The tables the loader rebuilds instead of reading are exactly timm 0.6.13's.
    for name, table in architectural_buffers(ours).items():
        assert torch.equal(table, state[name]), name
    ours.load_state_dict(state, strict=True)
    image = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected_features, features = reference.pretrained(image), ours.pretrained(image)
        expected, depth = reference(image), ours(image)
    assert len(features) == len(expected_features)
    for level, (got, want) in enumerate(zip(features, expected_features)):
        assert got.shape == want.shape, f'level {level}'
        assert (got - want).abs().max() <= 1e-4 * want.abs().max(), f'level {level}'
    span = expected.max() - expected.min()
    assert span > 0
    assert (depth - expected).abs().max() <= 1e-3 * span


def test_every_own_encoder_has_a_reference():
    assert {get_config(n).backbone[:4] for n in OWN_ENCODERS} == {'beit', 'swin', 'levi'}
