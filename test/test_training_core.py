"""The ROS-free core of fine-tuning: losses, metrics, time split, stamp pairing, registration."""
import math

import numpy as np
import pytest
import torch

from midas_ros.geometry import Intrinsics
from midas_ros.training import DatasetError
from midas_ros.training.losses import (METRIC_DEPTH, RELATIVE_INVERSE_DEPTH, model_output,
                                       multiscale_gradient_loss, scale_and_shift, silog_loss,
                                       ssi_loss, training_loss)
from midas_ros.training.metrics import frame_metrics
from midas_ros.training.rgbd_bag import header_stamp_ns, pair_stamps, register_depth
from midas_ros.training.split import time_split


def _row(values):
    return torch.tensor([[values]], dtype=torch.float64)   # 1 x 1 x W


def test_ssi_loss_matches_the_hand_computed_value():
    # p = [0, 1, 2], target = [1, 3, 4]: normal equations give s = 3/2, t = 7/6, aligned
    # [7/6, 8/3, 25/6], residuals [1/6, -1/3, 1/6]: L_ssi = (1/6) / (2 * 3) = 1/36; gradients
    # at scale 1: |-1/2| + |1/2| = 1 over 3 pixels = 1/3, coarser scales: 0 -> 1/36 + 0.5 / 3.
    prediction, target = _row([0.0, 1.0, 2.0]), _row([1.0, 3.0, 4.0])
    mask = torch.ones_like(prediction, dtype=torch.bool)
    scale, shift = scale_and_shift(prediction, target, mask)
    assert scale.item() == pytest.approx(1.5) and shift.item() == pytest.approx(7 / 6)
    assert ssi_loss(prediction, target, mask, alpha=0.0).item() == pytest.approx(1 / 36)
    assert ssi_loss(prediction, target, mask).item() == pytest.approx(1 / 36 + 0.5 / 3)


def test_masked_pixels_play_no_part():
    prediction, target = _row([0.0, 1.0, 2.0, 50.0]), _row([1.0, 3.0, 4.0, -7.0])
    mask = torch.tensor([[[True, True, True, False]]])
    # The invalid pixel breaks the only gradient pair it is in: same value as on 3 pixels.
    assert ssi_loss(prediction, target, mask).item() == pytest.approx(1 / 36 + 0.5 / 3)


def test_gradient_loss_sums_four_scales():
    # A 1 x 8 x 8 residual that is a checkerboard at full resolution only: scale 1 has every
    # neighbour differing by 2, subsampled by 2, 4, 8 it is constant.
    board = torch.tensor([[(-1.0) ** (i + j) for j in range(8)] for i in range(8)])[None]
    mask = torch.ones_like(board, dtype=torch.bool)
    expected = (2 * 7 * 8 * 2) / 64    # 7 x 8 pairs per direction, |diff| 2, over 64 pixels
    assert multiscale_gradient_loss(board, torch.zeros_like(board), mask).item() == \
        pytest.approx(expected)


@pytest.mark.parametrize('a,b', [(3.0, 0.5), (0.01, -2.0), (-4.0, 10.0)])
def test_ssi_loss_is_invariant_to_scale_and_shift(a, b):
    generator = torch.Generator().manual_seed(1)
    prediction = torch.rand((2, 16, 12), generator=generator, dtype=torch.float64)
    target = 0.2 + torch.rand((2, 16, 12), generator=generator, dtype=torch.float64)
    mask = torch.rand((2, 16, 12), generator=generator) > 0.2
    reference = ssi_loss(prediction, target, mask)
    assert reference.item() > 0.01
    assert ssi_loss(a * prediction + b, target, mask).item() == pytest.approx(
        reference.item(), rel=1e-9)


def test_ssi_loss_is_zero_for_an_affine_prediction_and_has_gradients():
    target = 0.1 + torch.rand((1, 8, 8), dtype=torch.float64)
    mask = torch.ones_like(target, dtype=torch.bool)
    assert ssi_loss(2.0 * target - 0.3, target, mask).item() == pytest.approx(0.0, abs=1e-12)
    prediction = torch.rand((1, 8, 8), dtype=torch.float64, requires_grad=True)
    ssi_loss(prediction, target, mask).backward()
    assert torch.isfinite(prediction.grad).all() and prediction.grad.abs().sum() > 0


def test_training_loss_of_relative_models_is_taken_in_inverse_depth():
    depth = torch.tensor([[[1.0, 2.0, 4.0, float('nan')]]], dtype=torch.float64)
    mask = torch.isfinite(depth)
    inverse = torch.tensor([[[1.0, 0.5, 0.25, 123.0]]], dtype=torch.float64)
    # A perfect inverse-depth prediction (any value where the truth is invalid) costs nothing.
    assert training_loss(RELATIVE_INVERSE_DEPTH, 5 * inverse + 1, depth, mask).item() == \
        pytest.approx(0.0, abs=1e-12)
    assert training_loss(RELATIVE_INVERSE_DEPTH, depth.nan_to_num(7.0), depth, mask).item() > 0


def test_silog_loss_hand_computed_and_its_scale_sensitivity():
    prediction = torch.tensor([[[1.0, math.e]]], dtype=torch.float64)
    target = torch.ones_like(prediction)
    mask = torch.ones_like(prediction, dtype=torch.bool)
    # g = [0, 1]: mean g^2 = 1/2, mean g = 1/2 -> sqrt(1/2 - 0.5 * 1/4).
    assert silog_loss(prediction, target, mask).item() == pytest.approx(math.sqrt(0.375))
    # lambda = 1 is fully scale invariant; lambda = 0.5 (metric training) is not.
    assert silog_loss(3 * prediction, target, mask, lam=1.0).item() == pytest.approx(
        silog_loss(prediction, target, mask, lam=1.0).item())
    assert silog_loss(target * 2.0, target, mask).item() > 0.3
    assert training_loss(METRIC_DEPTH, target * 1.0, target, mask).item() == pytest.approx(
        0.0, abs=1e-5)


def test_loss_selection_follows_the_model_output():
    from midas_ros.models.registry import get_config
    assert model_output(get_config('midas_v21_small_256')) == RELATIVE_INVERSE_DEPTH
    assert model_output(get_config('depth_anything_v2_vits')) == RELATIVE_INVERSE_DEPTH
    assert model_output(get_config('depth_anything_v2_metric_hypersim_vits')) == METRIC_DEPTH


def test_frame_metrics_after_alignment():
    rng = np.random.default_rng(0)
    truth = rng.uniform(1.0, 8.0, (24, 32)).astype(np.float32)
    truth[0, :5] = np.nan
    relative = 3.0 / truth + 0.7          # exact up to scale and shift in inverse depth
    abs_rel, rmse, delta1 = frame_metrics(relative, truth)
    assert abs_rel == pytest.approx(0.0, abs=1e-6) and rmse == pytest.approx(0.0, abs=1e-5)
    assert delta1 == 1.0
    noisy = relative * rng.uniform(0.8, 1.25, relative.shape)
    abs_rel, rmse, delta1 = frame_metrics(noisy, truth)
    assert 0.02 < abs_rel < 0.3 and rmse > 0.05 and delta1 < 1.0


# -- time split ----------------------------------------------------------------------------------

@pytest.mark.parametrize('count,fraction,blocks,gap', [(300, 0.2, 3, 5), (40, 0.25, 2, 1),
                                                       (11, 0.2, 3, 1)])
def test_time_split_blocks_are_contiguous_and_never_next_to_training(count, fraction, blocks,
                                                                     gap):
    split = time_split(count, fraction, blocks, gap)
    assert len(split.validation) == round(count * fraction)
    assert not set(split.train) & set(split.validation)
    assert sorted(split.train + split.validation + split.gap) == list(range(count))
    for block in split.blocks:
        assert block == list(range(block[0], block[-1] + 1))
    train = set(split.train)
    for index in split.validation:
        assert not any(index + d in train for d in range(-gap, gap + 1))


def test_time_split_spreads_blocks_over_the_recording():
    split = time_split(300, 0.2, 3, 5)
    assert [len(b) for b in split.blocks] == [20, 20, 20]
    assert [b[0] for b in split.blocks] == [40, 140, 240]


def test_time_split_too_small_is_an_error():
    with pytest.raises(DatasetError, match='validation split too small'):
        time_split(5, 0.2)
    with pytest.raises(DatasetError, match='training frames'):
        time_split(6, 0.5, 1, 3)


# -- pairing --------------------

def test_pairing_takes_the_nearest_depth_within_the_tolerance():
    ms = 1_000_000
    images = [0, 100 * ms, 200 * ms, 300 * ms, 400 * ms]
    depths = [3 * ms, 95 * ms, 104 * ms, 260 * ms, 401 * ms, 900 * ms]
    pairs = pair_stamps(images, depths, 10 * ms)
    # 100 ms: 104 (4 ms) beats 95 (5 ms); 300 ms: 260 is 40 ms away -> unpaired.
    assert pairs == [(0, 0), (1, 2), (4, 4)]


def test_a_depth_image_serves_only_its_nearest_image():
    ms = 1_000_000
    pairs = pair_stamps([0, 8 * ms], [6 * ms], 10 * ms)
    assert pairs == [(1, 0)]


def test_stamp_is_read_from_the_cdr_header():
    import struct
    little = bytes([0, 1, 0, 0]) + struct.pack('<iI', 12, 345) + b'rest'
    big = bytes([0, 0, 0, 0]) + struct.pack('>iI', 12, 345) + b'rest'
    assert header_stamp_ns(little) == header_stamp_ns(big) == 12_000_000_345


def test_depth_of_another_resolution_is_registered_with_the_intrinsics():
    camera = Intrinsics(64, 48, 50.0, 50.0, 31.5, 23.5)
    # A depth image at half resolution whose value encodes its pixel: column + 100 * row.
    rows, cols = np.mgrid[0:24, 0:32]
    depth = (cols + 100 * rows).astype(np.float32)
    registered = register_depth(depth, camera)
    assert registered.shape == (48, 64)
    assert registered[0, 0] == depth[0, 0] and registered[47, 63] == depth[23, 31]
    assert registered[21, 41] == depth[10, 20]
    # With its own (cropped) intrinsics: the depth camera sees only the centre of the image.
    depth_camera = Intrinsics(32, 24, 50.0, 50.0, 15.5, 11.5)
    registered = register_depth(depth, camera, depth_camera)
    assert np.isnan(registered[0, 0]) and registered[23, 31] == depth[11, 15]


def test_evaluate_reads_depth_node_parameters_nested_or_dotted(tmp_path):
    from midas_ros.tools.evaluate import node_parameters
    params = tmp_path / 'robot.yaml'
    params.write_text('/**/depth_node:\n  ros__parameters:\n    scale:\n      mode: fixed\n'
                      '      a: 2.5\n      b: 0.1\n    depth.max: 8.0\n')
    values = node_parameters(params)
    assert (values['scale.a'], values['scale.b'], values['depth.max']) == (2.5, 0.1, 8.0)
    assert values['scale.camera_height'] == 1.0          # the node's default
    params.write_text('obstacle_node:\n  ros__parameters: {}\n')
    with pytest.raises(DatasetError, match='no depth_node'):
        node_parameters(params)


def test_frozen_encoder_gets_no_gradient_and_keeps_its_statistics():
    from torch.nn.modules.batchnorm import _BatchNorm

    from midas_ros.models import create_model
    from midas_ros.training.trainer import final_relu, set_train_mode, trainable_parameters
    model = create_model('midas_v21_small_256', pretrained=False)
    trainable = {id(p) for p in trainable_parameters(model, freeze_encoder=True)}
    assert not any(id(p) in trainable for p in model.pretrained.parameters())
    assert all(id(p) in trainable for p in model.scratch.parameters())
    set_train_mode(model, 'batch', freeze_encoder=True)
    encoder_norms = [m for m in model.pretrained.modules() if isinstance(m, _BatchNorm)]
    assert encoder_norms and not any(m.training for m in encoder_norms)
    assert model.scratch.training
    set_train_mode(model, 'frozen')
    assert not any(m.training for m in model.modules() if isinstance(m, _BatchNorm))
    # The depth head's final non-negativity, which the dead-output hinge watches.
    relu = final_relu(model)
    assert isinstance(relu, torch.nn.ReLU) and relu in list(model.scratch.output_conv.children())
