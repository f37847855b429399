"""depth_node's outputs: the one table of its topics, and the messages of one ``DepthFrame``.

``DEPTH_OUTPUTS`` is the single definition of what depth_node publishes per camera (topic,
message type, QoS parameter, when, how it is built); the node, the benchmark, the pipeline
runner and the diagnostics read it. Adding an output is one row here (plus, if it needs a new
``DepthFrame`` product, that product in ``depth_pipeline``). Only the topics asked for are built
(a robot that only uses the cloud pays nothing for the images).
"""
from dataclasses import dataclass
from typing import Callable, Optional

from sensor_msgs.msg import CameraInfo, Image, LaserScan, PointCloud2
from std_msgs.msg import Header

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


@dataclass(frozen=True)
class Output:
    """One published topic of a camera."""

    topic: str                  # relative to the camera ('depth/image'; see ``camera_topic``)
    msg_type: type
    product: Optional[str]      # the DepthFrame product it needs; None: every frame has it
    when: str                   # when it is published (docs, diagnostics)
    build: Callable             # (builder, frame, intrinsics, header, scan_frame_id) -> msg
    qos: str = 'output.qos'     # the parameter naming its QoS profile


DEPTH_OUTPUTS = (
    Output('depth/image', Image, None, 'every frame (32FC1 metres; NaN no reading, +-inf '
           'beyond depth.max / below depth.min)', _depth),
    Output('depth/relative', Image, None, 'every frame (32FC1 network output)', _relative),
    Output('depth/colormap', Image, 'colormap', 'every frame (bgr8)', _colormap),
    Output('depth/camera_info', CameraInfo, None, 'every frame', _camera_info),
    Output('depth/points', PointCloud2, 'cloud', 'with cloud.enabled (organized)', _points),
    Output('depth/scan', LaserScan, 'scan', 'with scan.enabled', _scan),
)
OUTPUTS = {output.topic: output for output in DEPTH_OUTPUTS}
# topic -> the DepthFrame product it needs (None: always available).
DEPTH_TOPICS = {output.topic: output.product for output in DEPTH_OUTPUTS}
# What a camera subscribes: (raw image topic, compressed image topic, camera_info topic).
IMAGE_TOPIC, COMPRESSED_IMAGE_TOPIC, CAMERA_INFO_TOPIC = 'image', 'image/compressed', \
    'camera_info'


def camera_topic(camera, topic):
    """``topic`` of ``camera`` ('front', 'depth/image' -> 'front/depth/image'); camera '' is
    the node's single unnamed camera (the topic itself)."""
    return f'{camera}/{topic}' if camera else topic


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
                message = OUTPUTS[topic].build(self, frame, intrinsics, header, scan_frame_id)
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
