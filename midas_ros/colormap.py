"""Colourised depth for humans: float depth (or inverse depth) -> bgr8 through a Turbo table.

Turbo (Mikhailov, Google 2019) is a perceptually smoothed rainbow: it keeps the contrast of a
jet-like map without jet's false edges. The table is taken once from OpenCV's own Turbo
implementation (a dependency of the core already), with one extra black entry for "no data", so
every frame is a few vectorised passes and one table gather into a reusable buffer.
"""
import functools

import cv2
import numpy as np


@functools.lru_cache(maxsize=1)
def turbo_lut_bgr():
    """(257, 3) uint8 BGR table: 0..255 = Turbo from blue (low) to dark red (high), 256 = black."""
    levels = np.arange(256, dtype=np.uint8)[:, None]
    table = cv2.applyColorMap(levels, cv2.COLORMAP_TURBO)[:, 0, :]
    lut = np.vstack([table, np.zeros((1, 3), dtype=np.uint8)])
    lut.setflags(write=False)
    return lut


NO_DATA_INDEX = 256


def robust_range(values, percentiles=(2.0, 98.0), stride=4):
    """(low, high) percentiles of the finite values on a strided subsample; None if there are
    none. The subsample keeps it well under a millisecond at 640x480."""
    sample = np.asarray(values)[::stride, ::stride]
    sample = sample[np.isfinite(sample)]
    if len(sample) == 0:
        return None
    low, high = np.percentile(sample, percentiles)
    if not high > low:
        high = low + max(abs(low) * 1e-3, 1e-6)
    return float(low), float(high)


class DepthColorizer:
    """Colourise float images into bgr8 with Turbo; NaN becomes black, +-inf the end colours
    (REP 118: +inf is 'beyond range', -inf 'too close').

    ``value_range=(low, high)`` fixes the mapped range; ``None`` takes robust percentiles of each
    frame. ``near_is_warm`` (the default, for depth) maps low values to the red end, so that near
    things stand out; use False for inverse depth/disparity, where high values are near.
    The index buffer is kept between calls; pass ``out`` to write into a message buffer.
    """

    def __init__(self, value_range=None, percentiles=(2.0, 98.0), near_is_warm=True):
        if value_range is not None and not value_range[1] > value_range[0]:
            raise ValueError(f'value_range must be (low, high) with high > low, got {value_range}')
        self.value_range = value_range
        self.percentiles = percentiles
        self.near_is_warm = near_is_warm
        self._scaled = None
        self._index = None

    def colorize(self, values, out=None):
        """(H, W) float -> (H, W, 3) uint8 BGR."""
        values = np.asarray(values)
        if values.ndim != 2:
            raise ValueError(f'expected a single-channel (H, W) image, got shape {values.shape}')
        if out is None:
            out = np.empty(values.shape + (3,), dtype=np.uint8)
        elif out.shape != values.shape + (3,) or out.dtype != np.uint8:
            raise ValueError(f'out must be uint8 of shape {values.shape + (3,)}, got '
                             f'{out.dtype} {out.shape}')
        value_range = self.value_range or robust_range(values, self.percentiles)
        if value_range is None:
            out.fill(0)
            return out
        if self._scaled is None or self._scaled.shape != values.shape:
            self._scaled = np.empty(values.shape, dtype=np.float32)
            self._index = np.empty(values.shape, dtype=np.uint16)
        scaled = self._scaled
        low, high = value_range
        gain = 255.0 / (high - low)
        # Table position: 0 at the cold end, 255 at the warm end; out-of-range values clip.
        if self.near_is_warm:
            np.subtract(high, values, out=scaled, casting='same_kind')
        else:
            np.subtract(values, low, out=scaled, casting='same_kind')
        scaled *= gain
        scaled += 0.5  # round to the nearest level when truncated below
        np.clip(scaled, 0.0, 255.5, out=scaled)
        np.nan_to_num(scaled, copy=False, nan=NO_DATA_INDEX)
        np.copyto(self._index, scaled, casting='unsafe')
        np.take(turbo_lut_bgr(), self._index, axis=0, out=out, mode='clip')
        return out
