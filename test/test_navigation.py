"""The navigation outputs' core against ground truth: a pitched camera over a floor with boxes,
thin poles and walls, depth made as a network makes it (test/navigation_scene.py)."""
import math

import numpy as np
import pytest

from midas_ros.depth_edges import DepthEdgeFilter
from midas_ros.navigation import (HELD_SCALE_CONFIDENCE, UNCALIBRATED_CONFIDENCE,
                                  NavigationDepth, NavigationSettings, level_frame,
                                  scale_confidence, voxel_downsample)
from midas_ros.scale import ScaleFit, ScaleState
from navigation_scene import (FLOOR, Scene, flying_and_kept, obstacle_distances, scan_errors)


@pytest.fixture(scope='module')
def scene():
    return Scene()


def test_edge_filter_removes_flying_points_and_keeps_the_surfaces(scene):
    unfiltered = NavigationDepth(NavigationSettings(edge_radius=0))
    points = unfiltered.process(scene.depth, scene.intrinsics, FLOOR, {'points'}).points
    flying_before, kept_before = flying_and_kept(scene, points)
    assert flying_before > 0.02 and kept_before == 1.0      # the problem is there
    filtered = NavigationDepth().process(scene.depth, scene.intrinsics, FLOOR, {'points'})
    flying, kept = flying_and_kept(scene, filtered.points)
    assert flying < 0.01 and kept >= 0.95, (flying, kept)


def test_edge_definition_on_a_step():
    depth = np.full((9, 12), 2.0, np.float32)
    depth[:, 6:] = 3.0
    depth[0, 0] = np.nan
    edges = DepthEdgeFilter(radius=1, rtol=0.1).edges(depth)
    # Columns 5 and 6 have a neighbour across the step; the NaN neighbour makes no edge.
    assert np.array_equal(np.flatnonzero(edges.any(axis=0)), [5, 6])
    assert not DepthEdgeFilter(radius=1, rtol=0.6).edges(depth).any()   # 1 m / 2 m < 0.6
    assert not DepthEdgeFilter(radius=0).edges(depth).any()


def test_floor_pixels_never_reach_the_obstacle_cloud(scene):
    core = NavigationDepth()
    frame = core.process(scene.depth, scene.intrinsics, FLOOR, {'points', 'obstacle_points'})
    floor = scene.floor_pixels() & np.isfinite(frame.points[..., 2])
    assert floor.sum() > 0.3 * floor.size
    # Height above the floor plane down . p = h, written out here.
    heights = FLOOR.height - frame.points[floor].astype(np.float64) @ np.asarray(FLOOR.down)
    assert heights.max() < core.settings.obstacle_min_height
    # Every obstacle point is on a box, pole or wall (within 10 cm plus half a voxel diagonal).
    assert len(frame.obstacle_points) > 100
    assert obstacle_distances(scene, frame.obstacle_points).max() < 0.1 + 0.05 * math.sqrt(3)
    distances = np.linalg.norm(frame.obstacle_points, axis=1)
    assert distances.max() <= core.settings.obstacle_max_range + 0.05


def test_height_band_scan_ranges_each_box_within_2_percent(scene):
    core = NavigationDepth(NavigationSettings(scan_mode='height_band'))
    scan = core.process(scene.depth, scene.intrinsics, FLOOR, {'scan'}).scan
    for box, (nearest, median) in scan_errors(scan.ranges, scan.angle_min,
                                              scan.angle_increment).items():
        assert median < 0.02 and abs(nearest) < 0.02, (box, nearest, median)


def test_height_band_scan_rep_117_values(scene):
    core = NavigationDepth(NavigationSettings(scan_mode='height_band', scan_range_max=2.0))
    depth = scene.depth.copy()
    scan = core.process(depth, scene.intrinsics, FLOOR, {'scan'}).scan
    assert (scan.ranges == np.inf).any()      # the far wall is beyond range_max
    assert np.nanmax(scan.ranges[np.isfinite(scan.ranges)]) <= 2.0
    depth[:] = -np.inf                        # everything too near
    scan = core.process(depth, scene.intrinsics, FLOOR, {'scan'}).scan
    assert (scan.ranges == -np.inf).all()
    depth[:] = np.nan                         # nothing seen: no reading
    scan = core.process(depth, scene.intrinsics, FLOOR, {'scan'}).scan
    assert np.isnan(scan.ranges).all()


def test_confidence_definition(scene):
    core = NavigationDepth()
    depth = scene.depth.copy()
    depth[0, :] = np.inf
    frame = core.process(depth, scene.intrinsics, FLOOR, {'confidence'}, scale=0.5)
    confidence = frame.confidence
    assert confidence.dtype == np.float32 and confidence.shape == depth.shape
    assert confidence.min() >= 0 and confidence.max() <= 0.5
    assert (confidence[frame.edges] == 0).all() and (confidence[0] == 0).all()
    # Where the window's relative spread is below rtol / 4: at least 3/4 of the scale's.
    flat = ~DepthEdgeFilter(2, 0.02).edges(depth) & np.isfinite(depth)
    assert flat.mean() > 0.5 and confidence[flat].min() >= 0.75 * 0.5 - 1e-6


def test_scale_confidence():
    good = ScaleFit(1.0, 0.0, True, inliers=90, samples=100, inlier_ratio=0.9, residual=0.0)
    state = ScaleState(1.0, 0.0, True, False, True, '', good)
    assert scale_confidence(state, True, 0.1) == pytest.approx(0.9)
    assert scale_confidence(state, False, 0.1) == UNCALIBRATED_CONFIDENCE
    held = ScaleState(1.0, 0.0, True, False, False, 'too few inliers', good)
    assert scale_confidence(held, True, 0.1) == HELD_SCALE_CONFIDENCE
    fixed = ScaleState(1.0, 0.0, True, False, True, '', ScaleFit(1.0, 0.0, True))
    assert scale_confidence(fixed, True, 0.1) == 1.0


def test_voxels_and_level_frame():
    points = np.array([[0.01, 0.01, 0.01], [0.03, 0.02, 0.04], [0.5, 0.5, 0.5]], np.float32)
    out = voxel_downsample(points, 0.05)
    assert len(out) == 2 and np.allclose(sorted(out[:, 0]), [0.02, 0.5])
    transform = level_frame(FLOOR)
    # The optical axis of a camera pitched 15 deg down points 15 deg below the level x axis.
    axis = transform[:3, :3] @ [0.0, 0.0, 1.0]
    assert axis == pytest.approx([math.cos(math.radians(15)), 0.0, -math.sin(math.radians(15))])


def test_filters_benchmark_times_every_stage():
    from midas_ros.tools.filters_benchmark import format_filters, measure_filters
    results = measure_filters(96, 72, (40, 30), frames=2, warmup=0)
    assert set(results['edge filter']) == {'edges'}
    for mode in ('rows', 'height_band'):
        stages = results[f'all outputs, scan.mode {mode}']
        assert {'edges', 'points', 'scan', 'obstacle_points', 'confidence', 'total'} <= \
            set(stages)
        assert all(len(times) == 2 and min(times) >= 0 for times in stages.values())
    assert 'edges' in format_filters(results, 96, 72, (40, 30))
