"""Metric networks (Depth Anything V2 metric) in the scale core and DepthPipeline, ROS-free.

The network is a stub whose metres are the true depth of a known floor-and-wall scene times a
factor, what a metric checkpoint trained on another camera gives: ``metric`` mode must publish
those metres unchanged, ``ground_plane`` and ``sparse`` must fit ONE factor back to the truth
(no shift: b stays 0) and say so.
"""
import numpy as np
import pytest

from midas_ros.depth_pipeline import DepthPipeline, DepthSettings
from midas_ros.models.registry import get_config
from midas_ros.scale import MetricScale, fit_inverse_depth, resolve_mode
from test_depth_pipeline import HEIGHT, HEIGHT_M, INTRINSICS, PITCH_DEG, WIDTH, \
    floor_and_wall_depth

FACTOR = 0.8        # the network's metres are 0.8 x the truth (say, a longer focal length)
TOP = 0.999 * 20.0  # where the Hypersim model's sigmoid x 20 m saturates


class MetricNetwork:
    """Stands in for DepthEstimator with a metric model: returns FACTOR x the true depth."""

    config = get_config('depth_anything_v2_metric_hypersim_vits')

    def __init__(self, depth):
        # A sigmoid x max_depth output is in (0, max_depth): the sky/far wall saturates.
        self.metres = np.minimum(FACTOR * depth, TOP)
        self.last_timings = {'inference': 0.0}

    def predict(self, image, channel_order='rgb', out=None):
        if out is None:
            return self.metres.copy()
        out[...] = self.metres
        return out


@pytest.fixture
def image():
    return np.zeros((HEIGHT, WIDTH, 3), np.uint8)


def test_auto_mode_follows_the_network():
    assert resolve_mode('auto', metric_network=True) == 'metric'
    assert resolve_mode('auto', metric_network=False) == 'uncalibrated'
    assert resolve_mode('ground_plane', metric_network=True) == 'ground_plane'
    with pytest.raises(ValueError, match='needs a metric model'):
        resolve_mode('metric', metric_network=False)
    with pytest.raises(ValueError, match='unknown scale mode'):
        resolve_mode('metres', metric_network=True)


def test_scale_only_fit_ignores_a_shift_the_samples_would_allow():
    inverse_truth = np.linspace(0.1, 1.0, 50)
    network = inverse_truth / 2.0             # inverse metres of a network 2x too far
    fit = fit_inverse_depth(network, inverse_truth, scale_only=True)
    assert fit.ok and fit.b == 0.0 and fit.a == pytest.approx(2.0, rel=1e-9)
    assert fit.reason == ''
    # An affine truth a scale-only model cannot follow: a poor fit, not a silent shift.
    fit = fit_inverse_depth(network, inverse_truth + 0.3, scale_only=True)
    assert fit.b == 0.0 and fit.residual > 0.05


def test_metric_mode_is_the_default_and_publishes_the_network_metres(image):
    truth = floor_and_wall_depth()
    network = MetricNetwork(truth)
    pipeline = DepthPipeline(network, DepthSettings(max_depth=50.0))
    assert pipeline.settings.scale_mode == 'metric'
    frame = pipeline.process(image, 'rgb', INTRINSICS, 1.0)
    assert frame.calibrated and (frame.scale.a, frame.scale.b) == (1.0, 0.0)
    np.testing.assert_allclose(frame.depth, network.metres, rtol=1e-6)
    np.testing.assert_array_equal(frame.relative, network.metres)   # depth/relative: raw output
    diagnostics = pipeline.scale_diagnostics(frame.scale)
    assert diagnostics['scale mode'] == 'metric'
    assert diagnostics['network output'] == 'metres'
    assert diagnostics['metric scale factor'] == '1'
    assert MetricScale().fit(None) == frame.scale.fit


@pytest.mark.parametrize('mode', ['ground_plane', 'sparse'])
def test_geometric_modes_fit_one_factor_to_the_network_metres(image, mode):
    truth = floor_and_wall_depth()
    pipeline = DepthPipeline(MetricNetwork(truth), DepthSettings(
        scale_mode=mode, camera_height=HEIGHT_M, camera_pitch_deg=PITCH_DEG, max_depth=50.0))
    anchors = None
    if mode == 'sparse':   # a few range readings on the floor and the wall
        rows, cols = np.meshgrid(np.arange(30, HEIGHT, 17), np.arange(5, WIDTH, 23))
        anchors = (cols.ravel().astype(float), rows.ravel().astype(float),
                   truth[rows, cols].ravel().astype(float))
    frame = pipeline.process(image, 'rgb', INTRINSICS, 1.0, anchors=anchors)
    assert frame.calibrated and frame.scale.accepted, frame.scale.reason
    assert frame.scale.b == 0.0
    assert frame.scale.a == pytest.approx(FACTOR, rel=1e-3)
    unsaturated = FACTOR * truth < TOP
    np.testing.assert_allclose(frame.depth[unsaturated], truth[unsaturated], rtol=2e-3)
    diagnostics = pipeline.scale_diagnostics(frame.scale)
    assert diagnostics['scale mode'] == mode
    assert 'one factor' in diagnostics['scale fit']
    assert float(diagnostics['metric scale factor']) == pytest.approx(1 / FACTOR, rel=1e-3)


def test_before_a_fit_is_accepted_the_network_metres_are_used(image):
    """A floor the network cannot match (an empty frame of anchors) keeps the metres."""
    truth = floor_and_wall_depth()
    network = MetricNetwork(truth)
    pipeline = DepthPipeline(network, DepthSettings(scale_mode='sparse', max_depth=50.0))
    frame = pipeline.process(image, 'rgb', INTRINSICS, 1.0, anchors=None)
    assert not frame.scale.accepted and frame.calibrated
    np.testing.assert_allclose(frame.depth, network.metres, rtol=1e-6)


def test_metric_mode_with_a_relative_network_is_refused():
    class RelativeNetwork(MetricNetwork):
        config = get_config('depth_anything_v2_vits')
    truth = floor_and_wall_depth()
    with pytest.raises(ValueError, match='needs a metric model'):
        DepthPipeline(RelativeNetwork(truth), DepthSettings(scale_mode='metric'))
    pipeline = DepthPipeline(RelativeNetwork(truth), DepthSettings())
    assert pipeline.settings.scale_mode == 'uncalibrated'
    with pytest.raises(ValueError, match='needs a metric model'):
        pipeline.configure(DepthSettings(scale_mode='metric'))
    assert pipeline.settings.scale_mode == 'uncalibrated'     # the refused change left no trace
