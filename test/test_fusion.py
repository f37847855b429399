"""midas_ros.fusion on scenes whose geometry is known exactly.

The scene: a camera ``CAMERA_HEIGHT`` above a flat floor looking horizontally at a wall, with
upright people-sized panels standing on the floor. Depth is ray-cast per pixel (vectorized),
and each panel's true box is its exact projection, so distances, positions and extents have
closed-form truth.
"""
import math

import numpy as np
import pytest

from midas_ros.fusion import Box, FusionConfig, fuse, nearest, nearest_range
from midas_ros.geometry import Intrinsics

CAMERA_HEIGHT = 1.2    # optical centre above the floor (m)
WALL_DEPTH = 12.0      # a wall facing the camera (m)
INTRINSICS = Intrinsics.from_fov(320, 240, 70.0)


def render(panels, intrinsics=INTRINSICS, wall=WALL_DEPTH):
    """Depth (optical z, metres) of floor + wall + panels ``(x_centre, depth, width, height)``
    standing on the floor, fronto-parallel."""
    u = (np.arange(intrinsics.width) - intrinsics.cx) / intrinsics.fx
    v = (np.arange(intrinsics.height) - intrinsics.cy) / intrinsics.fy
    rays_x, rays_y = np.meshgrid(u, v)
    depth = np.full(rays_x.shape, wall)
    below = rays_y > 0
    depth[below] = np.minimum(CAMERA_HEIGHT / rays_y[below], wall)   # the floor, y = +height
    for x_centre, z, width, height in panels:
        x, y = rays_x * z, rays_y * z
        hit = ((np.abs(x - x_centre) <= width / 2) & (y <= CAMERA_HEIGHT)
               & (y >= CAMERA_HEIGHT - height) & (z < depth))
        depth[hit] = z
    return depth.astype(np.float32)


def true_box(panel, intrinsics=INTRINSICS, class_id='person'):
    """The panel's projection as a vision_msgs-style centre/size box (edges on pixel borders)."""
    x_centre, z, width, height = panel
    left = intrinsics.fx * (x_centre - width / 2) / z + intrinsics.cx
    right = intrinsics.fx * (x_centre + width / 2) / z + intrinsics.cx
    top = intrinsics.fy * (CAMERA_HEIGHT - height) / z + intrinsics.cy
    bottom = intrinsics.fy * CAMERA_HEIGHT / z + intrinsics.cy
    return Box((left + right) / 2, (top + bottom) / 2, right - left, bottom - top, class_id, 0.9)


def true_centre(panel):
    x_centre, z, _, height = panel
    return np.array([x_centre, CAMERA_HEIGHT - height / 2, z])


PEOPLE = [(-1.5, 3.0, 0.5, 1.75), (0.4, 5.5, 0.45, 1.7), (2.5, 8.0, 0.6, 1.8),
          (-0.3, 2.6, 0.4, 1.6)]


def assert_matches(obstacle, panel):
    z = panel[1]
    assert obstacle.valid, obstacle.reason
    assert obstacle.distance == pytest.approx(z, rel=0.02)
    error = np.linalg.norm(np.array(obstacle.position) - true_centre(panel))
    assert error <= 0.02 * z, f'position {obstacle.position} vs {true_centre(panel)}'


def test_people_on_a_floor_before_a_wall():
    depth = render(PEOPLE)
    obstacles = fuse(depth, INTRINSICS, [true_box(p) for p in PEOPLE])
    assert len(obstacles) == len(PEOPLE)
    for obstacle, panel in zip(obstacles, PEOPLE):
        assert_matches(obstacle, panel)
        width, height = panel[2], panel[3]
        assert obstacle.extent[0] == pytest.approx(width, rel=0.1)
        assert obstacle.extent[1] == pytest.approx(height, rel=0.1)
        assert 0.0 <= obstacle.extent[2] < 0.1 * panel[1]     # a panel is thin
    assert nearest(obstacles) is obstacles[3]


def test_box_half_over_the_wall_behind_still_reports_the_object():
    panel = (0.0, 4.0, 0.5, 1.7)
    box = true_box(panel)
    # Twice as wide, the object in its left half: the right half is wall 8 m further away.
    shifted = Box(box.center_x + box.width / 2, box.center_y, 2 * box.width, box.height)
    obstacle, = fuse(render([panel]), INTRINSICS, [shifted])
    assert obstacle.distance == pytest.approx(4.0, rel=0.02)
    assert obstacle.position[2] == pytest.approx(4.0, rel=0.02)
    # The position is on the object's visible part inside the box centre, not the box centre.
    assert abs(obstacle.position[0] - panel[0]) < panel[2] / 2
    box_centre_x = (shifted.center_x - INTRINSICS.cx) / INTRINSICS.fx * 4.0
    assert abs(obstacle.position[0] - panel[0]) < abs(box_centre_x - panel[0]) / 2


@pytest.mark.parametrize('grow', [1.0, 1.3, 1.6])
def test_loose_boxes_keep_the_object_position(grow):
    panel = (1.0, 5.0, 0.5, 1.7)
    box = true_box(panel)
    loose = Box(box.center_x, box.center_y, box.width * grow, box.height * grow)
    obstacle, = fuse(render([panel]), INTRINSICS, [loose])
    assert_matches(obstacle, panel)


def test_nearer_occluder_and_flying_pixels_below_the_percentile_are_ignored():
    panel = (0.0, 4.0, 0.5, 1.7)
    depth = render([panel])
    box = true_box(panel)
    v0, v1, u0, u1 = box.pixel_window(0.6, INTRINSICS.width, INTRINSICS.height)
    rng = np.random.default_rng(3)
    inner = depth[v0:v1, u0:u1]
    noisy = rng.random(inner.shape) < 0.05         # 5% of the centre: edge pixels at 1 m
    inner[noisy] = 1.0
    obstacle, = fuse(depth, INTRINSICS, [box])
    assert_matches(obstacle, panel)
    assert fuse(depth, INTRINSICS, [box], FusionConfig(percentile=0.0))[0].distance == 1.0


def test_boxes_partly_outside_the_image_are_clipped():
    panel = (-2.3, 3.0, 0.8, 1.7)                    # left edge beyond the image border
    box = true_box(panel)
    assert box.center_x - box.width / 2 < 0 < box.center_x + box.width / 2
    wide = Box(box.center_x, box.center_y, box.width, box.height * 3)   # above and below too
    obstacles = fuse(render([panel]), INTRINSICS, [box, wide])
    for obstacle in obstacles:
        assert obstacle.valid, obstacle.reason
        assert obstacle.distance == pytest.approx(3.0, rel=0.02)
        assert obstacle.position[2] == pytest.approx(3.0, rel=0.02)
        # Only the visible part can be measured: it ends at the image border (u = -0.5).
        left_edge = (-0.5 - INTRINSICS.cx) / INTRINSICS.fx * 3.0
        right_edge = panel[0] + panel[2] / 2
        assert left_edge < obstacle.position[0] < right_edge
        assert obstacle.extent[0] == pytest.approx(right_edge - left_edge, rel=0.05)


@pytest.mark.parametrize('box', [
    Box(-50.0, 100.0, 20.0, 20.0), Box(100.0, 1e4, 20.0, 20.0),     # entirely outside
    Box(math.nan, 100.0, 20.0, 20.0), Box(100.0, 100.0, math.inf, 20.0),
    Box(100.0, 100.0, 0.0, 20.0), Box(100.0, 100.0, 20.0, -5.0),
])
def test_bad_boxes_are_invalid_with_a_reason(box):
    obstacle, = fuse(render(PEOPLE), INTRINSICS, [box])
    assert not obstacle.valid and obstacle.reason
    assert math.isnan(obstacle.distance) and all(map(math.isnan, obstacle.position))


@pytest.mark.parametrize('fill, distance', [
    (math.nan, math.nan), (0.0, math.nan), (-1.0, math.nan),     # no reading
    (math.inf, math.inf), (150.0, math.inf),                     # beyond max_range (100 m)
    (-math.inf, -math.inf), (0.05, -math.inf)])                  # nearer than min_range (0.1 m)
def test_box_without_valid_depth_is_invalid_never_zero(fill, distance):
    panel = (0.0, 4.0, 0.5, 1.7)
    depth = render([panel])
    box = true_box(panel)
    v0, v1, u0, u1 = box.pixel_window(1.0, INTRINSICS.width, INTRINSICS.height)
    depth[v0:v1, u0:u1] = fill
    obstacle, other = fuse(depth, INTRINSICS, [box, true_box((1.5, 6.0, 0.5, 1.7))])
    assert not obstacle.valid
    assert 'valid depths' in obstacle.reason
    # REP 117: -inf too near, +inf beyond range, NaN no reading; never a number.
    assert obstacle.distance == distance or math.isnan(obstacle.distance) and math.isnan(distance)
    assert all(map(math.isnan, obstacle.position))
    assert other.valid and nearest([obstacle, other]) is other
    assert nearest_range([obstacle, other]) == other.distance
    assert nearest_range([obstacle]) == (-math.inf if distance == -math.inf else math.inf)


def test_a_few_valid_pixels_are_not_enough():
    depth = np.full((INTRINSICS.height, INTRINSICS.width), np.nan, np.float32)
    depth[100:102, 100:102] = 2.0                     # 4 pixels
    box = Box(100.5, 100.5, 20.0, 20.0)
    assert not fuse(depth, INTRINSICS, [box], FusionConfig(min_valid_pixels=5))[0].valid
    assert fuse(depth, INTRINSICS, [box], FusionConfig(min_valid_pixels=4))[0].distance == 2.0


def test_resized_depth_with_scaled_boxes_gives_the_same_answer():
    panel = PEOPLE[1]
    half = INTRINSICS.scaled(0.5)
    obstacle, = fuse(render([panel], half), half, [true_box(panel).scaled(0.5, 0.5)])
    assert_matches(obstacle, panel)


def test_box_scaling_matches_intrinsics_scaling():
    panel = PEOPLE[0]
    scaled = true_box(panel).scaled(0.5, 0.25)
    direct = true_box(panel, INTRINSICS.scaled(0.5, 0.25))
    assert (scaled.center_x, scaled.center_y, scaled.width, scaled.height) == pytest.approx(
        (direct.center_x, direct.center_y, direct.width, direct.height))


def test_pixel_window_rounds_edges_to_pixel_borders():
    # Edges on borders (9.5 .. 19.5) or on centres (10 .. 20) both cover columns 10..19.
    assert Box(14.5, 14.5, 10.0, 10.0).pixel_window(1.0, 100, 100) == (10, 20, 10, 20)
    assert Box(15.0, 15.0, 10.0, 10.0).pixel_window(1.0, 100, 100) == (10, 20, 10, 20)
    assert Box(3.0, 3.0, 0.2, 0.2).pixel_window(1.0, 100, 100) == (3, 4, 3, 4)
    assert Box(-3.0, 3.0, 4.0, 2.0).pixel_window(1.0, 100, 100)[2:] == (0, 0)


def test_mismatched_depth_and_intrinsics_raise():
    with pytest.raises(ValueError, match='320x240'):
        fuse(np.zeros((100, 100), np.float32), INTRINSICS, [])
    with pytest.raises(ValueError, match='single-channel'):
        fuse(np.zeros((240, 320, 3), np.float32), INTRINSICS, [])


@pytest.mark.parametrize('settings, name', [
    (dict(inner_fraction=0.0), 'inner_fraction'), (dict(inner_fraction=1.5), 'inner_fraction'),
    (dict(percentile=101.0), 'percentile'), (dict(min_range=0.0), 'min_range'),
    (dict(max_range=0.05), 'max_range'), (dict(max_range=math.inf), 'max_range'),
    (dict(cluster_tolerance=0.0), 'cluster_tolerance'),
    (dict(min_valid_pixels=0), 'min_valid_pixels'),
])
def test_config_validation_names_the_bad_setting(settings, name):
    with pytest.raises(ValueError, match=name):
        FusionConfig(**settings).validate()
    FusionConfig().validate()
