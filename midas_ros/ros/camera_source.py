"""camera_source: publishes frames of a video file, an image folder, a V4L2 camera or the built-in
synthetic scene as ``sensor_msgs/Image`` + ``CameraInfo``.

Published (relative names, remap as usual):
  image                     sensor_msgs/Image, bgr8 (OpenCV sources) or rgb8 (synthetic)
  camera_info               sensor_msgs/CameraInfo, same header as the image
  ground_truth/depth        sensor_msgs/Image 32FC1, metres (synthetic source only)
  ground_truth/detections   vision_msgs/Detection2DArray (synthetic source only): one detection
                            per visible object, ``id`` = object id, class name with score 1.0, and
                            ``results[0].pose`` = the object's true centre in the optical frame
Every message of one frame carries the same header: the publish time and ``frame_id``.
For the synthetic scene it also publishes its camera rig on /tf_static (``publish_tf``, with
tf2_ros): ``base_footprint -> camera_link`` (the scene's camera height and pitch, REP 103/105),
``camera_link -> frame_id`` (the optical rotation) and ``camera_link -> camera_depth_frame``
(identity), so that depth_node can take its
ground_plane geometry from TF and RViz can show everything from base_footprint.

Bad input (missing file or device, empty folder, wrong calibration file) ends the process with a
one-line error and exit status 1; the end of the stream (or ``max_frames``) with status 0.
"""
import math
import sys
import time

import numpy as np
import rclpy
from geometry_msgs.msg import PoseWithCovariance
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from vision_msgs.msg import (Detection2D, Detection2DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose)

from midas_ros.camera_calibration import (CameraCalibration, load_calibration,
                                          resolve_calibration_url)
from midas_ros.geometry import BODY_FROM_OPTICAL, Intrinsics, transform_from_xyz_rpy
from midas_ros.ros.conversions import array_to_image, intrinsics_to_camera_info
from midas_ros.ros.node_main import (ignore_further_signals, init_ros,
                                     install_quiet_signal_handlers)
from midas_ros.ros.parameters import Param, declare_parameters
from midas_ros.ros.qos import QOS_NAMES, qos_profile
from midas_ros.ros.tf_frames import matrix_to_transform, publish_static_transforms
from midas_ros.video_sources import SYNTHETIC, SourceError, SyntheticSource, open_source

NODE_NAME = 'camera_source'
BASE_FRAME, CAMERA_FRAME = 'base_footprint', 'camera_link'
# x forward at the camera: where depth_node's scan and obstacle_node's Range are by default.
DEPTH_FRAME = 'camera_depth_frame'

CAMERA_SOURCE_PARAMS = (
    Param('source', SYNTHETIC, "'synthetic' (built-in scene), a video file, a folder of images, "
          'or a V4L2 camera (0 or /dev/video0)', read_only=True),
    Param('width', 640, 'synthetic image width; size requested from a camera (0: its default)',
          min=0, max=8192, read_only=True),
    Param('height', 480, 'synthetic image height; size requested from a camera (0: its '
          'default)', min=0, max=8192, read_only=True),
    Param('hfov_deg', 70.0, 'horizontal field of view (deg) of the synthetic camera, and of the '
          'CameraInfo of other sources when camera_info_url is empty (principal point at the '
          'image centre, no distortion)', min=1.0, max=179.0, read_only=True),
    Param('camera_info_url', '', 'camera calibration YAML (file:///path, package://pkg/path or '
          'a path); empty: from hfov_deg. Ignored for the synthetic scene', read_only=True),
    Param('frame_id', 'camera_optical_frame', 'frame_id of all published headers (an optical '
          'frame, REP 103)', read_only=True),
    Param('rate', 30.0, 'frames per second to publish; 0: as fast as the source delivers',
          min=0.0, max=1000.0, read_only=True),
    Param('loop', False, 'start a video file or folder again at its end', read_only=True),
    Param('max_frames', 0, 'stop after this many frames (0: no limit)', min=0, max=2 ** 31 - 1,
          read_only=True),
    Param('seed', 0, 'synthetic scene seed (layout, colours, texture)', min=0,
          max=2 ** 31 - 1, read_only=True),
    Param('publish_ground_truth', True, 'synthetic scene: publish ground_truth/depth and '
          'ground_truth/detections', read_only=True),
    Param('publish_tf', True, f'synthetic scene: publish /tf_static {BASE_FRAME} -> '
          f'{CAMERA_FRAME} -> frame_id and {DEPTH_FRAME} (the scene camera\'s height and '
          'pitch)', read_only=True),
    Param('qos', 'sensor_data', 'QoS of all publishers', choices=QOS_NAMES, read_only=True),
    Param('wait_for_subscribers', 0, "hold the first frame until this many subscribers of "
          "'image' are matched (for recordings that must not miss frames)", min=0, max=1000,
          read_only=True),
    Param('wait_for_truth_subscribers', 0, 'synthetic scene: also hold it until this many '
          "subscribers of 'ground_truth/detections' are matched (a detector stand-in that must "
          'not miss frames)', min=0, max=1000, read_only=True),
    Param('keep_alive', 1.0, 'seconds to stay up after the last frame (max_frames or end of '
          'stream) before exiting, so that best-effort subscribers can still read it from the '
          "shared-memory transport, as ros2 topic pub's --keep-alive; reliable publishers "
          'also wait until it is acknowledged', min=0.0, max=60.0, read_only=True),
    Param('synthetic_replay_frames', 60, 'synthetic scene: render this many frames of the '
          'camera path once at start and replay them forwards and backwards, so publishing '
          'costs next to no CPU; 0: render every frame live (30-70 ms of a core each)', min=0,
          max=10000, read_only=True),
)


def rig_transforms(config, frame_id, stamp):
    """The synthetic camera's rig as TF: ``base_footprint -> camera_link`` (the optical centre
    ``camera_height`` above the floor, pitched down by ``camera_pitch_deg``, REP 103 body axes),
    ``camera_link -> frame_id`` (x right, y down, z forward) and ``camera_link ->
    camera_depth_frame`` (the same axes as camera_link)."""
    link = transform_from_xyz_rpy(0.0, 0.0, config.camera_height, 0.0,
                                  math.radians(config.camera_pitch_deg), 0.0)
    optical = np.eye(4)
    optical[:3, :3] = BODY_FROM_OPTICAL
    return [matrix_to_transform(BASE_FRAME, CAMERA_FRAME, link, stamp),
            matrix_to_transform(CAMERA_FRAME, frame_id, optical, stamp),
            matrix_to_transform(CAMERA_FRAME, DEPTH_FRAME, np.eye(4), stamp)]


def truth_to_detections(objects, header):
    """Detection2DArray of the synthetic scene's ``ObjectTruth``s (pose: true 3D centre)."""
    array = Detection2DArray(header=header)
    for truth in objects:
        detection = Detection2D(header=header, id=truth.object_id)
        center_u, center_v, size_u, size_v = truth.center_size()
        detection.bbox.center.position.x, detection.bbox.center.position.y = center_u, center_v
        detection.bbox.size_x, detection.bbox.size_y = size_u, size_v
        pose = PoseWithCovariance()
        pose.pose.position.x, pose.pose.position.y, pose.pose.position.z = truth.center_camera
        pose.pose.orientation.w = 1.0
        detection.results.append(ObjectHypothesisWithPose(
            hypothesis=ObjectHypothesis(class_id=truth.class_name, score=1.0), pose=pose))
        array.detections.append(detection)
    return array


class CameraSourceNode(Node):
    """Reads frames on a timer and publishes them; ``finished`` and ``exit_code`` tell ``main``
    when and how to stop. Raises ``SourceError``/``ValueError`` at construction for bad input."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.params = params = declare_parameters(self, CAMERA_SOURCE_PARAMS)
        self.finished, self.exit_code, self.published = False, 0, 0
        replay = params['synthetic_replay_frames']
        if params['max_frames'] > 0:   # never render more than will be published
            replay = min(replay, params['max_frames'])
        self.source = open_source(params['source'], params['width'], params['height'],
                                  params['hfov_deg'], params['seed'], replay)
        try:
            self.calibration = self._calibration()
        except Exception:
            self.source.close()     # main() never gets the node to close it
            raise
        qos = qos_profile(params['qos'])
        self._image_pub = self.create_publisher(Image, 'image', qos)
        self._info_pub = self.create_publisher(CameraInfo, 'camera_info', qos)
        synthetic = isinstance(self.source, SyntheticSource)
        self._publish_truth = params['publish_ground_truth'] and synthetic
        if self._publish_truth:
            self._depth_pub = self.create_publisher(Image, 'ground_truth/depth', qos)
            self._detections_pub = self.create_publisher(Detection2DArray,
                                                         'ground_truth/detections', qos)
        self._static_tf = None
        if synthetic and params['publish_tf']:
            self._static_tf = publish_static_transforms(self, rig_transforms(
                self.source.scene.config, params['frame_id'], self.get_clock().now().to_msg()))
        if params['loop'] and not self.source.replayable:
            self.get_logger().warning(f'loop: {self.source.description} cannot be replayed')
        rate = params['rate']
        self._timer = self.create_timer(1.0 / rate if rate > 0 else 0.0, self._publish_next)
        self.get_logger().info(
            f'{self.source.description}: {self.source.width}x{self.source.height} '
            f"{self.source.encoding}, {f'{rate:g} Hz' if rate > 0 else 'as fast as possible'}, "
            f"fx={self.calibration.intrinsics.fx:.1f}, frame '{params['frame_id']}'")

    def _calibration(self):
        """Calibration from camera_info_url, or an ideal camera from hfov_deg; the size must be
        the stream's."""
        source, url = self.source, self.params['camera_info_url']
        if isinstance(source, SyntheticSource):
            if url:
                self.get_logger().warning('camera_info_url is ignored for the synthetic scene')
            return CameraCalibration.from_intrinsics(source.scene.intrinsics, 'synthetic')
        if not url:
            return CameraCalibration.from_intrinsics(
                Intrinsics.from_fov(source.width, source.height, self.params['hfov_deg']))
        calibration = load_calibration(resolve_calibration_url(url))
        intr = calibration.intrinsics
        if (intr.width, intr.height) != (source.width, source.height):
            raise ValueError(f'{url}: calibration is for {intr.width}x{intr.height} images, '
                             f'the stream is {source.width}x{source.height}')
        return calibration

    def _camera_info(self, header):
        calibration = self.calibration
        info = intrinsics_to_camera_info(calibration.intrinsics, header)
        info.distortion_model = calibration.distortion_model
        info.d = list(calibration.distortion)
        info.r = list(calibration.rectification)
        info.p = list(calibration.projection_matrix())
        return info

    def _subscribers_matched(self):
        """Whether the subscribers the first frame waits for are matched (logged if not)."""
        waits = [(self._image_pub, 'image', self.params['wait_for_subscribers'])]
        if self._publish_truth:
            waits.append((self._detections_pub, 'ground_truth/detections',
                          self.params['wait_for_truth_subscribers']))
        missing = [f'{wanted} of {topic}' for publisher, topic, wanted in waits
                   if publisher.get_subscription_count() < wanted]
        if missing:
            self.get_logger().info(f"waiting for subscribers: {', '.join(missing)}",
                                   throttle_duration_sec=5.0)
        return not missing

    def _publish_next(self):
        if self.published == 0 and not self._subscribers_matched():
            return
        try:
            frame = self.source.read()
            if frame is None and self.params['loop'] and self.source.replayable:
                self.source.rewind()
                frame = self.source.read()
        except SourceError as error:
            self._finish(f'{error}', 1)
            return
        if frame is None:
            self._finish(f'end of stream after {self.published} frames', 0)
            return
        header = Header(frame_id=self.params['frame_id'],
                        stamp=self.get_clock().now().to_msg())
        self._image_pub.publish(array_to_image(frame.image, self.source.encoding, header))
        self._info_pub.publish(self._camera_info(header))
        if self._publish_truth:
            self._depth_pub.publish(array_to_image(frame.truth.depth, '32FC1', header))
            self._detections_pub.publish(truth_to_detections(frame.truth.objects, header))
        self.published += 1
        if self.published == self.params['max_frames']:
            self._finish(f'published max_frames={self.published}', 0)

    def _finish(self, reason, exit_code):
        self._timer.cancel()
        self.finished, self.exit_code = True, exit_code
        log = self.get_logger().error if exit_code else self.get_logger().info
        log(reason)

    def flush(self):
        """Give subscribers the last frames before the process goes: ``keep_alive`` seconds,
        and reliable publishers until acknowledged within them. A best-effort sample sent over
        Fast DDS's shared-memory transport lives in the publisher's segment, which goes with
        the process: measured here under load, a recorder lost the last of 8 frames."""
        deadline = time.monotonic() + self.params['keep_alive']
        for publisher in self.publishers:
            publisher.wait_for_all_acked(Duration(seconds=max(deadline - time.monotonic(), 0.0)))
        while rclpy.ok() and time.monotonic() < deadline:    # Ctrl-C ends the wait
            time.sleep(0.02)

    def destroy_node(self):
        self.source.close()
        return super().destroy_node()


def main(args=None):
    install_quiet_signal_handlers()     # Ctrl-C / SIGTERM: status 0, no traceback
    if not init_ros(args, NODE_NAME):
        return 1
    node = None
    try:
        try:
            node = CameraSourceNode()
        except Exception:
            if rclpy.ok():
                raise
            return 0    # stopped (launch ending, Ctrl-C) while the node was being built
        while rclpy.ok() and not node.finished:
            try:
                rclpy.spin_once(node, timeout_sec=0.1)
            except Exception:
                if rclpy.ok():
                    raise
                return 0    # a frame published as Ctrl-C closed the context: a normal end
        if not rclpy.ok():
            return 0        # stopped (Ctrl-C, SIGTERM): nothing left to flush to
        node.flush()
        return node.exit_code
    except (SourceError, ValueError) as error:   # bad input: one line, no traceback
        rclpy.logging.get_logger(NODE_NAME).error(str(error))
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        ignore_further_signals()


if __name__ == '__main__':
    sys.exit(main())
