"""An in-process depth_node whose network is exact on synthetic floor scenes, and helpers to
feed it over DDS (shared by the TF tests and the tests without tf2_ros).

Each image carries, in its 24 bits per pixel, the scene's relative inverse depth (the true
inverse depth through an affine map the test chooses, as MiDaS's output is), so that every
metric claim is checked against depth ray-traced here, independently of the package.
"""
import math
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image

from midas_ros.geometry import Intrinsics
from midas_ros.ros.conversions import array_to_image, image_to_array, intrinsics_to_camera_info
from midas_ros.ros.depth_node import DepthNode
from midas_ros.ros.qos import qos_profile
from ros_process import RosTestNode

INTRINSICS = Intrinsics.from_fov(160, 120, 70.0)
HEIGHT_M = 0.8
PITCH_DEG = 10.0            # mean pitch, and what the parameter mode assumes
WALL_M = 6.0
CODE_SCALE = float(2 ** 22)  # 24-bit fixed point: relative values in [0, 4)


def quaternion(roll=0.0, pitch=0.0, yaw=0.0):
    """(x, y, z, w) of R = Rz(yaw) Ry(pitch) Rx(roll), written out here (not the package's)."""
    cr, sr = math.cos(roll / 2), math.sin(roll / 2)
    cp, sp = math.cos(pitch / 2), math.sin(pitch / 2)
    cy, sy = math.cos(yaw / 2), math.sin(yaw / 2)
    return (sr * cp * cy - cr * sp * sy, cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy, cr * cp * cy + sr * sp * sy)


# camera_link -> camera_optical_frame as in every URDF: rpy (-pi/2, 0, -pi/2).
OPTICAL_IN_LINK = quaternion(-math.pi / 2, 0.0, -math.pi / 2)


def transform_msg(parent, child, xyz, q, when=None):
    msg = TransformStamped()
    msg.header.frame_id, msg.child_frame_id = parent, child
    if when is not None:
        msg.header.stamp = when
    t, r = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in xyz)
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


def level_from_optical(pitch, roll=0.0):
    """Rotation of the optical frame in a level frame at the camera (x forward, y left, z up):
    the body pitched by ``pitch`` (down) and rolled by ``roll`` (right side down), R = Ry Rx."""
    cp, sp, cr, sr = math.cos(pitch), math.sin(pitch), math.cos(roll), math.sin(roll)
    pitch_m = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
    roll_m = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
    body_from_optical = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], dtype=float)
    return pitch_m @ roll_m @ body_from_optical


def render(pitch, roll=0.0):
    """Optical-axis depth of a floor HEIGHT_M below a camera pitched down by ``pitch`` (and
    rolled by ``roll``) and a wall WALL_M ahead of it."""
    v, u = np.mgrid[0:INTRINSICS.height, 0:INTRINSICS.width].astype(np.float64)
    rays = np.stack([(u - INTRINSICS.cx) / INTRINSICS.fx, (v - INTRINSICS.cy) / INTRINSICS.fy,
                     np.ones_like(u)], axis=-1)
    d = rays @ level_from_optical(pitch, roll).T
    with np.errstate(divide='ignore'):
        floor = np.where(d[..., 2] < 0, -HEIGHT_M / d[..., 2], np.inf)
        wall = np.where(d[..., 0] > 0, WALL_M / d[..., 0], np.inf)
    return np.minimum(floor, wall)


def encoded_image(relative, when, frame):
    """rgb8 image whose 24 bits per pixel hold ``relative`` in fixed point."""
    code = np.clip(np.rint(relative * CODE_SCALE), 0, 2 ** 24 - 1).astype(np.uint32)
    rgb = np.stack([(code >> 16) & 0xFF, (code >> 8) & 0xFF, code & 0xFF], -1).astype(np.uint8)
    msg = array_to_image(rgb, 'rgb8')
    msg.header.stamp, msg.header.frame_id = when, frame
    return msg


class ExactNetwork:
    """Stands in for DepthEstimator: decodes the relative inverse depth the image carries."""

    device, backend, precision = 'cpu', 'exact', 'fp64'
    requested_backend, backend_error, precision_reason = 'exact', None, 'exact decoding'

    def __init__(self):
        self.last_timings = {'inference': 0.0}
        self.warmed_up = {}   # (width, height) -> seconds, as DepthEstimator.warmup keeps it
        self._shifts = np.array([16, 8, 0], np.uint32)

    def warmup(self, width, height, channel_order='rgb'):
        self.warmed_up[width, height] = 0.0
        return 0.0

    def predict(self, image, channel_order='rgb', out=None):
        code = (image.astype(np.uint32) << self._shifts).sum(axis=-1)
        if out is None:
            out = np.empty(code.shape, np.float32)
        np.divide(code, CODE_SCALE, out=out, casting='unsafe')
        return out


class ExactDepthNode(DepthNode):
    def _create_estimator(self, values):
        return ExactNetwork()


class InProcessDepthNode:
    """depth_node as in ``depth_node.main``: callbacks in one thread, frames in another."""

    def __init__(self, namespace, parameters, node_class=ExactDepthNode):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        overrides = [Parameter(name, value=value) for name, value in parameters.items()]
        self.node = node_class(context=self.context, namespace=namespace,
                               parameter_overrides=overrides)
        start = getattr(self.node, 'start', None)
        if start is not None:   # a lifecycle depth_node: configure and activate, as run_node
            start()
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._threads = [threading.Thread(target=self._spin, daemon=True),
                         threading.Thread(target=self.node.run, daemon=True)]
        for thread in self._threads:
            thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except ExternalShutdownException:
            pass

    def set(self, **values):
        results = self.node.set_parameters(
            [Parameter(name.replace('__', '.'), value=value) for name, value in values.items()])
        assert all(result.successful for result in results), [r.reason for r in results]

    def close(self):
        rclpy.shutdown(context=self.context)
        for thread in self._threads:
            thread.join(5.0)
        self.executor.shutdown()
        self.node.destroy_node()


def depth_probe(name, namespace):
    """A probe publishing ``image`` and ``camera_info`` into ``namespace`` (sensor data QoS)
    and collecting its ``depth/image`` (``probe.depth``) and /diagnostics
    (``probe.diagnostics``)."""
    probe = RosTestNode(name)
    probe.depth = probe.collect(Image, f'{namespace}/depth/image',
                                qos_profile('sensor_data', depth=20))
    probe.diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
    probe.image_pub = probe.node.create_publisher(Image, f'{namespace}/image',
                                                  qos_profile('sensor_data'))
    probe.info_pub = probe.node.create_publisher(CameraInfo, f'{namespace}/camera_info',
                                                 qos_profile('sensor_data'))
    return probe


def depth_for(probe, image, when, transforms=(), timeout=20.0):
    """Publish ``transforms`` on /tf, then ``image`` and its CameraInfo, until depth/image of
    stamp ``when`` arrives."""
    info = intrinsics_to_camera_info(INTRINSICS)
    info.header = image.header
    state = {'next': 0.0}

    def step():
        if time.monotonic() >= state['next']:
            for transform in transforms:
                probe.tf.sendTransform(transform)
            probe.info_pub.publish(info)
            probe.image_pub.publish(image)
            state['next'] = time.monotonic() + 0.3

    def arrived():
        return any(m.header.stamp == when for m in probe.depth)
    assert probe.spin_until(arrived, timeout, step), 'no depth/image for the frame'
    msg = [m for m in probe.depth if m.header.stamp == when][-1]
    return np.asarray(image_to_array(msg)[0], dtype=np.float64)


def latest_status(probe, namespace, since):
    """Key values of the node's newest /diagnostics status published after ``since``."""
    for array in reversed(probe.diagnostics):
        if (array.header.stamp.sec + array.header.stamp.nanosec * 1e-9) < since:
            continue
        for status in array.status:
            if status.name.startswith(namespace):
                return {kv.key: kv.value for kv in status.values}
    return {}


def status_after(probe, namespace, key):
    """The node's first status published from now on (the frame just received is in it)."""
    since = seconds(now(probe))
    probe.spin_until(lambda: key in latest_status(probe, namespace, since), 5.0)
    return latest_status(probe, namespace, since)


def median_error(depth, truth):
    valid = np.isfinite(depth) & np.isfinite(truth)
    assert valid.mean() > 0.5
    return float(np.median(np.abs(depth[valid] / truth[valid] - 1.0)))


def now(probe):
    return probe.node.get_clock().now().to_msg()


def seconds(stamp):
    return stamp.sec + stamp.nanosec * 1e-9
