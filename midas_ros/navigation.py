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


def heights_above_floor(points, floor, out=None):
    """Height (m) above ``floor`` of optical-frame ``points`` (..., 3): ``height - down . p``."""
    down = np.asarray(floor.down, dtype=np.float32)
    out = np.dot(points, down, out=out)
    np.subtract(np.float32(floor.height), out, out=out)
    return out


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


class HeightBandScan:
    """A LaserScan from points, as pointcloud_to_laserscan makes it: per bearing, the nearest
    point whose height above the floor is in [``min_height``, ``max_height``].

    Built for one organized grid (``grid_intrinsics``: ``Backprojector.intrinsics``): one ray
    per grid column, covering the camera's horizontal field of view as depthimage_to_laserscan
    does (index 0 looks right, angles positive left). Bearings and ranges are in the scan frame
    (x forward, y left, z up), given per frame as the transform ``scan_from_optical``; range is
    sqrt(x^2 + y^2) there. Per ray (REP 117, as the ``rows`` scan): the nearest range within
    [range_min, range_max]; else -inf when a band point (or a too-near pixel) was nearer than
    range_min; else +inf when anything was seen at that bearing (a point at any height, a point
    beyond range_max, a pixel beyond the depth range); else NaN (no reading: every pixel NaN or
    a depth edge).
    """

    def __init__(self, grid_intrinsics, range_min=0.1, range_max=10.0, min_height=0.05,
                 max_height=1.0):
        grid_intrinsics.validate()
        if grid_intrinsics.width < 2:
            raise ValueError('a scan needs an image at least 2 pixels wide')
        if not 0.0 <= range_min < range_max:
            raise ValueError(f'need 0 <= range_min < range_max, got {range_min}, {range_max}')
        if not min_height < max_height:
            raise ValueError(f'need min_height < max_height, got {min_height}, {max_height}')
        self.intrinsics = intrinsics = grid_intrinsics
        self.range_min, self.range_max = float(range_min), float(range_max)
        self.min_height, self.max_height = float(min_height), float(max_height)
        count = intrinsics.width
        self.angle_max = math.atan2(intrinsics.cx, intrinsics.fx)
        self.angle_min = -math.atan2(count - 1 - intrinsics.cx, intrinsics.fx)
        self.angle_increment = (self.angle_max - self.angle_min) / (count - 1)
        u = np.arange(intrinsics.width, dtype=np.float32)
        v = np.arange(intrinsics.height, dtype=np.float32)
        # Optical ray (x/z, y/z, 1) of every grid pixel, for pixels without a point.
        self._rays = np.stack(np.broadcast_arrays(
            ((u - intrinsics.cx) / intrinsics.fx)[None, :],
            ((v - intrinsics.cy) / intrinsics.fy)[:, None],
            np.ones((1, 1), np.float32)), axis=-1)
        self.scan = LaserScanData(self.angle_min, self.angle_max, self.angle_increment,
                                  self.range_min, self.range_max,
                                  np.empty(count, dtype=np.float32))

    def _rays_of(self, directions):
        """Ray index of scan-frame directions (N, >= 2), -1 outside the field of view."""
        bearings = np.arctan2(directions[:, 1], directions[:, 0])
        index = np.rint((bearings - self.angle_min) / self.angle_increment).astype(np.intp)
        index[(index < 0) | (index >= len(self.scan.ranges))] = -1
        return index

    def _any(self, index):
        return np.bincount(index[index >= 0], minlength=len(self.scan.ranges)) > 0

    def _pixel_rays(self, rotation):
        """Ray index of every grid pixel's viewing direction (H' x W'), cached for the last
        rotation (constant while the floor comes from parameters or a fixed mount)."""
        key = rotation.tobytes()
        if getattr(self, '_pixel_rays_key', None) != key:
            self._pixel_rays_key = key
            self._pixel_rays_cache = self._rays_of(
                self._rays.reshape(-1, 3) @ rotation[:2].T).reshape(self._rays.shape[:2])
        return self._pixel_rays_cache

    def convert(self, points, heights, grid_depth, scan_from_optical):
        """The scan (``LaserScanData``; ``ranges`` is a buffer reused every call).

        ``points``: (N, 3) optical-frame points (finite); ``heights``: (N,) their heights above
        the floor; ``grid_depth``: the grid's depth (H' x W', REP 118, NaN where there is no
        reading) whose pixels give each bearing something was seen at; ``scan_from_optical``:
        4x4. Bearings of band points are their own; "seen" and "too near" for rays without a
        band point use the pixels' viewing directions (exact for a scan frame at the camera).
        """
        transform = np.asarray(scan_from_optical, dtype=np.float32)
        rotation, translation = transform[:3, :3], transform[:3, 3]
        in_band = (heights >= self.min_height) & (heights <= self.max_height)
        band = points[in_band] @ rotation[:2].T + translation[:2]
        ranges = np.hypot(band[:, 0], band[:, 1])
        ray = self._rays_of(band)
        nearest = np.full(len(self.scan.ranges), np.inf, np.float32)
        hit = (ranges >= self.range_min) & (ranges <= self.range_max) & (ray >= 0)
        np.minimum.at(nearest, ray[hit], ranges[hit])
        too_near = self._any(np.where(ranges < self.range_min, ray, -1))
        pixel_rays = self._pixel_rays(rotation)
        seen = self._any(pixel_rays[~np.isnan(grid_depth)])
        # Pixels below the depth range (-inf): too near at their bearing, whatever the height.
        below = grid_depth == TOO_NEAR
        if below.any():
            too_near |= self._any(pixel_rays[below])
        out = self.scan.ranges
        out[...] = np.where(too_near, TOO_NEAR, np.where(seen, TOO_FAR, np.nan))
        np.copyto(out, nearest, where=np.isfinite(nearest))
        return self.scan


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
        try:
            if settings.scan_mode == 'rows':
                self.rows_scan = DepthToScan(intrinsics, settings.scan_height,
                                             settings.scan_range_min, settings.scan_range_max)
            else:
                self.band_scan = HeightBandScan(
                    self.backprojector.intrinsics, settings.scan_range_min,
                    settings.scan_range_max, settings.scan_min_height, settings.scan_max_height)
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
        needs_points = {'points', 'obstacle_points'} & set(products) or (
            'scan' in products and camera.band_scan is not None)
        if needs_points:
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
            flat = frame.points.reshape(-1, 3)
            points = flat[np.isfinite(flat[:, 2])]
            heights = heights_above_floor(points, floor)
            timings['heights'] = time.perf_counter() - tick
            if band_scan:
                tick = time.perf_counter()
                to_scan = level_frame(floor) if scan_from_optical is None else scan_from_optical
                frame.scan = camera.band_scan.convert(
                    points, heights, camera.backprojector.sample(filtered), to_scan)
                timings['scan'] = time.perf_counter() - tick
            if 'obstacle_points' in products:
                tick = time.perf_counter()
                frame.obstacle_points = self.obstacle_points(points, heights,
                                                             obstacles_from_optical)
                timings['obstacle_points'] = time.perf_counter() - tick
        return frame

    def obstacle_points(self, points, heights, target_from_optical=None):
        """(M, 3) float32: the optical-frame ``points`` between the obstacle heights and within
        ``obstacle_max_range`` (distance from the optical centre), moved by
        ``target_from_optical`` (4x4) when given, one per ``obstacle_voxel_size`` voxel of
        that frame."""
        settings = self.settings
        keep = (heights >= settings.obstacle_min_height) & \
            (heights <= settings.obstacle_max_height)
        keep &= np.einsum('ij,ij->i', points, points) <= np.float32(
            settings.obstacle_max_range ** 2)
        kept = points[keep]
        if target_from_optical is not None:
            transform = np.asarray(target_from_optical, dtype=np.float32)
            kept = kept @ transform[:3, :3].T + transform[:3, 3]
        return voxel_downsample(kept, settings.obstacle_voxel_size)
