"""Metric scale recovery: relative inverse depth -> metres, ``depth = 1 / (a * relative + b)``.

MiDaS predicts inverse depth up to an unknown scale and shift that change from frame to frame, so
the true inverse depth is affine in the network output: ``1 / z = a * r + b``. Every mode below
estimates (a, b) and reports how well it did in a :class:`ScaleFit`:

* :class:`FixedScale` - a and b from configuration (``python -m midas_ros calibrate_scale``);
* :class:`UncalibratedScale` - b = 0 and the median pixel put at a nominal depth (not metric);
* :class:`GroundPlaneScale` - the floor's known geometry (camera height, pitch, roll);
* :class:`SparseScale` - metric anchors from another sensor, projected into the image;
* :class:`MetricScale` - a metric network (Depth Anything V2 metric): its own metres.

A metric network's output z_net (metres) enters as inverse metres, ``relative = 1 / z_net``, so
the same model holds with b = 0: ``depth = z_net / a``. For such a network the geometric modes
fit that ONE factor (``scale_only``): a metric checkpoint trained on another camera (focal
length, height) is off by a factor, not by the affine ambiguity of relative depth.

The geometric modes fit the model robustly in inverse-depth space, where it is linear
(:func:`fit_inverse_depth`). :class:`ScaleSmoother` filters (a, b) over time and keeps the last
good fit when a frame's fit is poor. Numpy only: no ROS, no torch.
"""
import math
from dataclasses import dataclass

import numpy as np

from midas_ros.depth_semantics import depth_from_inverse
from midas_ros.geometry import BODY_FROM_OPTICAL, Intrinsics, rotation_from_rpy

# 'auto' is resolved by :func:`resolve_mode` (metric for a metric network, else uncalibrated).
MODES = ('auto', 'metric', 'uncalibrated', 'fixed', 'ground_plane', 'sparse')


def resolve_mode(mode, metric_network):
    """The scale mode to run: ``'auto'`` -> ``'metric'`` for a metric network, else
    ``'uncalibrated'``; ValueError for ``'metric'`` with a relative network or an unknown mode."""
    if mode not in MODES:
        raise ValueError(f"unknown scale mode '{mode}', expected one of {', '.join(MODES)}")
    if mode == 'auto':
        return 'metric' if metric_network else 'uncalibrated'
    if mode == 'metric' and not metric_network:
        raise ValueError("scale.mode 'metric' needs a metric model (e.g. "
                         'depth_anything_v2_metric_hypersim_vits); this one gives relative '
                         'inverse depth: use fixed, ground_plane or sparse for metres')
    return mode


@dataclass(frozen=True)
class ScaleFit:
    """Outcome of one fit. ``residual`` is the median over all samples of the relative
    inverse-depth error |a r + b - 1/z| * z (about the relative depth error for small values);
    ``inlier_ratio`` the share of samples within the inlier threshold."""

    a: float
    b: float
    ok: bool
    reason: str = ''
    inliers: int = 0
    samples: int = 0
    inlier_ratio: float = 0.0
    residual: float = math.nan


def failed_fit(reason, samples=0):
    """A fit that must not be used, with the reason it failed."""
    return ScaleFit(math.nan, math.nan, False, reason, samples=samples)


def inverse_depth_to_metric(relative, a, b, out=None, min_depth=0.1, max_depth=20.0,
                            mask=None):
    """Metric depth ``1 / (a * relative + b)`` as float32, with REP 118's special values
    (:func:`midas_ros.depth_semantics.depth_from_inverse`): +inf beyond ``max_depth`` (which
    includes a * relative + b <= 0), -inf nearer than ``min_depth``, NaN where ``relative`` is
    NaN. ``mask``: a reusable bool scratch buffer of the same shape."""
    if not (math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f'scale must be finite, got a={a}, b={b}')
    relative = np.asarray(relative)
    if out is None:
        out = np.empty(relative.shape, dtype=np.float32)
    np.multiply(relative, a, out=out, casting='same_kind')
    out += b
    return depth_from_inverse(out, min_depth, max_depth, out=out, mask=mask)


def fit_inverse_depth(relative, inverse_depth, inlier_threshold=0.05, iterations=64, rng=None,
                      min_samples=1, min_depth_spread=1.1, scale_only=False):
    """Robust fit of ``inverse_depth = a * relative + b`` from samples (1-D arrays).

    RANSAC on pairs of samples (MSAC score on the relative inverse-depth error), then two rounds
    of least squares on the inliers weighted so that the residual is relative. When the inliers
    span less than ``min_depth_spread`` in depth (far / near) the shift is not observable and a
    scale-only fit (b = 0) is returned instead; so is it for a single sample, and always with
    ``scale_only`` (a metric network's inverse metres: one factor, ``depth = z_net / a``).
    """
    r = np.asarray(relative, dtype=np.float64).ravel()
    w = np.asarray(inverse_depth, dtype=np.float64).ravel()
    keep = np.isfinite(r) & np.isfinite(w) & (w > 0)
    r, w = r[keep], w[keep]
    count = len(r)
    if count < max(min_samples, 1):
        return failed_fit(f'{count} valid samples, need {max(min_samples, 1)}', count)
    rng = np.random.default_rng(0) if rng is None else rng
    with_shift = not scale_only and count >= 2 and w.max() > w.min() * min_depth_spread
    if with_shift:
        a, b = _ransac_line(r, w, inlier_threshold, iterations, rng)
        inliers = _relative_error(a, b, r, w) < inlier_threshold
        # The shift needs inliers at different depths, not just samples.
        with_shift = inliers.any() and w[inliers].max() > w[inliers].min() * min_depth_spread
    if not with_shift:
        a, b = _ransac_scale(r, w, inlier_threshold), 0.0
    if not math.isfinite(a):
        return failed_fit('no consistent scale in the samples', count)
    for _ in range(2):
        inliers = _relative_error(a, b, r, w) < inlier_threshold
        a, b = _weighted_least_squares(r[inliers], w[inliers], with_shift, a, b)
    error = _relative_error(a, b, r, w)
    inliers = int(np.count_nonzero(error < inlier_threshold))
    residual = float(np.median(error))
    if not a > 0.0:
        return ScaleFit(a, b, False, 'fitted scale is not positive (relative input is not '
                        'inverse depth?)', inliers, count, inliers / count, residual)
    reason = '' if with_shift or scale_only else \
        'scale only: samples span too little depth for a shift'
    return ScaleFit(float(a), float(b), True, reason, inliers, count, inliers / count, residual)


def _relative_error(a, b, r, w):
    return np.abs(a * r + b - w) / w


def _ransac_line(r, w, threshold, iterations, rng):
    """Best (a, b) of ``iterations`` two-sample hypotheses, all scored at once."""
    pairs = rng.integers(0, len(r), size=(iterations, 2))
    r1, r2 = r[pairs[:, 0]], r[pairs[:, 1]]
    w1, w2 = w[pairs[:, 0]], w[pairs[:, 1]]
    with np.errstate(divide='ignore', invalid='ignore', over='ignore'):
        a = (w1 - w2) / (r1 - r2)   # equal r in a pair: inf/NaN, filtered below
        b = w1 - a * r1
    usable = np.isfinite(a) & np.isfinite(b) & (a > 0)
    if not usable.any():
        return math.nan, math.nan
    a, b = a[usable], b[usable]
    with np.errstate(over='ignore', invalid='ignore'):   # wild hypotheses score as inf/NaN
        error = np.abs(a[:, None] * r + b[:, None] - w) / w
    cost = np.minimum(error, threshold, out=error)
    cost *= cost
    best = int(np.argmin(cost.sum(axis=1)))
    return float(a[best]), float(b[best])


def _ransac_scale(r, w, threshold):
    """Scale-only hypothesis: every sample's own ratio, the one with most support wins."""
    with np.errstate(divide='ignore', invalid='ignore'):
        ratios = w / r
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    if len(ratios) == 0:
        return math.nan
    candidates = ratios if len(ratios) <= 256 else np.quantile(ratios, np.linspace(0, 1, 256))
    error = np.abs(candidates[:, None] * r - w) / w
    cost = np.minimum(error, threshold, out=error)
    return float(candidates[np.argmin((cost * cost).sum(axis=1))])


def _weighted_least_squares(r, w, with_shift, a, b):
    """Minimise sum(((a r + b - w) / w)^2); keeps (a, b) when the inliers cannot support it."""
    if len(r) == 0:
        return a, b
    columns = (r / w, 1.0 / w) if with_shift else (r / w,)
    design = np.stack(columns, axis=1)
    if len(r) < design.shape[1]:
        return a, b
    solution = np.linalg.lstsq(design, np.ones_like(r), rcond=None)[0]
    return (float(solution[0]), float(solution[1])) if with_shift else (float(solution[0]), 0.0)


class ScaleEstimator:
    """One interface for every mode: ``fit(relative, anchors=None) -> ScaleFit``.

    ``relative`` is the network's relative inverse depth at the resolution of the intrinsics the
    estimator was built with; ``anchors`` is only read by :class:`SparseScale`, ``floor`` (a
    :class:`FloorPlane` for this frame) only by :class:`GroundPlaneScale`.
    """

    mode = ''
    metric = True  # whether a good fit gives metres (false only for the uncalibrated mode)
    scale_only = False  # fits one factor (a metric network), not the affine (a, b)

    def fit(self, relative, anchors=None, floor=None):
        raise NotImplementedError


class FixedScale(ScaleEstimator):
    """a and b from configuration, e.g. fitted once with ``calibrate_scale``."""

    mode = 'fixed'

    def __init__(self, a, b):
        if not (math.isfinite(a) and math.isfinite(b)) or a <= 0:
            raise ValueError(f'fixed scale needs a finite a > 0 and a finite b, got {a}, {b}')
        self._fit = ScaleFit(float(a), float(b), True, 'fixed', inlier_ratio=1.0, residual=0.0)

    def fit(self, relative, anchors=None, floor=None):
        return self._fit


class MetricScale(ScaleEstimator):
    """A metric network's own metres: a = 1, b = 0 on its inverse metres (``depth = z_net``).

    Right when the robot's camera and scenes resemble the checkpoint's training data (its
    intrinsics, its depth range); otherwise correct it with ``ground_plane`` or ``sparse``,
    which then fit one factor to the network's metres.
    """

    mode = 'metric'
    scale_only = True

    def __init__(self):
        self._fit = ScaleFit(1.0, 0.0, True, "the network's metres", inlier_ratio=1.0,
                             residual=0.0)

    def fit(self, relative, anchors=None, floor=None):
        return self._fit


class UncalibratedScale(ScaleEstimator):
    """Not metric: b = 0 and a chosen so that the median valid pixel is ``median_depth`` metres.

    What a node does when nothing is configured: outputs look plausible for a room-sized scene,
    but distances are only proportional to the truth within a frame (warn the user once).
    """

    mode = 'uncalibrated'
    metric = False

    def __init__(self, median_depth=3.0, stride=4):
        if not median_depth > 0:
            raise ValueError(f'median_depth must be > 0, got {median_depth}')
        self.median_depth = float(median_depth)
        self.stride = int(stride)

    def fit(self, relative, anchors=None, floor=None):
        sample = np.asarray(relative)[::self.stride, ::self.stride]
        sample = sample[np.isfinite(sample) & (sample > 0)]
        if len(sample) == 0:
            return failed_fit('no positive finite relative depth in the frame')
        a = 1.0 / (self.median_depth * float(np.median(sample)))
        return ScaleFit(a, 0.0, True, 'uncalibrated', len(sample), len(sample), 1.0, 0.0)


@dataclass(frozen=True)
class FloorPlane:
    """The floor seen from the camera: the points p of the optical frame with ``down . p =
    height``. ``down`` is the floor's downward unit normal in optical coordinates (x right,
    y down, z forward); ``height`` the optical centre's height above the floor (m)."""

    down: tuple
    height: float

    @classmethod
    def from_height_pitch_roll(cls, height, pitch, roll):
        """A camera ``height`` m above the floor, its body (REP 103: x forward, y left, z up)
        rotated R = Ry(pitch) @ Rx(roll) from level (rad): positive pitch looks down, positive
        roll lowers the right side."""
        base_from_optical = rotation_from_rpy(roll, pitch, 0.0) @ BODY_FROM_OPTICAL
        return cls(tuple(float(c) for c in -base_from_optical[2]), float(height))

    @classmethod
    def from_transform(cls, ground_from_optical):
        """From the 4x4 transform of the optical frame in a frame whose z = 0 plane is the floor
        with z up (e.g. base_footprint, REP 105): the floor's normal is that frame's -z axis,
        the height is the transform's z translation, wherever the camera is in x and y."""
        transform = np.asarray(ground_from_optical, dtype=np.float64)
        if transform.shape != (4, 4) or not np.isfinite(transform).all():
            raise ValueError(f'need a finite 4x4 transform, got {transform.shape}')
        return cls(tuple(float(c) for c in -transform[2, :3]), float(transform[2, 3]))

    def pitch_roll(self):
        """(pitch, roll) in radians of the camera body relative to level, the angles of
        :meth:`from_height_pitch_roll` (yaw does not change the floor)."""
        up = BODY_FROM_OPTICAL @ -np.asarray(self.down)   # level up axis in body coordinates
        return math.asin(max(-1.0, min(1.0, -up[0]))), math.atan2(up[1], up[2])

    def describe(self):
        pitch, roll = self.pitch_roll()
        return (f'height {self.height:.3f} m, pitch {math.degrees(pitch):.2f} deg, '
                f'roll {math.degrees(roll):.2f} deg')


class GroundPlaneScale(ScaleEstimator):
    """Scale from the floor: where the image shows floor, its metric depth is known.

    The camera is ``camera_height`` metres above a flat floor. ``pitch`` and ``roll`` (radians)
    are the rotation of the camera body (REP 103: x forward, y left, z up) relative to a level
    base, applied as R = Ry(pitch) @ Rx(roll): positive pitch looks down, positive roll lowers
    the right side (clockwise as seen from behind). Yaw does not matter for a flat floor.
    A frame can bring its own :class:`FloorPlane` (``fit(relative, floor=...)``, e.g. from TF
    for a moving camera); the constructor's geometry is used otherwise.

    A pixel with optical ray d = ((u - cx)/fx, (v - cy)/fy, 1) sees the floor at depth
    z = h / (n . d), n = the floor's downward normal in the optical frame, when n . d > 0 (below
    the horizon). So 1 / z_floor = (n . d) / h is known per pixel, and 1 / z = a r + b is linear
    in (a, b): a robust line fit on the floor pixels, where objects standing on the floor are the
    outliers. The floor region is the bottom ``floor_rows`` fraction of the rows, or a boolean
    ``floor_mask``; pixels at or above the horizon, or whose floor point is farther than
    ``max_floor_distance`` (grazing rays, inaccurate), are left out. At most ``max_samples``
    pixels, on a regular grid, are used per frame.
    """

    mode = 'ground_plane'
    # Candidate pixels per sample: a per-frame floor needs spare candidates for the part of
    # the region that a tilted camera sees above the horizon.
    _CANDIDATES_PER_SAMPLE = 4

    def __init__(self, intrinsics, camera_height, pitch=0.0, roll=0.0, floor_rows=0.35,
                 floor_mask=None, max_floor_distance=15.0, max_samples=2000,
                 inlier_threshold=0.05, iterations=64, min_floor_pixels=50, seed=0,
                 scale_only=False):
        intrinsics.validate()
        self.scale_only = bool(scale_only)
        if not max_floor_distance > 0:
            raise ValueError(f'max_floor_distance must be > 0, got {max_floor_distance}')
        self.intrinsics = intrinsics
        self.max_floor_distance = float(max_floor_distance)
        self.max_samples = int(max_samples)
        self.min_floor_pixels = int(min_floor_pixels)
        self._set_candidates(floor_rows, floor_mask)
        self.floor = FloorPlane.from_height_pitch_roll(camera_height, pitch, roll)
        self._pixels, self._inverse_floor = self._samples(self.floor)
        self._frame_floor = None    # (FloorPlane, its samples) of the last frame's own floor
        self.description = self.floor.describe()
        self.inlier_threshold = inlier_threshold
        self.iterations = iterations
        self._rng = np.random.default_rng(seed)

    @classmethod
    def from_transform(cls, intrinsics, base_from_optical, **options):
        """From a static 4x4 transform of the camera's optical frame in a base frame whose origin
        lies on the floor with z up (e.g. base_footprint): height = its z translation."""
        floor = FloorPlane.from_transform(base_from_optical)
        pitch, roll = floor.pitch_roll()
        return cls(intrinsics, floor.height, pitch, roll, **options)

    def _set_candidates(self, floor_rows, floor_mask):
        """Pixels of the floor region on a grid, with the x and y of their optical rays."""
        intrinsics = self.intrinsics
        shape = (intrinsics.height, intrinsics.width)
        if floor_mask is None:
            if not 0.0 < floor_rows <= 1.0:
                raise ValueError(f'floor_rows must be in (0, 1], got {floor_rows}')
            region = np.zeros(shape, dtype=bool)
            region[int(round(intrinsics.height * (1.0 - floor_rows))):] = True
        else:
            region = np.asarray(floor_mask, dtype=bool)
            if region.shape != shape:
                raise ValueError(f'floor_mask is {region.shape}, the image is {shape}')
        pixels = np.flatnonzero(region)
        self._candidate_step = max(1, len(pixels) // (self._CANDIDATES_PER_SAMPLE
                                                      * max(1, self.max_samples)))
        self._candidates = pixels[::self._candidate_step]
        rows, columns = np.divmod(self._candidates, intrinsics.width)
        self._ray_x = (columns - intrinsics.cx) / intrinsics.fx
        self._ray_y = (rows - intrinsics.cy) / intrinsics.fy

    def _samples(self, floor):
        """(flat pixel indices, true inverse depth there) of the candidates that see ``floor``;
        ValueError when too few do."""
        height = floor.height
        if not (math.isfinite(height) and height > 0):
            raise ValueError(f'ground_plane: camera height must be > 0 m, got {height}')
        down = floor.down
        inverse_floor = (down[0] * self._ray_x + down[1] * self._ray_y + down[2]) / height
        usable = inverse_floor >= 1.0 / self.max_floor_distance
        seen = int(np.count_nonzero(usable)) * self._candidate_step   # about, in pixels
        if seen < self.min_floor_pixels:
            raise ValueError(
                f'ground_plane: only {seen} pixels of the floor region see the floor '
                f'within {self.max_floor_distance} m ({self._horizon_text(down)}); check the '
                'pitch sign (positive looks down), the camera height and the floor region')
        pixels, inverse_floor = self._candidates[usable], inverse_floor[usable]
        step = max(1, math.ceil(len(pixels) / self.max_samples))
        return pixels[::step], inverse_floor[::step]

    def _horizon_text(self, down):
        intrinsics = self.intrinsics
        if abs(down[1]) < 1e-9:
            return 'horizon vertical in the image'
        # Row where n . d = 0 in the centre column.
        row = intrinsics.cy - intrinsics.fy * (down[0] * (intrinsics.width / 2 - intrinsics.cx)
                                               / intrinsics.fx + down[2]) / down[1]
        if down[1] < 0:
            return f'the camera is upside down, horizon at row {row:.0f}'
        if row >= intrinsics.height:
            return f'horizon at row {row:.0f}, below the image'
        return f'horizon at row {row:.0f} of {intrinsics.height}'

    @property
    def floor_pixels(self):
        """Flat indices of the pixels sampled for the fit (for visualisation and tests)."""
        return self._pixels

    def fit(self, relative, anchors=None, floor=None):
        """``floor``: this frame's :class:`FloorPlane` (e.g. from TF); None: the constructor's.
        A floor that too few pixels see gives a failed fit with the reason."""
        relative = np.asarray(relative)
        expected = (self.intrinsics.height, self.intrinsics.width)
        if relative.shape != expected:
            return failed_fit(f'relative depth is {relative.shape}, the floor model is for '
                              f'{expected}')
        pixels, inverse_floor = self._pixels, self._inverse_floor
        if floor is not None and floor != self.floor:
            # A static TF gives the same floor every frame: its samples are kept.
            if self._frame_floor is None or self._frame_floor[0] != floor:
                try:
                    self._frame_floor = (floor, self._samples(floor))
                except ValueError as error:
                    return failed_fit(str(error))
            pixels, inverse_floor = self._frame_floor[1]
        return fit_inverse_depth(relative.reshape(-1)[pixels], inverse_floor,
                                 self.inlier_threshold, self.iterations, self._rng,
                                 min_samples=10, scale_only=self.scale_only)


def anchor_age_s(anchor_stamp_ns, image_stamp_ns, received_ns, now_ns):
    """How far apart in time an anchor measurement and an image are (s, >= 0), in the data's
    time: the difference of their stamps, so that a bag played at any rate (or with
    ``use_sim_time``) keeps the same anchors as the live run. An anchor or image without a
    stamp (0) falls back to the time since the anchor arrived on the node's clock (``received_ns``
    and ``now_ns``, ROS time). All arguments are integer nanoseconds."""
    if anchor_stamp_ns and image_stamp_ns:
        return abs(image_stamp_ns - anchor_stamp_ns) / 1e9
    return max(0, now_ns - received_ns) / 1e9


class SparseScale(ScaleEstimator):
    """Scale from metric anchors: pixels (u, v) whose depth z another sensor measured.

    ``anchors`` is ``(u, v, z)`` or the ``(u, v, z, valid)`` that
    :func:`midas_ros.geometry.project_points` returns for lidar/ToF/range points moved into the
    camera's optical frame. Anchors behind the camera, non-finite or outside the image are
    dropped; the relative depth at the nearest pixel of each remaining anchor is fitted robustly.
    """

    mode = 'sparse'

    def __init__(self, intrinsics, min_anchors=1, inlier_threshold=0.05, iterations=64, seed=0,
                 scale_only=False):
        intrinsics.validate()
        self.scale_only = bool(scale_only)
        self.intrinsics = intrinsics
        self.min_anchors = max(1, int(min_anchors))
        self.inlier_threshold = inlier_threshold
        self.iterations = iterations
        self._rng = np.random.default_rng(seed)

    def fit(self, relative, anchors=None, floor=None):
        relative = np.asarray(relative)
        height, width = self.intrinsics.height, self.intrinsics.width
        if relative.shape != (height, width):
            return failed_fit(f'relative depth is {relative.shape}, anchors are for '
                              f'{(height, width)}')
        if anchors is None or len(anchors[0]) == 0:
            return failed_fit('no anchors received')
        u, v, z = (np.asarray(values, dtype=np.float64).ravel() for values in anchors[:3])
        given = len(u)
        valid = np.isfinite(u) & np.isfinite(v) & np.isfinite(z) & (z > 0)
        if len(anchors) > 3:
            valid &= np.asarray(anchors[3], dtype=bool).ravel()
        if not valid.any():
            return failed_fit(f'all {given} anchors are invalid (NaN, inf or behind the camera)')
        column = np.rint(u[valid]).astype(np.int64)
        row = np.rint(v[valid]).astype(np.int64)
        inside = (column >= 0) & (column < width) & (row >= 0) & (row < height)
        if not inside.any():
            return failed_fit(f'none of {given} anchors falls inside the {width}x{height} image')
        r = relative[row[inside], column[inside]]
        fit = fit_inverse_depth(r, 1.0 / z[valid][inside], self.inlier_threshold,
                                self.iterations, self._rng, min_samples=self.min_anchors,
                                scale_only=self.scale_only)
        return fit


def create_estimator(mode, intrinsics=None, **options):
    """The estimator of a mode name (see ``MODES``; 'auto' resolved first by
    :func:`resolve_mode`) with its options, e.g.
    ``create_estimator('ground_plane', intrinsics, camera_height=1.2, pitch=0.2)``."""
    if mode == 'metric':
        return MetricScale(**options)
    if mode == 'fixed':
        return FixedScale(**options)
    if mode == 'uncalibrated':
        return UncalibratedScale(**options)
    if mode not in MODES or mode == 'auto':
        raise ValueError(f"unknown scale mode '{mode}', expected one of {', '.join(MODES[1:])}")
    if not isinstance(intrinsics, Intrinsics):
        raise ValueError(f'scale mode {mode} needs the camera intrinsics')
    return (GroundPlaneScale if mode == 'ground_plane' else SparseScale)(intrinsics, **options)


@dataclass(frozen=True)
class ScaleState:
    """The scale to use now. ``calibrated``: a good fit has been accepted and is not stale;
    ``stale``: the last good fit is older than the smoother's ``stale_after_s``; ``accepted``:
    this frame's fit was used; ``reason``: why it was not (empty when it was)."""

    a: float
    b: float
    calibrated: bool
    stale: bool
    accepted: bool
    reason: str
    fit: ScaleFit


class ScaleSmoother:
    """Exponential smoothing of (a, b) over time, with rejection of poor fits.

    Inverse depth is linear in (a, b), so smoothing the two numbers smooths the predicted inverse
    depth of every pixel alike. A fit with ``ok`` false, an inlier ratio below
    ``min_inlier_ratio`` or a residual above ``max_residual`` is rejected and the last good scale
    is kept. The weight of a new fit is 1 - exp(-dt / time_constant_s) with dt from the stamps
    (0: no smoothing); a stamp that goes backwards (a bag restarting) resets the filter.
    Before the first good fit ``a`` and ``b`` are NaN: use an uncalibrated scale meanwhile.
    """

    def __init__(self, time_constant_s=1.0, min_inlier_ratio=0.3, max_residual=0.1,
                 stale_after_s=5.0):
        if time_constant_s < 0 or stale_after_s <= 0:
            raise ValueError('time_constant_s must be >= 0 and stale_after_s > 0')
        self.time_constant_s = float(time_constant_s)
        self.min_inlier_ratio = float(min_inlier_ratio)
        self.max_residual = float(max_residual)
        self.stale_after_s = float(stale_after_s)
        self.reset()

    def reset(self):
        self._a = self._b = math.nan
        self._stamp = None
        self._last_good_stamp = None

    def update(self, fit, stamp_s):
        """Fold in this frame's fit (stamp in seconds) and return the scale to use."""
        if self._stamp is not None and stamp_s < self._stamp:
            self.reset()    # time went backwards (a bag looping): the old scale's age is unknown
        reason = self._rejection(fit)
        if not reason:
            dt = None if self._stamp is None else stamp_s - self._stamp
            if dt is None or dt < 0 or self.time_constant_s == 0:
                self._a, self._b = fit.a, fit.b
            else:
                weight = 1.0 - math.exp(-dt / self.time_constant_s)
                self._a += weight * (fit.a - self._a)
                self._b += weight * (fit.b - self._b)
            self._stamp = self._last_good_stamp = stamp_s
        has_scale = self._last_good_stamp is not None
        stale = has_scale and stamp_s - self._last_good_stamp > self.stale_after_s
        return ScaleState(self._a, self._b, has_scale and not stale, stale, not reason, reason,
                          fit)

    def _rejection(self, fit):
        if not fit.ok:
            return fit.reason or 'fit failed'
        if fit.inlier_ratio < self.min_inlier_ratio:
            return f'inlier ratio {fit.inlier_ratio:.2f} < {self.min_inlier_ratio:.2f}'
        if not fit.residual <= self.max_residual:
            return f'residual {fit.residual:.3f} > {self.max_residual:.3f}'
        return ''
