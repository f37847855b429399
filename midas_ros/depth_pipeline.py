"""One camera frame in, every depth product out: the per-frame work of depth_node, without ROS.

    image -> DepthNetwork (relative inverse depth, or a metric network's metres; shared by
             every camera)
          -> CameraDepth (one per camera): scale fit + smoothing -> metric depth
          -> colour map, organized point cloud, laser scan

A metric network's metres z_net enter the scale model as inverse metres 1 / z_net (see
``midas_ros.scale``): ``metric`` mode keeps them, ``ground_plane`` / ``sparse`` fit one factor.

``DepthNetwork`` holds what every camera shares (the estimator and its lanes, batching);
``CameraDepth`` what belongs to one camera (settings, scale smoother, camera model, buffers).
``DepthPipeline`` joins one of each for single-stream callers (benchmark, demo, tests). The node
turns messages into the arguments of ``infer`` / ``finish`` and the returned :class:`DepthFrame`
back into messages. Everything that depends on the camera intrinsics (ray tables, floor model,
scan bins) is built once per intrinsics and reused; per-frame arrays are reused buffers.
"""
import math
import time
from dataclasses import dataclass, field, replace
from typing import Optional

import numpy as np

from midas_ros.colormap import DepthColorizer
from midas_ros.geometry import Backprojector, DepthToScan, Intrinsics
from midas_ros.scale import (MetricScale, ScaleSmoother, ScaleState, UncalibratedScale,
                             create_estimator, inverse_depth_to_metric, resolve_mode)


@dataclass(frozen=True)
class DepthSettings:
    """Everything about turning relative depth into products that may change at run time.

    Field names follow depth_node's parameters (``scale.camera_height`` -> ``camera_height``).
    ``metric_network`` is not a parameter: ``CameraDepth.configure`` sets it from the shared
    network (and resolves ``scale_mode`` 'auto').
    """

    scale_mode: str = 'auto'
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
    metric_network: bool = False

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
                    'max_floor_distance': self.max_depth,
                    'scale_only': self.metric_network}
        if self.scale_mode == 'sparse':
            return {'scale_only': self.metric_network}
        return {}

    def scale_fit_kind(self):
        """What the scale mode does to the network output, in words (for diagnostics)."""
        if self.scale_mode == 'metric':
            return "the network's metres, unscaled"
        if self.scale_mode == 'uncalibrated':
            return f'not metric: the median pixel put at {self.uncalibrated_median_depth} m'
        if self.scale_mode == 'fixed':
            return 'fixed a, b: depth = 1 / (a * output + b)' if not self.metric_network else \
                "fixed a, b on the network's inverse metres: depth = 1 / (a / z + b)"
        if self.metric_network:
            return f"one factor fitted ({self.scale_mode}) to the network's metres: depth = z / a"
        return f'affine fit ({self.scale_mode}) of relative inverse depth: 1 / (a * r + b)'


@dataclass
class DepthFrame:
    """The products of one frame. Arrays are buffers the pipeline reuses on the next call."""

    relative: np.ndarray            # HxW float32, network output (relative inverse depth, or
    #                                 a metric network's metres)
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
    # Products asked for and enabled that could not be made this frame: {product: reason}.
    # Each costs only itself; every other product is still there.
    skipped: dict = field(default_factory=dict)


PRODUCTS = frozenset({'colormap', 'cloud', 'scan'})


@dataclass
class Inference:
    """The network's result for one frame (``DepthPipeline.infer``)."""

    relative: np.ndarray    # HxW float32 network output (a buffer used every 2nd frame)
    timings: dict           # seconds per estimator stage, and 'inference_total'


def check_intrinsics(intrinsics, image):
    """ValueError unless ``intrinsics`` are for ``image``'s size."""
    height, width = image.shape[:2]
    if (intrinsics.width, intrinsics.height) != (width, height):
        raise ValueError(f'intrinsics are for {intrinsics.width}x{intrinsics.height}, the '
                         f'image is {width}x{height}')


class SkippedOutputs:
    """Which outputs are being skipped and why, so that a node warns once per change (not per
    frame) and its diagnostics list them."""

    def __init__(self):
        self.reasons = {}       # output -> why it is skipped now

    def update(self, attempted, skipped):
        """Fold in one frame: ``attempted`` the outputs it tried, ``skipped`` ({output:
        reason}) those it could not make. Returns ``(started, recovered)``: outputs newly
        skipped or skipped for another reason ({output: reason}), and outputs made again."""
        started = {name: reason for name, reason in skipped.items()
                   if self.reasons.get(name) != reason}
        recovered = [name for name in attempted if name in self.reasons and name not in skipped]
        for name in recovered:
            del self.reasons[name]
        self.reasons.update(started)
        return started, recovered


class _Unavailable(Exception):
    """An output that this camera and these settings cannot give; the text says why."""


class _CameraModel:
    """What depends on (settings, intrinsics): rebuilt only when either changes.

    ``strict``: raise when the scale mode cannot work with this camera (a parameter change is
    then refused); otherwise fall back to the uncalibrated scale and keep the reason in
    ``scale_problem``, so that a camera whose geometry does not fit the configuration (say,
    a horizon below the image) still gets every output, marked uncalibrated. An output that
    cannot be made for this camera (a scan band outside the image...) is never a reason to
    refuse: it is left out with its reason in ``output_problems`` and costs only itself (the
    camera may change; the node warns once per change).
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
        self.output_problems = {}
        self.backprojector = self.scan = None
        try:
            if settings.cloud_enabled:
                self.backprojector = Backprojector(intrinsics, settings.cloud_decimation)
        except ValueError as error:
            self.output_problems['cloud'] = str(error)
        try:
            if settings.scan_enabled:
                self.scan = DepthToScan(intrinsics, settings.scan_height,
                                        settings.scan_range_min, settings.scan_range_max)
        except ValueError as error:
            self.output_problems['scan'] = f'scan.height / range for this camera: {error}'


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


class BufferPool:
    """Named numpy buffers reused frame after frame, reallocated only when a shape changes."""

    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, dtype):
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = self._buffers[name] = np.empty(shape, dtype=dtype)
        return buffer


class DepthNetwork:
    """The network every camera shares: the estimator and its lanes (``DepthEstimator``).

    ``estimator.parallel_frames`` networks may run at the same time: ``infer`` of lane ``i``
    uses ``estimators[i]`` (``estimator`` and its replicas, made here), one thread per lane.
    ``max_batch`` > 1 lets ``infer_batch`` run frames of one size as one batch where the
    estimator can (``DepthEstimator.predict_batch``; worth it on CUDA, see ``batching``).
    Thread-safe across lanes, not within one lane.
    """

    def __init__(self, estimator, max_batch=1):
        lanes = getattr(estimator, 'parallel_frames', 1)   # 1 for an estimator-like object
        self.estimators = [estimator] + [estimator.replica() for _ in range(lanes - 1)]
        self.max_batch = max(1, int(max_batch))
        config = getattr(estimator, 'config', None)   # None for an estimator-like object
        # True: the network outputs metres (e.g. Depth Anything V2 metric), not relative
        # inverse depth. Every camera's 'auto' scale mode resolves against this.
        self.metric_network = getattr(config, 'output', 'relative') == 'metric'
        # Per lane, which of its two sets of relative-depth buffers ``infer`` fills next.
        self._slots = [0] * len(self.estimators)
        self._buffers = BufferPool()

    @property
    def estimator(self):
        """The estimator of lane 0 (all lanes run the same network and settings)."""
        return self.estimators[0]

    @property
    def lanes(self):
        """Lanes in use: ``len(estimators)``, or 1 once lane 0 fell back to torch (which runs
        one frame at a time: ``DepthEstimator.parallel_frames``)."""
        return min(len(self.estimators), getattr(self.estimator, 'parallel_frames', 1))

    @property
    def batching(self):
        """Whether frames waiting at the same time are worth batching: on CUDA, where one
        launch of N frames costs far less than N launches (on the CPU lanes share the cores
        instead, and a batch would only add latency)."""
        return (self.max_batch > 1 and hasattr(self.estimator, 'predict_batch')
                and str(getattr(self.estimator, 'device', 'cpu')).startswith('cuda'))

    def warmup(self, width, height, channel_order='rgb'):
        """Warm every lane up for ``width`` x ``height`` images (``DepthEstimator.warmup``);
        the seconds it took."""
        return sum(e.warmup(width, height, channel_order) for e in self.estimators)

    def _relative_buffers(self, lane, count, height, width):
        """``count`` float32 HxW buffers of ``lane``: two sets used in turn, so the lane's
        previous results stay valid while the next ones are computed (not longer)."""
        self._slots[lane] ^= 1
        # Keyed by size too: cameras of different sizes take turns on a lane.
        return [self._buffers.get(f'relative{lane}.{self._slots[lane]}.{i}.{width}x{height}',
                                  (height, width), np.float32) for i in range(count)]

    def infer(self, image, channel_order, lane=0):
        """The network stage of one frame: an ``Inference`` (relative depth, timings).

        ``lane``: which estimator runs it (0 to ``len(estimators) - 1``; one thread per lane).
        The relative depth is one of the lane's reused buffers (see ``_relative_buffers``).
        """
        height, width = image.shape[:2]
        estimator = self.estimators[lane]
        out, = self._relative_buffers(lane, 1, height, width)
        start = time.perf_counter()
        relative = estimator.predict(image, channel_order, out=out)
        timings = dict(estimator.last_timings)
        timings['inference_total'] = time.perf_counter() - start
        return Inference(relative, timings)

    def infer_batch(self, images, channel_order, lane=0):
        """``infer`` of several HxW images of one size and channel order, as one batch when
        ``batching`` (else one after another); a list of ``Inference`` in their order. Each
        frame's timings are the batch's (its latency), ``batch`` says how many shared it."""
        if len(images) == 1 or not self.batching:
            return [self.infer(image, channel_order, lane) for image in images]
        height, width = images[0].shape[:2]
        estimator = self.estimators[lane]
        outs = self._relative_buffers(lane, len(images), height, width)
        start = time.perf_counter()
        relatives = estimator.predict_batch(images, channel_order, outs=outs)
        timings = dict(estimator.last_timings)
        timings['inference_total'] = time.perf_counter() - start
        timings['batch'] = len(images)
        return [Inference(relative, dict(timings)) for relative in relatives]


class CameraDepth:
    """Relative depth -> metric products for the frames of ONE camera: its settings, scale
    fit and smoothing, camera model (ray tables, floor, scan bins) and output buffers.

    One per camera; the network that made the relative depth is shared (``DepthNetwork``);
    ``metric_network``: that network's ``metric_network`` (its output is metres).
    ``finish`` and ``configure`` are not thread-safe with each other: the caller serializes
    them (depth_node: one outputs thread, parameter changes under the camera's lock).
    """

    def __init__(self, settings=DepthSettings(), metric_network=False):
        self.metric_network = bool(metric_network)
        self._settings = None
        self._camera = None
        self.configure(settings)

    @property
    def settings(self):
        return self._settings

    def resolved(self, settings):
        """``settings`` for this camera's network: ``scale_mode`` 'auto' becomes 'metric' for a
        metric network, else 'uncalibrated' ('metric' with a relative network: ValueError),
        and ``metric_network`` is set."""
        return replace(settings, metric_network=self.metric_network,
                       scale_mode=resolve_mode(settings.scale_mode, self.metric_network))

    def check(self, settings, intrinsics=None):
        """Raise ValueError with the reason when ``settings`` cannot work (with
        ``intrinsics``, for this camera too: a horizon below the image...); nothing changes.
        Returns what ``configure`` can reuse."""
        check_settings(settings)
        settings = self.resolved(settings)
        return _CameraModel(settings, intrinsics, strict=True) if intrinsics is not None \
            else None

    def configure(self, settings, intrinsics=None, checked=None):
        """Switch to ``settings``, or raise ValueError and keep the current ones.

        With ``intrinsics`` (e.g. the camera's current ones) the camera-dependent parts are
        built now, so that a geometry that cannot work (horizon below the image...) is refused
        here rather than failing on every frame. ``checked``: what ``check`` returned for the
        same arguments (not built twice). ``settings`` then holds the resolved scale mode
        (``resolved``).
        """
        camera = checked if checked is not None else self.check(settings, intrinsics)
        settings = self.resolved(settings)
        previous = self._settings
        self._settings = settings
        self._camera = camera
        # The scale filter restarts only when what it filters changes, not for, say, a new
        # colour map range.
        if previous is None or _scale_fields(previous) != _scale_fields(settings):
            self._smoother = ScaleSmoother(settings.time_constant, settings.min_inlier_ratio,
                                           settings.max_residual)
        # Until a fit is accepted: a metric network's own metres, else a nominal scale.
        self._fallback_scale = MetricScale() if self.metric_network else \
            UncalibratedScale(settings.uncalibrated_median_depth)
        max_depth = settings.colormap_max_depth
        self._colorizer = DepthColorizer((settings.min_depth, max_depth) if max_depth > 0
                                         else None)
        self._buffers = BufferPool()

    def scale_diagnostics(self, state=None):
        """Diagnostic key/values of the scale: the mode run (after 'auto'), what it does to the
        network output, and for a metric network the factor applied to its metres (1 / a of
        ``state``, the last frame's ``ScaleState``)."""
        settings = self._settings
        values = {'scale mode': settings.scale_mode, 'scale fit': settings.scale_fit_kind(),
                  'network output': 'metres' if self.metric_network
                  else 'relative inverse depth'}
        if self.metric_network and state is not None and state.a > 0:
            values['metric scale factor'] = f'{1.0 / state.a:.4g}'
        return values

    def reset_time(self):
        """Forget what depends on the time line (the scale smoothing): time went back."""
        self._smoother.reset()

    def _camera_for(self, intrinsics):
        if self._camera is None or self._camera.intrinsics != intrinsics:
            self._camera = _CameraModel(self._settings, intrinsics)
        return self._camera

    def _buffer(self, name, shape, dtype):
        return self._buffers.get(name, shape, dtype)

    def finish(self, inference, image, channel_order, intrinsics, stamp_s, anchors=None,
               products=PRODUCTS, floor=None):
        """The metric products of the frame ``inference`` came from: relative and metric depth
        always, and those of ``products`` (``colormap``, ``cloud``, ``scan``) the settings
        enable. Arguments as ``DepthPipeline.process``.

        Not thread-safe with itself or ``configure``: one thread finishes frames in order.
        """
        check_intrinsics(intrinsics, image)
        settings = self._settings
        height, width = image.shape[:2]
        camera = self._camera_for(intrinsics)
        relative, timings = inference.relative, dict(inference.timings)
        tick = time.perf_counter()
        if self.metric_network:   # metres -> inverse metres, the scale model's input
            with np.errstate(divide='ignore'):   # a sigmoid output never reaches 0
                relative = np.divide(1.0, relative, dtype=np.float32,
                                     out=self._buffer('inverse', (height, width), np.float32))
        fit = camera.scale_estimator.fit(relative, anchors, floor)
        state = self._smoother.update(fit, stamp_s)
        calibrated = state.calibrated and camera.scale_estimator.metric
        if not math.isfinite(state.a):
            # No good fit yet (or ever): an uncalibrated scale (a metric network's own
            # metres) keeps every output alive.
            fallback = self._fallback_scale.fit(relative)
            if not fallback.ok:
                fallback = replace(fallback, a=1.0, b=0.0)
            state = replace(state, a=fallback.a, b=fallback.b)
            calibrated = self.metric_network
        depth = inverse_depth_to_metric(relative, state.a, state.b,
                                        out=self._buffer('depth', (height, width), np.float32),
                                        min_depth=settings.min_depth,
                                        max_depth=settings.max_depth,
                                        mask=self._buffer('depth_mask', (height, width), bool))
        timings['scale'] = time.perf_counter() - tick

        frame = DepthFrame(inference.relative, depth, state, calibrated, camera.scale_problem,
                           timings=timings)
        if 'colormap' in products:
            self._make(frame, 'colormap', self._colormap, depth)
        if settings.cloud_enabled and 'cloud' in products:
            self._make(frame, 'cloud', self._cloud, camera, depth, image, channel_order)
        if settings.scan_enabled and 'scan' in products:
            self._make(frame, 'scan', self._scan, camera, depth)
        return frame

    def _make(self, frame, product, make, *args):
        """Run ``make(frame, *args)``; if the product cannot be made, record why in
        ``frame.skipped`` and go on: one output never costs the others."""
        tick = time.perf_counter()
        try:
            make(frame, *args)
        except Exception as error:  # whatever breaks one output must not drop the frame
            frame.skipped[product] = (error.args[0] if isinstance(error, _Unavailable)
                                      else f'{type(error).__name__}: {error}')
        frame.timings[product] = time.perf_counter() - tick

    def _colormap(self, frame, depth):
        frame.colormap = self._colorizer.colorize(
            depth, out=self._buffer('colormap', depth.shape + (3,), np.uint8))

    def _cloud(self, frame, camera, depth, image, channel_order):
        backprojector = camera.backprojector
        if backprojector is None:
            raise _Unavailable(camera.output_problems['cloud'])
        frame.points = backprojector.points(
            depth, out=self._buffer('points', backprojector.shape + (3,), np.float32))
        frame.cloud_intrinsics = backprojector.intrinsics
        if self._settings.cloud_color:
            frame.points_rgb = self._cloud_colors(backprojector.sample(image), channel_order)

    def _scan(self, frame, camera, depth):
        if camera.scan is None:
            raise _Unavailable(camera.output_problems['scan'])
        frame.scan = camera.scan.convert(depth)

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


class DepthPipeline:
    """One camera and its own network: ``DepthNetwork`` + ``CameraDepth`` in one object, for
    the tools (benchmark, demo, infer) and tests that serve a single stream.

    ``process`` runs a frame through both; ``infer`` / ``finish`` are the two halves (a caller
    may run them in different threads, so one frame's network overlaps the previous frame's
    products). depth_node uses the two classes directly (one network, a CameraDepth per camera).
    """

    def __init__(self, estimator, settings=DepthSettings()):
        self.network = DepthNetwork(estimator)
        self.camera = CameraDepth(settings, self.network.metric_network)

    @property
    def estimator(self):
        return self.network.estimator

    @property
    def estimators(self):
        return self.network.estimators

    @property
    def lanes(self):
        return self.network.lanes

    @property
    def settings(self):
        return self.camera.settings

    @property
    def metric_network(self):
        return self.network.metric_network

    def warmup(self, width, height, channel_order='rgb'):
        """``DepthNetwork.warmup``."""
        return self.network.warmup(width, height, channel_order)

    def configure(self, settings, intrinsics=None):
        """``CameraDepth.configure``."""
        self.camera.configure(settings, intrinsics)

    def reset_time(self):
        self.camera.reset_time()

    def scale_diagnostics(self, state=None):
        """``CameraDepth.scale_diagnostics``."""
        return self.camera.scale_diagnostics(state)

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

        The same as ``finish(infer(image, channel_order), ...)``; a caller may run the two
        halves in different threads so one frame's network overlaps the previous frame's
        products (depth_node does).
        """
        check_intrinsics(intrinsics, image)
        return self.camera.finish(self.network.infer(image, channel_order), image,
                                  channel_order, intrinsics, stamp_s, anchors, products, floor)

    def infer(self, image, channel_order, lane=0):
        """``DepthNetwork.infer``."""
        return self.network.infer(image, channel_order, lane)

    def finish(self, inference, image, channel_order, intrinsics, stamp_s, anchors=None,
               products=PRODUCTS, floor=None):
        """``CameraDepth.finish``."""
        return self.camera.finish(inference, image, channel_order, intrinsics, stamp_s,
                                  anchors, products, floor)
