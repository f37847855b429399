"""obstacle_node: depth image + 2D detections -> per-object distance, 3D position and extent.

One node serves one camera or several (``cameras``, as depth_node): with ``cameras: [front,
rear]`` every topic below is the camera's (``front/depth/image`` + ``front/detections`` ->
``front/obstacles``...), each camera paired and published on its own; ``<camera>.range_frame_id``
overrides ``range_frame_id`` for one camera. With ``cameras: []`` (default) the topics are:

Subscribes (relative names, so ``-r __ns:=/robot`` moves them all):
  ``depth/image``        sensor_msgs/Image, 32FC1 metres or 16UC1 millimetres (REP 118)
  ``depth/camera_info``  sensor_msgs/CameraInfo of that depth image
  ``detections``         vision_msgs/Detection2DArray, boxes in the pixels of the image
                         depth/camera_info describes (scaled if the depth image is resized)
Publishes, stamped with the detection message's stamp:
  ``obstacles``          vision_msgs/Detection3DArray, one per kept detection, and
  ``obstacles/markers``  visualization_msgs/MarkerArray, a box and a label each, both in
                         ``target_frame`` (empty: the depth image's frame)
  ``obstacles/nearest``  sensor_msgs/Range, the nearest obstacle's depth, in ``range_frame_id``
                         (x forward: how Range consumers read it), whatever ``target_frame``

With ``target_frame`` set, positions, boxes and markers are moved from the depth image's frame
through TF at the detection stamp (``ros/tf_frames.py``); without that transform the two
messages are not published (a rate-limited warning says why): a message never carries a frame
its numbers are not in.

Detections are computed on an image some time after it was taken, and depth often arrives
later and slower still, so each detection message is paired with the depth frame nearest to it
in stamp, waiting (bounded by the depth stream's observed delay and rate) for a later frame that
may be nearer (:class:`midas_ros.time_sync.NearestStampPolicy`, like message_filters'
ApproximateTime). Detections left without a frame within ``sync_tolerance`` are counted in
/diagnostics (paired, unpaired, wait); a warning comes only when nothing has paired for several
seconds. A zero stamp counts as never set: such messages pair with the newest frame. When time
goes back (a looping bag, a simulator reset: ROS time or the stamps), every buffered frame and
waiting detection is forgotten, with one info line. The maths lives in
:mod:`midas_ros.fusion`.
"""
import colorsys
import math
import time
import zlib
from collections import deque
from dataclasses import replace

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.parameter import Parameter
from rclpy.timer import Timer
from sensor_msgs.msg import CameraInfo, Image, Range
from std_msgs.msg import Header
from vision_msgs.msg import (Detection2DArray, Detection3D, Detection3DArray,
                             ObjectHypothesisWithPose)
from visualization_msgs.msg import Marker, MarkerArray

from midas_ros.depth_outputs import camera_topic
from midas_ros.fusion import Box, FusionConfig, fuse, nearest_range
from midas_ros.geometry import quaternion_from_rotation, transform_points
from midas_ros.ros.conversions import (DEPTH_ENCODINGS, ConversionError,
                                       camera_info_to_intrinsics, depth_to_metres,
                                       image_to_array, stamp_ns)
from midas_ros.ros.lifecycle import AUTOSTART, ManagedNode
from midas_ros.ros.node_main import run_node
from midas_ros.ros.parameters import (BadParameter, Param, camera_names, declare_parameters,
                                      on_set_parameters)
from midas_ros.ros.qos import (AUTO_QOS, QOS_NAMES, SUBSCRIPTION_QOS_NAMES, qos_profile,
                               subscribe, unsubscribe)
from midas_ros.ros.tf_frames import TRANSFORM_WAIT_S, FrameTransforms, TransformUnavailable
from midas_ros.ros.throttled_log import ThrottledLog
from midas_ros.ros.time_jumps import on_time_jump_back
from midas_ros.time_sync import NearestStampPolicy

_FUSION_DEFAULTS = FusionConfig()
OBSTACLE_NODE_PARAMS = (
    AUTOSTART,      # lifecycle: configure + activate at start-up (midas_ros/ros/lifecycle.py)
    Param('cameras', [], "names of the cameras served (as depth_node's): camera 'front' "
          'pairs front/depth/image with front/detections and publishes front/obstacles...; '
          'empty: depth/image + detections -> obstacles', read_only=True),
    Param('class_ids', [], 'keep only detections whose best hypothesis has one of these '
          'class ids; empty: all classes'),
    Param('min_score', 0.0, 'drop detections whose best hypothesis scores lower', min=0.0,
          max=1.0),
    Param('inner_fraction', _FUSION_DEFAULTS.inner_fraction, 'central fraction of each box '
          'the distance is measured in (box edges hold background)', min=0.01, max=1.0),
    Param('percentile', _FUSION_DEFAULTS.percentile, 'distance = this percentile of the valid '
          'depths in the box centre (low: the object, not the wall behind it)', min=0.0,
          max=100.0),
    Param('min_range', _FUSION_DEFAULTS.min_range, 'depths below this are too near '
          '(REP 118 -inf); a box of them reports -inf (m)',
          min=0.001, max=1000.0),
    Param('max_range', _FUSION_DEFAULTS.max_range, 'depths above this are too far '
          '(+inf); a box of them reports +inf (m)',
          min=0.01, max=10000.0),
    Param('cluster_tolerance', _FUSION_DEFAULTS.cluster_tolerance, 'object pixels: within '
          'this fraction of the distance (position and depth extent come from them)',
          min=0.01, max=0.99),
    Param('min_valid_pixels', _FUSION_DEFAULTS.min_valid_pixels, 'fewer valid depths in a box '
          'centre: the obstacle is reported without a distance', min=1, max=1000000),
    Param('sync_tolerance', 0.2, 'largest stamp difference (s) between a detection message '
          'and the depth frame it is measured in', min=0.0, max=10.0),
    Param('buffer_length', 10, 'depth frames kept for pairing with late detections', min=1,
          max=300),
    Param('input_qos', AUTO_QOS, 'QoS of the depth/image and depth/camera_info '
          "subscriptions; auto: follow the publishers' reliability and durability",
          choices=SUBSCRIPTION_QOS_NAMES, read_only=True),
    Param('detections_qos', AUTO_QOS, 'QoS of the detections subscription; auto: follow '
          "the publishers' reliability and durability", choices=SUBSCRIPTION_QOS_NAMES,
          read_only=True),
    Param('output_qos', 'reliable', 'QoS of the published topics (reliable: RViz and every '
          'subscriber match)', choices=QOS_NAMES, read_only=True),
    Param('target_frame', '', 'frame of obstacles and obstacles/markers (e.g. base_link): '
          'moved there through TF at the detection stamp, not published while that transform '
          "is missing; empty: the depth image's frame (obstacles/nearest is not affected)"),
    Param('range_frame_id', 'camera_depth_frame', 'frame of obstacles/nearest: at the camera, '
          'x forward (Range consumers measure along +x; the optical frame\'s +x points right)'),
)

_WARN_PERIOD_S = 5.0        # rate limit of warnings about the input
_STALL_S = 5.0              # nothing paired for this long while detections come: warn
_MIN_MARKER_SIZE = 0.02     # m: flat objects still get a visible box
_LABEL_HEIGHT = 0.25        # m: text size of the marker labels
_BOX_ALPHA = 0.45


# What each camera publishes (relative to the camera): topic -> message type.
OBSTACLE_OUTPUTS = {'obstacles': Detection3DArray, 'obstacles/markers': MarkerArray,
                    'obstacles/nearest': Range}
# Parameters each camera may override as <camera>.<name> (default: the node's value).
STREAM_PARAMS = ('range_frame_id',)


class _Stream:
    """One camera of obstacle_node: its pairing of detections with depth frames, its
    calibration, depth buffer, markers shown, publishers and frame of obstacles/nearest."""

    def __init__(self, name, values):
        self.name = name
        self.label = f'camera {name}: ' if name else ''
        self.pairing = NearestStampPolicy(values['sync_tolerance'], values['buffer_length'])
        self.intrinsics = None      # of the latest valid depth/camera_info
        self.metres = None          # reused float32 buffer for 16UC1 frames
        self.marker_count = 0       # markers of each namespace currently shown in RViz
        self.publishers = {}        # topic -> publisher, while configured
        # Measured, waiting for their transform to target_frame: (deadline, header in the
        # depth frame, detections, obstacles), oldest first.
        self.to_place = deque()

    def topic(self, name):
        return camera_topic(self.name, name)

    def value(self, values, name):
        """This camera's value of parameter ``name``."""
        return values.get(f'{self.name}.{name}', values[name]) if self.name else values[name]


def best_hypothesis(detection):
    """(class_id, score) of the highest-scoring result; ('', 0.0) when there is none."""
    if not detection.results:
        return '', 0.0
    best = max(detection.results, key=lambda result: result.hypothesis.score)
    return best.hypothesis.class_id, best.hypothesis.score


def class_color(class_id):
    """A stable, well-saturated colour per class (the same in every run)."""
    hue = (zlib.crc32(class_id.encode()) % 360) / 360.0
    return colorsys.hsv_to_rgb(hue, 0.8, 0.95)


class ObstacleNode(ManagedNode):
    """Pairs detections with depth frames and publishes what :func:`fusion.fuse` measures.

    A managed (lifecycle) node: parameters are declared and checked at creation, ``configure``
    creates the publishers, ``activate`` subscribes, ``deactivate`` unsubscribes and forgets
    buffered frames and detections (nothing is measured or published while inactive).
    """

    def __init__(self, **kwargs):
        super().__init__('obstacle_node', **kwargs)
        values = {'class_ids': self._declare_class_ids()}
        values.update(declare_parameters(
            self, [param for param in OBSTACLE_NODE_PARAMS if param.name != 'class_ids']))
        names = camera_names(values)
        rows = [replace(param, name=f'{name}.{param.name}', default=values[param.name])
                for name in names for param in OBSTACLE_NODE_PARAMS
                if param.name in STREAM_PARAMS]
        values.update(declare_parameters(self, rows))
        # Per camera: depth frames and waiting detections, paired by stamp; while active, a
        # timer ends waits that no new message would end.
        self.streams = [_Stream(name, values) for name in names or ['']]
        reason = self._apply(values)
        if reason is not None:
            # Each value passed its own check but together they cannot work (e.g. max_range
            # below min_range): refused, as a single bad value is, never run on defaults.
            raise BadParameter(f'parameters {reason}')
        self.add_on_set_parameters_callback(
            on_set_parameters(OBSTACLE_NODE_PARAMS + tuple(rows), lambda: self._params,
                              self._apply))

        self.throttled = ThrottledLog(self.get_logger(), _WARN_PERIOD_S)
        self.tf = FrameTransforms(self)
        self._time_jumps = on_time_jump_back(self, self._forget_the_past)
        self._inputs = []           # subscriptions and timers, while active
        self._diagnostics_pub = None

    # -- lifecycle ---------------------------------------------------------------------------

    def configure(self):
        output_qos = qos_profile(self._params['output_qos'], depth=10)
        for stream in self.streams:
            stream.publishers = {
                topic: self.create_lifecycle_publisher(msg_type, stream.topic(topic),
                                                       output_qos)
                for topic, msg_type in OBSTACLE_OUTPUTS.items()}
        self._diagnostics_pub = self.create_lifecycle_publisher(DiagnosticArray,
                                                                '/diagnostics', 10)

    def activate(self):
        input_qos, detections_qos = self._params['input_qos'], self._params['detections_qos']
        self._inputs = [self.create_timer(0.05, self._process_all),
                        self.create_timer(1.0, self._publish_diagnostics)]
        for stream in self.streams:
            self._inputs += [
                subscribe(self, Image, stream.topic('depth/image'),
                          lambda msg, s=stream: self._on_depth(s, msg), input_qos, 5),
                subscribe(self, CameraInfo, stream.topic('depth/camera_info'),
                          lambda msg, s=stream: self._on_camera_info(s, msg), input_qos, 5),
                subscribe(self, Detection2DArray, stream.topic('detections'),
                          lambda msg, s=stream: self._on_detections(s, msg),
                          detections_qos, 10)]

    def deactivate(self):
        for entity in self._inputs:
            if isinstance(entity, Timer):
                self.destroy_timer(entity)
            else:
                unsubscribe(self, entity)
        self._inputs = []
        # Stale once reactivated: frames and detections start afresh.
        for stream in self.streams:
            stream.pairing.reset()
            stream.to_place.clear()

    def cleanup(self):
        for stream in self.streams:
            for publisher in stream.publishers.values():
                self.destroy_lifecycle_publisher(publisher)
            stream.publishers, stream.intrinsics, stream.marker_count = {}, None, 0
        self.destroy_lifecycle_publisher(self._diagnostics_pub)
        self._diagnostics_pub = None

    # -- parameters --------------------------------------------------------------------------

    def _declare_class_ids(self):
        """Declared as a string array: from the default ``[]`` rclpy would infer a byte array
        (rejecting ``-p class_ids:=[person]``), and ``class_ids: []`` in a YAML file arrives
        without any type, which leaves the parameter unset."""
        param, = (param for param in OBSTACLE_NODE_PARAMS if param.name == 'class_ids')
        try:
            value = self.declare_parameter(param.name, Parameter.Type.STRING_ARRAY,
                                           param.descriptor()).value
        except (InvalidParameterTypeException, InvalidParameterValueException) as error:
            raise BadParameter(f'parameter {param.name}: {error}') from None
        if value is None:
            self.set_parameters([Parameter(param.name, Parameter.Type.STRING_ARRAY, [])])
            value = []
        return value

    def _apply(self, values):
        """Build the whole new configuration, then swap it in; a reason instead if it cannot
        work (nothing changes then)."""
        class_ids = values['class_ids']
        if not (isinstance(class_ids, (list, tuple))
                and all(isinstance(class_id, str) for class_id in class_ids)):
            return f'class_ids must be a list of strings, got {class_ids!r}'
        config = FusionConfig(
            inner_fraction=values['inner_fraction'], percentile=values['percentile'],
            min_range=values['min_range'], max_range=values['max_range'],
            cluster_tolerance=values['cluster_tolerance'],
            min_valid_pixels=values['min_valid_pixels'])
        try:
            config.validate()
        except ValueError as error:
            return str(error)
        try:
            # Checked on a new policy first: the cameras' policies change together or not.
            NearestStampPolicy(values['sync_tolerance'], values['buffer_length'])
            for stream in self.streams:
                stream.pairing.configure(values['sync_tolerance'], values['buffer_length'])
        except ValueError as error:
            return str(error)
        self._config = config
        self._class_ids = frozenset(class_ids)
        self._params = dict(values)
        return None

    # -- inputs ------------------------------------------------------------------------------

    def _on_camera_info(self, stream, msg):
        # The latest calibration applies to every buffered frame: it changes rarely, and
        # pairing it by stamp too would only delay the first measurement.
        try:
            stream.intrinsics = camera_info_to_intrinsics(msg)
        except ConversionError as error:
            self.throttled.warning(f'{stream.label}ignoring depth/camera_info: {error}')
            return
        self._process_pending(stream)

    def _on_depth(self, stream, msg):
        try:
            # Checked now, converted only if detections pair with it (16UC1 costs a pass).
            if msg.encoding not in DEPTH_ENCODINGS:
                raise ConversionError(f"encoding '{msg.encoding}' is not depth (32FC1 metres "
                                      f"or 16UC1 millimetres)")
            image_to_array(msg)     # checks size, step and data length; a view, no copy
        except ConversionError as error:
            self.throttled.warning(f'{stream.label}ignoring depth/image: {error}')
            return
        if stream.pairing.add_reference(stamp_ns(msg.header.stamp), msg, self._now_ns()):
            self._forget_the_past(f'{stream.label}depth/image stamps went back', clear=False)
        self._process_pending(stream)

    def _on_detections(self, stream, msg):
        kept = self._filter(msg)
        if stream.pairing.add_query(stamp_ns(msg.header.stamp), (msg, kept), self._now_ns(),
                                    needs_reference=bool(kept)):
            self._forget_the_past(f'{stream.label}detection stamps went back', clear=False)
        self._process_pending(stream)

    def _now_ns(self):
        return self.get_clock().now().nanoseconds

    def _forget_the_past(self, why, clear=True):
        """Time went back: no buffered frame or waiting detection belongs to the new time."""
        if clear:
            for stream in self.streams:
                stream.pairing.reset()
        for stream in self.streams:
            stream.to_place.clear()
        self.tf.clear()
        self.get_logger().info(f'{why}: forgot the buffered depth frames, waiting detections '
                               'and transforms (a bag loop or simulator reset?)')

    def _publish_empty(self, stream, msg):
        """Nothing to measure: say so without depth, clearing the markers."""
        newest = stream.pairing.newest_reference()
        frame_id = newest.header.frame_id if newest is not None else msg.header.frame_id
        self._publish(stream, self._header(msg, frame_id), [], [], None)

    def _filter(self, msg):
        """[(Detection2D, Box)] of the detections that pass the class and score filters."""
        kept = []
        for detection in msg.detections:
            class_id, score = best_hypothesis(detection)
            if self._class_ids and class_id not in self._class_ids:
                continue
            if score < self._params['min_score']:
                continue
            bbox = detection.bbox
            kept.append((detection, Box(bbox.center.position.x, bbox.center.position.y,
                                        bbox.size_x, bbox.size_y, class_id, score)))
        return kept

    # -- pairing -----------------------------------------------------------------------------

    def _process_all(self):
        for stream in self.streams:
            self._process_pending(stream)

    def _process_pending(self, stream):
        """Measure every detection message of ``stream`` whose depth frame is decided, in
        arrival order; count the ones no frame matched (diagnostics), warn only when pairing
        has stalled."""
        self._place_waiting(stream)
        if stream.intrinsics is None:
            return          # nothing can be measured yet; the detections wait (bounded)
        for decision in stream.pairing.poll(self._now_ns()):
            msg, kept = decision.query
            if not kept:    # published in turn, so outputs never go back in time
                self._publish_empty(stream, msg)
            elif decision.reference is not None:
                self._measure(stream, msg, kept, decision.reference)

    def _stall_reason(self, stream):
        """Why nothing has paired for a while although detections keep coming, or None."""
        reason = stream.pairing.stalled(self._now_ns(), _STALL_S)
        if reason is not None and stream.intrinsics is None:
            reason = 'no depth/camera_info received'
        return reason

    def _publish_diagnostics(self):
        array = DiagnosticArray(status=[self._stream_status(s) for s in self.streams])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    def _stream_status(self, stream):
        stall = self._stall_reason(stream)
        if stall is not None:
            self.throttled.warning(f'{stream.label}no detection paired with a depth frame for '
                                   f'{_STALL_S:g} s: {stall}')
        stats = stream.pairing.statistics()
        values = {key: (f'{value:.3f}' if isinstance(value, float) else str(value))
                  for key, value in stats.items()}
        values['last unpaired reason'] = stream.pairing.last_reason
        name = f'{self.get_fully_qualified_name()}: pairing' + (f' {stream.name}'
                                                                if stream.name else '')
        return DiagnosticStatus(name=name,
                                level=DiagnosticStatus.WARN if stall else DiagnosticStatus.OK,
                                message=stall or 'pairing detections with depth frames',
                                values=[KeyValue(key=k, value=v) for k, v in values.items()])

    # -- measuring and publishing ------------------------------------------------------------

    def _measure(self, stream, msg, kept, frame):
        try:
            depth = self._depth_in_metres(stream, frame)
        except ConversionError as error:
            self.throttled.warning(f'{stream.label}ignoring depth/image: {error}')
            return
        intrinsics = stream.intrinsics
        boxes = [box for _, box in kept]
        height, width = depth.shape
        if (intrinsics.width, intrinsics.height) != (width, height):
            # Detections and camera_info describe the camera image; the depth image is the
            # same view resized (e.g. a network's output size): scale both to it.
            try:
                resized = intrinsics.resized_to(width, height)
            except ValueError as error:
                self.throttled.warning(f'{stream.label}skipping detections: depth image vs '
                                       f'depth/camera_info: {error}')
                return
            sx, sy = width / intrinsics.width, height / intrinsics.height
            self.throttled.warning(
                f'{stream.label}depth image is {width}x{height}, depth/camera_info '
                f'{intrinsics.width}x{intrinsics.height}: scaling intrinsics and boxes by '
                f'{sx:.4g}')
            intrinsics = resized
            boxes = [box.scaled(sx, sy) for box in boxes]
        obstacles = fuse(depth, intrinsics, boxes, self._config)
        for obstacle in obstacles:
            if not obstacle.valid:
                self.get_logger().debug(f"no distance for '{obstacle.box.class_id}': "
                                        f'{obstacle.reason}')
        self._publish(stream, self._header(msg, frame.header.frame_id), [d for d, _ in kept],
                      obstacles, intrinsics)

    @staticmethod
    def _depth_in_metres(stream, frame):
        if frame.encoding == '32FC1':
            return depth_to_metres(frame)           # a view of the message
        shape = (frame.height, frame.width)
        if stream.metres is None or stream.metres.shape != shape:
            stream.metres = np.empty(shape, np.float32)
        return depth_to_metres(frame, out=stream.metres)

    @staticmethod
    def _header(msg, frame_id):
        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = msg.header.stamp.sec, msg.header.stamp.nanosec
        return header

    def _publish(self, stream, header, detections, obstacles, intrinsics):
        """``header``: in the depth image's frame, where ``obstacles`` were measured. The
        Range goes at once; obstacles and markers once placed in ``target_frame``, in order
        (:meth:`_place_waiting`)."""
        stream.publishers['obstacles/nearest'].publish(
            self._nearest_range(stream, header, obstacles, intrinsics))
        stream.to_place.append((time.monotonic() + TRANSFORM_WAIT_S, header, detections,
                                obstacles))
        self._place_waiting(stream)

    def _place_waiting(self, stream):
        """Publish ``stream``'s measured obstacles whose transform to ``target_frame`` (at
        their stamp) is known, oldest first. One whose transform is still on its way (the
        odometry on /tf comes a little after the camera) waits for it, up to TRANSFORM_WAIT_S,
        without blocking the executor that receives it: the timer of ``_process_pending``
        retries."""
        publishers = stream.publishers
        while stream.to_place:
            deadline, header, detections, obstacles = stream.to_place[0]
            try:
                placed_header, positions, orientation, labels = self._in_target_frame(
                    header, obstacles)
            except TransformUnavailable as error:
                if error.may_arrive and time.monotonic() < deadline:
                    return      # later ones wait behind it: outputs stay in stamp order
                stream.to_place.popleft()
                self.tf.report_missing(self.throttled, f'{stream.label}obstacles and markers not '
                                       f'published: no transform {error}')
                continue
            stream.to_place.popleft()
            publishers['obstacles'].publish(self._detection_array(
                placed_header, detections, obstacles, positions, orientation))
            publishers['obstacles/markers'].publish(self._markers(
                stream, placed_header, obstacles, positions, orientation, labels))

    def _in_target_frame(self, header, obstacles):
        """(header, positions (N, 3), box orientation (x, y, z, w), label positions (N, 3)) in
        ``target_frame``; TransformUnavailable when TF cannot give the transform at the
        stamp (yet)."""
        positions = np.array([o.position for o in obstacles], np.float64).reshape(-1, 3)
        labels = positions.copy()
        # Labels above the boxes: optical y points down.
        labels[:, 1] -= [o.extent[1] / 2 + _LABEL_HEIGHT for o in obstacles]
        identity = (0.0, 0.0, 0.0, 1.0)
        target = self._params['target_frame']
        if not target or target == header.frame_id:
            return header, positions, identity, labels
        if not self.tf.available:
            self.get_logger().info(f"target_frame '{target}' needs tf2_ros: publishing in the "
                                   "depth image's frame", once=True)
            return header, positions, identity, labels
        if not obstacles:   # no numbers to move: the empty message is true in any frame
            return Header(stamp=header.stamp, frame_id=target), positions, identity, labels
        transform = self.tf.lookup(target, header.frame_id, header.stamp)
        return (Header(stamp=header.stamp, frame_id=target),
                transform_points(transform, positions),
                quaternion_from_rotation(transform[:3, :3]),
                transform_points(transform, labels))

    @staticmethod
    def _detection_array(header, detections, obstacles, positions, orientation):
        """One Detection3D per kept detection; without a valid distance its centre is NaN
        (REP 117: no reading) and its size zero, never a distance of 0. ``positions`` and the
        box ``orientation`` are in the header's frame; the size stays along the depth image's
        optical axes (x right, y down, z forward), which the orientation rotates into it."""
        array = Detection3DArray(header=header)
        for detection, obstacle, position in zip(detections, obstacles, positions):
            out = Detection3D(header=header, id=detection.id)
            center = out.bbox.center.position
            center.x, center.y, center.z = (float(v) for v in position)
            rotation = out.bbox.center.orientation
            rotation.x, rotation.y, rotation.z, rotation.w = orientation
            if obstacle.valid:
                size = out.bbox.size
                size.x, size.y, size.z = obstacle.extent
            for result in detection.results:
                hypothesis = ObjectHypothesisWithPose()
                hypothesis.hypothesis.class_id = result.hypothesis.class_id
                hypothesis.hypothesis.score = result.hypothesis.score
                # vision_msgs: the hypothesis pose is a fixed point of the object.
                pose = hypothesis.pose.pose
                pose.position.x, pose.position.y, pose.position.z = (float(v) for v in position)
                out.results.append(hypothesis)
            array.detections.append(out)
        return array

    def _markers(self, stream, header, obstacles, positions, orientation, labels):
        """A translucent box and a text label per measured obstacle; markers of obstacles that
        are gone are deleted by id (ids are 0..n-1, so the ones >= n are stale). Positions,
        box orientation and label positions are in the header's frame."""
        markers = MarkerArray()
        shown = [index for index, obstacle in enumerate(obstacles) if obstacle.valid]
        for index, measured in enumerate(shown):
            obstacle = obstacles[measured]
            red, green, blue = class_color(obstacle.box.class_id)
            box = Marker(header=header, ns='obstacles', id=index, type=Marker.CUBE,
                         action=Marker.ADD)
            box.pose.position.x, box.pose.position.y, box.pose.position.z = (
                float(v) for v in positions[measured])
            rotation = box.pose.orientation
            rotation.x, rotation.y, rotation.z, rotation.w = orientation
            box.scale.x, box.scale.y, box.scale.z = (max(size, _MIN_MARKER_SIZE)
                                                     for size in obstacle.extent)
            box.color.r, box.color.g, box.color.b, box.color.a = red, green, blue, _BOX_ALPHA
            label = Marker(header=header, ns='obstacle_labels', id=index,
                           type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
            label.text = f'{obstacle.box.class_id or "object"} {obstacle.distance:.2f} m'
            label.pose.position.x, label.pose.position.y, label.pose.position.z = (
                float(v) for v in labels[measured])
            label.pose.orientation.w = 1.0
            label.scale.z = _LABEL_HEIGHT
            label.color.r = label.color.g = label.color.b = label.color.a = 1.0
            markers.markers += [box, label]
        for index in range(len(shown), stream.marker_count):
            for namespace in ('obstacles', 'obstacle_labels'):
                markers.markers.append(Marker(header=header, ns=namespace, id=index,
                                              action=Marker.DELETE))
        stream.marker_count = len(shown)
        return markers

    def _nearest_range(self, stream, header, obstacles, intrinsics):
        """sensor_msgs/Range: the standard 'distance to the nearest thing in a cone' message
        (Nav2's collision monitor and range layer, safety monitors); +inf when no obstacle
        has a distance, -inf when one is too near to measure (REP 117). Range consumers put
        the cone's apex at the header frame's origin and its axis along +x, which in the optical
        frame points right, so it is stamped in ``range_frame_id``: a frame at the depth image's
        optical centre with x along the optical axis (camera_depth_frame: x = optical z, y =
        -optical x, z = -optical y), like depth_node's scan. The range is the obstacle's depth
        (optical z). ``target_frame`` does not move it: a cone from base_link's origin would
        describe another sensor."""
        fov = math.radians(intrinsics.hfov_deg()) if intrinsics else 0.0
        header = Header(stamp=header.stamp,
                        frame_id=stream.value(self._params, 'range_frame_id'))
        return Range(header=header, radiation_type=Range.INFRARED, field_of_view=fov,
                     min_range=self._config.min_range, max_range=self._config.max_range,
                     range=float(nearest_range(obstacles)))


def main(args=None):
    return run_node(ObstacleNode, 'obstacle_node', startup_errors=(ValueError,), args=args)


if __name__ == '__main__':
    raise SystemExit(main())
