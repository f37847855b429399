"""``python -m midas_ros evaluate_metric``: how metric is the depth a user gets, per scale mode.

Runs a MiDaS model on image + ground-truth depth pairs, turns its relative inverse depth into
metres with each scale mode exactly as depth_node does (``midas_ros.scale``), and reports the
standard errors against the truth: AbsRel = mean(|d - d*| / d*), RMSE (m) and
delta<1.25 = share of pixels with max(d / d*, d* / d) < 1.25, averaged over frames, on pixels
where the truth lies in [--min-depth, --max-depth] and the mode produced a depth (coverage).

Modes:

* ``fixed``: a and b fitted robustly on the first frame's true depth (what ``calibrate_scale``
  does with measured spots), then held for every frame;
* ``ground_plane``: per frame from the floor, given the camera height / pitch / roll;
* ``sparse``: per frame from ``--anchors`` true depths at random pixels (a lidar or ToF stand-in),
  of which ``--anchor-outliers`` are corrupted;
* ``oracle`` (always): per-frame least squares of inverse depth on every valid pixel, the best
  any affine scale can do: an upper bound that separates the model's error from the scale's.

Per-frame fits use the node's acceptance rule (``ScaleSmoother`` without smoothing, as the pairs
need not be a sequence): a poor fit keeps the last good scale; frames before any good fit are
counted as failed and left out of the averages.

Pairs: ``--pairs DIR`` holds ``<stem>.png`` (or .jpg) images with ``<stem>_depth.npy`` (float
metres) or ``<stem>_depth.png`` (16-bit millimetres, 0 = no reading), and a ``camera.yaml``::

    fx: 525.0        # or hfov_deg: 70.0 (principal point at the centre)
    fy: 525.0
    cx: 319.5
    cy: 239.5
    camera_height: 0.8       # ground_plane: optical centre above the floor (m)
    camera_pitch_deg: 8.0    # positive looks down
    camera_roll_deg: 0.0

``--synthetic N`` uses N views of the built-in scene instead (camera height and pitch known).

Example::

    python -m midas_ros evaluate_metric --model midas_v21_small_256 \\
        --weights midas_v21_small_256.pt --synthetic 20
"""
import argparse
import math
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import List

import cv2
import numpy as np

from midas_ros.geometry import Intrinsics
from midas_ros.scale import (ScaleSmoother, create_estimator, fit_inverse_depth,
                             inverse_depth_to_metric)

MODES = ('fixed', 'ground_plane', 'sparse')
ORACLE = 'oracle'
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg')
CALIBRATION_SAMPLES = 2000   # true-depth pixels the fixed mode's one-time fit uses


class EvaluationError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


@dataclass(frozen=True)
class CameraSetup:
    """What the geometric modes know about the camera: intrinsics and its mount over the floor."""

    intrinsics: Intrinsics
    height: float
    pitch_deg: float
    roll_deg: float = 0.0


@dataclass
class Pair:
    name: str
    rgb: np.ndarray      # HxWx3 uint8
    depth: np.ndarray    # HxW float32 metres, NaN = no truth


@dataclass(frozen=True)
class DepthMetrics:
    abs_rel: float
    rmse: float
    delta1: float
    coverage: float      # share of the valid true pixels that received a depth


@dataclass
class ModeReport:
    mode: str
    metrics: List[DepthMetrics] = field(default_factory=list)
    failed: int = 0      # frames without any usable scale yet
    rejected: int = 0    # frames whose own fit was rejected (the last good scale was used)
    reasons: Counter = field(default_factory=Counter)   # rejection reason -> frames

    def main_rejection(self):
        """The most frequent reason a fit was rejected ('' when none was)."""
        return self.reasons.most_common(1)[0][0] if self.reasons else ''

    def mean(self):
        """Frame-averaged metrics, or None when no frame was scored."""
        if not self.metrics:
            return None
        return DepthMetrics(*np.mean([[m.abs_rel, m.rmse, m.delta1, m.coverage]
                                      for m in self.metrics], axis=0))


def valid_truth(truth, min_depth, max_depth):
    """Pixels with a usable true depth."""
    with np.errstate(invalid='ignore'):
        return np.isfinite(truth) & (truth >= min_depth) & (truth <= max_depth)


def depth_metrics(predicted, truth, valid):
    """AbsRel, RMSE, delta<1.25 and coverage of ``predicted`` on the ``valid`` true pixels.

    Pixels where ``predicted`` is not a positive finite depth are not scored; ``coverage`` says
    how many of the valid ones were. Raises ValueError when nothing can be scored.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if predicted.shape != truth.shape or valid.shape != truth.shape:
        raise ValueError(f'shapes differ: predicted {predicted.shape}, truth {truth.shape}, '
                         f'valid {valid.shape}')
    total = int(np.count_nonzero(valid))
    if total == 0:
        raise ValueError('no valid ground-truth pixel to score')
    with np.errstate(invalid='ignore'):
        scored = valid & np.isfinite(predicted) & (predicted > 0)
    d, g = predicted[scored], truth[scored]
    if len(d) == 0:
        return DepthMetrics(math.nan, math.nan, math.nan, 0.0)
    ratio = np.maximum(d / g, g / d)
    return DepthMetrics(float(np.mean(np.abs(d - g) / g)), float(np.sqrt(np.mean((d - g) ** 2))),
                        float(np.mean(ratio < 1.25)), len(d) / total)


def oracle_scale(relative, truth, valid):
    """(a, b) of the least-squares fit 1 / truth = a * relative + b over the valid pixels."""
    r = relative[valid].astype(np.float64)
    design = np.stack([r, np.ones_like(r)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, 1.0 / truth[valid].astype(np.float64), rcond=None)
    return float(a), float(b)


def fixed_calibration(relative, truth, valid, rng):
    """The fixed mode's (a, b): a robust fit on up to CALIBRATION_SAMPLES true pixels of the
    first frame, as ``calibrate_scale`` fits measured spots. None when it fails."""
    pixels = np.flatnonzero(valid)
    if len(pixels) > CALIBRATION_SAMPLES:
        pixels = rng.choice(pixels, CALIBRATION_SAMPLES, replace=False)
    fit = fit_inverse_depth(relative.reshape(-1)[pixels], 1.0 / truth.reshape(-1)[pixels])
    return (fit.a, fit.b) if fit.ok else None


def sample_anchors(truth, valid, count, outlier_ratio, rng):
    """``(u, v, z)`` of ``count`` random true pixels; ``outlier_ratio`` of them get their depth
    multiplied by a random factor in [0.3, 0.7] or [1.5, 3] (a wrong return, a reflection)."""
    pixels = np.flatnonzero(valid)
    pixels = rng.choice(pixels, min(count, len(pixels)), replace=False)
    v, u = np.divmod(pixels, truth.shape[1])
    z = truth.reshape(-1)[pixels].astype(np.float64)
    outliers = rng.random(len(z)) < outlier_ratio
    factors = np.where(rng.random(len(z)) < 0.5, rng.uniform(0.3, 0.7, len(z)),
                       rng.uniform(1.5, 3.0, len(z)))
    z[outliers] *= factors[outliers]
    return u.astype(np.float64), v.astype(np.float64), z


class MetricEvaluator:
    """Scores every requested mode (and the oracle) on a stream of (relative, truth) frames."""

    def __init__(self, camera, modes=MODES, min_depth=0.1, max_depth=20.0, anchors=300,
                 anchor_outliers=0.0, floor_rows=0.35, seed=0, fixed_scale=None):
        unknown = [mode for mode in modes if mode not in MODES]
        if unknown:
            raise ValueError(f"unknown mode(s) {', '.join(unknown)}; valid: {', '.join(MODES)}")
        if not 0.0 <= anchor_outliers < 1.0:
            raise ValueError(f'anchor_outliers must be in [0, 1), got {anchor_outliers}')
        self.camera = camera
        self.min_depth, self.max_depth = min_depth, max_depth
        self.anchors, self.anchor_outliers = anchors, anchor_outliers
        self.rng = np.random.default_rng(seed)
        self.reports = {mode: ModeReport(mode) for mode in (ORACLE,) + tuple(modes)}
        # (a, b) of the fixed mode: given (the node's scale.a, scale.b), else calibrated on
        # the first frame.
        self._fixed_given = fixed_scale
        self._fixed = fixed_scale
        # The node's acceptance rule; no smoothing across pairs that need not be a sequence.
        self._smoothers = {mode: ScaleSmoother(time_constant_s=0.0) for mode in modes
                           if mode != 'fixed'}
        self._estimators = {}
        if 'ground_plane' in modes:
            self._estimators['ground_plane'] = create_estimator(
                'ground_plane', camera.intrinsics, camera_height=camera.height,
                pitch=math.radians(camera.pitch_deg), roll=math.radians(camera.roll_deg),
                floor_rows=floor_rows, max_floor_distance=max_depth)
        if 'sparse' in modes:
            self._estimators['sparse'] = create_estimator('sparse', camera.intrinsics)
        self._frame = 0

    def add(self, relative, truth):
        """Score one frame: ``relative`` network output, ``truth`` metres (HxW, NaN = none)."""
        intrinsics = self.camera.intrinsics
        if relative.shape != truth.shape or truth.shape != (intrinsics.height, intrinsics.width):
            raise ValueError(f'relative {relative.shape} and truth {truth.shape} must both be '
                             f'{intrinsics.height}x{intrinsics.width} (the camera intrinsics)')
        valid = valid_truth(truth, self.min_depth, self.max_depth)
        if not valid.any():
            raise ValueError('frame has no valid ground-truth depth')
        for mode, report in self.reports.items():
            scale = self._scale(mode, report, relative, truth, valid)
            if scale is None:
                report.failed += 1
                continue
            depth = inverse_depth_to_metric(relative, *scale, min_depth=self.min_depth,
                                            max_depth=self.max_depth)
            report.metrics.append(depth_metrics(depth, truth, valid))
        self._frame += 1

    def _scale(self, mode, report, relative, truth, valid):
        """(a, b) to use for this frame in ``mode``, or None when it has none."""
        if mode == ORACLE:
            scale = oracle_scale(relative, truth, valid)
            return scale if all(map(math.isfinite, scale)) else None
        if mode == 'fixed':
            if self._frame == 0 and self._fixed_given is None:
                self._fixed = fixed_calibration(relative, truth, valid, self.rng)
            return self._fixed
        anchors = (sample_anchors(truth, valid, self.anchors, self.anchor_outliers, self.rng)
                   if mode == 'sparse' else None)
        fit = self._estimators[mode].fit(relative, anchors)
        state = self._smoothers[mode].update(fit, stamp_s=float(self._frame))
        if not state.accepted:
            report.rejected += 1
            report.reasons[state.reason] += 1
        return (state.a, state.b) if math.isfinite(state.a) else None


def format_table(reports):
    """Markdown table, one row per mode."""
    lines = ['| scale mode | frames scored | AbsRel | RMSE (m) | delta<1.25 | coverage | '
             'failed / rejected fits |', '|---|---|---|---|---|---|---|']
    for report in reports.values():
        mean = report.mean()
        if mean is None:
            cells = '- | - | - | -'
        else:
            cells = (f'{mean.abs_rel:.3f} | {mean.rmse:.3f} | {mean.delta1:.3f} | '
                     f'{100 * mean.coverage:.1f} %')
        lines.append(f'| {report.mode} | {len(report.metrics)} | {cells} | '
                     f'{report.failed} / {report.rejected} |')
    return '\n'.join(lines)


# ------------------------------------------------------------------------------- inputs


def read_truth(path):
    """True depth in metres (float32, NaN = none) from ``.npy`` metres or 16-bit ``.png`` mm."""
    if path.suffix == '.npy':
        depth = np.load(path).astype(np.float32)
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None or raw.dtype != np.uint16 or raw.ndim != 2:
            raise EvaluationError(f'{path}: expected a single-channel 16-bit PNG in millimetres')
        depth = raw.astype(np.float32) * np.float32(0.001)
        depth[raw == 0] = np.nan
    if depth.ndim != 2:
        raise EvaluationError(f'{path}: depth must be HxW, got shape {depth.shape}')
    return depth


def read_camera(path, width, height):
    """``CameraSetup`` from a camera.yaml (see the module docstring)."""
    import yaml
    try:
        data = yaml.safe_load(path.read_text()) or {}
        if 'fx' in data:
            intrinsics = Intrinsics(width, height, float(data['fx']), float(data['fy']),
                                    float(data['cx']), float(data['cy']))
        else:
            intrinsics = Intrinsics.from_fov(width, height, float(data['hfov_deg']))
        return CameraSetup(intrinsics.validate(), float(data.get('camera_height', math.nan)),
                           float(data.get('camera_pitch_deg', 0.0)),
                           float(data.get('camera_roll_deg', 0.0)))
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as error:
        raise EvaluationError(f'{path}: {type(error).__name__}: {error}') from None


def folder_pairs(folder):
    """(pairs iterator, CameraSetup) of a folder laid out as the module docstring says."""
    folder = Path(folder)
    images = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
                    and not p.stem.endswith('_depth'))
    if not images:
        raise EvaluationError(f'{folder}: no images ({", ".join(IMAGE_SUFFIXES)})')
    first = cv2.imread(str(images[0]), cv2.IMREAD_COLOR)
    if first is None:
        raise EvaluationError(f'{images[0]}: cannot read the image')
    camera = read_camera(folder / 'camera.yaml', first.shape[1], first.shape[0])

    def pairs():
        for image_path in images:
            truth_path = next((p for p in (folder / f'{image_path.stem}_depth.npy',
                                           folder / f'{image_path.stem}_depth.png')
                               if p.exists()), None)
            if truth_path is None:
                raise EvaluationError(f'{image_path}: no {image_path.stem}_depth.npy or .png')
            bgr = cv2.imread(str(image_path), cv2.IMREAD_COLOR)
            if bgr is None:
                raise EvaluationError(f'{image_path}: cannot read the image')
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            yield Pair(image_path.stem, rgb, read_truth(truth_path))
    return pairs(), camera


def synthetic_pairs(count, width, height):
    """(pairs iterator, CameraSetup): ``count`` views spread around the built-in scene."""
    from midas_ros.synthetic import SceneConfig, SyntheticScene
    scene = SyntheticScene(SceneConfig(width=width, height=height))
    config = scene.config
    camera = CameraSetup(scene.intrinsics, config.camera_height, config.camera_pitch_deg)
    step = max(1, config.loop_frames // count)

    def pairs():
        for index in range(count):
            frame = scene.render(index * step)
            yield Pair(f'synthetic_{index * step:03d}', frame.rgb, frame.depth)
    return pairs(), camera


# ------------------------------------------------------------------------------- CLI


def build_parser():
    from midas_ros.models.registry import list_models
    parser = argparse.ArgumentParser(
        prog='python -m midas_ros evaluate_metric',
        description='Metric depth error (AbsRel, RMSE, delta<1.25) per scale mode.')
    parser.add_argument('--model', default='midas_v21_small_256', choices=list_models(),
                        metavar='NAME', help='MiDaS variant (default: %(default)s)')
    parser.add_argument('--weights', help='checkpoint file (official .pt)')
    parser.add_argument('--weights-dir', help='folder searched for the official checkpoint')
    parser.add_argument('--random-weights', action='store_true',
                        help='random network weights: proves the tool runs, the numbers mean '
                             'nothing')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--pairs', type=Path, help='folder of image + true depth pairs')
    source.add_argument('--synthetic', type=int, metavar='N',
                        help='N views of the built-in synthetic scene')
    parser.add_argument('--width', type=int, default=640, help='--synthetic image width')
    parser.add_argument('--height', type=int, default=480, help='--synthetic image height')
    parser.add_argument('--modes', default=','.join(MODES),
                        help='comma-separated subset of %(default)s (the oracle is always shown)')
    parser.add_argument('--anchors', type=int, default=300, help='sparse: anchors per frame')
    parser.add_argument('--anchor-outliers', type=float, default=0.0,
                        help='sparse: share of anchors with a wrong depth (default 0)')
    parser.add_argument('--floor-rows', type=float, default=0.35,
                        help='ground_plane: bottom share of the rows that may show floor')
    parser.add_argument('--min-depth', type=float, default=0.1)
    parser.add_argument('--max-depth', type=float, default=20.0)
    parser.add_argument('--seed', type=int, default=0, help='anchor and calibration sampling')
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.synthetic is not None and args.synthetic < 1:
        parser.error('--synthetic needs N >= 1')
    modes = tuple(mode.strip() for mode in args.modes.split(',') if mode.strip())
    from midas_ros.inference import DepthEstimator
    from midas_ros.models.weights import WeightsError
    try:
        pairs, camera = (synthetic_pairs(args.synthetic, args.width, args.height)
                         if args.synthetic else folder_pairs(args.pairs))
        if 'ground_plane' in modes and not camera.height > 0:
            raise EvaluationError('ground_plane needs camera_height > 0 in camera.yaml')
        evaluator = MetricEvaluator(camera, modes, args.min_depth, args.max_depth, args.anchors,
                                    args.anchor_outliers, args.floor_rows, args.seed)
        estimator = DepthEstimator(args.model, args.device, pretrained=not args.random_weights,
                                   weights=args.weights, weights_dir=args.weights_dir)
        names = []
        for pair in pairs:
            relative = estimator.predict(pair.rgb, 'rgb')
            try:
                evaluator.add(relative, pair.depth)
            except ValueError as error:
                raise EvaluationError(f'{pair.name}: {error}') from None
            names.append(pair.name)
    except (EvaluationError, ValueError, OSError, WeightsError) as error:
        print(f'evaluate_metric: error: {error}', file=sys.stderr)
        return 1
    source = (f'{len(names)} synthetic frames' if args.synthetic
              else f'{len(names)} pairs from {args.pairs}')
    weights = ('RANDOM weights: these numbers are meaningless, they only show the tool works'
               if args.random_weights else f'weights {args.weights or "(resolved)"}')
    print(f'## Metric depth error, {args.model} ({weights}), {source}')
    print(f'Truth in [{args.min_depth:g}, {args.max_depth:g}] m; sparse: {args.anchors} anchors, '
          f'{100 * args.anchor_outliers:.0f} % outliers; fixed: fitted on frame 1 and held; '
          'oracle: per-frame least squares in inverse depth (upper bound).\n')
    print(format_table(evaluator.reports))
    return 0


if __name__ == '__main__':
    sys.exit(main())
