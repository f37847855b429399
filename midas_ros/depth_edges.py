"""Depth edges ("flying pixels"): the pixels a navigation stack must not turn into points.

A monocular network predicts at 256-518 px and its output is upsampled to the camera's size, so
every object boundary becomes a ramp of pixels whose depth lies between the object and what is
behind it (an RGB-D camera has the same mixed pixels at boundaries). Back-projected, they float in
free space. In the spirit of MoGe's ``depth_edge``, a pixel is a depth edge when the depth of
some neighbour within ``radius`` pixels (a (2r+1) x (2r+1) window, Chebyshev distance) differs
from its own by more than ``rtol`` times its own depth:

    edge(p) = max_{q in W(p)} depth(q) - min_{q in W(p)} depth(q) > rtol * depth(p)

(the largest difference to a neighbour is at most the window's spread and at least half of it;
using the spread is MoGe's choice and costs one max and one min filter). Only finite depths
take part as neighbours, and the infinities (REP 118: beyond the maximum, too near), which mark
their finite neighbours as edges: a pixel next to "far away" or "too near" is a boundary. NaN
(no reading) neighbours are ignored. The window extremes are OpenCV's separable dilate /
erode: about 1 ms for 640x480 on one core (``python -m midas_ros benchmark --filters``).

Defaults (radius 2, rtol 0.08) measured on test/navigation_scene.py: a 640x480 camera pitched
15 deg down over boxes, poles and walls, the network output 256x192 (2.5x smaller): points
farther than 10 cm from every true surface 2.3 % -> 0.04 %, 96 % of the points on true
surfaces kept. Radius 2 also takes the near-side lobe of the bicubic upsampling's overshoot
(up to 5 % nearer than the surface) off the box tops, which radius 1 leaves to the scans.
"""
import math

import cv2
import numpy as np

DEFAULT_RADIUS = 2
DEFAULT_RTOL = 0.08


class DepthEdgeFilter:
    """Finds depth edges (see the module docstring) with buffers reused frame after frame.

    ``radius``: window half-size in pixels, 0 turns the filter off (no pixel is an edge);
    ``rtol``: the relative depth difference that makes an edge (> 0). ValueError otherwise.
    """

    def __init__(self, radius=DEFAULT_RADIUS, rtol=DEFAULT_RTOL):
        radius = int(radius)
        if radius < 0:
            raise ValueError(f'edge radius must be >= 0 pixels, got {radius}')
        if not (math.isfinite(rtol) and rtol > 0):
            raise ValueError(f'edge rtol must be a positive number, got {rtol}')
        self.radius = radius
        self.rtol = float(rtol)
        self._kernel = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * radius + 1,) * 2)
        self._buffers = {}

    @property
    def enabled(self):
        return self.radius > 0

    def _buffer(self, name, shape, dtype):
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape:
            buffer = self._buffers[name] = np.empty(shape, dtype)
        return buffer

    def spread(self, depth):
        """Window spread relative to the depth, ``(max - min) / depth`` (HxW float32, a reused
        buffer): >= ``rtol`` exactly on edges; NaN where the pixel itself has no finite depth
        (or its window holds nothing finite); +inf next to an infinite (beyond or below the
        range) pixel."""
        depth = np.asarray(depth, dtype=np.float32)
        shape = depth.shape
        high = self._buffer('high', shape, np.float32)
        low = self._buffer('low', shape, np.float32)
        # Neighbours for the maximum: NaN and -inf take no part (fmax drops NaN), +inf does.
        np.fmax(depth, np.float32(0.0), out=high)
        # Neighbours for the minimum: NaN takes no part, -inf (too near) does.
        np.fmin(depth, np.float32(np.inf), out=low)
        cv2.dilate(high, self._kernel, dst=high, borderType=cv2.BORDER_REPLICATE)
        cv2.erode(low, self._kernel, dst=low, borderType=cv2.BORDER_REPLICATE)
        with np.errstate(invalid='ignore', divide='ignore'):
            np.subtract(high, low, out=high)
            np.divide(high, depth, out=high)
        return high

    def edges(self, depth, out=None):
        """Boolean HxW mask of the depth edges of ``depth`` (float32 metres, REP 118); all
        false when the filter is off. ``out``: a bool buffer to fill (default: a reused one)."""
        depth = np.asarray(depth, dtype=np.float32)
        if out is None:
            out = self._buffer('edges', depth.shape, bool)
        if not self.enabled:
            out.fill(False)
            return out
        with np.errstate(invalid='ignore'):
            np.greater(self.spread(depth), self.rtol, out=out)
        return out

    def remove_edges(self, depth, edges, out=None):
        """``depth`` with its ``edges`` set to NaN (no reading), into ``out`` (default: a
        reused buffer); ``depth`` itself is never changed."""
        if out is None:
            out = self._buffer('filtered', depth.shape, np.float32)
        np.copyto(out, depth)
        np.copyto(out, np.float32(np.nan), where=edges)
        return out
