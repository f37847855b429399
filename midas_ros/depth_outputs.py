"""depth_node's outputs, defined once: topic, message type, QoS, when each is published.

ROS-free (message types are named, not imported), so that every reader can use it: depth_node
(``ros/depth_messages.py`` builds and the per-camera publishers publish each row), the
benchmark and the pipeline runner (which topics to subscribe / record), diagnostics (output
names). Every row is per camera: with ``cameras: [front]`` the topic is ``front/<topic>``
(``camera_topic``).

Two stages make them (``Output.stage``): ``depth`` rows are built from the camera's
``DepthFrame`` by ``ros/depth_messages``; ``navigation`` rows from the metric depth image by
``ros/navigation_outputs`` (edge-filtered points and scan, obstacle cloud, confidence), the one
module depth_node's cameras and depth_cloud_node share.

Adding an output: one row here and its builder: in ``ros/depth_messages.BUILDERS`` (and, if it
needs a new ``DepthFrame`` product, that product in ``depth_pipeline``) for the depth stage, in
``navigation`` / ``ros/navigation_outputs`` for the navigation stage.
"""
from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Output:
    """One topic each camera publishes."""

    topic: str                  # relative to the camera ('depth/image'; see ``camera_topic``)
    message: str                # ROS message type ('sensor_msgs/msg/Image')
    product: Optional[str]      # the DepthFrame product it needs; None: every frame has it
    when: str                   # when it is published (documentation, benchmark)
    qos: str = 'output.qos'     # the depth_node parameter naming its QoS profile
    stage: str = 'depth'        # who makes it: 'depth' (depth_messages) or 'navigation'


DEPTH_OUTPUTS = (
    Output('depth/image', 'sensor_msgs/msg/Image', None,
           'every frame: 32FC1 metres, NaN no reading, -inf below depth.min, +inf beyond '
           'depth.max (REP 117/118)'),
    Output('depth/relative', 'sensor_msgs/msg/Image', None,
           'every frame: 32FC1 network output (relative inverse depth)'),
    Output('depth/colormap', 'sensor_msgs/msg/Image', 'colormap', 'every frame: bgr8'),
    Output('depth/camera_info', 'sensor_msgs/msg/CameraInfo', None,
           'every frame: the intrinsics used'),
    Output('depth/points', 'sensor_msgs/msg/PointCloud2', 'cloud',
           'with cloud.enabled: organized xyz (+rgb with cloud.color), depth edges NaN',
           stage='navigation'),
    Output('depth/scan', 'sensor_msgs/msg/LaserScan', 'scan',
           'with scan.enabled, in scan.frame_id (scan.mode rows or height_band), depth '
           'edges excluded', stage='navigation'),
    Output('depth/obstacle_points', 'sensor_msgs/msg/PointCloud2', None,
           'when subscribed: unorganized xyz between obstacle_points.min_height and '
           'max_height above the floor, voxel-downsampled', stage='navigation'),
    Output('depth/confidence', 'sensor_msgs/msg/Image', None,
           'when subscribed: 32FC1 in [0, 1] (low on depth edges, out of range, uncertain '
           'scale)', stage='navigation'),
)
OUTPUT_TOPICS = tuple(output.topic for output in DEPTH_OUTPUTS)
# The rows the navigation stage makes (depth_node's cameras and depth_cloud_node).
NAVIGATION_OUTPUTS = tuple(output for output in DEPTH_OUTPUTS if output.stage == 'navigation')
# topic -> the DepthFrame product it needs (None: always available), for the topics a
# DepthFrame can give (``ros/depth_messages.BUILDERS``): the depth stage's, and depth/points
# and depth/scan unfiltered from the frame's own products (the benchmark times those; the
# node publishes the navigation stage's edge-filtered ones).
DEPTH_TOPICS = {output.topic: output.product for output in DEPTH_OUTPUTS
                if output.stage == 'depth' or output.product is not None}
# What each camera subscribes (relative to the camera; compressed images: see
# ``qos.transport_topic``).
IMAGE_TOPIC, CAMERA_INFO_TOPIC = 'image', 'camera_info'


def camera_topic(camera, topic):
    """``topic`` of ``camera`` ('front', 'depth/image' -> 'front/depth/image'); camera '' is
    depth_node's single unnamed camera (the topic itself)."""
    return f'{camera}/{topic}' if camera else topic
