"""depth_node's output messages from one ``DepthFrame``: the one place that assembles them.

The topics are those of ``midas_ros.depth_outputs.DEPTH_OUTPUTS`` (defined once there); this
module holds how each is built (``BUILDERS``) and its message class (``MESSAGE_TYPES``). The
node publishes what this builds; the benchmark times the same code. Only the topics asked for
are built (a robot that only uses the cloud pays nothing for the images).
"""
import importlib

from std_msgs.msg import Header

from midas_ros.depth_outputs import DEPTH_OUTPUTS, DEPTH_TOPICS
from midas_ros.ros.conversions import (OrganizedCloudBuilder, array_to_image,
                                       intrinsics_to_camera_info, laser_scan)


def _depth(builder, frame, intrinsics, header, scan_frame_id):
    return array_to_image(frame.depth, '32FC1', header)


def _relative(builder, frame, intrinsics, header, scan_frame_id):
    return array_to_image(frame.relative, '32FC1', header)


def _colormap(builder, frame, intrinsics, header, scan_frame_id):
    return None if frame.colormap is None else array_to_image(frame.colormap, 'bgr8', header)


def _camera_info(builder, frame, intrinsics, header, scan_frame_id):
    return intrinsics_to_camera_info(intrinsics, header)


def _points(builder, frame, intrinsics, header, scan_frame_id):
    if frame.points is None:
        return None
    return builder.clouds[frame.points_rgb is not None].build(frame.points, header,
                                                              frame.points_rgb)


def _scan(builder, frame, intrinsics, header, scan_frame_id):
    scan = frame.scan
    if scan is None:
        return None
    return laser_scan(Header(stamp=header.stamp, frame_id=scan_frame_id), scan.angle_min,
                      scan.angle_max, scan.angle_increment, scan.ranges, scan.range_min,
                      scan.range_max)


# topic -> builder(builder, frame, intrinsics, header, scan_frame_id) -> message or None
BUILDERS = {
    'depth/image': _depth,
    'depth/relative': _relative,
    'depth/colormap': _colormap,
    'depth/camera_info': _camera_info,
    'depth/points': _points,
    'depth/scan': _scan,
}


def message_class(name):
    """The class of message type ``name`` ('sensor_msgs/msg/Image'). Imported here rather than
    with rosidl_runtime_py, which not every ROS install (the robot-dependencies env) has."""
    package, kind, message = name.split('/')
    return getattr(importlib.import_module(f'{package}.{kind}'), message)


# topic -> message class
MESSAGE_TYPES = {output.topic: message_class(output.message) for output in DEPTH_OUTPUTS}


def products_for(topics):
    """The optional DepthPipeline products (``colormap``, ``cloud``, ``scan``) ``topics`` need."""
    return frozenset(DEPTH_TOPICS[t] for t in topics if DEPTH_TOPICS[t] is not None)


class DepthMessageBuilder:
    """Builds the messages of a frame; keeps the cloud buffer between frames."""

    def __init__(self):
        self.problems = {}
        self.clouds = {False: OrganizedCloudBuilder(color=False),
                       True: OrganizedCloudBuilder(color=True)}

    def build(self, frame, intrinsics, header, scan_frame_id, topics=DEPTH_TOPICS):
        """``{topic: message}`` for the wanted ``topics`` the frame has products for.

        A message that cannot be built costs only itself: its topic and the reason are in
        ``self.problems`` ({topic: reason}, for this call) and the others are still built.
        """
        messages, self.problems = {}, {}
        for topic in topics:
            try:
                message = BUILDERS[topic](self, frame, intrinsics, header, scan_frame_id)
            except Exception as error:  # one broken output must not cost the others
                self.problems[topic] = f'{type(error).__name__}: {error}'
                continue
            if message is not None:
                messages[topic] = message
        return messages


def skipped_topics(frame, topics, build_problems):
    """``{topic: reason}`` of the wanted ``topics`` this frame could not give: the pipeline's
    skipped products and the messages that could not be built."""
    skipped = {topic: frame.skipped[DEPTH_TOPICS[topic]] for topic in topics
               if DEPTH_TOPICS[topic] in frame.skipped}
    skipped.update(build_problems)
    return skipped
