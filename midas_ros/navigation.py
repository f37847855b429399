"""Depth a navigation stack can use, without ROS: edge-free points, an obstacle cloud without the
floor, a height-band laser scan and a confidence image, from one metric depth image.

    depth (HxW metres, REP 118) -> depth edges (:mod:`midas_ros.depth_edges`) set to NaN
        -> organized cloud (``geometry.Backprojector``, every ``cloud_decimation``-th pixel)
        -> heights above the floor (``scale.FloorPlane``)
        -> obstacle cloud: points between ``obstacle_min_height`` and ``obstacle_max_height``
           above the floor, within ``obstacle_max_range`` of the camera, one per voxel
        -> scan: ``rows`` (``geometry.DepthToScan``, depthimage_to_laserscan) or
           ``height_band`` (pointcloud_to_laserscan: the nearest point per bearing among those
           between ``scan_min_height`` and ``scan_max_height`` above the floor)
        -> confidence (:func:`confidence_image`)

depth_node and depth_cloud_node publish what :class:`NavigationDepth` makes (through
``midas_ros/ros/navigation_outputs.py``), so a monocular network and an RGB-D camera give the
same outputs through the same code. Everything is vectorised numpy / OpenCV; what depends only
on the intrinsics and settings is built once.

Frames: points are in the camera's optical frame (x right, y down, z forward) unless a 4x4
transform moves them; the floor is ``FloorPlane`` (its downward normal and the optical centre's
height, in optical coordinates).
"""
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from midas_ros.depth_edges import DEFAULT_RADIUS, DEFAULT_RTOL, DepthEdgeFilter
from midas_ros.depth_semantics import TOO_FAR, TOO_NEAR, has_point
from midas_ros.geometry import Backprojector, DepthToScan, LaserScanData

SCAN_MODES = ('rows', 'height_band')
# Scale confidence of depth that is only relative (scale.mode uncalibrated, or a metric mode
# that has no good fit yet): its distances are a guess up to a factor.
UNCALIBRATED_CONFIDENCE = 0.2
# Scale confidence while a metric mode holds its last good scale because this frame's fit was
# rejected (anchors disagreeing, floor not found).
HELD_SCALE_CONFIDENCE = 0.5
PRODUCTS = frozenset({'points', 'scan', 'obstacle_points', 'confidence'})


@dataclass(frozen=True)
class NavigationSettings:
    """The navigation outputs' parameters (field names follow the nodes' parameters:
    ``filter.edge_radius`` -> ``edge_radius``, ``obstacle_points.min_height`` ->
    ``obstacle_min_height``). Lengths in metres, heights above the floor."""

    edge_radius: int = DEFAULT_RADIUS
    edge_rtol: float = DEFAULT_RTOL
    cloud_decimation: int = 1
    scan_mode: str = 'rows'
    scan_height: int = 1
    scan_range_min: float = 0.1
    scan_range_max: float = 10.0
    scan_min_height: float = 0.1
    scan_max_height: float = 1.0
    obstacle_min_height: float = 0.1
    obstacle_max_height: float = 2.0
    obstacle_max_range: float = 5.0
    obstacle_voxel_size: float = 0.05

    def check(self):
        """ValueError naming the first combination that cannot work; returns self."""
        DepthEdgeFilter(self.edge_radius, self.edge_rtol)
        if self.scan_mode not in SCAN_MODES:
            raise ValueError(f"scan.mode must be one of {', '.join(SCAN_MODES)}, got "
                             f"'{self.scan_mode}'")
        if not 0 <= self.scan_range_min < self.scan_range_max:
            raise ValueError(f'need 0 <= scan.range_min < scan.range_max, got '
                             f'{self.scan_range_min}, {self.scan_range_max}')
        if not self.scan_min_height < self.scan_max_height:
            raise ValueError(f'need scan.min_height < scan.max_height, got '
                             f'{self.scan_min_height}, {self.scan_max_height}')
        if not self.obstacle_min_height < self.obstacle_max_height:
            raise ValueError(f'need obstacle_points.min_height < obstacle_points.max_height, '
                             f'got {self.obstacle_min_height}, {self.obstacle_max_height}')
        if not (self.obstacle_max_range > 0 and self.obstacle_voxel_size >= 0):
            raise ValueError('need obstacle_points.max_range > 0 and voxel_size >= 0')
        return self


def level_frame(floor):
    """4x4 transform from the optical frame to the camera's level frame: origin at the optical
    centre, z up (the floor's normal), x the optical axis projected onto the floor (forward),
    y left (REP 103). What the height-band scan uses when TF has no ``scan.frame_id``."""
    up = -np.asarray(floor.down, dtype=np.float64)
    forward = np.array([0.0, 0.0, 1.0]) - up[2] * up
    norm = np.linalg.norm(forward)
    if norm < 1e-6:
        raise ValueError('the camera looks straight up or down: no forward direction')
    forward /= norm
    transform = np.eye(4)
    transform[:3, :3] = np.stack([forward, np.cross(up, forward), up])
    return transform


def voxel_downsample(points, voxel_size):
    """One point per occupied cube of ``voxel_size`` metres (the centroid of the points in it),
    (M, 3) float32; ``voxel_size`` 0 returns ``points`` unchanged."""
    if voxel_size <= 0 or len(points) == 0:
        return np.asarray(points, dtype=np.float32)
    cells = np.floor(points / voxel_size).astype(np.int64)
    # One 64-bit key per cell: 21 bits per axis (+-1e6 cells: +-52 km at 5 cm).
    cells += 1 << 20
    keys = cells[:, 0] | (cells[:, 1] << 21) | (cells[:, 2] << 42)
    _, cell_of_point, counts = np.unique(keys, return_inverse=True, return_counts=True)
    cell_of_point = cell_of_point.reshape(-1)
    out = np.empty((len(counts), 3), np.float32)
    for axis in range(3):
        out[:, axis] = np.bincount(cell_of_point, weights=points[:, axis]) / counts
    return out


def scale_confidence(state, calibrated, max_residual):
    """How far the frame's metric scale can be trusted, in [0, 1] (one number per frame).

    ``state``: the ``scale.ScaleState`` used; ``calibrated``: whether the depth was metric.
    1 for a given scale (fixed mode, a depth sensor); ``UNCALIBRATED_CONFIDENCE`` for relative
    depth; for a fitted scale (ground_plane, sparse) accepted this frame, the fit's inlier
    ratio times (1 - residual / (2 max_residual)) (from 1 for a perfect fit down to half the
    inlier ratio at the largest residual accepted); ``HELD_SCALE_CONFIDENCE`` while the last
    good scale is held because this frame's fit was rejected.
    """
    if not calibrated:
        return UNCALIBRATED_CONFIDENCE
    fit = state.fit
    if fit.samples == 0:
        return 1.0
    if not state.accepted:
        return HELD_SCALE_CONFIDENCE
    residual = fit.residual if math.isfinite(fit.residual) else max_residual
    quality = 1.0 - 0.5 * min(1.0, residual / max_residual) if max_residual > 0 else 1.0
    return float(min(1.0, max(0.0, fit.inlier_ratio)) * quality)


def confidence_image(depth, spread, rtol, scale, out):
    """depth/confidence: the one definition (float32 HxW in [0, 1], into ``out``).

        confidence = scale x max(0, 1 - spread / rtol)   where the depth is a reading
        confidence = 0                                    elsewhere (NaN, beyond or below
                                                          the valid range: REP 118 +-inf)

    ``spread`` is the depth-edge filter's relative window spread ((max - min) / depth over the
    (2 r + 1)^2 window): 1 on flat surfaces, falling linearly to 0 at the edge threshold, so
    every depth edge has confidence 0. ``spread`` None (filter off): that factor is 1.
    ``scale`` is :func:`scale_confidence` (1 for a depth sensor).
    """
    if spread is None:
        out.fill(np.float32(scale))
    else:
        np.divide(spread, np.float32(-rtol), out=out)
        out += np.float32(1.0)
        np.maximum(out, np.float32(0.0), out=out)
        out *= np.float32(scale)
    np.copyto(out, np.float32(0.0), where=~has_point(depth))
    np.nan_to_num(out, copy=False, nan=0.0)
    return out


class GridRays:
    """The optical rays (x/z, y/z, 1) of an organized grid (``Backprojector.intrinsics``), with
    tables per floor / rotation cached for the last one (constant for a fixed mount), so that
    per frame heights, ranges and bearings are one multiplication per pixel."""

    def __init__(self, grid_intrinsics):
        intr = grid_intrinsics.validate()
        self.intrinsics = intr
        self.x_per_z = ((np.arange(intr.width, dtype=np.float32) - np.float32(intr.cx))
                        / np.float32(intr.fx))[None, :]
        self.y_per_z = ((np.arange(intr.height, dtype=np.float32) - np.float32(intr.cy))
                        / np.float32(intr.fy))[:, None]
        self.shape = (intr.height, intr.width)
        # Squared distance from the optical centre per unit depth.
        self.range2_per_depth2 = (1.0 + self.x_per_z ** 2 + self.y_per_z ** 2).astype(
            np.float32)
        self._cache = {}

    def _cached(self, name, key, make):
        entry = self._cache.get(name)
        if entry is None or entry[0] != key:
            entry = self._cache[name] = (key, make())
        return entry[1]

    def down_per_depth(self, floor):
        """``down . ray`` per pixel (H' x W'): a pixel's height above the floor is
        ``floor.height - depth * down_per_depth``."""
        down = tuple(float(c) for c in floor.down)
        return self._cached('down', down, lambda: (
            np.float32(down[0]) * self.x_per_z + np.float32(down[1]) * self.y_per_z
            + np.float32(down[2])).astype(np.float32))

    def heights(self, depth, floor, out):
        """Height above ``floor`` (m) of every grid pixel of ``depth`` (H' x W', into ``out``);
        NaN or +-inf where the depth is not a reading."""
        with np.errstate(invalid='ignore'):
            np.multiply(depth, self.down_per_depth(floor), out=out)
        np.subtract(np.float32(floor.height), out, out=out)
        return out

    def planar(self, rotation):
        """(horizontal range per unit depth, bearing) of every pixel's ray in a frame rotated
        by ``rotation`` (3x3, frame_from_optical): sqrt(x^2 + y^2) and atan2(y, x) there."""
        rotation = np.asarray(rotation, dtype=np.float32)

        def make():
            x = rotation[0, 0] * self.x_per_z + rotation[0, 1] * self.y_per_z + rotation[0, 2]
            y = rotation[1, 0] * self.x_per_z + rotation[1, 1] * self.y_per_z + rotation[1, 2]
            return np.hypot(x, y).astype(np.float32), np.arctan2(y, x)
        return self._cached('planar', rotation.tobytes(), make)

    def points(self, depth, mask, stride=1):
        """(N, 3) float32 optical points of the grid pixels in ``mask``; with ``stride``,
        ``depth`` and ``mask`` are the grid's ``[::stride, ::stride]`` views."""
        rows, cols = np.nonzero(mask)
        z = depth[rows, cols]
        return np.stack([z * self.x_per_z[0, cols * stride],
                         z * self.y_per_z[rows * stride, 0], z], axis=-1)

    def stride_for(self, voxel_size, max_range):
        """The grid step that still puts about 2 x 2 samples in every voxel within
        ``max_range`` (a pixel covers depth / f metres): voxels are all that is published, so
        denser samples only cost time."""
        if voxel_size <= 0:
            return 1
        focal = min(self.intrinsics.fx, self.intrinsics.fy)
        return max(1, int(voxel_size * focal / (2.0 * max_range)))


class HeightBandScan:
    """A LaserScan from depth, as pointcloud_to_laserscan makes it from a cloud: per bearing,
    the nearest point whose height above the floor is in [``min_height``, ``max_height``].

    Built for one organized grid (``GridRays``): one ray per grid column, covering the camera's
    horizontal field of view as depthimage_to_laserscan does (index 0 looks right, angles
    positive left). Bearings and ranges are in the scan frame (x forward, y left, z up), given
    per frame as the transform ``scan_from_optical``; range is sqrt(x^2 + y^2) there. Per ray
    (REP 117, as the ``rows`` scan): the nearest range within [range_min, range_max]; else -inf
    when a band point (or a too-near pixel) was nearer than range_min; else +inf when anything
    was seen at that bearing (a point at any height, a point beyond range_max, a pixel beyond
    the depth range); else NaN (no reading: every pixel NaN or a depth edge).
    """

    def __init__(self, grid, range_min=0.1, range_max=10.0, min_height=0.1, max_height=1.0):
        intrinsics = grid.intrinsics
        if intrinsics.width < 2:
            raise ValueError('a scan needs an image at least 2 pixels wide')
        if not 0.0 <= range_min < range_max:
            raise ValueError(f'need 0 <= range_min < range_max, got {range_min}, {range_max}')
        if not min_height < max_height:
            raise ValueError(f'need min_height < max_height, got {min_height}, {max_height}')
        self.grid = grid
        self.range_min, self.range_max = float(range_min), float(range_max)
        self.min_height, self.max_height = float(min_height), float(max_height)
        count = intrinsics.width
        self.angle_max = math.atan2(intrinsics.cx, intrinsics.fx)
        self.angle_min = -math.atan2(count - 1 - intrinsics.cx, intrinsics.fx)
        self.angle_increment = (self.angle_max - self.angle_min) / (count - 1)
        self.scan = LaserScanData(self.angle_min, self.angle_max, self.angle_increment,
                                  self.range_min, self.range_max,
                                  np.empty(count, dtype=np.float32))
        self._band = np.empty(grid.shape, bool)
        self._flags = np.empty(grid.shape, bool)

    def _ray_index(self, bearings):
        """Ray index of bearings (rad), -1 outside the field of view."""
        index = np.rint((bearings - self.angle_min) / self.angle_increment).astype(np.intp)
        index[(index < 0) | (index >= len(self.scan.ranges))] = -1
        return index

    def _any(self, index):
        return np.bincount(index[index >= 0], minlength=len(self.scan.ranges)) > 0

    def convert(self, depth, heights, scan_from_optical):
        """The scan (``LaserScanData``; ``ranges`` is a buffer reused every call).

        ``depth``: the grid's depth (H' x W', REP 118); ``heights``: its heights above the
        floor (``GridRays.heights``); ``scan_from_optical``: 4x4. A scan frame whose origin is
        the optical centre (the level frame) uses per-pixel tables; one elsewhere (base_link
        through TF) moves the band's points. "Seen" and "too near" for rays without a band
        point use the pixels' viewing directions.
        """
        transform = np.asarray(scan_from_optical, dtype=np.float64)
        rotation, translation = transform[:3, :3], transform[:3, 3]
        range_per_depth, bearings = self.grid.planar(rotation)
        pixel_rays = self._cached_rays(rotation, bearings)
        band = self._band
        with np.errstate(invalid='ignore'):
            np.greater_equal(heights, self.min_height, out=band)
            np.less_equal(heights, self.max_height, out=self._flags)
        band &= self._flags
        if np.abs(translation).max() < 1e-6:
            ranges = depth[band] * range_per_depth[band]
            ray = pixel_rays[band]
        else:
            points = self.grid.points(depth, band) @ rotation[:2].T.astype(np.float32) \
                + translation[:2].astype(np.float32)
            ranges = np.hypot(points[:, 0], points[:, 1])
            ray = self._ray_index(np.arctan2(points[:, 1], points[:, 0]))
        nearest = np.full(len(self.scan.ranges), np.inf, np.float32)
        hit = (ranges >= self.range_min) & (ranges <= self.range_max) & (ray >= 0)
        np.minimum.at(nearest, ray[hit], ranges[hit])
        too_near = self._any(np.where(ranges < self.range_min, ray, -1))
        np.isnan(depth, out=self._flags)
        np.logical_not(self._flags, out=self._flags)
        seen = self._any(pixel_rays[self._flags])
        # Pixels below the depth range (-inf): too near at their bearing, whatever the height.
        np.equal(depth, TOO_NEAR, out=self._flags)
        if self._flags.any():
            too_near |= self._any(pixel_rays[self._flags])
        out = self.scan.ranges
        out[...] = np.where(too_near, TOO_NEAR, np.where(seen, TOO_FAR, np.nan))
        np.copyto(out, nearest, where=np.isfinite(nearest))
        return self.scan

    def _cached_rays(self, rotation, bearings):
        key = rotation.astype(np.float32).tobytes()
        if getattr(self, '_rays_key', None) != key:
            self._rays_key, self._rays = key, self._ray_index(bearings)
        return self._rays


@dataclass
class NavigationFrame:
    """What :meth:`NavigationDepth.process` made. Arrays are buffers reused on the next call."""

    edges: Optional[np.ndarray] = None          # HxW bool, depth edges
    points: Optional[np.ndarray] = None         # h x w x 3 float32 optical, NaN: no point
    cloud_intrinsics: object = None             # of the organized grid of ``points``
    scan: Optional[LaserScanData] = None
    obstacle_points: Optional[np.ndarray] = None    # N x 3 float32 in the output frame
    confidence: Optional[np.ndarray] = None     # HxW float32 in [0, 1]
    timings: dict = field(default_factory=dict)     # seconds per stage
    # Products asked for that this camera and these settings cannot give: {product: reason}.
    skipped: dict = field(default_factory=dict)


class _Camera:
    """What depends on (settings, intrinsics). A product this camera cannot give (a scan band
    outside the image...) is left out with its reason in ``problems`` ({product: reason}):
    it costs only itself."""

    def __init__(self, settings, intrinsics):
        self.intrinsics = intrinsics
        self.problems = {}
        self.backprojector = self.rows_scan = self.band_scan = None
        try:
            self.backprojector = Backprojector(intrinsics, settings.cloud_decimation)
        except ValueError as error:
            for product in ('points', 'obstacle_points', 'scan'):
                self.problems[product] = f'cloud.decimation for this camera: {error}'
            return
        self.grid = GridRays(self.backprojector.intrinsics)
        try:
            if settings.scan_mode == 'rows':
                self.rows_scan = DepthToScan(intrinsics, settings.scan_height,
                                             settings.scan_range_min, settings.scan_range_max)
            else:
                self.band_scan = HeightBandScan(
                    self.grid, settings.scan_range_min, settings.scan_range_max,
                    settings.scan_min_height, settings.scan_max_height)
        except ValueError as error:
            self.problems['scan'] = f'scan.height / range for this camera: {error}'


class NavigationDepth:
    """The navigation products of a stream of depth images from one camera (see the module
    docstring). Not thread-safe: one thread processes frames and configures."""

    def __init__(self, settings=NavigationSettings()):
        self.configure(settings)

    def configure(self, settings):
        """Switch to ``settings``, or raise ValueError and keep the current ones."""
        settings.check()
        self.settings = settings
        self.edge_filter = DepthEdgeFilter(settings.edge_radius, settings.edge_rtol)
        self._camera = None
        self._buffers = {}

    def _camera_for(self, intrinsics):
        if self._camera is None or self._camera.intrinsics != intrinsics:
            self._camera = None
            self._camera = _Camera(self.settings, intrinsics)
        return self._camera

    def _buffer(self, name, shape, dtype):
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape:
            buffer = self._buffers[name] = np.empty(shape, dtype)
        return buffer

    def sample(self, image):
        """The pixels of a full-size ``image`` (e.g. the camera's colours) that the last
        frame's organized ``points`` came from: a strided view, no copy."""
        return self._camera.backprojector.sample(image)

    def process(self, depth, intrinsics, floor, products=PRODUCTS, scan_from_optical=None,
                obstacles_from_optical=None, scale=1.0):
        """The ``products`` (of ``points``, ``scan``, ``obstacle_points``, ``confidence``) of
        one depth image.

        ``depth``: HxW float32 metres (REP 118); ``intrinsics``: for its size; ``floor``:
        ``scale.FloorPlane`` in the optical frame (needed by obstacle_points and the
        height-band scan); ``scan_from_optical`` / ``obstacles_from_optical``: 4x4 transforms
        into the scan's / obstacle cloud's frame (None: the level frame of the floor / the
        optical frame); ``scale``: :func:`scale_confidence`. ValueError when the intrinsics do
        not fit the depth; a product this camera cannot give is left out, its reason in the
        frame's ``skipped``.
        """
        settings = self.settings
        frame = NavigationFrame()
        timings = frame.timings
        tick = time.perf_counter()
        depth = np.asarray(depth, dtype=np.float32)
        if depth.shape != (intrinsics.height, intrinsics.width):
            raise ValueError(f'depth of shape {depth.shape} does not fit the intrinsics '
                             f'({intrinsics.width}x{intrinsics.height})')
        camera = self._camera_for(intrinsics.validate())
        frame.skipped = {product: reason for product, reason in camera.problems.items()
                         if product in products}
        products = set(products) - set(frame.skipped)
        spread = None
        if self.edge_filter.enabled:
            spread = self.edge_filter.spread(depth)
            frame.edges = self._buffer('edges', depth.shape, bool)
            with np.errstate(invalid='ignore'):
                np.greater(spread, settings.edge_rtol, out=frame.edges)
            filtered = self.edge_filter.remove_edges(depth, frame.edges)
        else:
            frame.edges = self._buffer('edges', depth.shape, bool)
            frame.edges.fill(False)
            filtered = depth
        timings['edges'] = time.perf_counter() - tick
        if 'confidence' in products:
            tick = time.perf_counter()
            frame.confidence = confidence_image(
                depth, spread, settings.edge_rtol, scale,
                self._buffer('confidence', depth.shape, np.float32))
            timings['confidence'] = time.perf_counter() - tick
        if 'points' in products:
            tick = time.perf_counter()
            backprojector = camera.backprojector
            frame.points = backprojector.points(
                filtered, out=self._buffer('points', backprojector.shape + (3,), np.float32))
            frame.cloud_intrinsics = backprojector.intrinsics
            timings['points'] = time.perf_counter() - tick
        if 'scan' in products and camera.rows_scan is not None:
            tick = time.perf_counter()
            frame.scan = camera.rows_scan.convert(filtered)
            timings['scan'] = time.perf_counter() - tick
        band_scan = 'scan' in products and camera.band_scan is not None
        if band_scan or 'obstacle_points' in products:
            tick = time.perf_counter()
            grid_depth = camera.backprojector.sample(filtered)
            heights = camera.grid.heights(grid_depth, floor, self._buffer(
                'heights', camera.grid.shape, np.float32))
            timings['heights'] = time.perf_counter() - tick
            if band_scan:
                tick = time.perf_counter()
                to_scan = level_frame(floor) if scan_from_optical is None else scan_from_optical
                frame.scan = camera.band_scan.convert(grid_depth, heights, to_scan)
                timings['scan'] = time.perf_counter() - tick
            if 'obstacle_points' in products:
                tick = time.perf_counter()
                frame.obstacle_points = self._obstacle_points(
                    camera.grid, grid_depth, heights, obstacles_from_optical)
                timings['obstacle_points'] = time.perf_counter() - tick
        return frame

    def _obstacle_points(self, grid, depth, heights, target_from_optical=None):
        """(M, 3) float32: the grid points between the obstacle heights and within
        ``obstacle_max_range`` (distance from the optical centre), moved by
        ``target_from_optical`` (4x4) when given, one per ``obstacle_voxel_size`` voxel of
        that frame (the grid sampled at ``GridRays.stride_for``)."""
        settings = self.settings
        step = grid.stride_for(settings.obstacle_voxel_size, settings.obstacle_max_range)
        depth, heights = depth[::step, ::step], heights[::step, ::step]
        keep = self._buffer('keep', depth.shape, bool)
        scratch = self._buffer('keep2', depth.shape, bool)
        range2 = self._buffer('range2', depth.shape, np.float32)
        with np.errstate(invalid='ignore'):
            np.greater_equal(heights, settings.obstacle_min_height, out=keep)
            np.less_equal(heights, settings.obstacle_max_height, out=scratch)
            keep &= scratch
            # depth^2 (1 + (x/z)^2 + (y/z)^2) <= max_range^2.
            np.multiply(depth, depth, out=range2)
            range2 *= grid.range2_per_depth2[::step, ::step]
            np.less_equal(range2, np.float32(settings.obstacle_max_range ** 2), out=scratch)
        keep &= scratch
        kept = grid.points(depth, keep, step)
        if target_from_optical is not None:
            transform = np.asarray(target_from_optical, dtype=np.float32)
            kept = kept @ transform[:3, :3].T + transform[:3, 3]
        return voxel_downsample(kept, settings.obstacle_voxel_size)
