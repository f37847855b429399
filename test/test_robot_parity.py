"""The official output under the libraries a robot has: ``infer`` in this environment reproduces
the depth that the timm 0.6.13 reference (the official code's timm) computes from the same
official-layout checkpoint.

``dev.py test`` runs this file in the "robot dependencies" environment (current timm, numpy 1.26,
OpenCV 4.6) with ``MIDAS_REFERENCE_PYTHON`` naming the pinned environment's interpreter, which
writes the checkpoints and the reference depth maps (``make_reference.py``) into a temporary
directory. Tolerance: 1e-3 of the reference's range, fp32 on the CPU. The fast suite covers one
variant of each encoder family; ``MIDAS_SLOW_TESTS=1`` every supported variant.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from midas_ros.models.registry import get_config, list_models
from midas_ros.tools import infer

HERE = Path(__file__).resolve().parent
REFERENCE_PYTHON = os.environ.get('MIDAS_REFERENCE_PYTHON')
SLOW = os.environ.get('MIDAS_SLOW_TESTS') == '1'
FAST_MODELS = ('midas_v21_small_256', 'dpt_hybrid_384', 'dpt_beit_base_384',
               'dpt_swin2_tiny_256', 'dpt_levit_224')
# Depth Anything V2's oracle is its own official code (no timm), in test_depth_anything_v2.py.
MIDAS_MODELS = tuple(name for name in list_models()
                     if get_config(name).arch != 'depth_anything_v2')
MODELS = MIDAS_MODELS if SLOW else FAST_MODELS
TOLERANCE = 1e-3   # of the reference depth's range

pytestmark = pytest.mark.skipif(
    not REFERENCE_PYTHON,
    reason='set MIDAS_REFERENCE_PYTHON to an interpreter with timm 0.6.13 (dev.py test does so '
           'in its robot-dependencies run)')


@pytest.fixture(scope='module')
def references(tmp_path_factory):
    """Checkpoints and reference depth maps of ``MODELS``, made by the reference interpreter."""
    out = tmp_path_factory.mktemp('reference')
    result = subprocess.run([REFERENCE_PYTHON, str(HERE / 'make_reference.py'), str(out),
                             *MODELS], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_reference_was_made_with_timm_0_6_13(references):
    versions = json.loads((references / 'versions.json').read_text())
    assert versions['timm'] == '0.6.13'


@pytest.mark.parametrize('name', MODELS)
def test_infer_reproduces_the_reference_depth(references, tmp_path, name, caplog):
    output = tmp_path / 'out'
    with caplog.at_level('WARNING'):
        status = infer.main(['--model', name, '--weights', str(references / f'{name}.pt'),
                             '--device', 'cpu', '--output', str(output),
                             str(references / 'image.png')])
    assert status == 0
    # Loaded strictly, its index tables and masks equal to the rebuilt ones: nothing to warn of.
    assert [r.getMessage() for r in caplog.records if r.levelname == 'WARNING'] == []
    expected = np.load(references / f'{name}.npy')
    depth = np.load(output / 'image.npy')
    assert depth.shape == expected.shape
    span = np.ptp(expected)
    assert span > 0, 'a constant reference would make the comparison meaningless'
    deviation = np.abs(depth - expected).max() / span
    assert deviation <= TOLERANCE, f'{name}: max deviation {deviation:.2e} of the range'


def test_this_environment_reports_its_libraries():
    """What the run above was checked under (shown with -rA; fails only if imports fail)."""
    import cv2
    import timm
    import torch
    print(f'{sys.executable}: timm {timm.__version__}, numpy {np.__version__}, '
          f'OpenCV {cv2.__version__}, torch {torch.__version__}')
