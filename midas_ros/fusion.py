"""Detection boxes + a metric depth image -> per-object distance, 3D position and extent.

ROS-free (numpy only). Conventions as in :mod:`midas_ros.geometry`: REP 103 optical frame (x
right, y down, z forward), depth per REP 118 (float32 metres, NaN where there is no reading),
pixel centres at integer coordinates.

What is measured for one box, and why:

* **distance**: a low percentile of the valid depths inside the *inner* part of the box (its
  central ``inner_fraction``). The inner part keeps the box edges, where detectors leave
  background and floor, out of the statistic; a low percentile rather than the median keeps the
  object when half the box is over a wall behind it (the object is the nearer half of the
  pixels), and rather than the minimum it ignores the few flying pixels of depth edges.
  It is depth along the optical axis, as the depth image measures it.
* **object pixels**: the valid pixels of the inner part within ``cluster_tolerance *
  distance`` of the distance: the nearest depth mode, without the wall behind or a nearer
  occluder's edge.
* **position**: the centroid of the object pixels back-projected to 3D, i.e. the centre of the
  object's visible surface (the camera cannot see how deep the object is). Taken from the inner
  part because a loose box's edges hold floor at the object's own depth (the floor meets its
  feet), which would drag a whole-box centroid down; unlike the box centre it moves towards the
  object when the box is off-centre.
* **extent**: the clipped box size scaled to metres at the position's depth (x, y), and the
  5th-95th percentile spread of the object pixels' depths (z, the visible depth only):
  approximate by nature.

A box with too few valid depths is reported invalid (``valid`` False, NaN position, a reason),
never as distance 0. Its ``distance`` then follows REP 117 (:mod:`midas_ros.depth_semantics`):
-inf when at least ``min_valid_pixels`` of its depths are nearer than ``min_range`` (something is
too close to measure), else +inf when that many are beyond ``max_range``, else NaN (no reading).
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from midas_ros.depth_semantics import (NO_READING, TOO_FAR, TOO_NEAR, classify_depth,
                                       range_without_reading)

NAN3 = (math.nan, math.nan, math.nan)


@dataclass(frozen=True)
class Box:
    """An axis-aligned detection box in pixels, as vision_msgs/BoundingBox2D holds it."""

    center_x: float
    center_y: float
    width: float
    height: float
    class_id: str = ''
    score: float = 1.0

    def scaled(self, sx, sy):
        """The same box in an image resized by ``sx`` x ``sy`` (as ``Intrinsics.scaled``)."""
        return Box((self.center_x + 0.5) * sx - 0.5, (self.center_y + 0.5) * sy - 0.5,
                   self.width * sx, self.height * sy, self.class_id, self.score)

    def pixel_window(self, fraction, width, height):
        """Rows and columns ``(v0, v1, u0, u1)``, end exclusive, of the central ``fraction``
        of the box, clipped to a ``width`` x ``height`` image (may be empty)."""
        u0, u1 = _pixel_span(self.center_x, 0.5 * self.width * fraction, width)
        v0, v1 = _pixel_span(self.center_y, 0.5 * self.height * fraction, height)
        return v0, v1, u0, u1


def _pixel_span(center, half_size, size):
    """Pixels ``[first, end)`` of the span ``center +- half_size``, clipped to ``[0, size)``.

    Edges round to the nearest pixel border (pixel centres are integers, borders at half
    integers), so the same pixels come out whether a detector puts box edges on pixel centres
    or on pixel borders.
    """
    first = int(min(max(math.floor(center - half_size + 0.5), 0), size))
    end = int(min(max(math.floor(center + half_size + 0.5), 0), size))
    if end == first:  # thinner than a pixel: the pixel the centre is on, if in the image
        pixel = math.floor(center + 0.5)
        if 0 <= pixel < size:
            return pixel, pixel + 1
    return first, end


@dataclass(frozen=True)
class FusionConfig:
    """How a box becomes a distance; :meth:`validate` says what is wrong with a setting."""

    inner_fraction: float = 0.6     # central part of the box the distance is taken from
    percentile: float = 15.0        # of the valid depths in that part
    min_range: float = 0.1          # metres; depths outside [min_range, max_range] are invalid
    max_range: float = 100.0
    cluster_tolerance: float = 0.1  # object pixels: |depth - distance| <= this * distance
    min_valid_pixels: int = 5       # fewer valid depths in the inner part: no distance

    def validate(self):
        """Raise ValueError naming the first setting that cannot work; return self."""
        if not 0.0 < self.inner_fraction <= 1.0:
            raise ValueError(f'inner_fraction must be in (0, 1], got {self.inner_fraction}')
        if not 0.0 <= self.percentile <= 100.0:
            raise ValueError(f'percentile must be in [0, 100], got {self.percentile}')
        # Zero depth means "no reading" (REP 118), so the valid interval must exclude it.
        if not (math.isfinite(self.min_range) and self.min_range > 0.0):
            raise ValueError(f'min_range must be a positive number of metres, got '
                             f'{self.min_range}')
        if not (math.isfinite(self.max_range) and self.max_range > self.min_range):
            raise ValueError(f'max_range ({self.max_range}) must be finite and above '
                             f'min_range ({self.min_range})')
        if not 0.0 < self.cluster_tolerance < 1.0:
            raise ValueError(f'cluster_tolerance must be in (0, 1), got '
                             f'{self.cluster_tolerance}')
        if self.min_valid_pixels < 1:
            raise ValueError(f'min_valid_pixels must be at least 1, got '
                             f'{self.min_valid_pixels}')
        return self


@dataclass(frozen=True)
class Obstacle:
    """What the depth says about one box. Numbers are NaN when ``valid`` is False."""

    box: Box
    valid: bool
    distance: float                           # metres along the optical axis (see module doc)
    position: Tuple[float, float, float]      # centre of the visible surface, optical frame
    extent: Tuple[float, float, float]        # approximate size in x, y, z (metres)
    valid_pixels: int = 0                     # valid depths in the inner part of the box
    reason: Optional[str] = None              # why it is invalid


def fuse(depth, intrinsics, boxes: Sequence[Box], config: FusionConfig = FusionConfig()):
    """One :class:`Obstacle` per box, in order.

    ``depth`` is an H x W float32 array in metres (REP 118: NaN and 0 no reading, -inf too
    near, +inf too far; finite depths outside [min_range, max_range] count as too near / far)
    matching
    ``intrinsics``' size; boxes are in the same image's pixels. Raises ValueError when the
    depth image and intrinsics do not fit together; bad boxes become invalid obstacles.
    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f'depth must be a single-channel H x W image, got shape {depth.shape}')
    height, width = depth.shape
    if (width, height) != (intrinsics.width, intrinsics.height):
        raise ValueError(f'depth image is {width}x{height} but the intrinsics describe '
                         f'{intrinsics.width}x{intrinsics.height}')
    intrinsics.validate()
    return [_fuse_box(depth, intrinsics, box, config) for box in boxes]


def _invalid(box, reason, valid_pixels=0, distance=NO_READING):
    return Obstacle(box, False, distance, NAN3, NAN3, valid_pixels, reason)


def _fuse_box(depth, intrinsics, box, config):
    if not all(math.isfinite(value) for value in
               (box.center_x, box.center_y, box.width, box.height)):
        return _invalid(box, 'box has non-finite coordinates')
    if box.width <= 0.0 or box.height <= 0.0:
        return _invalid(box, f'box has no area ({box.width} x {box.height} px)')
    height, width = depth.shape
    v0, v1, u0, u1 = box.pixel_window(1.0, width, height)
    if v1 <= v0 or u1 <= u0:
        return _invalid(box, 'box lies outside the image')

    iv0, iv1, iu0, iu1 = box.pixel_window(config.inner_fraction, width, height)
    inner = depth[iv0:iv1, iu0:iu1]  # a view, no copy
    in_range, too_near, too_far = classify_depth(inner, config.min_range, config.max_range)
    inner_valid = inner[in_range]
    if inner_valid.size < config.min_valid_pixels:
        enough = config.min_valid_pixels
        distance = float(range_without_reading(np.count_nonzero(too_near) >= enough,
                                               np.count_nonzero(too_far) >= enough))
        what = {TOO_NEAR: f'nearer than min_range {config.min_range} m',
                TOO_FAR: f'beyond max_range {config.max_range} m'}.get(distance, 'no reading')
        return _invalid(box, f'{inner_valid.size} valid depths in the box centre (fewer '
                        f'than {config.min_valid_pixels}; {what})', inner_valid.size, distance)
    # 'nearest': the distance is a depth actually measured, so the object pixels below are
    # never empty (an interpolated value could fall in a depth gap).
    distance = float(np.percentile(inner_valid, config.percentile, method='nearest'))

    tolerance = config.cluster_tolerance * distance
    lowest = max(distance - tolerance, config.min_range)
    highest = min(distance + tolerance, config.max_range)
    rows, cols = np.nonzero((inner >= lowest) & (inner <= highest))
    z = inner[rows, cols].astype(np.float64)
    z_mean = float(z.mean())
    position = ((float(np.dot(cols + iu0, z)) / z.size - intrinsics.cx * z_mean) / intrinsics.fx,
                (float(np.dot(rows + iv0, z)) / z.size - intrinsics.cy * z_mean) / intrinsics.fy,
                z_mean)
    z_low, z_high = np.percentile(z, (5.0, 95.0))
    extent = ((u1 - u0) * z_mean / intrinsics.fx, (v1 - v0) * z_mean / intrinsics.fy,
              float(z_high - z_low))
    return Obstacle(box, True, distance, position, extent, int(inner_valid.size))


def nearest(obstacles: Sequence[Obstacle]):
    """The valid obstacle with the smallest distance, or None."""
    valid = [obstacle for obstacle in obstacles if obstacle.valid]
    return min(valid, key=lambda obstacle: obstacle.distance) if valid else None


def nearest_range(obstacles: Sequence[Obstacle]):
    """The distance a sensor_msgs/Range of these obstacles reports (REP 117): the nearest valid
    distance; else -inf when some obstacle is too near to measure; else +inf (nothing within
    range)."""
    closest = nearest(obstacles)
    if closest is not None:
        return closest.distance
    return TOO_NEAR if any(o.distance == TOO_NEAR for o in obstacles) else TOO_FAR
