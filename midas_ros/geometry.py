"""Pinhole camera geometry on numpy arrays: intrinsics, back-projection, organized clouds, scans.

Conventions: REP 103 optical frame (x right, y down, z forward); depth images per REP 118
(float32 metres; NaN no reading, +inf beyond range, -inf too near: :mod:`depth_semantics`).
"""
import math
from dataclasses import dataclass

import numpy as np

from midas_ros.depth_semantics import classify_ranges, has_point


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of an image of ``width`` x ``height`` pixels (no distortion)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float

    @classmethod
    def from_fov(cls, width, height, hfov_deg):
        """Square pixels, principal point at the image centre, horizontal field of view given."""
        if not 0.0 < hfov_deg < 180.0:
            raise ValueError('horizontal field of view must be in (0, 180) degrees, '
                             f'got {hfov_deg}')
        fx = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(int(width), int(height), fx, fx, (width - 1) / 2.0, (height - 1) / 2.0)

    @classmethod
    def from_k(cls, width, height, k):
        """From a row-major 3x3 camera matrix K (CameraInfo.k)."""
        return cls(int(width), int(height), float(k[0]), float(k[4]), float(k[2]), float(k[5]))

    def k(self):
        """Row-major 3x3 camera matrix, as CameraInfo.k holds it."""
        return [self.fx, 0.0, self.cx, 0.0, self.fy, self.cy, 0.0, 0.0, 1.0]

    def validate(self):
        """Raise ValueError saying what is wrong, if anything."""
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f'image size must be positive, got {self.width}x{self.height}')
        if not (math.isfinite(self.fx) and math.isfinite(self.fy)) or self.fx <= 0 or self.fy <= 0:
            raise ValueError(f'focal lengths must be positive and finite, got fx={self.fx} '
                             f'fy={self.fy}')
        if not (math.isfinite(self.cx) and math.isfinite(self.cy)):
            raise ValueError('principal point must be finite')
        return self

    def scaled(self, sx, sy=None):
        """Intrinsics of the same camera with the image resized by ``sx`` (and ``sy``)."""
        sy = sx if sy is None else sy
        # Pixel centres: continuous coordinate u maps to (u + 0.5) * s - 0.5.
        return Intrinsics(int(round(self.width * sx)), int(round(self.height * sy)),
                          self.fx * sx, self.fy * sy,
                          (self.cx + 0.5) * sx - 0.5, (self.cy + 0.5) * sy - 0.5)

    def resized_to(self, width, height, aspect_tolerance=0.01):
        """These intrinsics for the same view resized to ``width`` x ``height`` (e.g. a
        downscaled stream, or a network output). ValueError when the aspect ratio differs by
        more than ``aspect_tolerance`` (sizes rounded to whole pixels differ a little): that is
        another view, not a resize."""
        sx, sy = width / self.width, height / self.height
        if abs(sx / sy - 1.0) > aspect_tolerance:
            raise ValueError(f'{width}x{height} is not a resize of {self.width}x{self.height} '
                             '(different aspect ratio)')
        return self.scaled(sx, sy)

    def hfov_deg(self):
        return math.degrees(2.0 * math.atan2(self.width / 2.0, self.fx))


def rotation_from_rpy(roll, pitch, yaw):
    """3x3 rotation R = Rz(yaw) @ Ry(pitch) @ Rx(roll) (radians), the URDF/tf fixed-axis order.

    REP 103 signs in a body frame with x forward, y left, z up: positive pitch tilts the x axis
    down, positive roll lowers the right side (clockwise as seen from behind).
    """
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def transform_from_xyz_rpy(x, y, z, roll, pitch, yaw):
    """4x4 homogeneous transform of a pose given as translation and roll/pitch/yaw (m, rad)."""
    transform = np.eye(4)
    transform[:3, :3] = rotation_from_rpy(roll, pitch, yaw)
    transform[:3, 3] = (x, y, z)
    return transform


def transform_from_quaternion(translation, quaternion):
    """4x4 homogeneous transform from a translation (x, y, z) and a unit quaternion
    (x, y, z, w), the layout of geometry_msgs/Transform. The quaternion is normalised first;
    raises ValueError for a zero or non-finite one."""
    q = np.asarray(quaternion, dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not (math.isfinite(norm) and norm > 1e-9):
        raise ValueError(f'quaternion {tuple(q)} is not a rotation')
    x, y, z, w = q / norm
    transform = np.eye(4)
    transform[:3, :3] = ((1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)),
                         (2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)),
                         (2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)))
    transform[:3, 3] = translation
    return transform


def quaternion_from_rotation(rotation):
    """Unit quaternion (x, y, z, w) of a 3x3 rotation matrix, w >= 0 (Shepperd's method: the
    largest of the four components is computed first, so no branch divides by a small
    number)."""
    m = np.asarray(rotation, dtype=np.float64)
    trace = m[0, 0] + m[1, 1] + m[2, 2]
    candidates = (trace, m[0, 0], m[1, 1], m[2, 2])
    largest = int(np.argmax(candidates))
    if largest == 0:
        s = 2.0 * math.sqrt(max(1.0 + trace, 0.0))
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4)
    elif largest == 1:
        s = 2.0 * math.sqrt(max(1.0 + m[0, 0] - m[1, 1] - m[2, 2], 0.0))
        q = (s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif largest == 2:
        s = 2.0 * math.sqrt(max(1.0 - m[0, 0] + m[1, 1] - m[2, 2], 0.0))
        q = ((m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = 2.0 * math.sqrt(max(1.0 - m[0, 0] - m[1, 1] + m[2, 2], 0.0))
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s)
    q = np.array(q) / np.linalg.norm(q)
    return tuple(float(c) for c in (q if q[3] >= 0 else -q))


def transform_points(transform, points):
    """Points (..., 3) in a source frame -> the target frame of the 4x4 ``transform``."""
    transform = np.asarray(transform, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ transform[:3, :3].T + transform[:3, 3]


# Axes of the optical frame (x right, y down, z forward) expressed in a REP 103 body frame of the
# same camera (x forward, y left, z up): the columns are optical x, y, z.
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0],
                              [-1.0, 0.0, 0.0],
                              [0.0, -1.0, 0.0]])


def _checked_depth(depth, intrinsics):
    """``depth`` as an array, if it is one (H, W) image of the intrinsics' size."""
    depth = np.asarray(depth)
    if depth.shape != (intrinsics.height, intrinsics.width):
        raise ValueError(f'depth image of shape {depth.shape} does not match the intrinsics '
                         f'({intrinsics.height} rows x {intrinsics.width} columns)')
    return depth


class Backprojector:
    """Organized point clouds from depth images through fixed intrinsics.

    ``points(depth)`` returns the optical-frame point of every sampled pixel:
    x = (u - cx) / fx * z, y = (v - cy) / fy * z, z = depth, and NaN in all three where the depth
    is NaN, infinite or <= 0 (REP 118 "no reading"). The per-pixel ray tables depend only on the
    intrinsics, so they are computed once here.

    Decimation ``d`` keeps the pixel at the centre of each d x d block, i.e. rows and columns
    ``d // 2 + k * d`` (for even ``d`` the lower-right of the four central pixels), a strided view
    of the depth image with no copy. ``self.intrinsics`` describes exactly that sampled grid
    (fx / d, cx' = (cx - d // 2) / d, ...): publish it with the cloud so that every point is the
    pinhole back-projection of its cell. For odd ``d`` it equals ``intrinsics.scaled(1 / d)``.
    """

    def __init__(self, intrinsics, decimation=1):
        intrinsics.validate()
        decimation = int(decimation)
        if decimation < 1:
            raise ValueError(f'decimation must be >= 1, got {decimation}')
        self.source_intrinsics = intrinsics
        self.decimation = decimation
        offset = decimation // 2
        self._rows = slice(offset, intrinsics.height, decimation)
        self._cols = slice(offset, intrinsics.width, decimation)
        u = np.arange(intrinsics.width, dtype=np.float64)[self._cols]
        v = np.arange(intrinsics.height, dtype=np.float64)[self._rows]
        self.intrinsics = Intrinsics(len(u), len(v),
                                     intrinsics.fx / decimation, intrinsics.fy / decimation,
                                     (intrinsics.cx - offset) / decimation,
                                     (intrinsics.cy - offset) / decimation)
        # Normalised image coordinates of the sampled pixels: broadcastable (1, W) and (H, 1).
        self._x_per_z = ((u - intrinsics.cx) / intrinsics.fx).astype(np.float32)[None, :]
        self._y_per_z = ((v - intrinsics.cy) / intrinsics.fy).astype(np.float32)[:, None]
        shape = (len(v), len(u))
        self._valid = np.empty(shape, dtype=bool)

    @property
    def shape(self):
        """(height, width) of the organized cloud."""
        return self.intrinsics.height, self.intrinsics.width

    def sample(self, image):
        """The decimated view of a full-resolution image (depth, colour): no copy."""
        return image[self._rows, self._cols]

    def points(self, depth, out=None):
        """Optical-frame xyz (float32, H' x W' x 3, metres) of a full-resolution depth image.

        ``out`` may be any float32 array of that shape, including a strided view such as
        ``cloud[..., :3]`` of an x, y, z, rgb point buffer, so a node can fill its message buffer
        in place without a per-frame allocation.
        """
        depth = _checked_depth(depth, self.source_intrinsics)
        if out is None:
            out = np.empty(self.shape + (3,), dtype=np.float32)
        elif out.shape != self.shape + (3,) or out.dtype != np.float32:
            raise ValueError(f'out must be float32 of shape {self.shape + (3,)}, got '
                             f'{out.dtype} {out.shape}')
        depth = self.sample(depth)
        has_point(depth, out=self._valid)
        z = out[..., 2]
        z.fill(np.nan)
        np.copyto(z, depth, where=self._valid, casting='same_kind')
        np.multiply(z, self._x_per_z, out=out[..., 0])
        np.multiply(z, self._y_per_z, out=out[..., 1])
        return out


@dataclass
class LaserScanData:
    """One scan in sensor_msgs/LaserScan terms; ``ranges`` is a buffer the converter reuses."""

    angle_min: float
    angle_max: float
    angle_increment: float
    range_min: float
    range_max: float
    ranges: np.ndarray


class DepthToScan:
    """A LaserScan from a metric depth image, with depthimage_to_laserscan's semantics.

    Band: ``scan_height`` rows centred on the principal point's row, rows ``v0 .. v0 + h - 1``
    with ``v0 = floor(cy - (h - 1) / 2 + 0.5)`` (the band's centre is within half a row of cy).
    A pixel's range is its distance in the scan plane, sqrt(x^2 + z^2) of its optical-frame
    point, i.e. ``z * sqrt(1 + ((u - cx) / fx)^2)``.

    Angles (scan frame: x forward along the optical axis, y left, z up; REP 103): column ``u``
    looks at ``atan2(-(u - cx), fx)``, positive left of the optical axis. ``angle_min`` is the
    angle of the rightmost column, ``angle_max`` that of the leftmost, and the scan has one ray per
    column with a uniform ``angle_increment = (angle_max - angle_min) / (width - 1)``, exactly as
    depthimage_to_laserscan. Column angles are not uniform (atan), so, like it, each column goes
    into the ray nearest its true angle (its error is at most half an increment) and a ray that
    collects several columns keeps the nearest range. Where depthimage_to_laserscan leaves rays
    near the image centre empty (columns there are more than an increment apart), this copies the
    range of the column nearest in angle, so the scan has no holes.

    Per ray (REP 117): the nearest range within [range_min, range_max]; if none, -inf when some
    pixel was nearer than range_min (something is too close to measure: never report free space
    then), else +inf when some pixel was beyond range_max (no return within range), else NaN
    (no reading: every pixel NaN). ``convert`` returns the same buffer every call.
    """

    def __init__(self, intrinsics, scan_height=1, range_min=0.1, range_max=10.0):
        intrinsics.validate()
        scan_height = int(scan_height)
        if not 1 <= scan_height <= intrinsics.height:
            raise ValueError(f'scan_height must be in [1, {intrinsics.height}], got {scan_height}')
        if not 0.0 <= range_min < range_max:
            raise ValueError(f'need 0 <= range_min < range_max, got {range_min}, {range_max}')
        if intrinsics.width < 2:
            raise ValueError('a scan needs an image at least 2 pixels wide')
        first_row = int(math.floor(intrinsics.cy - (scan_height - 1) / 2.0 + 0.5))
        if first_row < 0 or first_row + scan_height > intrinsics.height:
            raise ValueError(f'a band of {scan_height} rows around cy={intrinsics.cy:.1f} does '
                             f'not fit in an image {intrinsics.height} rows high')
        self.intrinsics = intrinsics
        self.rows = slice(first_row, first_row + scan_height)
        self.range_min = float(range_min)
        self.range_max = float(range_max)
        width = intrinsics.width
        # Scan order: index 0 is the rightmost column, so reverse the columns once here.
        x_per_z = (np.arange(width)[::-1] - intrinsics.cx) / intrinsics.fx
        self._range_per_depth = np.sqrt(1.0 + x_per_z ** 2).astype(np.float32)
        angles = np.arctan2(-x_per_z, 1.0)
        self.angle_min = float(angles[0])
        self.angle_max = float(angles[-1])
        self.angle_increment = (self.angle_max - self.angle_min) / (width - 1)
        self._reduce_indices = self._ray_groups(angles, self.angle_min, self.angle_increment)
        # Per-frame buffers. Column buffers have one spare slot: reduceat's group stop indices
        # may equal the width (the value there only feeds results that are thrown away).
        band = (scan_height, width)
        self._band = np.empty(band, dtype=np.float32)
        self._in_range = np.empty(band, dtype=bool)
        self._flags = np.empty(band, dtype=bool)
        self._too_near = np.empty(band, dtype=bool)
        self._nearest = np.zeros(width + 1, dtype=np.float32)
        self._no_reading = np.zeros(width + 1, dtype=np.float32)
        self._column_flag = np.empty(width, dtype=bool)
        self._grouped = np.empty(2 * width, dtype=np.float32)
        self._ray_mask = np.empty(width, dtype=bool)
        self.scan = LaserScanData(self.angle_min, self.angle_max, self.angle_increment,
                                  self.range_min, self.range_max,
                                  np.empty(width, dtype=np.float32))

    @staticmethod
    def _ray_groups(angles, angle_min, increment):
        """Start/stop pairs for ``reduceat``: ray i reduces columns [start_i, stop_i).

        Columns are in increasing angle, so each ray's columns are contiguous. An empty ray gets
        ``stop == start`` with ``start`` the column nearest in angle, which reduceat turns into
        that single column's value.
        """
        count = len(angles)
        ray_of_column = np.clip(np.rint((angles - angle_min) / increment), 0, count - 1)
        rays = np.arange(count)
        starts = np.searchsorted(ray_of_column, rays, side='left')
        stops = np.searchsorted(ray_of_column, rays, side='right')
        ray_angles = angle_min + rays * increment
        nearest = np.clip(np.searchsorted(angles, ray_angles), 1, count - 1)
        nearest -= (ray_angles - angles[nearest - 1]) < (angles[nearest] - ray_angles)
        empty = starts == stops
        starts[empty] = nearest[empty]
        stops[empty] = nearest[empty]
        return np.stack([starts, stops], axis=1).ravel().astype(np.intp)

    def convert(self, depth):
        """The scan of a metric depth image (H x W, metres, NaN where unknown)."""
        depth = _checked_depth(depth, self.intrinsics)
        band, in_range, flags = self._band, self._in_range, self._flags
        np.multiply(depth[self.rows, ::-1], self._range_per_depth, out=band)
        classify_ranges(band, self.range_min, self.range_max, in_range, self._too_near, flags)
        # What a column reports without an in-range pixel (depth_semantics): -inf if any pixel
        # is too near, else +inf if any is too far, else NaN.
        no_reading = self._no_reading[:-1]
        no_reading.fill(np.nan)
        np.copyto(no_reading, np.inf, where=np.any(flags, axis=0, out=self._column_flag))
        np.copyto(no_reading, -np.inf,
                  where=np.any(self._too_near, axis=0, out=self._column_flag))
        # Nearest in-range range per column (+inf when there is none).
        np.logical_not(in_range, out=flags)
        np.copyto(band, np.inf, where=flags)
        np.min(band, axis=0, out=self._nearest[:-1])
        # Columns -> rays. fmin prefers numbers to NaN, so the fallback order above survives:
        # -inf over +inf over NaN.
        ranges = self.scan.ranges
        np.minimum.reduceat(self._nearest, self._reduce_indices, out=self._grouped)
        np.copyto(ranges, self._grouped[::2])
        np.fmin.reduceat(self._no_reading, self._reduce_indices, out=self._grouped)
        np.equal(ranges, np.inf, out=self._ray_mask)
        np.copyto(ranges, self._grouped[::2], where=self._ray_mask)
        return self.scan


def laser_scan_points(ranges, angle_min, angle_increment, range_min=0.0, range_max=np.inf):
    """(N, 3) float64 points in the scan's frame of the finite ranges within the limits."""
    ranges = np.asarray(ranges, dtype=np.float64)
    angles = angle_min + angle_increment * np.arange(len(ranges))
    keep = np.isfinite(ranges) & (ranges >= range_min) & (ranges <= range_max)
    r, a = ranges[keep], angles[keep]
    return np.stack([r * np.cos(a), r * np.sin(a), np.zeros_like(r)], axis=1)


def project_points(points, camera_from_sensor, intrinsics):
    """Project sensor-frame points into the image: ``(u, v, z, valid)``.

    ``camera_from_sensor`` is the 4x4 transform taking sensor-frame coordinates to the camera's
    optical frame (x right, y down, z forward). ``u, v`` are continuous pixel coordinates (pixel
    centres at integers), ``z`` the depth along the optical axis; ``valid`` is false for points
    behind the camera (z <= 0), non-finite points and points that fall outside the image.
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    transform = np.asarray(camera_from_sensor, dtype=np.float64)
    if transform.shape != (4, 4):
        raise ValueError(f'camera_from_sensor must be a 4x4 transform, got {transform.shape}')
    in_camera = points @ transform[:3, :3].T + transform[:3, 3]
    x, y, z = in_camera.T
    with np.errstate(divide='ignore', invalid='ignore'):
        u = intrinsics.fx * x / z + intrinsics.cx
        v = intrinsics.fy * y / z + intrinsics.cy
    valid = (np.isfinite(u) & np.isfinite(v) & (z > 0)
             & (u > -0.5) & (u < intrinsics.width - 0.5)
             & (v > -0.5) & (v < intrinsics.height - 0.5))
    return u, v, z, valid
