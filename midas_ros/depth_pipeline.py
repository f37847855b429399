"""One camera frame in, every depth product out: the per-frame work of depth_node, without ROS.

    image -> DepthEstimator (relative inverse depth) -> scale fit + smoothing -> metric depth
          -> colour map, organized point cloud, laser scan

The node turns messages into the arguments of :meth:`DepthPipeline.process` and the returned
:class:`DepthFrame` back into messages; the benchmark and the demo call the same code. Everything
that depends on the camera intrinsics (ray tables, floor model, scan bins) is built once per
intrinsics and reused; per-frame arrays are reused buffers.
"""
import math
import time
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from midas_ros.colormap import DepthColorizer
from midas_ros.geometry import Backprojector, DepthToScan, Intrinsics
from midas_ros.scale import (ScaleSmoother, ScaleState, UncalibratedScale, create_estimator,
                             inverse_depth_to_metric)


@dataclass(frozen=True)
class DepthSettings:
    """Everything about turning relative depth into products that may change at run time.

    Field names follow depth_node's parameters (``scale.camera_height`` -> ``camera_height``).
    """

    scale_mode: str = 'uncalibrated'
    scale_a: float = 1.0
    scale_b: float = 0.0
    uncalibrated_median_depth: float = 3.0
    camera_height: float = 1.0
    camera_pitch_deg: float = 0.0
    camera_roll_deg: float = 0.0
    floor_rows: float = 0.35
    time_constant: float = 1.0
    min_inlier_ratio: float = 0.3
    max_residual: float = 0.1
    min_depth: float = 0.1
    max_depth: float = 20.0
    colormap_max_depth: float = 0.0
    cloud_enabled: bool = True
    cloud_decimation: int = 1
    cloud_color: bool = True
    scan_enabled: bool = False
    scan_height: int = 1
    scan_range_min: float = 0.1
    scan_range_max: float = 10.0

    def scale_options(self):
        """Keyword arguments of ``scale.create_estimator`` for ``scale_mode``."""
        if self.scale_mode == 'fixed':
            return {'a': self.scale_a, 'b': self.scale_b}
        if self.scale_mode == 'uncalibrated':
            return {'median_depth': self.uncalibrated_median_depth}
        if self.scale_mode == 'ground_plane':
            return {'camera_height': self.camera_height,
                    'pitch': math.radians(self.camera_pitch_deg),
                    'roll': math.radians(self.camera_roll_deg),
                    'floor_rows': self.floor_rows,
                    'max_floor_distance': self.max_depth}
        return {}


@dataclass
class DepthFrame:
    """The products of one frame. Arrays are buffers the pipeline reuses on the next call."""

    relative: np.ndarray            # HxW float32, network output (relative inverse depth)
    depth: np.ndarray               # HxW float32 metres, NaN where invalid (REP 118)
    scale: ScaleState               # the (a, b) used and how it was obtained
    calibrated: bool                # False: distances are not metric (uncalibrated fallback)
    scale_problem: str = ''         # why the configured scale mode cannot work, if it cannot
    colormap: Optional[np.ndarray] = None       # HxWx3 uint8 BGR
    points: Optional[np.ndarray] = None         # h x w x 3 float32 optical-frame xyz
    points_rgb: Optional[np.ndarray] = None     # h x w x 3 uint8 RGB of the cloud's pixels
    cloud_intrinsics: Optional[Intrinsics] = None
    scan: Optional[object] = None               # geometry.LaserScanData
    timings: Optional[dict] = None              # seconds per stage


PRODUCTS = frozenset({'colormap', 'cloud', 'scan'})


class _CameraModel:
    """What depends on (settings, intrinsics): rebuilt only when either changes.

    ``strict``: raise when the scale mode cannot work with this camera (a parameter change is
    then refused); otherwise fall back to the uncalibrated scale and keep the reason in
    ``scale_problem``, so that a camera whose geometry does not fit the configuration (say,
    a horizon below the image) still gets every output, marked uncalibrated.
    """

    def __init__(self, settings, intrinsics, strict=False):
        intrinsics.validate()
        self.intrinsics = intrinsics
        self.scale_problem = ''
        try:
            self.scale_estimator = create_estimator(settings.scale_mode, intrinsics,
                                                    **settings.scale_options())
        except ValueError as error:
            if strict:
                raise
            self.scale_problem = f'scale.mode {settings.scale_mode} cannot work: {error}'
            self.scale_estimator = UncalibratedScale(settings.uncalibrated_median_depth)
        self.backprojector = (Backprojector(intrinsics, settings.cloud_decimation)
                              if settings.cloud_enabled else None)
        self.scan = (DepthToScan(intrinsics, settings.scan_height, settings.scan_range_min,
                                 settings.scan_range_max) if settings.scan_enabled else None)


_SCALE_FIELDS = ('scale_mode', 'scale_a', 'scale_b', 'uncalibrated_median_depth',
                 'camera_height', 'camera_pitch_deg', 'camera_roll_deg', 'floor_rows',
                 'time_constant', 'min_inlier_ratio', 'max_residual', 'max_depth')


def _scale_fields(settings):
    return tuple(getattr(settings, name) for name in _SCALE_FIELDS)


def check_settings(settings):
    """Raise ValueError with the reason when the settings cannot work whatever the camera."""
    if settings.scale_mode == 'fixed' and not settings.scale_a > 0:
        raise ValueError(f'scale.a must be > 0 in fixed mode, got {settings.scale_a}')
    if not 0 < settings.min_depth < settings.max_depth:
        raise ValueError(f'need 0 < depth.min < depth.max, got {settings.min_depth}, '
                         f'{settings.max_depth}')
    if not 0 <= settings.scan_range_min < settings.scan_range_max:
        raise ValueError(f'need 0 <= scan.range_min < scan.range_max, got '
                         f'{settings.scan_range_min}, {settings.scan_range_max}')


class DepthPipeline:
    """Relative depth -> metric products for a stream of frames from one camera."""

    def __init__(self, estimator, settings=DepthSettings()):
        self.estimator = estimator
        self._settings = None
        self._camera = None
        self.configure(settings)

    @property
    def settings(self):
        return self._settings

    def configure(self, settings, intrinsics=None):
        """Switch to ``settings``, or raise ValueError and keep the current ones.

        With ``intrinsics`` (e.g. the camera's current ones) the camera-dependent parts are
        built now, so that a geometry that cannot work (horizon below the image...) is refused
        here rather than failing on every frame.
        """
        check_settings(settings)
        camera = None
        if intrinsics is not None:
            camera = _CameraModel(settings, intrinsics, strict=True)
        previous = self._settings
        self._settings = settings
        self._camera = camera
        # The scale filter restarts only when what it filters changes, not for, say, a new
        # colour map range.
        if previous is None or _scale_fields(previous) != _scale_fields(settings):
            self._smoother = ScaleSmoother(settings.time_constant, settings.min_inlier_ratio,
                                           settings.max_residual)
        self._fallback_scale = UncalibratedScale(settings.uncalibrated_median_depth)
        max_depth = settings.colormap_max_depth
        self._colorizer = DepthColorizer((settings.min_depth, max_depth) if max_depth > 0
                                         else None)
        self._buffers = {}

    def _camera_for(self, intrinsics):
        if self._camera is None or self._camera.intrinsics != intrinsics:
            self._camera = _CameraModel(self._settings, intrinsics)
        return self._camera

    def _buffer(self, name, shape, dtype):
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape:
            buffer = self._buffers[name] = np.empty(shape, dtype=dtype)
        return buffer

    def process(self, image, channel_order, intrinsics, stamp_s, anchors=None,
                products=PRODUCTS, floor=None):
        """The products of one frame: relative and metric depth always, and those of
        ``products`` (``colormap``, ``cloud``, ``scan``) that the settings enable.

        ``image``: uint8 HxWxC (or HxW mono) in ``channel_order``; ``intrinsics``: for this
        image size; ``stamp_s``: the frame time in seconds (drives the scale smoothing);
        ``anchors``: ``(u, v, z[, valid])`` metric anchors for the sparse scale mode;
        ``floor``: this frame's ``scale.FloorPlane`` for the ground_plane mode (e.g. from TF),
        None for the one of the settings (camera height, pitch, roll).
        Raises ValueError when the intrinsics do not fit the image.
        """
        settings = self._settings
        height, width = image.shape[:2]
        if (intrinsics.width, intrinsics.height) != (width, height):
            raise ValueError(f'intrinsics are for {intrinsics.width}x{intrinsics.height}, the '
                             f'image is {width}x{height}')
        camera = self._camera_for(intrinsics)
        timings = {}
        start = time.perf_counter()
        relative = self.estimator.predict(image, channel_order,
                                          out=self._buffer('relative', (height, width),
                                                           np.float32))
        for stage, seconds in self.estimator.last_timings.items():
            timings[stage] = seconds
        tick = time.perf_counter()
        timings['inference_total'] = tick - start

        fit = camera.scale_estimator.fit(relative, anchors, floor)
        state = self._smoother.update(fit, stamp_s)
        calibrated = state.calibrated and camera.scale_estimator.metric
        if not math.isfinite(state.a):
            # No good fit yet (or ever): an uncalibrated scale keeps every output alive.
            fallback = self._fallback_scale.fit(relative)
            if not fallback.ok:
                fallback = replace(fallback, a=1.0, b=0.0)
            state = replace(state, a=fallback.a, b=fallback.b)
        depth = inverse_depth_to_metric(relative, state.a, state.b,
                                        out=self._buffer('depth', (height, width), np.float32),
                                        min_depth=settings.min_depth,
                                        max_depth=settings.max_depth)
        timings['scale'] = time.perf_counter() - tick

        frame = DepthFrame(relative, depth, state, calibrated, camera.scale_problem,
                           timings=timings)
        if 'colormap' in products:
            tick = time.perf_counter()
            frame.colormap = self._colorizer.colorize(
                depth, out=self._buffer('colormap', (height, width, 3), np.uint8))
            timings['colormap'] = time.perf_counter() - tick
        tick = time.perf_counter()
        if camera.backprojector is not None and 'cloud' in products:
            backprojector = camera.backprojector
            frame.points = backprojector.points(
                depth, out=self._buffer('points', backprojector.shape + (3,), np.float32))
            frame.cloud_intrinsics = backprojector.intrinsics
            if settings.cloud_color:
                frame.points_rgb = self._cloud_colors(backprojector.sample(image), channel_order)
        timings['cloud'] = time.perf_counter() - tick
        if camera.scan is not None and 'scan' in products:
            tick = time.perf_counter()
            frame.scan = camera.scan.convert(depth)
            timings['scan'] = time.perf_counter() - tick
        return frame

    def _cloud_colors(self, pixels, channel_order):
        """RGB uint8 of the cloud's pixels, whatever the input channel order."""
        out = self._buffer('points_rgb', pixels.shape[:2] + (3,), np.uint8)
        if channel_order == 'mono':
            out[...] = pixels[..., None]
        elif channel_order in ('rgb', 'rgba'):
            out[...] = pixels[..., :3]
        else:  # bgr, bgra
            out[...] = pixels[..., 2::-1]
        return out
