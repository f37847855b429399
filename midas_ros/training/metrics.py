"""Depth metrics of a relative prediction after per-frame scale-and-shift alignment.

The standard protocol for relative depth (Ranftl et al. 2020, section 6): per frame, the
prediction r is aligned in inverse depth to the truth by least squares over the valid pixels,
1 / d* ~ a r + b (``evaluate_metric.oracle_scale``), the aligned inverse depth is clamped to
[1 / max_depth, 1 / min_depth] and inverted, and the usual errors are computed against the
truth (``evaluate_metric.depth_metrics``): AbsRel = mean |d - d*| / d*, RMSE (m),
delta1 = share of pixels with max(d / d*, d* / d) < 1.25. Frames are averaged with equal weight.
"""
import math

import numpy as np

from midas_ros.tools.evaluate_metric import depth_metrics, oracle_scale, valid_truth

METRIC_NAMES = ('abs_rel', 'rmse', 'delta1')


def aligned_depth(relative, truth, valid, min_depth, max_depth):
    """Metres from ``relative`` (HxW) aligned to ``truth`` on ``valid``; None if the fit fails."""
    a, b = oracle_scale(relative, truth, valid)
    if not (math.isfinite(a) and math.isfinite(b)):
        return None
    inverse = np.clip(a * relative.astype(np.float64) + b, 1.0 / max_depth, 1.0 / min_depth)
    return 1.0 / inverse


def frame_metrics(relative, truth, min_depth=0.1, max_depth=20.0):
    """(abs_rel, rmse, delta1) of one frame after alignment, or None without enough truth.

    ``relative``: HxW prediction (relative inverse depth); ``truth``: HxW metres, NaN = none.
    """
    valid = valid_truth(truth, min_depth, max_depth)
    if np.count_nonzero(valid) < 2:
        return None
    depth = aligned_depth(relative, truth, valid, min_depth, max_depth)
    if depth is None:
        return None
    scored = depth_metrics(depth, truth, valid)
    return scored.abs_rel, scored.rmse, scored.delta1


class MetricAverager:
    """Frame-averaged metrics; ``add`` one frame's tuple (None: frame counted as unscored)."""

    def __init__(self):
        self.values = []
        self.unscored = 0

    def add(self, metrics):
        if metrics is None:
            self.unscored += 1
        else:
            self.values.append(metrics)

    def result(self):
        """``{'abs_rel', 'rmse', 'delta1', 'frames', 'unscored'}``; NaN metrics if no frame."""
        means = (np.mean(self.values, axis=0) if self.values
                 else [math.nan] * len(METRIC_NAMES))
        result = {name: float(value) for name, value in zip(METRIC_NAMES, means)}
        result.update(frames=len(self.values), unscored=self.unscored)
        return result


def format_metrics(metrics):
    """One line: AbsRel 0.123  RMSE 0.456 m  delta1 0.789 (N frames)."""
    return (f"AbsRel {metrics['abs_rel']:.4f}  RMSE {metrics['rmse']:.3f} m  "
            f"delta1 {metrics['delta1']:.3f} ({metrics['frames']} frames)")
