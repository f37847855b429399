"""DepthPipeline (ROS-free): one frame in, metric products out, on a scene with known depth.

The network is replaced by a stub that returns an affine-distorted inverse of the true depth,
exactly what a perfect MiDaS would output, so every metric claim can be checked against truth.
"""
import math

import numpy as np
import pytest

from midas_ros.depth_pipeline import DepthPipeline, DepthSettings
from midas_ros.geometry import Intrinsics

WIDTH, HEIGHT = 160, 120
INTRINSICS = Intrinsics.from_fov(WIDTH, HEIGHT, 70.0)
HEIGHT_M, PITCH_DEG = 0.8, 10.0
A_TRUE, B_TRUE = 0.004, 0.02      # relative = (1/z - B_TRUE) / A_TRUE


def floor_and_wall_depth(wall=6.0):
    """Optical-frame depth of a level floor HEIGHT_M below a camera pitched PITCH_DEG down, and
    a fronto-parallel wall (in the level frame) where the floor is farther than ``wall``."""
    v = np.mgrid[0:HEIGHT, 0:WIDTH][0].astype(np.float64)
    y = (v - INTRINSICS.cy) / INTRINSICS.fy
    pitch = math.radians(PITCH_DEG)
    # Ray (x, y, 1) in the optical frame; its downward and forward components in a level frame.
    down = y * math.cos(pitch) + math.sin(pitch)
    forward = math.cos(pitch) - y * math.sin(pitch)
    with np.errstate(divide='ignore'):
        floor = np.where(down > 0, HEIGHT_M / down, np.inf)
    wall_depth = wall / forward
    return np.minimum(floor, wall_depth).astype(np.float32)


class PerfectNetwork:
    """Stands in for DepthEstimator: returns the relative inverse depth of the known scene."""

    def __init__(self, depth):
        self.relative = ((1.0 / depth - B_TRUE) / A_TRUE).astype(np.float32)
        self.last_timings = {'inference': 0.0}
        self.backend = 'stub'

    def predict(self, image, channel_order='rgb', out=None):
        assert image.shape[:2] == self.relative.shape
        if out is None:
            return self.relative.copy()
        out[...] = self.relative
        return out


@pytest.fixture
def image():
    return np.zeros((HEIGHT, WIDTH, 3), np.uint8)


def test_ground_plane_mode_gives_metric_depth_and_every_product(image):
    truth = floor_and_wall_depth()
    settings = DepthSettings(scale_mode='ground_plane', camera_height=HEIGHT_M,
                             camera_pitch_deg=PITCH_DEG, scan_enabled=True)
    pipeline = DepthPipeline(PerfectNetwork(truth), settings)
    frame = pipeline.process(image, 'rgb', INTRINSICS, 1.0)
    assert frame.calibrated and not frame.scale_problem
    valid = np.isfinite(frame.depth)
    assert valid.mean() > 0.95
    np.testing.assert_allclose(frame.depth[valid], truth[valid], rtol=1e-3)
    # Cloud z is the depth; the scan sees the wall/floor band at the principal row.
    np.testing.assert_allclose(frame.points[..., 2][valid], frame.depth[valid], rtol=1e-6)
    assert frame.colormap.shape == (HEIGHT, WIDTH, 3) and frame.scan is not None


def test_uncalibrated_default_is_not_metric(image):
    truth = floor_and_wall_depth()
    frame = DepthPipeline(PerfectNetwork(truth)).process(image, 'rgb', INTRINSICS, 1.0)
    assert not frame.calibrated
    valid = np.isfinite(frame.depth)
    # The median is taken on a 1-in-16 pixel subsample (cheap), so it is near, not at, 3 m.
    assert np.median(frame.depth[valid]) == pytest.approx(3.0, rel=0.1)
    assert frame.scale.b == 0.0


def test_only_requested_products_are_made(image):
    pipeline = DepthPipeline(PerfectNetwork(floor_and_wall_depth()),
                             DepthSettings(scan_enabled=True))
    frame = pipeline.process(image, 'rgb', INTRINSICS, 1.0, products=frozenset())
    assert frame.colormap is None and frame.points is None and frame.scan is None
    assert np.isfinite(frame.depth).any()


def test_impossible_ground_geometry_is_refused_as_a_change_but_survived_per_frame(image):
    # Looking 60 degrees up: no pixel sees the floor.
    looking_up = DepthSettings(scale_mode='ground_plane', camera_height=HEIGHT_M,
                               camera_pitch_deg=-60.0)
    pipeline = DepthPipeline(PerfectNetwork(floor_and_wall_depth()))
    with pytest.raises(ValueError, match='floor'):
        pipeline.configure(looking_up, INTRINSICS)
    # Configured before any camera was seen, it cannot be checked then: frames still come out,
    # uncalibrated, with the reason.
    pipeline.configure(looking_up)
    frame = pipeline.process(image, 'rgb', INTRINSICS, 1.0)
    assert not frame.calibrated and 'ground_plane' in frame.scale_problem
    assert np.isfinite(frame.depth).any()


def test_unrelated_changes_keep_the_scale_filter(image):
    truth = floor_and_wall_depth()
    settings = DepthSettings(scale_mode='ground_plane', camera_height=HEIGHT_M,
                             camera_pitch_deg=PITCH_DEG)
    pipeline = DepthPipeline(PerfectNetwork(truth), settings)
    pipeline.process(image, 'rgb', INTRINSICS, 1.0)
    filter_before = pipeline.camera._smoother
    pipeline.configure(DepthSettings(**{**settings.__dict__, 'colormap_max_depth': 8.0}),
                       INTRINSICS)
    assert pipeline.camera._smoother is filter_before
    pipeline.configure(DepthSettings(**{**settings.__dict__, 'camera_height': 1.0}),
                       INTRINSICS)
    assert pipeline.camera._smoother is not filter_before


def test_intrinsics_must_fit_the_image(image):
    pipeline = DepthPipeline(PerfectNetwork(floor_and_wall_depth()))
    with pytest.raises(ValueError, match='intrinsics'):
        pipeline.process(image, 'rgb', Intrinsics.from_fov(320, 240, 70.0), 1.0)


def test_infer_then_finish_is_process_and_keeps_the_previous_inference(image):
    """depth_node infers frame N+1 while it finishes frame N: N's relative depth must survive."""
    near, far = floor_and_wall_depth(wall=3.0), floor_and_wall_depth(wall=9.0)
    settings = DepthSettings(scale_mode='ground_plane', camera_height=HEIGHT_M,
                             camera_pitch_deg=PITCH_DEG)
    network = PerfectNetwork(near)
    pipeline = DepthPipeline(network, settings)
    first = pipeline.infer(image, 'rgb')
    network.relative = PerfectNetwork(far).relative
    second = pipeline.infer(image, 'rgb')       # the other buffer
    assert first.relative is not second.relative
    assert 'inference_total' in first.timings
    frame = pipeline.finish(first, image, 'rgb', INTRINSICS, 1.0)
    valid = np.isfinite(frame.depth)
    np.testing.assert_allclose(frame.depth[valid], near[valid], rtol=1e-3)
    reference = DepthPipeline(PerfectNetwork(far), settings)
    reference = reference.process(image, 'rgb', INTRINSICS, 1.0)
    frame = pipeline.finish(second, image, 'rgb', INTRINSICS, 1.1)
    np.testing.assert_allclose(frame.relative, reference.relative)
    with pytest.raises(ValueError, match='intrinsics are for'):
        pipeline.finish(second, image[:60], 'rgb', INTRINSICS, 1.2)
