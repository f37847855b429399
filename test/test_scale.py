"""Metric scale recovery on synthetic scenes whose true depth is ray-traced here.

The scene: a camera at a known height and pitch/roll above a floor, boxes standing on the floor
(their camera-facing sides) that hide at least 30% of the floor region, and a wall behind. The
"network output" is the true inverse depth through an affine map the fits do not know, with 1%
multiplicative noise: relative = ALPHA / z + BETA, so 1/z = a r + b with a = 1/ALPHA,
b = -BETA/ALPHA.
"""
import math

import numpy as np
import pytest
import yaml

from midas_ros.geometry import Intrinsics, project_points, transform_from_xyz_rpy
from midas_ros.scale import (FixedScale, FloorPlane, GroundPlaneScale, ScaleFit, ScaleSmoother,
                             SparseScale, UncalibratedScale, create_estimator,
                             fit_inverse_depth, inverse_depth_to_metric)
from midas_ros.tools import calibrate_scale

CAMERA = Intrinsics.from_fov(160, 120, 70.0)
HEIGHT = 1.2
ALPHA, BETA = 800.0, 15.0
FLOOR_ROWS = 0.35
WALL_DISTANCE = 6.0
# Camera-facing sides of boxes on the floor, base frame: (distance ahead, y from, y to, height).
BOXES = [(1.1, 0.5, 0.8, 0.3), (1.3, -0.9, -0.3, 0.6), (1.7, 0.2, 0.8, 0.5), (2.6, -0.2, 0.3, 0.6),
         (3.4, -1.6, -0.6, 0.7)]


def base_from_optical(pitch, roll):
    """Rotation of the optical frame in a level base (x forward, y left, z up), written out here
    independently of the package: R = Ry(pitch) Rx(roll) times optical->body axes."""
    cp, sp, cr, sr = math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    pitch_m = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    roll_m = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    axes = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]])  # columns: optical x, y, z in body
    return pitch_m @ roll_m @ axes


def render(pitch, roll, boxes=BOXES):
    """(true depth, floor-visible mask, obstacle mask): ray-traced optical-axis depth."""
    v, u = np.mgrid[0:CAMERA.height, 0:CAMERA.width].astype(np.float64)
    rays = np.stack([(u - CAMERA.cx) / CAMERA.fx, (v - CAMERA.cy) / CAMERA.fy, np.ones_like(u)],
                    axis=-1)
    d = rays @ base_from_optical(pitch, roll).T  # base-frame direction, optical z = 1
    with np.errstate(divide='ignore', invalid='ignore'):
        floor = np.where(d[..., 2] < 0, -HEIGHT / d[..., 2], np.inf)
        wall = np.where(d[..., 0] > 0, WALL_DISTANCE / d[..., 0], np.inf)
        obstacle = np.full(u.shape, np.inf)
        for ahead, y0, y1, top in boxes:
            t = np.where(d[..., 0] > 0, ahead / d[..., 0], np.inf)
            y, z = t * d[..., 1], t * d[..., 2]
            hit = (y >= y0) & (y <= y1) & (z >= -HEIGHT) & (z <= -HEIGHT + top)
            obstacle = np.minimum(obstacle, np.where(hit, t, np.inf))
    depth = np.minimum(np.minimum(floor, wall), obstacle)
    return depth, floor <= np.minimum(wall, obstacle), obstacle < np.minimum(floor, wall)


def network_output(depth, rng, noise=0.01):
    relative = ALPHA / depth + BETA
    return (relative * (1.0 + noise * rng.standard_normal(depth.shape))).astype(np.float32)


def median_error(fit, relative, truth):
    assert fit.ok, fit.reason
    depth = inverse_depth_to_metric(relative, fit.a, fit.b, min_depth=0.05, max_depth=100.0)
    return float(np.nanmedian(np.abs(depth / truth - 1.0)))


@pytest.mark.parametrize('pitch_deg, roll_deg', [(15.0, 0.0), (20.0, 6.0), (8.0, -4.0)])
def test_ground_plane_recovers_metric_depth_with_obstacles_on_the_floor(pitch_deg, roll_deg):
    pitch, roll = math.radians(pitch_deg), math.radians(roll_deg)
    truth, _, obstacles = render(pitch, roll)
    region = slice(int(round(CAMERA.height * (1 - FLOOR_ROWS))), None)
    assert obstacles[region].mean() >= 0.30  # the scene really hides 30% of the floor region
    relative = network_output(truth, np.random.default_rng(1))
    estimator = GroundPlaneScale(CAMERA, HEIGHT, pitch, roll, floor_rows=FLOOR_ROWS)
    fit = estimator.fit(relative)
    assert median_error(fit, relative, truth) < 0.03
    assert 0.5 < fit.inlier_ratio < 0.8  # the obstacles were found to be outliers
    # Not by luck: assuming the wrong camera height scales every depth with it.
    wrong = GroundPlaneScale(CAMERA, 2 * HEIGHT, pitch, roll, floor_rows=FLOOR_ROWS)
    assert median_error(wrong.fit(relative), relative, truth) > 0.5


def test_ground_plane_from_a_static_transform_matches_height_pitch_roll():
    pitch, roll = math.radians(12.0), math.radians(-5.0)
    transform = np.eye(4)
    transform[:3, :3] = base_from_optical(pitch, roll)
    transform[2, 3] = HEIGHT
    truth, _, _ = render(pitch, roll)
    relative = network_output(truth, np.random.default_rng(2))
    from_angles = GroundPlaneScale(CAMERA, HEIGHT, pitch, roll).fit(relative)
    from_transform = GroundPlaneScale.from_transform(CAMERA, transform).fit(relative)
    assert math.isclose(from_angles.a, from_transform.a, rel_tol=1e-6)
    assert math.isclose(from_angles.b, from_transform.b, rel_tol=1e-6, abs_tol=1e-9)


@pytest.mark.parametrize('pitch_deg, roll_deg', [(5.0, 0.0), (15.0, 0.0), (12.0, -6.0)])
def test_ground_plane_with_a_floor_per_frame_matches_a_fixed_geometry(pitch_deg, roll_deg):
    """A moving camera: the frame's floor (e.g. from TF) gives what an estimator built for that
    geometry gives, roll included; the constructor's geometry would be wrong."""
    pitch, roll = math.radians(pitch_deg), math.radians(roll_deg)
    transform = np.eye(4)
    transform[:3, :3] = base_from_optical(pitch, roll)
    transform[:3, 3] = (0.4, -0.1, HEIGHT)     # anywhere above the floor: only z matters
    floor = FloorPlane.from_transform(transform)
    assert floor.height == pytest.approx(HEIGHT)
    assert np.allclose(floor.pitch_roll(), (pitch, roll))
    assert np.allclose(floor.down, FloorPlane.from_height_pitch_roll(HEIGHT, pitch, roll).down)
    truth, _, _ = render(pitch, roll)
    relative = network_output(truth, np.random.default_rng(4))
    moving = GroundPlaneScale(CAMERA, HEIGHT, math.radians(10.0), 0.0, floor_rows=FLOOR_ROWS)
    fit = moving.fit(relative, floor=floor)
    assert median_error(fit, relative, truth) < 0.03
    if pitch_deg != 10.0:
        assert median_error(moving.fit(relative), relative, truth) > 0.05
    # A floor the region cannot see (camera looking up) fails this frame, with the reason.
    failed = moving.fit(relative, floor=FloorPlane.from_height_pitch_roll(HEIGHT, -0.7, 0.0))
    assert not failed.ok and 'see the floor' in failed.reason


def test_ground_plane_rejects_impossible_configurations():
    with pytest.raises(ValueError, match='height'):
        GroundPlaneScale(CAMERA, 0.0, math.radians(10), 0.0)
    with pytest.raises(ValueError, match='height'):
        GroundPlaneScale(CAMERA, -1.0, math.radians(10), 0.0)
    # Looking up by 40 degrees: the horizon is below the image, no pixel sees the floor.
    with pytest.raises(ValueError, match='horizon at row .* below the image'):
        GroundPlaneScale(CAMERA, HEIGHT, math.radians(-40), 0.0)


def test_sparse_recovers_metric_depth_with_outlier_anchors():
    pitch = math.radians(10.0)
    truth, _, _ = render(pitch, 0.0)
    rng = np.random.default_rng(3)
    relative = network_output(truth, rng)
    # A depth sensor 10 cm left of and 5 cm above the camera, slightly rotated: anchors are its
    # points, moved into the camera frame by project_points through the extrinsic.
    camera_from_sensor = transform_from_xyz_rpy(-0.1, -0.05, 0.02, 0.02, -0.03, 0.05)
    count = 300
    u = rng.uniform(0, CAMERA.width - 1, count).round()
    v = rng.uniform(0, CAMERA.height - 1, count).round()
    z = truth[v.astype(int), u.astype(int)]
    scale = np.ones(count)
    outliers = rng.choice(count, size=count // 5, replace=False)  # 20% wrong by 0.3x..3x
    log_error = rng.choice([-1, 1], len(outliers)) * rng.uniform(0.4, 1.1, len(outliers))
    scale[outliers] = np.exp(log_error)
    in_camera = np.stack([(u - CAMERA.cx) / CAMERA.fx, (v - CAMERA.cy) / CAMERA.fy,
                          np.ones(count)], axis=1) * (z * scale)[:, None]
    rotation, translation = camera_from_sensor[:3, :3], camera_from_sensor[:3, 3]
    in_sensor = (in_camera - translation) @ rotation
    # Plus points no camera pixel sees: behind it and far outside the field of view.
    extra = (np.array([[0.0, 0.0, -3.0], [20.0, 0.0, 1.0]]) - translation) @ rotation
    anchors = project_points(np.vstack([in_sensor, extra]), camera_from_sensor, CAMERA)
    assert anchors[3].sum() == count
    fit = SparseScale(CAMERA, min_anchors=10).fit(relative, anchors)
    assert median_error(fit, relative, truth) < 0.03
    assert fit.inlier_ratio == pytest.approx(0.8, abs=0.05)  # the wrong 20% were found


def test_sparse_reports_unusable_anchors():
    relative = np.ones((CAMERA.height, CAMERA.width), dtype=np.float32)
    sparse = SparseScale(CAMERA)
    outside = (np.array([-5.0, 500.0]), np.array([10.0, 10.0]), np.array([2.0, 2.0]))
    fit = sparse.fit(relative, outside)
    assert not fit.ok and 'inside' in fit.reason and math.isnan(fit.a)
    invalid = (np.array([10.0, 20.0]), np.array([10.0, 10.0]), np.array([np.nan, -1.0]))
    fit = sparse.fit(relative, invalid)
    assert not fit.ok and 'invalid' in fit.reason
    assert not sparse.fit(relative, None).ok
    assert not sparse.fit(relative, ([], [], [])).ok


def test_all_nan_relative_depth_fails_cleanly_in_every_mode():
    nan = np.full((CAMERA.height, CAMERA.width), np.nan, dtype=np.float32)
    anchors = (np.array([50.0, 60.0]), np.array([70.0, 80.0]), np.array([2.0, 3.0]))
    for estimator in (GroundPlaneScale(CAMERA, HEIGHT, math.radians(15), 0.0),
                      SparseScale(CAMERA), UncalibratedScale()):
        fit = estimator.fit(nan, anchors)
        assert not fit.ok and fit.reason and math.isnan(fit.a)


def test_fit_with_a_single_depth_fits_scale_only():
    relative = np.array([10.0, 10.2, 9.9])
    fit = fit_inverse_depth(relative, np.full(3, 0.5))
    assert fit.ok and fit.b == 0.0 and 'scale only' in fit.reason
    assert fit.a == pytest.approx(0.05, rel=0.02)


def test_uncalibrated_puts_the_median_pixel_at_the_nominal_depth():
    truth, _, _ = render(math.radians(15), 0.0)
    relative = network_output(truth, np.random.default_rng(4))
    fit = UncalibratedScale(median_depth=3.0, stride=1).fit(relative)
    depth = inverse_depth_to_metric(relative, fit.a, fit.b, min_depth=0.01, max_depth=1e4)
    assert fit.ok and fit.b == 0.0
    assert np.median(depth) == pytest.approx(3.0, rel=1e-3)
    assert not create_estimator('uncalibrated').metric


def test_inverse_depth_to_metric_inverts_and_masks():
    relative = np.array([[1.0, 2.0, -1.0, np.nan, 0.5, 0.2, 0.0, 40.0]], dtype=np.float32)
    out = np.empty_like(relative)
    depth = inverse_depth_to_metric(relative, 0.5, 0.0, out=out, min_depth=0.1, max_depth=5.0)
    assert depth is out
    np.testing.assert_allclose(depth[0, :2], [2.0, 1.0])
    # REP 118: a r + b <= 0 is at or beyond infinity (+inf), NaN input is no reading.
    assert depth[0, 2] == np.inf and np.isnan(depth[0, 3]) and depth[0, 6] == np.inf
    assert depth[0, 4] == pytest.approx(4.0) and depth[0, 5] == np.inf  # 10 m > max_depth
    assert depth[0, 7] == -np.inf   # 0.05 m < min_depth: too near
    with pytest.raises(ValueError, match='min_depth'):
        inverse_depth_to_metric(relative, 1.0, 0.0, max_depth=math.inf)
    with pytest.raises(ValueError, match='a > 0'):
        FixedScale(-1.0, 0.0)
    with pytest.raises(ValueError, match='unknown scale mode'):
        create_estimator('lidar')


def test_smoother_keeps_the_scale_steady_through_a_corrupted_frame():
    pitch = math.radians(15.0)
    truth, _, _ = render(pitch, 0.0)
    estimator = GroundPlaneScale(CAMERA, HEIGHT, pitch, 0.0, floor_rows=FLOOR_ROWS)
    smoother = ScaleSmoother(time_constant_s=0.5, min_inlier_ratio=0.3, max_residual=0.1)
    rng = np.random.default_rng(5)
    probe = np.float32(ALPHA / 3.0 + BETA)  # what the network says for a point 3 m away
    previous, corrupted_fit = None, None
    for frame in range(30):
        relative = network_output(truth, rng)
        if frame == 15:  # a garbage frame: e.g. a decoding error or a covered lens
            relative = rng.uniform(0.0, 60.0, relative.shape).astype(np.float32)
        fit = estimator.fit(relative)
        state = smoother.update(fit, stamp_s=100.0 + 0.1 * frame)
        assert state.calibrated and not state.stale
        if frame == 15:
            corrupted_fit = fit
            assert not state.accepted and state.reason
        probe_depth = 1.0 / (state.a * probe + state.b)
        assert probe_depth == pytest.approx(3.0, rel=0.03)
        if previous is not None:
            assert abs(probe_depth / previous - 1.0) < 0.01  # bounded frame-to-frame change
        previous = probe_depth
    # The corrupted frame's own fit was garbage, so the smoother did work here.
    assert not corrupted_fit.ok or corrupted_fit.inlier_ratio < 0.3 or (
        abs(1.0 / (corrupted_fit.a * probe + corrupted_fit.b) - 3.0) > 0.3)


def test_smoother_time_constant_staleness_and_reset():
    smoother = ScaleSmoother(time_constant_s=1.0, stale_after_s=2.0)
    first = smoother.update(ScaleFit(1.0, 0.0, False, 'no anchors'), 0.0)
    assert not first.calibrated and math.isnan(first.a)
    good = ScaleFit(1.0, 0.1, True, '', 100, 100, 1.0, 0.01)
    assert smoother.update(good, 0.0).a == 1.0  # the first good fit is taken as it is
    target = ScaleFit(2.0, 0.1, True, '', 100, 100, 1.0, 0.01)
    for step in range(1, 11):
        state = smoother.update(target, 0.1 * step)
    assert state.a == pytest.approx(2.0 - math.exp(-1.0), rel=1e-9)
    poor = ScaleFit(9.0, 0.0, True, '', 10, 100, 0.1, 0.01)
    held = smoother.update(poor, 2.0)
    assert not held.accepted and held.a == state.a and held.calibrated
    stale = smoother.update(poor, 3.5)
    assert stale.stale and not stale.calibrated and stale.a == state.a
    restarted = smoother.update(target, 0.0)  # stamps went backwards: a bag restarted
    assert restarted.a == 2.0 and restarted.calibrated


# --- calibrate_scale tool ---------------------------------------------------------------------

def test_calibrate_scale_fits_a_and_b_from_known_distances(tmp_path, capsys):
    rows = ['relative,region,distance']
    for index, distance in enumerate((0.8, 1.5, 3.0, 6.0)):
        plane = np.full((40, 50), ALPHA / distance + BETA, dtype=np.float32)
        plane[0, :] = np.nan  # holes are ignored by the region median
        np.save(tmp_path / f'frame{index}.npy', plane)
        rows.append(f'frame{index}.npy,0 0 20 10,{distance}')
    rows.append(f'{ALPHA / 2.0 + BETA},,2.0')
    rows.append(f'{ALPHA / 4.0 + BETA},,2.0')  # a wrong measurement: the fit must reject it
    (tmp_path / 'samples.csv').write_text('\n'.join(rows) + '\n')
    assert calibrate_scale.main([str(tmp_path / 'samples.csv')]) == 0
    text = capsys.readouterr().out
    snippet = yaml.safe_load(text)['scale']
    assert snippet['mode'] == 'fixed'
    assert snippet['a'] == pytest.approx(1.0 / ALPHA, rel=1e-3)
    assert snippet['b'] == pytest.approx(-BETA / ALPHA, rel=1e-3)
    assert '5 inliers' in text and 'depth error median' in text


def test_calibrate_scale_reports_bad_rows(tmp_path, capsys):
    (tmp_path / 'bad.yaml').write_text(yaml.safe_dump([
        {'relative': 30.0, 'distance': 1.0},
        {'relative': 'missing.npy', 'region': '1 2', 'distance': 2.0}]))
    with pytest.raises(SystemExit) as exit_info:
        calibrate_scale.main([str(tmp_path / 'bad.yaml')])
    assert exit_info.value.code == 1
    assert 'sample 2' in capsys.readouterr().err


def test_smoother_restarts_when_time_goes_backwards():
    """A bag looping back: the last good scale's age is unknown, so it is not kept."""
    from midas_ros.scale import ScaleFit, ScaleSmoother, failed_fit
    smoother = ScaleSmoother(time_constant_s=1.0)
    good = ScaleFit(2.0, 0.1, True, inlier_ratio=1.0, residual=0.0)
    assert smoother.update(good, 100.0).calibrated
    state = smoother.update(failed_fit('no anchors'), 10.0)   # back in time, and a bad fit
    assert not state.calibrated and math.isnan(state.a)


def test_anchor_age_is_data_time_whatever_the_replay_rate():
    """Public report c: an anchor 0.15 s before the image is fresh (timeout 0.5 s) whether a
    bag plays at rate 0.25 (0.6 s on the wall between them) or 16, and one 1.6 s before is
    stale at any rate; only unstamped data falls back to the node clock since arrival."""
    from midas_ros.scale import anchor_age_s
    image = 100 * NS_PER_S
    for rate in (0.25, 1.0, 16.0):
        received = 5 * NS_PER_S
        now = received + int(0.15 / rate * NS_PER_S)      # arrival clock: wall / rate
        assert anchor_age_s(image - int(0.15 * NS_PER_S), image, received, now) \
            == pytest.approx(0.15)
        assert anchor_age_s(image - int(1.6 * NS_PER_S), image, received, now) \
            == pytest.approx(1.6)
    assert anchor_age_s(image + int(0.2 * NS_PER_S), image, 0, 0) == pytest.approx(0.2)
    assert anchor_age_s(0, image, 5 * NS_PER_S, 6 * NS_PER_S) == pytest.approx(1.0)
    assert anchor_age_s(image, 0, 5 * NS_PER_S, 5 * NS_PER_S) == 0.0


NS_PER_S = 1_000_000_000
