"""TF at the edge: transforms between frames as 4x4 numpy matrices for the ROS-free core.

The one module that touches tf2_ros. Nodes ask ``FrameTransforms.lookup(target, source,
stamp)`` and hand the matrix (``target_from_source``: source coordinates -> target
coordinates) to the maths; the core never sees a TF message. tf2_ros comes with every ROS 2
distribution but not with the PyPI wheels this package also runs on, so it is imported here,
when a node is built, never at module import: without it ``available`` is false, one info line
says the node uses its parameters, and every lookup raises :class:`TransformUnavailable`.

A missing transform (frame unknown, not connected, stamp outside the buffer) is an expected
state: the caller falls back or skips and says why (``TransformUnavailable``'s text).
"""
import time

from geometry_msgs.msg import TransformStamped
from rclpy.duration import Duration
from rclpy.time import Time

from midas_ros.geometry import quaternion_from_rotation, transform_from_quaternion

TF2_MISSING = 'tf2_ros not available, using parameters'
# Right after start the listener may not have heard /tf_static yet (transient-local samples
# arrive with discovery): missing transforms are reported as info, not warnings, meanwhile.
STARTUP_S = 3.0
# How long a transform at a fresh stamp is waited for (the robot's odometry on /tf arrives a
# little after the camera's frame): bounded, so that a stopped TF costs little.
TRANSFORM_WAIT_S = 0.1


class TransformUnavailable(Exception):
    """No transform between the frames at that time; the text says why. ``may_arrive``: the
    frames are connected but the stamp is newer than their latest transform (tf2's
    'extrapolation into the future'), which may still be on its way."""

    def __init__(self, text, may_arrive=False):
        super().__init__(text)
        self.may_arrive = may_arrive


def transform_to_matrix(transform):
    """4x4 matrix of a geometry_msgs/Transform (translation, rotation quaternion)."""
    t, q = transform.translation, transform.rotation
    return transform_from_quaternion((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))


def matrix_to_transform(parent_frame, child_frame, parent_from_child, stamp):
    """geometry_msgs/TransformStamped of a 4x4 ``parent_from_child`` (child coordinates ->
    parent coordinates, the TF convention: the child's pose in the parent)."""
    message = TransformStamped()
    message.header.frame_id, message.child_frame_id = parent_frame, child_frame
    message.header.stamp = stamp
    translation, rotation = message.transform.translation, message.transform.rotation
    translation.x, translation.y, translation.z = (float(v) for v in parent_from_child[:3, 3])
    rotation.x, rotation.y, rotation.z, rotation.w = quaternion_from_rotation(
        parent_from_child[:3, :3])
    return message


def publish_static_transforms(node, transforms):
    """Publish ``transforms`` (TransformStamped) on /tf_static with tf2_ros's
    StaticTransformBroadcaster; returns it (keep it alive while the node runs), or None with
    one info line when tf2_ros is not installed."""
    try:
        import tf2_ros
    except ImportError:
        node.get_logger().info('tf2_ros not available: /tf_static not published')
        return None
    broadcaster = tf2_ros.StaticTransformBroadcaster(node)
    broadcaster.sendTransform(list(transforms))
    return broadcaster


class FrameTransforms:
    """A tf2_ros Buffer filled by a TransformListener on ``node`` (its /tf and /tf_static
    subscriptions run in the node's executor), queried as matrices from any thread.

    ``cache_s``: how much history the buffer keeps (lookups at older stamps fail).
    """

    def __init__(self, node, cache_s=10.0):
        self._logger = node.get_logger()
        self._started = time.monotonic()
        try:
            import tf2_ros
        except ImportError:
            node.get_logger().info(TF2_MISSING)
            self.available = False
            self._tf2 = self._buffer = self._listener = None
            return
        self.available = True
        self._tf2 = tf2_ros
        self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_s))
        self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)

    def clear(self):
        """Forget every buffered transform: ROS time went back (a bag loop, a simulator reset).
        tf2_ros.Buffer clears itself only on jumps of the clock it was given, and this one is
        built without the node's (sim-time) clock."""
        if self._buffer is not None:
            self._buffer.clear()

    def _newer_than_buffered(self, target_frame, source_frame, when):
        """Whether ``when`` is after the latest transform between the frames (so that the one
        at ``when`` may still arrive), rather than before the oldest kept."""
        try:
            latest = self._buffer.lookup_transform(target_frame, source_frame, Time())
        except self._tf2.TransformException:
            return False
        return Time.from_msg(latest.header.stamp) < when

    def report_missing(self, throttled, text):
        """Say ``text`` about a missing transform: a rate-limited warning through
        ``throttled`` (a ThrottledLog), or info during the first seconds after start."""
        if time.monotonic() - self._started < STARTUP_S:
            self._logger.info(f'{text} (TF is starting up)')
        else:
            throttled.warning(text)

    def lookup(self, target_frame, source_frame, stamp=None, timeout_s=0.0):
        """4x4 ``target_from_source`` at ``stamp`` (builtin_interfaces/Time; None or zero: the
        latest available); when the stamp is beyond the data (extrapolation), waits up to
        ``timeout_s`` for it to arrive (only from a thread other than the one spinning the
        node). Raises TransformUnavailable with the reason."""
        if not target_frame or not source_frame:
            raise TransformUnavailable(f"frame names must not be empty ('{target_frame}', "
                                       f"'{source_frame}')")
        if target_frame == source_frame:
            return transform_from_quaternion((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
        if not self.available:
            raise TransformUnavailable('tf2_ros is not available')
        when = Time() if stamp is None else Time.from_msg(stamp)
        try:
            try:
                message = self._buffer.lookup_transform(target_frame, source_frame, when)
            except self._tf2.ExtrapolationException:
                if timeout_s <= 0:
                    raise
                # The transform of a fresh stamp is often still on its way: wait for it, but
                # only then (an unknown frame would cost the whole timeout every time).
                message = self._buffer.lookup_transform(target_frame, source_frame, when,
                                                        Duration(seconds=timeout_s))
        except self._tf2.TransformException as error:
            # Lookup, connectivity and extrapolation errors: tf2's own text says which.
            text = ' '.join(str(error).split())
            ahead = (isinstance(error, self._tf2.ExtrapolationException)
                     and self._newer_than_buffered(target_frame, source_frame, when))
            raise TransformUnavailable(f'{target_frame} <- {source_frame}: {text}',
                                       may_arrive=ahead) from None
        try:
            return transform_to_matrix(message.transform)
        except ValueError as error:
            raise TransformUnavailable(f'{target_frame} <- {source_frame}: {error}') from None
