"""One camera of depth_node: its inputs, geometry, scale, outputs, statistics and diagnostics.

depth_node serves one or more cameras with one network (``DepthNetwork``). Everything that
belongs to a single camera lives in a ``DepthCamera``: its parameter values (the node's, with
its own ``<camera>.<name>`` overrides), subscriptions, CameraInfo and intrinsics, anchors, TF
frames, ``CameraDepth`` (scale mode and smoother, camera model, buffers), publishers and message
builder, navigation outputs (``NavigationOutputs``: depth/points, depth/scan,
depth/obstacle_points, depth/confidence under the camera's prefix, with its own filter.*,
obstacle_points.* and scan.* values), frame counts, rate and latency, skipped outputs and its
own DiagnosticStatus. A frame travels as one ``CameraFrame`` from intake (``intake``) through
the shared network to its camera's outputs (``publish``). Bad input (an encoding, a size
change, no CameraInfo, a clock jump) is logged naming the camera, rate-limited, and costs only
that camera.
"""
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, LaserScan, PointCloud2, Range

from midas_ros.depth_pipeline import (CameraDepth, DepthSettings, Inference, SkippedOutputs,
                                      check_intrinsics, check_settings)
from midas_ros.geometry import (BODY_FROM_OPTICAL, Intrinsics, laser_scan_points,
                                project_points, transform_from_xyz_rpy)
from midas_ros.image_messages import CHANNEL_ORDER
from midas_ros.ros.conversions import (ConversionError, camera_info_to_intrinsics, cloud_to_xyz,
                                       compressed_to_array, depth_to_metres, image_to_array,
                                       projection_is_set, stamp_ns)
from midas_ros.depth_outputs import (CAMERA_INFO_TOPIC, DEPTH_OUTPUTS, IMAGE_TOPIC,
                                     NAVIGATION_OUTPUTS, camera_topic)
from midas_ros.navigation import scale_confidence
from midas_ros.ros.depth_messages import (MESSAGE_TYPES, DepthMessageBuilder, products_for,
                                          skipped_topics)
from midas_ros.ros.navigation_outputs import NAVIGATION_TOPICS, NavigationOutputs
from midas_ros.ros.qos import qos_profile, subscribe, transport_topic, unsubscribe
from midas_ros.ros.tf_frames import TransformUnavailable
from midas_ros.ros.throttled_log import ThrottledLog
from midas_ros.scale import FloorPlane, anchor_age_s

THROTTLE_S = 5.0
FIRST_CAMERA_INFO_WAIT_S = 0.5
# How long a frame may wait for the transform of its own stamp (the robot's TF for that
# instant is often published just after the image).
TF_WAIT_S = 0.1
DEFAULT_FRAME = 'camera_optical_frame'
ANCHOR_MESSAGES = {'scan': LaserScan, 'range': Range, 'points': PointCloud2, 'depth': Image}
RATE_WINDOW_S = 5.0
# A camera's image stamps going back by more than this (its driver restarted, a bag of it
# looping) is a new time line for that camera alone.
STAMP_JUMP_S = 1.0
# The QoS parameter of the navigation stage's outputs (one profile for all of them).
NAVIGATION_QOS, = {output.qos for output in NAVIGATION_OUTPUTS}


def settings_from_parameters(values):
    """The pipeline's run-time settings from one camera's parameter values."""
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


@dataclass
class CameraFrame:
    """One frame from intake to publish (one object, whichever threads it passes through)."""

    camera: 'DepthCamera'
    number: int                     # the camera's arrival number (orders finished frames)
    start: float                    # time.perf_counter() when it was taken
    message: object                 # the Image / CompressedImage (``pixels`` view its data)
    pixels: np.ndarray              # HxWxC or HxW uint8
    order: str                      # channel order ('rgb', 'bgr', 'mono'...)
    intrinsics: Intrinsics
    wanted: tuple                   # the output topics with subscribers
    anchors: Optional[tuple] = None     # sparse mode: (u, v, z[, valid]) in this image
    floor: Optional[FloorPlane] = None  # ground_plane mode: this frame's floor from TF
    inference: Optional[Inference] = None
    timings: dict = field(default_factory=dict)

    @property
    def size(self):
        """(width, height) in pixels."""
        return self.pixels.shape[1], self.pixels.shape[0]


class _CameraLog:
    """The node's logger with the camera's name in front of every line (and ``once`` kept per
    text, since rclpy's ``once`` is per call site and every camera shares these). Each level
    logs from its own line: rclpy refuses one call site logging at two severities."""

    def __init__(self, logger, name):
        self._logger = logger
        self._prefix = f'camera {name}: ' if name else ''
        self._said = set()

    def _first_time(self, text, once):
        if not once:
            return True
        if text in self._said:
            return False
        self._said.add(text)
        return True

    def info(self, text, once=False):
        if self._first_time(text, once):
            self._logger.info(self._prefix + text)

    def warning(self, text, once=False):
        if self._first_time(text, once):
            self._logger.warning(self._prefix + text)

    def error(self, text, once=False):
        if self._first_time(text, once):
            self._logger.error(self._prefix + text)


class DepthCamera:
    """Camera ``name`` of depth_node ('' for the node's single unnamed camera, whose topics are
    the node's own: ``image`` -> ``depth/image``...). ``values``: its parameter values
    (unprefixed names). Created with the node; ``configure`` makes its publishers and depth
    stage, ``subscribe`` / ``unsubscribe`` follow activate / deactivate."""

    def __init__(self, node, name, values):
        self.node = node
        self.name = name
        self.log = _CameraLog(node.get_logger(), name)
        self.throttled = ThrottledLog(self.log, THROTTLE_S)
        self.values = values
        self.anchor_transform = anchor_transform(values)
        reason = NavigationOutputs.check(values)
        if reason is not None:
            raise ValueError(f'camera {name}: {reason}' if name else reason)
        # depth/points, depth/scan, depth/obstacle_points, depth/confidence (edge-filtered),
        # made from this camera's metric depth with this camera's values.
        self.navigation = NavigationOutputs(node, values=lambda: self.values, prefix=name,
                                            log=self.log, throttled=self.throttled)
        self.image_type = CompressedImage if values['image.transport'] == 'compressed' \
            else Image
        self.depth = None           # CameraDepth: configure makes it, cleanup frees it
        # Held while frames are finished and while parameter changes reconfigure ``depth``.
        self.lock = threading.Lock()
        self.publishers = {}
        self.messages = None
        self._subscriptions = []
        self.camera_info = None
        self._camera_info_arrived = threading.Condition()
        self._first_camera_info_wait = True
        self.anchors = None         # (message, receive time)
        self.geometry = {}          # where the last frame's scale geometry came from
        self.skipped_outputs = SkippedOutputs()
        self.stats = {'processed': 0, 'idle': 0, 'errors': 0, 'latency_s': 0.0, 'fps': 0.0}
        self.stage_times = {}
        self.last_frame = None      # ((width, height), intrinsics) of the last frame
        self.last_scale = None      # (ScaleState, whether the depth was metric)
        self.newest_finished = 0    # arrival number of the newest frame published
        self.superseded = 0
        self._rate_window = []
        self._last_stamp = None     # of the last frame taken (seconds)

    def topic(self, name):
        """``name`` in this camera's namespace (see ``depth_messages.camera_topic``)."""
        return camera_topic(self.name, name)

    @property
    def image_topic(self):
        # Compressed: the resolved (remapped, namespaced) image topic + '/compressed', as
        # image_transport names it, so remapping ``<cam>/image`` moves both.
        return transport_topic(self.node, self.topic(IMAGE_TOPIC), self.values['image.transport'])

    # ---------------------------------------------------------------- parameters
    def check(self, values):
        """Build what ``values`` need without applying it; ValueError with the reason (naming
        the camera) if they cannot work. Returns what ``apply`` takes."""
        try:
            transform = anchor_transform(values)
            settings = settings_from_parameters(values)
            reason = NavigationOutputs.check(values)
            if reason is not None:
                raise ValueError(reason)
            intrinsics = self.last_frame[1] if self.last_frame else None
            checked = self.depth.check(settings, intrinsics) if self.depth is not None \
                else check_settings(settings)
        except ValueError as error:
            raise ValueError(f'camera {self.name}: {error}' if self.name else str(error)) \
                from None
        return values, transform, settings, intrinsics, checked

    def apply(self, plan):
        """Swap in what ``check`` built."""
        values, transform, settings, intrinsics, checked = plan
        with self.lock:
            if self.depth is not None:
                self.depth.configure(settings, intrinsics, checked)
            self.anchor_transform = transform
            self.values = values

    # ---------------------------------------------------------------- lifecycle
    def configure(self, output_qos):
        """Make the depth stage and the (lifecycle) publishers of every output (the depth
        stage's here, the navigation stage's in ``navigation``); ``output_qos``: {QoS parameter
        name: profile} (``depth_outputs.Output.qos``)."""
        try:
            self.depth = CameraDepth(settings_from_parameters(self.values),
                                     self.node.network.metric_network)
        except ValueError as error:     # values that pass one by one but not together
            raise ValueError(f'camera {self.name}: {error}' if self.name else str(error)) \
                from None
        if self.depth.settings.scale_mode == 'uncalibrated':   # 'auto' resolved
            self.log.warning(
                "scale.mode is 'uncalibrated': depth is only relative (the median pixel of each "
                f"frame is put at {self.values['scale.uncalibrated_median_depth']} m). Configure "
                'scale.mode fixed / ground_plane / sparse for metric distances (README: Depth in '
                'metres).')
        self.publishers = {
            output.topic: self.node.create_lifecycle_publisher(
                MESSAGE_TYPES[output.topic], self.topic(output.topic), output_qos[output.qos])
            for output in DEPTH_OUTPUTS if output.stage == 'depth'}
        self.navigation.configure(output_qos[NAVIGATION_QOS])
        self.messages = DepthMessageBuilder()

    def subscribe(self, put):
        """Subscribe the image (serialized, handed to ``put``), camera_info and anchors."""
        values = self.values
        self._first_camera_info_wait = True
        self._subscriptions = [
            # Depth 1 and raw: a frame waiting behind a newer one is worth nothing, and one
            # the node drops is never deserialized.
            subscribe(self.node, self.image_type, self.image_topic, put, values['image.qos'],
                      1, raw=True),
            subscribe(self.node, CameraInfo, self.topic(CAMERA_INFO_TOPIC),
                      self._on_camera_info, values['image.qos'], 5),
            # Subscribed in every mode, so that scale.mode can become 'sparse' at run time;
            # with no publisher it costs nothing.
            self.node.create_subscription(
                ANCHOR_MESSAGES[values['scale.anchor_type']], self.topic('anchors'),
                self._on_anchors, qos_profile('sensor_data', depth=1))]

    def unsubscribe(self):
        for subscription in self._subscriptions:
            unsubscribe(self.node, subscription)
        self._subscriptions = []
        self.anchors = None

    def cleanup(self):
        """Free the publishers and the depth stage."""
        for publisher in self.publishers.values():
            self.node.destroy_lifecycle_publisher(publisher)
        self.navigation.cleanup()
        self.publishers, self.messages, self.depth = {}, None, None

    # ---------------------------------------------------------------- inputs
    def _on_camera_info(self, msg):
        with self._camera_info_arrived:
            self.camera_info = msg
            self._camera_info_arrived.notify_all()

    def _on_anchors(self, msg):
        self.anchors = (msg, self.node.get_clock().now().nanoseconds)

    def _await_first_camera_info(self):
        """Give the camera_info of the very first frame a moment: cameras publish it right
        after the image, and without it the first frames would use the FOV default."""
        if self._first_camera_info_wait:
            self._first_camera_info_wait = False
            with self._camera_info_arrived:
                self._camera_info_arrived.wait_for(lambda: self.camera_info is not None,
                                                   FIRST_CAMERA_INFO_WAIT_S)

    def intake(self, waiting):
        """The ``CameraFrame`` of a scheduler ``Waiting`` (deserialized, decoded, intrinsics,
        anchors, floor); with no one listening to any output its ``wanted`` is empty (nothing
        more, not even the network, is done then). Raises ConversionError / ValueError for a
        bad frame."""
        start = time.perf_counter()
        msg = deserialize_message(waiting.payload, self.image_type)
        deserialized = time.perf_counter()
        pixels, order = self._decode(msg)
        height, width = pixels.shape[:2]
        self._await_first_camera_info()
        intrinsics = self._intrinsics_for(width, height)
        previous = self.last_frame
        if previous is not None and previous[0] != (width, height):
            self.log.info(f'image size changed from {previous[0][0]}x{previous[0][1]} to '
                          f'{width}x{height}')
        self.last_frame = ((width, height), intrinsics)
        # Like depth_image_proc, work only for outputs someone listens to.
        wanted = tuple(topic for topic, publisher in self.publishers.items()
                       if publisher.get_subscription_count() > 0) + \
            tuple(self.navigation.wanted())
        if not wanted:      # still worth its size's warm-up: the first listener waits less
            self.stats['idle'] += 1
            return CameraFrame(self, waiting.number, start, msg, pixels, order, intrinsics, ())
        check_intrinsics(intrinsics, pixels)
        header = msg.header
        self._follow_stamps(header.stamp.sec + header.stamp.nanosec * 1e-9)
        header.frame_id = self._output_frame(header.frame_id)
        mode = self.values['scale.mode']
        self.geometry = {}
        anchors = (self._current_anchors(intrinsics, header.frame_id, header.stamp)
                   if mode == 'sparse' else None)
        floor = self._floor_for(header.frame_id, header.stamp) if mode == 'ground_plane' \
            else None
        return CameraFrame(self, waiting.number, start, msg, pixels, order, intrinsics, wanted,
                           anchors, floor, timings={'deserialize': deserialized - start})

    def _follow_stamps(self, stamp_s):
        """This camera's stamps went back (its driver restarted, a bag of it looping): its
        scale smoothing, rate window and anchors belong to its old time line; the other
        cameras keep theirs."""
        if self._last_stamp is not None and stamp_s < self._last_stamp - STAMP_JUMP_S:
            self.throttled.warning(f'image stamps went back {self._last_stamp - stamp_s:.3f} s: '
                                   'cleared its scale smoothing, frame rate and anchors')
            self.forget_the_past()
        self._last_stamp = stamp_s

    def _decode(self, msg):
        """(pixels, channel order) of an Image or CompressedImage; ConversionError if unusable."""
        if isinstance(msg, CompressedImage):
            pixels, encoding = compressed_to_array(msg)
        else:
            pixels, encoding = image_to_array(msg, accepted=CHANNEL_ORDER)
        order = CHANNEL_ORDER.get(encoding)
        if order is None:
            raise ConversionError(f"encoding '{encoding}' is not a colour or mono8 camera image "
                                  f"(accepted: {', '.join(CHANNEL_ORDER)})")
        return pixels, order

    def _intrinsics_for(self, width, height):
        """The intrinsics of a width x height image: CameraInfo if usable, else the FOV default."""
        info = self.camera_info
        hfov = self.values['camera.hfov_deg']
        if info is not None:
            try:
                intrinsics = camera_info_to_intrinsics(info).validate()
            except (ConversionError, ValueError) as error:
                self.throttled.warning(f'camera_info unusable ({error}); using camera.hfov_deg='
                                       f'{hfov}')
            else:
                if any(info.d) and not projection_is_set(info):
                    # With P set, D describes the raw image and P the rectified one: normal.
                    self.log.warning(
                        'camera_info has lens distortion and no projection matrix P: '
                        'depth_node treats images as rectified (pinhole K); subscribe it to a '
                        'rectified stream (image_rect) for exact geometry', once=True)
                if (intrinsics.width, intrinsics.height) == (width, height):
                    return intrinsics
                try:
                    # The same camera, resized image (e.g. a downscaled stream): scale K.
                    resized = intrinsics.resized_to(width, height)
                except ValueError as error:
                    self.throttled.warning(f'camera_info does not fit the image ({error}): '
                                           f'using camera.hfov_deg={hfov}')
                else:
                    self.throttled.warning(
                        f'camera_info is {intrinsics.width}x{intrinsics.height}, image is '
                        f'{width}x{height}: scaling the intrinsics')
                    return resized
        else:
            self.log.info(f'no camera_info received yet: assuming a {hfov} deg horizontal '
                          'field of view', once=True)
        return Intrinsics.from_fov(width, height, hfov)

    def _output_frame(self, image_frame_id):
        frame_id = self.values['frame_id'] or image_frame_id
        if not frame_id:
            self.log.warning(f"input images have no frame_id: using '{DEFAULT_FRAME}'",
                             once=True)
            frame_id = DEFAULT_FRAME
        return frame_id

    def _current_anchors(self, intrinsics, image_frame, image_stamp):
        """Anchors ``(u, v, z, valid)`` in this image from the newest anchor message, if it is
        within ``scale.anchor_timeout`` of the image in data time
        (:func:`midas_ros.scale.anchor_age_s`)."""
        if self.anchors is None:
            return None
        msg, received = self.anchors
        age = anchor_age_s(stamp_ns(msg.header.stamp), stamp_ns(image_stamp), received,
                           self.node.get_clock().now().nanoseconds)
        if age > self.values['scale.anchor_timeout']:
            return None
        try:
            return self._anchors_from(msg, intrinsics, image_frame)
        except ConversionError as error:   # a bad anchor message must not cost the frame
            self.throttled.warning(f'anchors ignored: {error}')
            return None

    def _anchor_transform_for(self, msg, image_frame):
        """optical_from_sensor for an anchor message: TF from its frame_id at its stamp, else
        ``scale.anchor_extrinsic``; the source goes to diagnostics."""
        tf = self.node.tf
        sensor_frame = msg.header.frame_id
        if not sensor_frame:
            source = 'scale.anchor_extrinsic (anchors have no frame_id)'
        elif not tf.available:
            source = 'scale.anchor_extrinsic (tf2_ros not available)'
        else:
            try:
                transform = tf.lookup(image_frame, sensor_frame, msg.header.stamp, TF_WAIT_S)
            except TransformUnavailable as error:
                tf.report_missing(self.throttled, f'anchors: no transform {error}; using '
                                  'scale.anchor_extrinsic')
                source = f'scale.anchor_extrinsic (no transform {error})'
            else:
                self.geometry = {'anchor transform source': f'tf {sensor_frame} -> {image_frame}'}
                return transform
        self.geometry = {'anchor transform source': source}
        return self.anchor_transform

    def _floor_for(self, image_frame, stamp):
        """This frame's floor from TF (``scale.ground_frame`` -> ``image_frame`` at ``stamp``),
        or None for the one of the parameters; what was used goes to diagnostics."""
        values, tf = self.values, self.node.tf
        ground_frame = values['scale.ground_frame']
        floor = None
        if not ground_frame:
            source = 'parameters'
        elif not tf.available:
            source = 'parameters (tf2_ros not available)'
        else:
            try:
                floor = FloorPlane.from_transform(
                    tf.lookup(ground_frame, image_frame, stamp, TF_WAIT_S))
                source = f'tf {ground_frame} -> {image_frame}'
            except TransformUnavailable as error:
                tf.report_missing(self.throttled, f'ground_plane: no transform {error}; using '
                                  'scale.camera_height/_pitch_deg/_roll_deg')
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

    # ---------------------------------------------------------------- outputs
    def publish(self, frame):
        """Second stage (the outputs thread): metric depth, products, messages, publishing."""
        header = frame.message.header
        stamp = header.stamp
        navigation = [topic for topic in frame.wanted if topic in NAVIGATION_TOPICS]
        wanted = [topic for topic in frame.wanted if topic not in NAVIGATION_TOPICS]
        with self.lock:
            result = self.depth.finish(frame.inference, frame.pixels, frame.order,
                                       frame.intrinsics, stamp.sec + stamp.nanosec * 1e-9,
                                       frame.anchors, products_for(wanted), frame.floor)
            self.last_scale = result.scale, result.calibrated
            if result.scale_problem:
                self.throttled.warning(f'{result.scale_problem}; publishing uncalibrated depth')
            # Built inside the lock: the result's arrays are buffers the next frame reuses.
            tick = time.perf_counter()
            messages = self.messages.build(result, frame.intrinsics, header,
                                           self.values['scan.frame_id'], wanted)
            result.timings['messages'] = time.perf_counter() - tick
            skipped = skipped_topics(result, wanted, self.messages.problems)
            # The navigation outputs publish themselves (their own builders and buffers).
            skipped.update(self.navigation.publish(
                result.depth, frame.intrinsics, header, navigation,
                scale_confidence(result.scale, result.calibrated,
                                 self.values['scale.max_residual']),
                frame.pixels, frame.order))
            self._report_skipped(frame.wanted, skipped)
        tick = time.perf_counter()
        for topic, message in messages.items():
            self.publishers[topic].publish(message)
        result.timings['publish'] = time.perf_counter() - tick
        self._count(time.perf_counter() - frame.start, {**frame.timings, **result.timings})

    def _report_skipped(self, wanted, skipped):
        """An output that cannot be made costs only itself: one warning when it starts being
        skipped (or for another reason), one line when it is back; diagnostics list it."""
        started, recovered = self.skipped_outputs.update(wanted, skipped)
        for topic, reason in started.items():
            self.log.warning(f'{self.topic(topic)} skipped: {reason}; the other outputs '
                             'continue')
        for topic in recovered:
            self.log.info(f'{self.topic(topic)} published again')

    def failed(self, error, unexpected=False):
        """A frame of this camera could not be processed: counted, logged (rate-limited)."""
        self.stats['errors'] += 1
        if unexpected:
            self.throttled.error(f'frame failed: {type(error).__name__}: {error}')
        else:
            self.throttled.warning(f'frame skipped: {error}')

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
        while window and now - window[0] > RATE_WINDOW_S:
            window.pop(0)
        span = window[-1] - window[0]
        self.stats['fps'] = (len(window) - 1) / span if span > 0 else 0.0

    def forget_the_past(self):
        """Time went back: the scale smoothing, rate and latency windows and the anchors
        belong to the old time line."""
        with self.lock:
            if self.depth is not None:
                self.depth.reset_time()
            self._rate_window.clear()
            self.stats['fps'] = self.stats['latency_s'] = 0.0
            self.anchors = None
            self._last_stamp = None

    # ---------------------------------------------------------------- diagnostics
    def status(self, shared, counts):
        """This camera's DiagnosticStatus: ``shared`` (``DepthNode.network_status``: level,
        message and values of the network every camera uses) and the camera's own state;
        ``counts``: (received, dropped, taken, put seconds) from the frame scheduler."""
        node = self.node
        name = f'{node.get_fully_qualified_name()}: depth' + (f' {self.name}' if self.name
                                                              else '')
        status = DiagnosticStatus(name=name, hardware_id=node.values['model.name'])
        scale, metric = self.last_scale or (None, False)
        depth = self.depth      # None once cleaned up
        received, dropped, _, put_seconds = counts
        level, message, values = shared
        values = dict(values)
        values.update({
            'camera': self.name or '(default)',
            'image topic': node.resolve_topic_name(self.image_topic),
            'outputs subscribed': ', '.join(
                topic for topic, publisher in [*self.publishers.items(),
                                               *self.navigation.publishers.items()]
                if publisher.get_subscription_count()),
            'max rate (Hz)': f"{self.values['max_rate']:g}",
            # The mode run (after 'auto') and what it does to the network output.
            **(depth.scale_diagnostics(scale) if depth is not None
               else {'scale mode': self.values['scale.mode']}),
            'depth metric': str(metric),
            'frames received': received,
            'frames processed': self.stats['processed'],
            'frames dropped': dropped + self.superseded,
            # Of those, frames whose network finished after a newer frame's (parallel frames).
            'frames superseded': self.superseded,
            'intake per received frame (ms)': f'{put_seconds * 1e3:.3f}',
            'frames failed': self.stats['errors'],
            'frames skipped (no subscribers)': self.stats['idle'],
            'frame rate (Hz)': f"{self.stats['fps']:.2f}",
            'latency (ms)': f"{self.stats['latency_s'] * 1e3:.1f}",
        })
        if level is None:
            if self.stats['processed'] == 0:
                level, message = DiagnosticStatus.WARN, 'no image processed yet'
            elif message:
                level = DiagnosticStatus.WARN       # the network fell back, runs another way
            elif not metric:
                level, message = DiagnosticStatus.WARN, 'depth is uncalibrated (relative)'
            else:
                level, message = DiagnosticStatus.OK, 'metric depth'
        status.level, status.message = level, message
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
        values.update(self.navigation.geometry)
        skipped = dict(self.skipped_outputs.reasons)    # a snapshot (outputs thread)
        values.update({f'output {topic}': f'skipped: {reason}'
                       for topic, reason in skipped.items()})
        if skipped and status.level == DiagnosticStatus.OK:
            status.level = DiagnosticStatus.WARN
        if skipped:
            status.message += f"; skipped: {', '.join(sorted(skipped))}"
        # A snapshot: the outputs thread adds stages while this runs in the callback one.
        values.update({f'time {stage} (ms)': f'{seconds * 1e3:.2f}' for stage, seconds
                       in [*self.stage_times.items(), *self.navigation.stage_times.items()]})
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return status
