"""depth_node: camera images in; metric depth, colour map, point cloud, scan and CameraInfo out.

Subscribed (relative names, so ``__ns`` and remaps work):
  image (sensor_msgs/Image) or, with ``image.transport:=compressed``, image/compressed
  (sensor_msgs/CompressedImage); camera_info (sensor_msgs/CameraInfo); in sparse scale mode,
  anchors (LaserScan | Range | PointCloud2 | Image, see ``scale.anchor_type``).
Published, every one with the input image's header (stamp, frame_id unless ``frame_id`` is set):
  depth/image (32FC1 metres, NaN = no reading), depth/relative (32FC1 network output),
  depth/colormap (bgr8), depth/camera_info, depth/points (organized PointCloud2),
  depth/scan (LaserScan, when ``scan.enabled``), /diagnostics.
TF (``ros/tf_frames.py``, when tf2_ros is installed): with ``scale.ground_frame`` set, the
ground_plane mode takes the floor from ``ground_frame -> image frame`` at each image's stamp;
sparse anchors are moved from their message's frame_id into the image frame at their stamp.
Either falls back to its parameters (camera height/pitch/roll, ``scale.anchor_extrinsic``)
with a rate-limited warning, and /diagnostics says which source the last frame used.

The node is only translation: messages -> numpy -> ``DepthPipeline`` -> messages. Frames are
processed in the process's main thread (and, with ``inference.parallel_frames`` > 1, in one
more thread per extra frame in flight; outputs keep the camera's order) while ROS callbacks run
in a background executor thread (see ``main``); the subscription hands frames over, still
serialized, through a one-slot mailbox (``midas_ros.intake``), so the node always works on the
newest frame, a slow model drops frames instead of building a backlog, and only the frame taken
is deserialized. Only the outputs that have subscribers are computed and built; with none,
frames are not even inferred.

A managed (lifecycle) node (``ros/lifecycle.py``): the model is built (and warmed up) on
configure, the inputs are subscribed only while active, the model is freed on cleanup;
``autostart`` (default true) walks to active at start-up.
"""
import contextlib
import gc
import math
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, LaserScan, PointCloud2, Range

from midas_ros.cpu_budget import prefer_passive_waiting
from midas_ros.depth_pipeline import (DepthPipeline, DepthSettings, SkippedOutputs,
                                      check_intrinsics, check_settings)
from midas_ros.geometry import (BODY_FROM_OPTICAL, Intrinsics, laser_scan_points,
                                project_points, transform_from_xyz_rpy)
from midas_ros.handoff import Handoff
from midas_ros.intake import LatestFrame
from midas_ros.ros.conversions import (ConversionError, camera_info_to_intrinsics, cloud_to_xyz,
                                       compressed_to_array, depth_to_metres, image_to_array,
                                       projection_is_set)
from midas_ros.ros.depth_messages import (DEPTH_TOPICS, DepthMessageBuilder, products_for,
                                          skipped_topics)
from midas_ros.ros.depth_node_params import DEPTH_NODE_PARAMS
from midas_ros.ros.lifecycle import ManagedNode
from midas_ros.ros.node_main import run_node
from midas_ros.ros.parameters import declare_parameters, on_set_parameters
from midas_ros.ros.qos import qos_profile, subscribe, unsubscribe
from midas_ros.ros.tf_frames import FrameTransforms, TransformUnavailable
from midas_ros.ros.throttled_log import ThrottledLog
from midas_ros.ros.time_jumps import on_time_jump_back
from midas_ros.scale import FloorPlane

THROTTLE_S = 5.0
FIRST_CAMERA_INFO_WAIT_S = 0.5
# How long a frame may wait for the transform of its own stamp (the robot's TF for that
# instant is often published just after the image).
TF_WAIT_S = 0.1
DEFAULT_FRAME = 'camera_optical_frame'
# Image encoding -> channel order the estimator understands.
CHANNEL_ORDER = {'rgb8': 'rgb', 'bgr8': 'bgr', 'rgba8': 'rgba', 'bgra8': 'bgra', 'mono8': 'mono'}
OUTPUT_TYPES = {'depth/image': Image, 'depth/relative': Image, 'depth/colormap': Image,
                'depth/camera_info': CameraInfo, 'depth/points': PointCloud2,
                'depth/scan': LaserScan}
ANCHOR_MESSAGES = {'scan': LaserScan, 'range': Range, 'points': PointCloud2, 'depth': Image}


def warmup_size(values):
    """``inference.warmup_size`` as (width, height), or None for [0, 0]; ValueError if it is
    neither."""
    size = list(values['inference.warmup_size'])
    if size == [0, 0]:
        return None
    if len(size) != 2 or not all(isinstance(v, int) and 16 <= v <= 16384 for v in size):
        raise ValueError(f'inference.warmup_size must be [width, height] in pixels (16 to '
                         f'16384) or [0, 0] for none, got {size}')
    return tuple(size)


def settings_from_parameters(values):
    """The pipeline's run-time settings from depth_node's parameter values."""
    return DepthSettings(
        scale_mode=values['scale.mode'], scale_a=values['scale.a'], scale_b=values['scale.b'],
        uncalibrated_median_depth=values['scale.uncalibrated_median_depth'],
        camera_height=values['scale.camera_height'],
        camera_pitch_deg=values['scale.camera_pitch_deg'],
        camera_roll_deg=values['scale.camera_roll_deg'], floor_rows=values['scale.floor_rows'],
        time_constant=values['scale.time_constant'],
        min_inlier_ratio=values['scale.min_inlier_ratio'],
        max_residual=values['scale.max_residual'], min_depth=values['depth.min'],
        max_depth=values['depth.max'], colormap_max_depth=values['colormap.max_depth'],
        cloud_enabled=values['cloud.enabled'], cloud_decimation=values['cloud.decimation'],
        cloud_color=values['cloud.color'], scan_enabled=values['scan.enabled'],
        scan_height=values['scan.height'], scan_range_min=values['scan.range_min'],
        scan_range_max=values['scan.range_max'])


def anchor_transform(values):
    """4x4 transform from the anchor sensor's frame to the camera optical frame.

    ``scale.anchor_extrinsic`` is the sensor's pose in the camera's REP 103 body frame (x
    forward, y left, z up; what camera_link -> sensor transforms say), because that is how a
    lidar or range finder mounted next to a camera is measured: all zeros is a forward-looking
    sensor at the camera. Raises ValueError for a malformed value.
    """
    extrinsic = list(values['scale.anchor_extrinsic'])
    if len(extrinsic) != 6 or not all(math.isfinite(v) for v in extrinsic):
        raise ValueError('scale.anchor_extrinsic must be 6 finite numbers [x, y, z, roll, '
                         f'pitch, yaw], got {extrinsic}')
    optical_from_body = np.eye(4)
    optical_from_body[:3, :3] = BODY_FROM_OPTICAL.T
    return optical_from_body @ transform_from_xyz_rpy(*extrinsic)


class DepthNode(ManagedNode):
    """Thin ROS wrapper of ``DepthPipeline``; see the module docstring for topics.

    A managed (lifecycle) node: parameters are declared at creation, ``configure`` builds the
    estimator (model, backend, warm-up) and the publishers, ``activate`` subscribes and starts
    the per-frame work, ``deactivate`` unsubscribes and waits for the frame in flight (no
    inference while inactive), ``cleanup`` frees the model. With ``autostart`` (default) it
    walks to active by itself.
    """

    def __init__(self, **kwargs):
        super().__init__('depth_node', **kwargs)
        self.values = declare_parameters(self, DEPTH_NODE_PARAMS)
        self.throttled = ThrottledLog(self.get_logger(), THROTTLE_S)
        self.tf = FrameTransforms(self)
        # Where the last frame's scale geometry came from (TF or parameters), for diagnostics.
        self.geometry = {}
        self.anchor_transform = anchor_transform(self.values)
        self.pipeline = None        # built by configure, freed by cleanup
        self.outputs = {}
        self.pub_diagnostics = None
        self.messages = None
        # The processing (main) thread runs the pipeline while parameter changes, in the
        # callback thread, reconfigure it.
        self._pipeline_lock = threading.Lock()
        # Held while a frame is inferred (main thread, lane 0) / its outputs made and
        # published (the outputs worker): deactivate takes both, and stops the other lanes'
        # threads (``inference.parallel_frames``), so no frame is worked on after it returns.
        self._work_lock = threading.Lock()
        self._finish_lock = threading.Lock()
        self._warmup_lock = threading.Lock()    # lanes meeting a new image size at once
        self._lane_threads = []
        self._lanes_stop = threading.Event()
        # Frames finish in arrival order: a lane that took an older frame and finishes after
        # a newer one has its frame dropped (counted), never published out of order.
        self._newest_finished = 0
        self._superseded = 0
        self._outputs_stage = Handoff('depth_outputs')
        self.add_on_set_parameters_callback(
            on_set_parameters(DEPTH_NODE_PARAMS, lambda: self.values, self._apply_parameters))
        self.skipped_outputs = SkippedOutputs()

        # Depth 1: a frame waiting in DDS behind a newer one is worth nothing. Raw: a frame
        # the node drops is never deserialized.
        self.frames = LatestFrame()
        self._image_type = CompressedImage if self.values['image.transport'] == 'compressed' \
            else Image
        self._inputs = []           # subscriptions and the diagnostics timer, while active
        self.camera_info = None
        self._camera_info_arrived = threading.Condition()
        self._first_camera_info_wait = True
        self.anchors = None  # (message, receive time)

        self.stats = {'processed': 0, 'idle': 0, 'errors': 0, 'latency_s': 0.0, 'fps': 0.0}
        self.warming_up = None   # (width, height) while the estimator warms up for that size
        self.stage_times = {}
        self.last_frame = None
        self.last_scale = None   # (ScaleState, whether the depth was metric) of the last frame
        self._rate_window = []
        self._time_jumps = on_time_jump_back(self, self._forget_the_past)

    # ---------------------------------------------------------------- lifecycle
    def configure(self):
        """Build the estimator (model weights, backend, warm-up), the pipeline, publishers."""
        values = self.values
        estimator = self._create_estimator(values)
        self.pipeline = DepthPipeline(estimator, settings_from_parameters(values))
        if self.pipeline.settings.scale_mode == 'uncalibrated':   # 'auto' resolved
            self.get_logger().warning(
                "scale.mode is 'uncalibrated': depth is only relative (the median pixel of each "
                f"frame is put at {values['scale.uncalibrated_median_depth']} m). Configure "
                'scale.mode fixed / ground_plane / sparse for metric distances (README: Metric '
                'depth).')
        output_qos = qos_profile(values['output.qos'])
        self.outputs = {topic: self.create_lifecycle_publisher(OUTPUT_TYPES[topic], topic,
                                                               output_qos)
                        for topic in DEPTH_TOPICS}
        self.pub_diagnostics = self.create_lifecycle_publisher(DiagnosticArray, '/diagnostics',
                                                               10)
        self.messages = DepthMessageBuilder()
        # The camera's size warmed up before subscribing (graph loaded or exported, the 'auto'
        # parity check, lazy kernels): a camera that waits for this subscriber loses no frames
        # to it. Another size warms up on its first image (``_warm_up``).
        size = warmup_size(values)
        if size is not None:
            self.pipeline.warmup(*size)
        self.get_logger().info(
            f"depth_node ready: model {values['model.name']} on {estimator.device} "
            f'({estimator.backend}, {estimator.precision}: {estimator.precision_reason}); '
            + (f'warmed up for {size[0]}x{size[1]} images, ' if size else '')
            + 'another size warms up on its first image')
        reason, threads = self._runtime()
        self.get_logger().info(f"backend {estimator.backend} (model.backend "
                               f"{values['model.backend']}): {reason}; {threads}")

    def activate(self):
        """Subscribe the inputs; start the per-frame work and diagnostics."""
        values = self.values
        self._first_camera_info_wait = True
        image_topic = 'image' if self._image_type is Image else 'image/compressed'
        self._inputs = [
            subscribe(self, self._image_type, image_topic, self.frames.put, values['image.qos'],
                      1, raw=True),
            subscribe(self, CameraInfo, 'camera_info', self._on_camera_info,
                      values['image.qos'], 5),
            # Subscribed in every mode, so that scale.mode can become 'sparse' at run time;
            # with no publisher it costs nothing.
            self.create_subscription(ANCHOR_MESSAGES[values['scale.anchor_type']], 'anchors',
                                     self._on_anchors, qos_profile('sensor_data', depth=1))]
        self._diagnostics_timer = self.create_timer(values['diagnostics.period'],
                                                    self._publish_diagnostics)
        # Lane 0 is the main thread (``run``); the other lanes' threads live while active.
        self._lanes_stop.clear()
        self._lane_threads = [
            threading.Thread(target=self._work_loop, args=(lane, contextlib.nullcontext()),
                             name=f'depth_lane{lane}', daemon=True)
            for lane in range(1, self.pipeline.lanes)]
        for thread in self._lane_threads:
            thread.start()
        self.get_logger().info(f'depth_node active: subscribed to '
                               f'{self.resolve_topic_name(image_topic)}')

    def deactivate(self):
        """Unsubscribe and wait for the frames in flight: no inference, no output after this."""
        self._stop_lanes()
        with self._work_lock, self._finish_lock:
            for subscription in self._inputs:
                unsubscribe(self, subscription)
            self._inputs = []
            self.destroy_timer(self._diagnostics_timer)
            self.frames.take(timeout=0)      # a waiting frame is stale once reactivated
            self.anchors = None

    def cleanup(self):
        """Free the model (and its backend's memory) and the publishers."""
        with self._work_lock, self._finish_lock, self._pipeline_lock:
            for publisher in [*self.outputs.values(), self.pub_diagnostics]:
                if publisher is not None:
                    self.destroy_lifecycle_publisher(publisher)
            self.outputs, self.pub_diagnostics, self.messages = {}, None, None
            device = self.pipeline.estimator.device if self.pipeline is not None else None
            self.pipeline = None
        gc.collect()
        if str(device).startswith('cuda'):
            import torch
            torch.cuda.empty_cache()

    # ---------------------------------------------------------------- set-up
    def _create_estimator(self, values):
        from midas_ros.inference import DepthEstimator
        if not values['model.pretrained']:
            self.get_logger().warning(
                'model.pretrained is false: RANDOM network weights, the depth is meaningless '
                '(for tests and demos only)')
        return DepthEstimator(
            values['model.name'], device=values['device'], pretrained=values['model.pretrained'],
            parallel_frames=values['inference.parallel_frames'],
            weights=values['model.weights'] or None,
            weights_dir=values['model.weights_dir'] or None,
            allow_download=values['model.allow_download'],
            precision=values['inference.precision'],
            channels_last=values['inference.channels_last'],
            compile=values['inference.compile'], cpu_threads=values['inference.cpu_threads'],
            interop_threads=values['inference.interop_threads'],
            opencv_threads=values['inference.opencv_threads'],
            backend=values['model.backend'], backend_fallback=values['model.backend_fallback'],
            input_size=values['model.input_size'], max_depth=values['model.max_depth'])

    def _apply_parameters(self, candidate):
        """Build everything the candidate values need; swap it in only if all of it works."""
        try:
            transform = anchor_transform(candidate)
            settings = settings_from_parameters(candidate)
            intrinsics = self.last_frame[1] if self.last_frame else None
            with self._pipeline_lock:
                if self.pipeline is None:       # unconfigured: configure will use them
                    check_settings(settings)
                else:
                    self.pipeline.configure(settings, intrinsics)
        except ValueError as error:
            return str(error)
        self.anchor_transform = transform
        self.values = candidate
        return None

    def _runtime(self):
        """(why this backend, the thread plan and why that many frames in parallel) of the
        estimator, '' for what it lacks."""
        estimator = self.pipeline.estimator
        choice = getattr(estimator, 'backend_choice', None)
        plan = getattr(estimator, 'thread_plan', None)
        frames = getattr(estimator, 'parallel_frames_reason', '')
        return (choice.reason if choice else '',
                (plan.describe() + (f' ({frames})' if frames else '')) if plan else '')

    # ---------------------------------------------------------------- inputs
    def _on_camera_info(self, msg):
        with self._camera_info_arrived:
            self.camera_info = msg
            self._camera_info_arrived.notify_all()

    def _await_first_camera_info(self):
        """Give the camera_info of the very first frame a moment: cameras publish it right
        after the image, and without it the first frames would use the FOV default."""
        if self._first_camera_info_wait:
            self._first_camera_info_wait = False
            with self._camera_info_arrived:
                self._camera_info_arrived.wait_for(lambda: self.camera_info is not None,
                                                   FIRST_CAMERA_INFO_WAIT_S)

    def _on_anchors(self, msg):
        self.anchors = (msg, time.monotonic())

    def _intrinsics_for(self, width, height):
        """The intrinsics of a width x height image: CameraInfo if usable, else the FOV default."""
        info = self.camera_info
        if info is not None:
            try:
                intrinsics = camera_info_to_intrinsics(info).validate()
            except (ConversionError, ValueError) as error:
                self.throttled.warning(f'camera_info unusable ({error}); using camera.hfov_deg='
                                       f"{self.values['camera.hfov_deg']}")
            else:
                if any(info.d) and not projection_is_set(info):
                    # With P set, D describes the raw image and P the rectified one: normal.
                    self.get_logger().warning(
                        'camera_info has lens distortion and no projection matrix P: '
                        'depth_node treats images as rectified (pinhole K); subscribe it to a '
                        'rectified stream (image_rect) for exact geometry', once=True)
                if (intrinsics.width, intrinsics.height) == (width, height):
                    return intrinsics
                try:
                    # The same camera, resized image (e.g. a downscaled stream): scale K.
                    resized = intrinsics.resized_to(width, height)
                except ValueError as error:
                    self.throttled.warning(
                        f'camera_info does not fit the image ({error}): using '
                        f"camera.hfov_deg={self.values['camera.hfov_deg']}")
                else:
                    self.throttled.warning(
                        f'camera_info is {intrinsics.width}x{intrinsics.height}, image is '
                        f'{width}x{height}: scaling the intrinsics')
                    return resized
        else:
            self.get_logger().info(
                'no camera_info received yet: assuming a '
                f"{self.values['camera.hfov_deg']} deg horizontal field of view", once=True)
        return Intrinsics.from_fov(width, height, self.values['camera.hfov_deg'])

    def _decode(self, msg):
        """(pixels, channel order) of an Image or CompressedImage; ConversionError if unusable."""
        if isinstance(msg, CompressedImage):
            pixels, encoding = compressed_to_array(msg)
        else:
            pixels, encoding = image_to_array(msg)
        order = CHANNEL_ORDER.get(encoding)
        if order is None:
            raise ConversionError(f"encoding '{encoding}' is not a colour or mono8 camera image "
                                  f"(accepted: {', '.join(CHANNEL_ORDER)})")
        return pixels, order

    def _current_anchors(self, intrinsics, image_frame):
        """Anchors ``(u, v, z, valid)`` in this image from the newest anchor message."""
        if self.anchors is None:
            return None
        msg, received = self.anchors
        if time.monotonic() - received > self.values['scale.anchor_timeout']:
            return None
        try:
            return self._anchors_from(msg, intrinsics, image_frame)
        except ConversionError as error:   # a bad anchor message must not cost the frame
            self.throttled.warning(f'anchors ignored: {error}')
            return None

    def _anchor_transform_for(self, msg, image_frame):
        """optical_from_sensor for an anchor message: TF from its frame_id at its stamp, else
        ``scale.anchor_extrinsic``; the source goes to diagnostics."""
        sensor_frame = msg.header.frame_id
        if not sensor_frame:
            source = 'scale.anchor_extrinsic (anchors have no frame_id)'
        elif not self.tf.available:
            source = 'scale.anchor_extrinsic (tf2_ros not available)'
        else:
            try:
                transform = self.tf.lookup(image_frame, sensor_frame, msg.header.stamp,
                                           TF_WAIT_S)
            except TransformUnavailable as error:
                self.tf.report_missing(self.throttled, f'anchors: no transform {error}; '
                                       'using scale.anchor_extrinsic')
                source = f'scale.anchor_extrinsic (no transform {error})'
            else:
                self.geometry = {'anchor transform source': f'tf {sensor_frame} -> {image_frame}'}
                return transform
        self.geometry = {'anchor transform source': source}
        return self.anchor_transform

    def _floor_for(self, image_frame, stamp):
        """This frame's floor from TF (``scale.ground_frame`` -> ``image_frame`` at ``stamp``),
        or None for the one of the parameters; what was used goes to diagnostics."""
        values = self.values
        ground_frame = values['scale.ground_frame']
        floor = None
        if not ground_frame:
            source = 'parameters'
        elif not self.tf.available:
            source = 'parameters (tf2_ros not available)'
        else:
            try:
                floor = FloorPlane.from_transform(
                    self.tf.lookup(ground_frame, image_frame, stamp, TF_WAIT_S))
                source = f'tf {ground_frame} -> {image_frame}'
            except TransformUnavailable as error:
                self.tf.report_missing(self.throttled, f'ground_plane: no transform {error}; '
                                       'using scale.camera_height/_pitch_deg/_roll_deg')
                source = f'parameters (no transform {error})'
        used = floor or FloorPlane.from_height_pitch_roll(
            values['scale.camera_height'], math.radians(values['scale.camera_pitch_deg']),
            math.radians(values['scale.camera_roll_deg']))
        pitch, roll = used.pitch_roll()
        self.geometry = {'floor source': source, 'camera height (m)': f'{used.height:.4f}',
                         'camera pitch (deg)': f'{math.degrees(pitch):.3f}',
                         'camera roll (deg)': f'{math.degrees(roll):.3f}'}
        return floor

    def _anchors_from(self, msg, intrinsics, image_frame):
        if isinstance(msg, Image):  # a sparse depth image registered to the camera
            depth = depth_to_metres(msg)
            v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
            sx, sy = intrinsics.width / msg.width, intrinsics.height / msg.height
            return (u + 0.5) * sx - 0.5, (v + 0.5) * sy - 0.5, depth[v, u]
        if isinstance(msg, LaserScan):
            points = laser_scan_points(msg.ranges, msg.angle_min, msg.angle_increment,
                                       msg.range_min, msg.range_max)
        elif isinstance(msg, Range):
            in_range = msg.min_range <= msg.range <= msg.max_range
            points = np.array([[msg.range, 0.0, 0.0]]) if in_range else np.zeros((0, 3))
        else:
            points = cloud_to_xyz(msg).reshape(-1, 3)
        return project_points(points, self._anchor_transform_for(msg, image_frame), intrinsics)

    # ---------------------------------------------------------------- work
    def run(self):
        """Process frames until shutdown. Call from the process's main thread (see ``main``):
        the network of lane 0 runs here (the other lanes' in their threads, see
        ``activate``), each frame's outputs in the ``outputs`` worker, overlapping the next
        frames' networks (``midas_ros.handoff``)."""
        try:
            self._work_loop(0, self._work_lock)
        finally:
            self._stop_lanes()
            self._outputs_stage.close()

    def _stop_lanes(self):
        """End the other lanes' threads, each after the frame it works on."""
        self._lanes_stop.set()
        for thread in self._lane_threads:
            thread.join()
        self._lane_threads = []

    def _work_loop(self, lane, lock):
        """Take the newest frame and run it through ``lane``'s network, until shutdown (or,
        for lanes other than 0, deactivation). ``lock`` is held over each frame: lane 0's is
        the one deactivate takes; the other lanes' threads are joined instead."""
        while rclpy.ok(context=self.context) and not (
                lane and (self._lanes_stop.is_set() or lane >= self.pipeline.lanes)):
            taken = self.frames.take(timeout=0.2)
            if taken is None:
                continue
            with lock:
                if self.active:     # not deactivated while the frame waited
                    self._guarded(self._process, taken, lane)

    def _guarded(self, work, *args):
        """``work(*args)``; a failure costs that frame only (counted, logged, rate-limited)."""
        try:
            work(*args)
        except (ConversionError, ValueError) as error:
            self.stats['errors'] += 1
            self.throttled.warning(f'frame skipped: {error}')
        except Exception as error:  # keep the node alive whatever one frame does
            if not rclpy.ok(context=self.context):
                return      # the frame raced with the shutdown (Ctrl-C)
            self.stats['errors'] += 1
            self.throttled.error(f'frame failed: {type(error).__name__}: {error}')

    def _warm_up(self, width, height, order, lane):
        """Build / compile / autotune for ``width`` x ``height`` once, before its first frame.

        Exported backends build (or load) their graph here, ``torch.compile`` compiles and
        cuDNN autotunes: seconds to minutes (a TensorRT engine build on a Jetson) that must not
        be paid inside the frame loop unannounced. /diagnostics says 'warming up' meanwhile.
        Each lane warms up its own estimator (another lane may be running its own at that
        moment), one lane at a time: exports and engine builds are not done twice at once.
        """
        estimator = self.pipeline.estimators[lane]
        with self._warmup_lock:
            self.get_logger().info(f'warming up for {width}x{height} images '
                                   f'({estimator.backend}, {estimator.precision} on '
                                   f'{estimator.device}'
                                   + (f', lane {lane})' if self.pipeline.lanes > 1 else ')'))
            self.warming_up = (width, height)
            try:
                seconds = estimator.warmup(width, height, order)
            finally:
                self.warming_up = None
        self.get_logger().info(f'ready for {width}x{height} images: warm-up took {seconds:.2f} s'
                               f' ({estimator.backend}, {estimator.precision})')

    def _process(self, taken, lane):
        start = time.perf_counter()
        msg = deserialize_message(taken.payload, self._image_type)
        deserialized = time.perf_counter()
        pixels, order = self._decode(msg)
        height, width = pixels.shape[:2]
        if (width, height) not in self.pipeline.estimators[lane].warmed_up:
            self._warm_up(width, height, order, lane)
        self._await_first_camera_info()
        intrinsics = self._intrinsics_for(width, height)
        previous = self.last_frame
        if previous is not None and previous[0] != (width, height):
            self.get_logger().info(f'image size changed from {previous[0][0]}x{previous[0][1]} '
                                   f'to {width}x{height}')
        self.last_frame = ((width, height), intrinsics)
        # Like depth_image_proc, work only for outputs someone listens to: nothing at all
        # (not even the network) while no one does.
        wanted = [topic for topic, publisher in self.outputs.items()
                  if publisher.get_subscription_count() > 0]
        if not wanted:
            self.stats['idle'] += 1
            return
        stamp = msg.header.stamp
        header = msg.header
        header.frame_id = self._output_frame(header.frame_id)
        mode = self.values['scale.mode']
        self.geometry = {}
        anchors = (self._current_anchors(intrinsics, header.frame_id) if mode == 'sparse'
                   else None)
        floor = self._floor_for(header.frame_id, stamp) if mode == 'ground_plane' else None
        check_intrinsics(intrinsics, pixels)
        inference = self.pipeline.infer(pixels, order, lane)
        inference.timings['deserialize'] = deserialized - start
        # ``pixels`` views ``msg``'s data: the job keeps both alive until it has run.
        self._outputs_stage.submit(self._guarded, self._finish, taken.number, msg, pixels,
                                   order, intrinsics, inference, anchors, floor, wanted, start)

    def _finish(self, number, msg, pixels, order, intrinsics, inference, anchors, floor,
                wanted, start):
        """Second stage (``outputs`` worker): metric depth, products, messages, publishing."""
        with self._finish_lock:
            if number < self._newest_finished:
                self._superseded += 1     # a newer frame's outputs are out already
                return
            self._newest_finished = number
            if self.active:     # deactivate waits for this; after it, nothing is published
                self._finish_active(msg, pixels, order, intrinsics, inference, anchors, floor,
                                    wanted, start)

    def _finish_active(self, msg, pixels, order, intrinsics, inference, anchors, floor, wanted,
                       start):
        header = msg.header
        stamp = header.stamp
        with self._pipeline_lock:
            frame = self.pipeline.finish(inference, pixels, order, intrinsics,
                                         stamp.sec + stamp.nanosec * 1e-9, anchors,
                                         products_for(wanted), floor)
            self.last_scale = frame.scale, frame.calibrated
            if frame.scale_problem:
                self.throttled.warning(f'{frame.scale_problem}; publishing uncalibrated depth')
            # Built inside the lock: the frame's arrays are buffers the next frame reuses.
            tick = time.perf_counter()
            messages = self.messages.build(frame, intrinsics, header,
                                           self.values['scan.frame_id'], wanted)
            frame.timings['messages'] = time.perf_counter() - tick
            self._report_skipped(wanted, skipped_topics(frame, wanted, self.messages.problems))
        tick = time.perf_counter()
        for topic, message in messages.items():
            self.outputs[topic].publish(message)
        frame.timings['publish'] = time.perf_counter() - tick
        self._count(time.perf_counter() - start, frame.timings)

    def _report_skipped(self, wanted, skipped):
        """An output that cannot be made costs only itself: one warning when it starts being
        skipped (or for another reason), one line when it is back; diagnostics list it."""
        started, recovered = self.skipped_outputs.update(wanted, skipped)
        for topic, reason in started.items():
            self.get_logger().warning(f'{topic} skipped: {reason}; the other outputs continue')
        for topic in recovered:
            self.get_logger().info(f'{topic} published again')

    def _output_frame(self, image_frame_id):
        frame_id = self.values['frame_id'] or image_frame_id
        if not frame_id:
            self.get_logger().warning(f"input images have no frame_id: using '{DEFAULT_FRAME}'",
                                      once=True)
            frame_id = DEFAULT_FRAME
        return frame_id

    def _count(self, latency_s, timings):
        # Per-stage times for diagnostics, smoothed over about ten frames.
        for stage, seconds in timings.items():
            previous = self.stage_times.get(stage, seconds)
            self.stage_times[stage] = previous + 0.1 * (seconds - previous)
        now = time.monotonic()
        self.stats['processed'] += 1
        self.stats['latency_s'] = latency_s
        window = self._rate_window
        window.append(now)
        while window and now - window[0] > 5.0:
            window.pop(0)
        span = window[-1] - window[0]
        self.stats['fps'] = (len(window) - 1) / span if span > 0 else 0.0

    def _forget_the_past(self, why):
        """ROS time went back (a bag loop, a simulator reset): the scale filter, the rate and
        latency windows and the anchors belong to the old time line."""
        with self._pipeline_lock:
            if self.pipeline is not None:
                self.pipeline.reset_time()
            self._rate_window.clear()
            self.stats['fps'] = self.stats['latency_s'] = 0.0
            self.anchors = None
        self.tf.clear()
        self.get_logger().info(f'{why}: cleared the scale smoothing, frame rate, latency, '
                               'anchors and transforms (a bag loop or simulator reset?)')

    # ---------------------------------------------------------------- diagnostics
    def _publish_diagnostics(self):
        status = DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: depth',
                                  hardware_id=self.values['model.name'])
        scale, metric = self.last_scale or (None, False)
        estimator = self.pipeline.estimator
        reason, threads = self._runtime()
        values = {
            'backend': estimator.backend,
            'backend reason': reason,
            'threads': threads,
            'backend requested': estimator.requested_backend,
            # Any lane's: a replica's own session may fail where lane 0's did not.
            'backend error': next((e.backend_error for e in self.pipeline.estimators
                                   if e.backend_error), ''),
            'device': str(estimator.device),
            'precision': f'{estimator.precision} ({estimator.precision_reason})',
            'warm-up (s)': ', '.join(f'{w}x{h}: {seconds:.2f}' for (w, h), seconds
                                     in list(estimator.warmed_up.items())),
            **self.pipeline.scale_diagnostics(scale),   # mode (after 'auto'), fit kind
            'depth metric': str(metric),
            'frames received': self.frames.received,
            'frames processed': self.stats['processed'],
            'frames dropped': self.frames.dropped + self._superseded,
            # Of those, frames whose network finished after a newer frame's (parallel frames).
            'frames superseded': self._superseded,
            'intake per received frame (ms)': f'{self.frames.put_seconds * 1e3:.3f}',
            'frames failed': self.stats['errors'],
            'frames skipped (no subscribers)': self.stats['idle'],
            'frame rate (Hz)': f"{self.stats['fps']:.2f}",
            'latency (ms)': f"{self.stats['latency_s'] * 1e3:.1f}",
        }
        if estimator.backend_error and estimator.backend == estimator.requested_backend:
            status.level = DiagnosticStatus.ERROR
            status.message = f'backend {estimator.backend} failed: {estimator.backend_error}'
        elif self.warming_up is not None:
            status.level = DiagnosticStatus.WARN
            status.message = 'warming up for {}x{} images'.format(*self.warming_up)
        elif self.stats['processed'] == 0:
            status.level, status.message = DiagnosticStatus.WARN, 'no image processed yet'
        elif estimator.backend_error:
            status.level = DiagnosticStatus.WARN
            status.message = (f'backend {estimator.requested_backend} failed, running '
                              f'{estimator.backend}: {estimator.backend_error}')
        elif not metric:
            status.level = DiagnosticStatus.WARN
            status.message = 'depth is uncalibrated (relative)'
        else:
            status.level, status.message = DiagnosticStatus.OK, 'metric depth'
        if scale is not None:
            fit = scale.fit
            values.update({
                'scale a': f'{scale.a:.6g}', 'scale b': f'{scale.b:.6g}',
                'scale stale': str(scale.stale),
                'fit accepted': str(scale.accepted), 'fit rejection': scale.reason,
                'fit inliers': str(fit.inliers), 'fit samples': str(fit.samples),
                'fit inlier ratio': f'{fit.inlier_ratio:.3f}',
                'fit residual': f'{fit.residual:.4f}'})
        values.update(self.geometry)
        skipped = dict(self.skipped_outputs.reasons)    # a snapshot (processing thread)
        values.update({f'output {topic}': f'skipped: {reason}'
                       for topic, reason in skipped.items()})
        if skipped and status.level == DiagnosticStatus.OK:
            status.level = DiagnosticStatus.WARN
        if skipped:
            status.message += f"; skipped: {', '.join(sorted(skipped))}"
        # A snapshot: the processing thread adds stages while this runs in the callback one.
        values.update({f'time {stage} (ms)': f'{seconds * 1e3:.2f}'
                       for stage, seconds in list(self.stage_times.items())})
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(array)


def main(args=None):
    """Frames are processed in the main thread and ROS callbacks run in a background one:
    torch's CPU thread pool is fastest driven from the thread that created it (measured on 2
    cores: 46 ms per midas_v21_small_256 forward from the main thread, 72 ms from another)."""
    prefer_passive_waiting()   # before torch is imported: idle OpenMP threads must not spin
    # Any error building the node (a bad read-only parameter...) is one clear line.
    return run_node(DepthNode, 'depth_node', startup_errors=(Exception,), args=args,
                    main_thread_work=DepthNode.run)


if __name__ == '__main__':
    raise SystemExit(main())
