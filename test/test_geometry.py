"""Geometry against synthetic scenes whose truth is computed here: clouds, scans, projection,
and the depth colour map."""
import math

import numpy as np
import pytest

from midas_ros.colormap import DepthColorizer, robust_range, turbo_lut_bgr
from midas_ros.geometry import (Backprojector, DepthToScan, Intrinsics, laser_scan_points,
                                project_points, quaternion_from_rotation, rotation_from_rpy,
                                transform_from_quaternion, transform_from_xyz_rpy,
                                transform_points)

# Off-centre principal point and non-square pixels, so swapped axes or signs show up.
CAMERA = Intrinsics(160, 120, fx=150.0, fy=140.0, cx=83.3, cy=57.6)


def pixel_grid(intrinsics):
    """Normalised image coordinates (x/z, y/z) of every pixel, computed independently."""
    v, u = np.mgrid[0:intrinsics.height, 0:intrinsics.width].astype(np.float64)
    return (u - intrinsics.cx) / intrinsics.fx, (v - intrinsics.cy) / intrinsics.fy


def plane_depth(intrinsics, normal, offset):
    """Depth image of the plane {p : normal . p = offset} (optical frame)."""
    x, y = pixel_grid(intrinsics)
    return (offset / (normal[0] * x + normal[1] * y + normal[2])).astype(np.float32)


def test_fronto_parallel_plane_comes_back_at_its_distance():
    depth = np.full((CAMERA.height, CAMERA.width), 2.5, dtype=np.float32)
    points = Backprojector(CAMERA).points(depth)
    assert points.shape == (120, 160, 3) and points.dtype == np.float32
    np.testing.assert_allclose(points[..., 2], 2.5)
    x, y = pixel_grid(CAMERA)
    np.testing.assert_allclose(points[..., 0], x * 2.5, atol=1e-5)
    np.testing.assert_allclose(points[..., 1], y * 2.5, atol=1e-5)
    # Left of the principal point is negative x, above it negative y (REP 103 optical frame).
    assert points[0, 0, 0] < 0 and points[0, 0, 1] < 0 and points[-1, -1, 0] > 0


def test_tilted_plane_is_coplanar_with_the_right_normal():
    normal = np.array([0.3, -0.5, 1.0]) / np.linalg.norm([0.3, -0.5, 1.0])
    depth = plane_depth(CAMERA, normal, 1.7)
    points = Backprojector(CAMERA).points(depth).reshape(-1, 3).astype(np.float64)
    centre = points.mean(axis=0)
    fitted = np.linalg.svd(points - centre, full_matrices=False)[2][-1]
    assert abs(fitted @ normal) > 1 - 1e-6
    np.testing.assert_allclose(points @ normal, 1.7, rtol=1e-5)


def test_invalid_depths_give_nan_points_and_valid_neighbours_survive():
    depth = np.full((CAMERA.height, CAMERA.width), 3.0, dtype=np.float32)
    bad = [(10, 10), (10, 11), (10, 12), (10, 13)]
    for (v, u), value in zip(bad, (0.0, -1.0, np.inf, np.nan)):
        depth[v, u] = value
    points = Backprojector(CAMERA).points(depth)
    for v, u in bad:
        assert np.isnan(points[v, u]).all()
    assert np.isfinite(points).sum() == 3 * (depth.size - len(bad))


@pytest.mark.parametrize('decimation', [2, 3, 4])
def test_decimation_keeps_cloud_and_intrinsics_consistent(decimation):
    normal = np.array([0.1, -0.2, 1.0]) / np.linalg.norm([0.1, -0.2, 1.0])
    depth = plane_depth(CAMERA, normal, 2.0)
    full = Backprojector(CAMERA).points(depth)
    projector = Backprojector(CAMERA, decimation)
    cloud = projector.points(depth)
    small = projector.intrinsics
    assert cloud.shape == (small.height, small.width, 3)
    offset = decimation // 2
    np.testing.assert_array_equal(cloud, full[offset::decimation, offset::decimation])
    # Every point re-projects through the published intrinsics onto its own cell.
    rows, cols = np.mgrid[0:small.height, 0:small.width]
    np.testing.assert_allclose(small.fx * cloud[..., 0] / cloud[..., 2] + small.cx, cols,
                               atol=1e-3)
    np.testing.assert_allclose(small.fy * cloud[..., 1] / cloud[..., 2] + small.cy, rows,
                               atol=1e-3)
    if decimation % 2:
        scaled = CAMERA.scaled(1.0 / decimation)
        assert (small.width, small.height) == (scaled.width, scaled.height)
        assert math.isclose(small.cx, scaled.cx) and math.isclose(small.fx, scaled.fx)


def test_points_write_into_a_strided_message_buffer():
    depth = np.full((CAMERA.height, CAMERA.width), 1.25, dtype=np.float32)
    buffer = np.full((CAMERA.height, CAMERA.width, 4), 7.0, dtype=np.float32)
    result = Backprojector(CAMERA).points(depth, out=buffer[..., :3])
    assert np.shares_memory(result, buffer)
    np.testing.assert_allclose(buffer[..., 2], 1.25)
    np.testing.assert_array_equal(buffer[..., 3], 7.0)  # the rgb slot is untouched


def test_backprojector_rejects_wrong_shapes():
    projector = Backprojector(CAMERA)
    with pytest.raises(ValueError, match='intrinsics'):
        projector.points(np.ones((CAMERA.height, CAMERA.width + 1), dtype=np.float32))
    with pytest.raises(ValueError, match='out must be'):
        projector.points(np.ones((CAMERA.height, CAMERA.width), dtype=np.float32),
                         out=np.empty((2, 2, 3), dtype=np.float32))
    with pytest.raises(ValueError, match='decimation'):
        Backprojector(CAMERA, 0)


# --- LaserScan ------------------------------------------------------------------------------

LEVEL = Intrinsics.from_fov(200, 100, 80.0)


def wall_depth(intrinsics, distance, yaw):
    """Depth image of a vertical wall: in the scan frame (x forward, y left) the line
    {p : cos(yaw) p_x + sin(yaw) p_y = distance}. Optical x = -scan y, optical z = scan x."""
    x, _ = pixel_grid(intrinsics)
    return (distance / (math.cos(yaw) - math.sin(yaw) * x)).astype(np.float32)


@pytest.mark.parametrize('yaw_deg', [0.0, 25.0, -30.0])
def test_scan_of_a_wall_matches_the_true_ranges(yaw_deg):
    yaw = math.radians(yaw_deg)
    scan = DepthToScan(LEVEL, scan_height=1, range_min=0.1, range_max=20.0)
    result = scan.convert(wall_depth(LEVEL, 2.0, yaw))
    assert len(result.ranges) == LEVEL.width and result.ranges.dtype == np.float32
    half_fov = math.atan2(LEVEL.cx, LEVEL.fx)
    assert math.isclose(result.angle_max, half_fov, rel_tol=1e-9)
    assert math.isclose(result.angle_min, -half_fov, rel_tol=1e-9)
    angles = result.angle_min + result.angle_increment * np.arange(len(result.ranges))
    assert math.isclose(angles[-1], result.angle_max, rel_tol=1e-9)
    truth = 2.0 / np.cos(angles - yaw)
    error = np.abs(result.ranges / truth - 1.0)
    assert error.max() < 0.02
    assert np.isfinite(result.ranges).all()  # no holes where columns are sparse in angle


def test_scan_angles_are_positive_to_the_left():
    depth = np.full((LEVEL.height, LEVEL.width), 5.0, dtype=np.float32)
    left_column = 40  # u < cx: left of the optical axis
    depth[:, left_column - 1:left_column + 2] = 1.0
    result = DepthToScan(LEVEL, range_max=10.0).convert(depth)
    nearest = int(np.argmin(result.ranges))
    angle = result.angle_min + nearest * result.angle_increment
    expected = math.atan2(-(left_column - LEVEL.cx), LEVEL.fx)
    assert angle > 0 and abs(angle - expected) < 2 * result.angle_increment
    assert math.isclose(result.ranges[nearest], 1.0 / math.cos(expected), rel_tol=0.02)


def test_scan_takes_the_nearest_range_within_the_band():
    depth = np.full((LEVEL.height, LEVEL.width), 4.0, dtype=np.float32)
    scan = DepthToScan(LEVEL, scan_height=5, range_max=10.0)
    band_rows = np.arange(LEVEL.height)[scan.rows]
    assert len(band_rows) == 5 and abs(band_rows.mean() - LEVEL.cy) <= 0.5
    depth[band_rows[-1], :] = 2.0  # the band's lowest row sees something nearer
    depth[band_rows[-1] + 1, :] = 1.0  # just outside the band: ignored
    x, _ = pixel_grid(LEVEL)
    centre = int(round(LEVEL.cx))
    np.testing.assert_allclose(scan.convert(depth).ranges[LEVEL.width - 1 - centre],
                               2.0 * math.hypot(1.0, x[0, centre]), rtol=1e-5)


def test_scan_out_of_range_rays_follow_rep_117():
    depth = np.full((LEVEL.height, LEVEL.width), np.nan, dtype=np.float32)
    scan = DepthToScan(LEVEL, scan_height=3, range_min=0.5, range_max=5.0)
    assert np.isnan(scan.convert(depth).ranges).all()  # no reading at all
    depth[:, :100] = 50.0  # left half: beyond range_max
    depth[:, 100:] = 0.2  # right half: nearer than range_min
    depth[scan.rows.start, 100:110] = 3.0  # ... except a valid reading in one row
    ranges = scan.convert(depth).ranges
    assert np.isposinf(ranges[-90:]).all()  # left = high indices
    assert np.isneginf(ranges[:85]).all()
    assert np.isfinite(ranges[90:100]).all()


def test_scan_reuses_its_buffer_and_rejects_bad_configuration():
    scan = DepthToScan(LEVEL)
    depth = np.ones((LEVEL.height, LEVEL.width), dtype=np.float32)
    assert scan.convert(depth).ranges is scan.convert(depth * 2).ranges
    with pytest.raises(ValueError, match='scan_height'):
        DepthToScan(LEVEL, scan_height=LEVEL.height + 1)
    with pytest.raises(ValueError, match='range_min'):
        DepthToScan(LEVEL, range_min=3.0, range_max=2.0)
    with pytest.raises(ValueError, match='intrinsics'):
        scan.convert(np.ones((3, 3), dtype=np.float32))


# --- Transforms and projection ------------------------------------------------------------------

def test_rpy_signs_follow_rep_103():
    pitched = transform_from_xyz_rpy(0, 0, 0, 0.0, math.radians(30), 0.0)
    forward = pitched[:3, :3] @ [1.0, 0.0, 0.0]
    assert forward[2] < 0  # positive pitch looks down
    rolled = transform_from_xyz_rpy(0, 0, 0, math.radians(30), 0.0, 0.0)
    assert (rolled[:3, :3] @ [0.0, 1.0, 0.0])[2] > 0  # positive roll lifts the left side
    yawed = transform_from_xyz_rpy(1, 2, 3, 0.0, 0.0, math.radians(90))
    np.testing.assert_allclose(yawed @ [1.0, 0.0, 0.0, 1.0], [1.0, 3.0, 3.0, 1.0], atol=1e-12)


def test_project_points_round_trips_the_backprojection():
    depth = plane_depth(CAMERA, np.array([0.0, -0.3, 1.0]), 2.0)
    points = Backprojector(CAMERA).points(depth)
    camera_from_sensor = transform_from_xyz_rpy(0.1, -0.2, 0.05, 0.1, -0.2, 0.3)
    in_sensor = (points.reshape(-1, 3) - camera_from_sensor[:3, 3]) @ camera_from_sensor[:3, :3]
    u, v, z, valid = project_points(in_sensor, camera_from_sensor, CAMERA)
    rows, cols = np.mgrid[0:CAMERA.height, 0:CAMERA.width]
    assert valid.all()
    np.testing.assert_allclose(u, cols.ravel(), atol=1e-3)
    np.testing.assert_allclose(v, rows.ravel(), atol=1e-3)
    np.testing.assert_allclose(z, depth.ravel(), rtol=1e-5)


def test_project_points_flags_points_behind_or_outside():
    points = [[0.0, 0.0, 2.0], [0.0, 0.0, -2.0], [50.0, 0.0, 1.0], [np.nan, 0.0, 1.0]]
    _, _, _, valid = project_points(points, np.eye(4), CAMERA)
    assert valid.tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match='4x4'):
        project_points(points, np.eye(3), CAMERA)


def test_laser_scan_points_places_rays_counter_clockwise():
    points = laser_scan_points([1.0, np.inf, 2.0, 0.05], -math.pi / 2, math.pi / 2,
                               range_min=0.1, range_max=10.0)
    np.testing.assert_allclose(points, [[0.0, -1.0, 0.0], [0.0, 2.0, 0.0]], atol=1e-12)


# --- Colour map -------------------------------------------------------------------------------

def test_colormap_near_is_warm_nan_is_black_and_range_clips():
    depth = np.tile(np.linspace(1.0, 5.0, 64, dtype=np.float32), (8, 1))
    depth[0, 0] = np.nan
    image = DepthColorizer(value_range=(1.0, 5.0)).colorize(depth)
    assert image.shape == (8, 64, 3) and image.dtype == np.uint8
    assert image[0, 0].tolist() == [0, 0, 0]
    near, far = image[1, 0].astype(int), image[1, -1].astype(int)
    assert near[2] > near[0] and far[0] > far[2]  # BGR: near reddish, far bluish
    clipped = DepthColorizer(value_range=(2.0, 3.0)).colorize(depth)
    np.testing.assert_array_equal(clipped[1, 1], clipped[1, 2])  # both below 2 m
    lut = turbo_lut_bgr()
    np.testing.assert_array_equal(clipped[1, -1], lut[0])
    np.testing.assert_array_equal(clipped[1, 1], lut[255])


def test_colormap_auto_range_ignores_outliers():
    depth = np.tile(np.linspace(1.0, 5.0, 100, dtype=np.float32), (40, 1))
    depth[5, 5] = 1000.0
    low, high = robust_range(depth, stride=1)
    assert 1.0 <= low < 1.2 and 4.8 < high <= 5.0
    image = DepthColorizer().colorize(depth)
    distinct = len(np.unique(image[10].reshape(-1, 3), axis=0))
    assert distinct > 80  # the 1-5 m ramp spans (nearly) the whole table
    assert not DepthColorizer().colorize(np.full((4, 4), np.nan)).any()


def test_quaternions_and_rotations_round_trip():
    rng = np.random.default_rng(11)
    # Random rotations, and the 180-degree turns where the trace method alone would divide by 0.
    quaternions = list(rng.normal(size=(50, 4))) + [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0)]
    for q in quaternions:
        q = np.asarray(q, float) / np.linalg.norm(q)
        transform = transform_from_quaternion((1.0, -2.0, 0.5), q)
        rotation = transform[:3, :3]
        assert np.allclose(rotation @ rotation.T, np.eye(3)) and np.isclose(
            np.linalg.det(rotation), 1.0)
        back = np.array(quaternion_from_rotation(rotation))
        assert back[3] >= 0 and np.allclose(back, q if q[3] >= 0 else -q)
        assert np.allclose(transform[:3, 3], (1.0, -2.0, 0.5))


def test_quaternion_of_a_known_rotation_and_transform_points():
    # 90 degrees about z: x -> y.
    half = math.sqrt(0.5)
    transform = transform_from_quaternion((0.0, 0.0, 1.0), (0.0, 0.0, half, half))
    assert np.allclose(transform_points(transform, [[1.0, 0.0, 0.0]]), [[0.0, 1.0, 1.0]])
    assert np.allclose(transform[:3, :3], rotation_from_rpy(0.0, 0.0, math.pi / 2))
    with pytest.raises(ValueError):
        transform_from_quaternion((0, 0, 0), (0, 0, 0, 0))
