"""REP 117/118 depth-value semantics, defined once (midas_ros.depth_semantics), as every product
meets them: depth image, cloud, scan (DepthPipeline) and obstacle_node's input (fusion).

The issue's examples: a scene 30 m away everywhere with depth.max 20 and scan.range_max 10 must
give a depth image of +inf and a scan of +inf, not NaN; at 0.05 m (below depth.min and
scan.range_min, 0.1) -inf; NaN only where the network gave no reading. Neighbours: values at the
limits, between the depth and scan limits, and mixed columns.
"""
import math

import numpy as np
import pytest

from midas_ros.depth_pipeline import DepthPipeline, DepthSettings
from midas_ros.depth_semantics import (classify_depth, depth_from_inverse, has_point,
                                       range_without_reading)
from midas_ros.fusion import Box, FusionConfig, fuse, nearest_range
from midas_ros.geometry import DepthToScan, Intrinsics

WIDTH, HEIGHT = 640, 480
CAMERA = Intrinsics(WIDTH, HEIGHT, 500.0, 500.0, 319.5, 239.5)


class InverseDepthNetwork:
    """Stands in for DepthEstimator: its 'relative' output is the true inverse depth, so with
    scale.mode fixed, a = 1, b = 0 the pipeline's metric depth is the truth."""

    backend = 'stub'

    def __init__(self, depth):
        with np.errstate(divide='ignore'):
            self.relative = (1.0 / np.asarray(depth, np.float64)).astype(np.float32)
        self.last_timings = {}

    def predict(self, image, channel_order='rgb', out=None):
        out[...] = self.relative
        return out


def ray_columns(scan):
    """The image column each ray of ``scan`` (LaserScanData) looks along."""
    angles = scan.angle_min + scan.angle_increment * np.arange(len(scan.ranges))
    return np.rint(CAMERA.cx - CAMERA.fx * np.tan(angles)).astype(int)


def run_pipeline(depth, **settings):
    settings = DepthSettings(**{'scale_mode': 'fixed', 'scale_a': 1.0, 'scale_b': 0.0,
                                'time_constant': 0.0, 'scan_enabled': True, **settings})
    pipeline = DepthPipeline(InverseDepthNetwork(depth), settings)
    return pipeline.process(np.zeros((HEIGHT, WIDTH, 3), np.uint8), 'rgb', CAMERA, 1.0)


def test_depth_from_inverse_gives_each_special_value_one_meaning():
    inverse = np.array([1 / 30, 1 / 20, 1 / 5, 1 / 0.1, 1 / 0.05, 0.0, -0.3, math.nan],
                       np.float32)
    depth = depth_from_inverse(inverse, 0.1, 20.0)
    np.testing.assert_allclose(depth[1:4], [20.0, 5.0, 0.1], rtol=1e-6)
    assert depth[0] == math.inf          # beyond depth.max: +inf, not NaN
    assert depth[4] == -math.inf         # nearer than depth.min: -inf
    assert depth[5] == depth[6] == math.inf    # inverse depth <= 0: at or beyond infinity
    assert math.isnan(depth[7])          # no reading


def test_classification_and_points():
    values = np.array([math.nan, 0.0, -1.0, -math.inf, 0.05, 0.1, 5.0, 20.0, 30.0, math.inf],
                      np.float32)
    in_range, too_near, too_far = classify_depth(values, 0.1, 20.0)
    assert in_range.tolist() == [False] * 5 + [True] * 3 + [False] * 2
    assert too_near.tolist() == [False, False, False, True, True] + [False] * 5
    assert too_far.tolist() == [False] * 8 + [True, True]
    assert has_point(values).tolist() == [False] * 4 + [True] * 5 + [False]
    assert range_without_reading(True, True) == -math.inf
    assert range_without_reading(False, True) == math.inf
    assert math.isnan(range_without_reading(False, False))


@pytest.mark.parametrize('true_depth, expected_depth, expected_scan', [
    (30.0, math.inf, math.inf),       # the example: beyond depth.max 20, range_max 10
    (0.05, -math.inf, -math.inf),     # below depth.min and scan.range_min (0.1)
    (math.inf, math.inf, math.inf),   # network output 0: at infinity
    (15.0, 15.0, math.inf),           # a depth within depth.max, a range beyond scan.range_max
    (20.0, 20.0, math.inf),           # exactly depth.max: still a depth
])
def test_a_uniform_scene_gives_the_rep_118_image_and_rep_117_scan(true_depth, expected_depth,
                                                                  expected_scan):
    frame = run_pipeline(np.full((HEIGHT, WIDTH), true_depth, np.float32), max_depth=20.0,
                         min_depth=0.1, scan_range_min=0.1, scan_range_max=10.0)
    if math.isinf(expected_depth):
        assert np.all(frame.depth == expected_depth)
    else:
        np.testing.assert_allclose(frame.depth, expected_depth, rtol=1e-5)
    assert len(frame.scan.ranges) == WIDTH
    assert np.all(frame.scan.ranges == expected_scan)
    z = frame.points[..., 2]
    if math.isinf(expected_depth):     # a cloud has no "too far / too near": NaN points
        assert np.isnan(frame.points).all()
    else:
        np.testing.assert_allclose(z, expected_depth, rtol=1e-5)


def test_nan_only_where_the_network_gave_no_reading():
    depth = np.full((HEIGHT, WIDTH), 5.0, np.float32)
    depth[:, :100] = 30.0
    settings = DepthSettings(scale_mode='fixed', time_constant=0.0, scan_enabled=True,
                             max_depth=20.0)
    network = InverseDepthNetwork(depth)
    network.relative[:, 200:300] = np.nan     # what a broken network output would be
    frame = DepthPipeline(network, settings).process(np.zeros((HEIGHT, WIDTH, 3), np.uint8),
                                                     'rgb', CAMERA, 1.0)
    assert np.all(frame.depth[:, :100] == math.inf)
    assert np.isnan(frame.depth[:, 200:300]).all()
    assert np.isfinite(frame.depth[:, 300:]).all()
    assert np.isnan(frame.points[:, :100]).all() and np.isnan(frame.points[:, 200:300]).all()
    ranges, columns = frame.scan.ranges, ray_columns(frame.scan)
    assert np.all(ranges[columns < 98] == math.inf)
    assert np.isnan(ranges[(columns > 202) & (columns < 298)]).all()
    assert np.isfinite(ranges[columns > 302]).all()


def test_a_scan_column_prefers_a_reading_then_too_near_then_too_far():
    scan = DepthToScan(CAMERA, scan_height=3, range_min=0.1, range_max=10.0)
    depth = np.full((HEIGHT, WIDTH), math.nan, np.float32)
    rows = scan.rows
    band = depth[rows]
    band[:, 300:310] = [[math.inf], [2.0], [math.nan]]      # a reading wins
    band[:, 310:320] = [[math.inf], [-math.inf], [math.nan]]   # too near beats too far
    band[:, 320:330] = [[math.inf], [30.0], [math.nan]]    # too far beats no reading
    result = scan.convert(depth)
    ranges, columns = result.ranges, ray_columns(result)

    def rays(first, end):
        return ranges[(columns > first) & (columns < end - 1)]
    assert np.all(np.abs(rays(300, 310) - 2.0) < 0.01)
    assert np.all(rays(310, 320) == -math.inf)
    assert np.all(rays(320, 330) == math.inf)
    assert np.isnan(rays(331, WIDTH)).all() and np.isnan(rays(0, 299)).all()


@pytest.mark.parametrize('fill, expected', [(0.05, -math.inf), (30.0, math.inf),
                                            (math.inf, math.inf), (-math.inf, -math.inf),
                                            (math.nan, math.nan), (0.0, math.nan)])
def test_obstacle_input_follows_the_same_semantics(fill, expected):
    depth = np.full((HEIGHT, WIDTH), fill, np.float32)
    obstacle, = fuse(depth, CAMERA, [Box(320.0, 240.0, 80.0, 80.0)],
                     FusionConfig(min_range=0.1, max_range=20.0))
    assert not obstacle.valid
    if math.isnan(expected):
        assert math.isnan(obstacle.distance)
        assert nearest_range([obstacle]) == math.inf
    else:
        assert obstacle.distance == expected
        assert nearest_range([obstacle]) == expected
