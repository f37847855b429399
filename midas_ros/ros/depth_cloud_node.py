"""depth_cloud_node: depth depth_node's navigation outputs for any depth image (an RGB-D camera,
a stereo camera, depth_node itself).

Subscribed (relative names): ``depth/image`` (sensor_msgs/Image, 32FC1 metres or 16UC1
millimetres, REP 118) and ``depth/camera_info`` (sensor_msgs/CameraInfo of that image).
Published, computed only while subscribed (``ros/navigation_outputs.py``, the same code and
parameters as depth_node): ``depth/points`` (organized PointCloud2, depth edges removed),
``depth/scan`` (LaserScan, ``scan.enabled``; ``scan.mode`` rows or height_band),
``depth/obstacle_points`` (unorganized PointCloud2 between two heights above the floor, voxel
downsampled) and ``depth/confidence`` (32FC1 in [0, 1]).

The floor comes from ``scale.ground_frame`` through TF at each image's stamp, else from
``scale.camera_height`` / ``scale.camera_pitch_deg`` / ``scale.camera_roll_deg`` (the names
depth_node uses). Bad encodings and sizes are skipped with a rate-limited warning; without a
usable CameraInfo the intrinsics come from ``camera.hfov_deg`` (as depth_node, after waiting
``FIRST_CAMERA_INFO_WAIT_S`` for the first one); a CameraInfo of
another size than the image is scaled when the aspect ratio matches; ROS time going back clears
the transforms. A managed (lifecycle) node like depth_node (``autostart``).
"""
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import CameraInfo, Image

from midas_ros.depth_pipeline import SkippedOutputs
from midas_ros.geometry import Intrinsics
from midas_ros.ros.conversions import (ConversionError, camera_info_to_intrinsics,
                                       depth_to_metres)
from midas_ros.ros.depth_node_params import DEPTH_NODE_PARAMS
from midas_ros.ros.lifecycle import AUTOSTART, ManagedNode
from midas_ros.ros.navigation_outputs import (NAVIGATION_PARAMS, SHARED_PARAM_NAMES,
                                              NavigationOutputs)
from midas_ros.ros.node_main import run_node
from midas_ros.ros.parameters import Param, declare_parameters, on_set_parameters
from midas_ros.ros.qos import (AUTO_QOS, SUBSCRIPTION_QOS_NAMES, qos_profile, subscribe,
                               unsubscribe)
from midas_ros.ros.tf_frames import FrameTransforms
from midas_ros.ros.throttled_log import ThrottledLog
from midas_ros.ros.time_jumps import on_time_jump_back

THROTTLE_S = 5.0
# Depth frames arriving this soon after activation wait for the first CameraInfo (dropped)
# rather than being measured with the camera.hfov_deg guess (as depth_node waits for it).
FIRST_CAMERA_INFO_WAIT_S = 0.5
DEFAULT_FRAME = 'camera_optical_frame'
_DEPTH_NODE_ROWS = {param.name: param for param in DEPTH_NODE_PARAMS}

DEPTH_CLOUD_NODE_PARAMS = (
    AUTOSTART,
    Param('input_qos', AUTO_QOS, 'QoS of the depth/image and depth/camera_info subscriptions; '
          "auto: follow the publishers' reliability and durability",
          choices=SUBSCRIPTION_QOS_NAMES, read_only=True),
    _DEPTH_NODE_ROWS['output.qos'],
    _DEPTH_NODE_ROWS['camera.hfov_deg'],
    # The same rows (names, defaults, limits) as depth_node's.
    *(_DEPTH_NODE_ROWS[name] for name in SHARED_PARAM_NAMES),
    *NAVIGATION_PARAMS,
    _DEPTH_NODE_ROWS['diagnostics.period'],
)


class DepthCloudNode(ManagedNode):
    """Depth image + CameraInfo in, the navigation outputs out; see the module docstring."""

    def __init__(self, **kwargs):
        super().__init__('depth_cloud_node', **kwargs)
        self.values = declare_parameters(self, DEPTH_CLOUD_NODE_PARAMS)
        self.throttled = ThrottledLog(self.get_logger(), THROTTLE_S)
        self.tf = FrameTransforms(self)
        self.navigation = NavigationOutputs(self)
        reason = self.navigation.check(self.values)
        if reason is not None:
            raise ValueError(reason)
        self.add_on_set_parameters_callback(on_set_parameters(
            DEPTH_CLOUD_NODE_PARAMS, lambda: self.values, self._apply_parameters))
        self.camera_info = None
        self._metres = None          # reused float32 buffer for 16UC1 frames
        self._inputs = []
        self._diagnostics_pub = None
        self.stats = {'received': 0, 'processed': 0, 'idle': 0, 'skipped': 0,
                      'waiting for camera_info': 0}
        self._activated = 0.0
        self.last_size = None
        self.skipped_outputs = SkippedOutputs()
        self._time_jumps = on_time_jump_back(self, self._forget_the_past)

    # -- lifecycle ---------------------------------------------------------------------------
    def configure(self):
        self.navigation.configure(qos_profile(self.values['output.qos']))
        self._diagnostics_pub = self.create_lifecycle_publisher(DiagnosticArray,
                                                                '/diagnostics', 10)

    def activate(self):
        qos = self.values['input_qos']
        self._activated = time.monotonic()
        self._inputs = [
            subscribe(self, Image, 'depth/image', self._on_depth, qos, 1),
            subscribe(self, CameraInfo, 'depth/camera_info', self._on_camera_info, qos, 5)]
        self._diagnostics_timer = self.create_timer(self.values['diagnostics.period'],
                                                    self._publish_diagnostics)

    def deactivate(self):
        for subscription in self._inputs:
            unsubscribe(self, subscription)
        self._inputs = []
        self.destroy_timer(self._diagnostics_timer)

    def cleanup(self):
        self.navigation.cleanup()
        if self._diagnostics_pub is not None:
            self.destroy_lifecycle_publisher(self._diagnostics_pub)
        self._diagnostics_pub = None
        self.camera_info = None

    # -- parameters and time -----------------------------------------------------------------
    def _apply_parameters(self, candidate):
        reason = self.navigation.check(candidate)
        if reason is None:
            self.values = candidate
        return reason

    def _forget_the_past(self, why):
        self.tf.clear()
        self.get_logger().info(f'{why}: cleared the transforms (a bag loop or simulator '
                               'reset?)')

    # -- inputs ------------------------------------------------------------------------------
    def _on_camera_info(self, msg):
        self.camera_info = msg

    def _intrinsics_for(self, width, height):
        """CameraInfo's intrinsics (scaled to a resized image), else the FOV default."""
        info = self.camera_info
        hfov = self.values['camera.hfov_deg']
        if info is None:
            self.get_logger().info(f'no depth/camera_info received yet: assuming a {hfov} deg '
                                   'horizontal field of view', once=True)
            return Intrinsics.from_fov(width, height, hfov)
        try:
            intrinsics = camera_info_to_intrinsics(info)
            if (intrinsics.width, intrinsics.height) == (width, height):
                return intrinsics
            resized = intrinsics.resized_to(width, height)
        except (ConversionError, ValueError) as error:
            self.throttled.warning(f'depth/camera_info unusable for a {width}x{height} image '
                                   f'({error}); using camera.hfov_deg={hfov}')
            return Intrinsics.from_fov(width, height, hfov)
        self.throttled.warning(f'depth/camera_info is {intrinsics.width}x{intrinsics.height}, '
                               f'depth/image {width}x{height}: scaling the intrinsics')
        return resized

    def _metric(self, msg):
        if msg.encoding == '32FC1':
            return depth_to_metres(msg)
        shape = (msg.height, msg.width)
        if self._metres is None or self._metres.shape != shape:
            self._metres = np.empty(shape, np.float32)
        return depth_to_metres(msg, out=self._metres)

    def _on_depth(self, msg):
        self.stats['received'] += 1
        wanted = self.navigation.wanted()
        if not wanted:
            self.stats['idle'] += 1
            return
        if self.camera_info is None and \
                time.monotonic() - self._activated < FIRST_CAMERA_INFO_WAIT_S:
            self.stats['waiting for camera_info'] += 1
            return
        try:
            depth = self._metric(msg)
            height, width = depth.shape
            if self.last_size not in (None, (width, height)):
                self.get_logger().info('depth image size changed from {}x{} to {}x{}'.format(
                    *self.last_size, width, height))
            self.last_size = (width, height)
            header = msg.header
            if self.values['frame_id']:
                header.frame_id = self.values['frame_id']
            elif not header.frame_id:
                self.get_logger().warning(f"depth images have no frame_id: using "
                                          f"'{DEFAULT_FRAME}'", once=True)
                header.frame_id = DEFAULT_FRAME
            skipped = self.navigation.publish(depth, self._intrinsics_for(width, height),
                                              header, wanted)
        except (ConversionError, ValueError) as error:
            self.stats['skipped'] += 1
            self.throttled.warning(f'depth/image skipped: {error}')
            return
        self.stats['processed'] += 1
        # An output this camera cannot give costs only itself: one warning per change.
        started, recovered = self.skipped_outputs.update(wanted, skipped)
        for topic, reason in started.items():
            self.get_logger().warning(f'{topic} skipped: {reason}; the other outputs continue')
        for topic in recovered:
            self.get_logger().info(f'{topic} published again')

    def _publish_diagnostics(self):
        values = {f'frames {key}': str(count) for key, count in self.stats.items()}
        values.update(self.navigation.geometry)
        skipped = dict(self.skipped_outputs.reasons)
        values.update({f'output {topic}': f'skipped: {reason}'
                       for topic, reason in skipped.items()})
        values.update({f'time {stage} (ms)': f'{seconds * 1e3:.2f}'
                       for stage, seconds in list(self.navigation.stage_times.items())})
        ok = (self.stats['processed'] > 0 or self.stats['received'] == self.stats['idle']) \
            and not skipped
        status = DiagnosticStatus(
            name=f'{self.get_fully_qualified_name()}: depth cloud',
            level=DiagnosticStatus.OK if ok else DiagnosticStatus.WARN,
            message='navigation outputs' if ok else 'no depth image processed yet',
            values=[KeyValue(key=k, value=v) for k, v in values.items()])
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)


def main(args=None):
    return run_node(DepthCloudNode, 'depth_cloud_node', startup_errors=(ValueError,), args=args)


if __name__ == '__main__':
    raise SystemExit(main())
