"""depth_node's output messages from one ``DepthFrame``: the one place that assembles them.

The node publishes what this builds; the benchmark times the same code. Only the topics asked
for are built (a robot that only uses the cloud pays nothing for the images).
"""
from std_msgs.msg import Header

from midas_ros.ros.conversions import (OrganizedCloudBuilder, array_to_image,
                                       intrinsics_to_camera_info, laser_scan)

# topic -> the DepthFrame product it needs (None: always available).
DEPTH_TOPICS = {
    'depth/image': None,
    'depth/relative': None,
    'depth/colormap': 'colormap',
    'depth/camera_info': None,
    'depth/points': 'cloud',
    'depth/scan': 'scan',
}


def products_for(topics):
    """The optional DepthPipeline products (``colormap``, ``cloud``, ``scan``) ``topics`` need."""
    return frozenset(DEPTH_TOPICS[t] for t in topics if DEPTH_TOPICS[t] is not None)


class DepthMessageBuilder:
    """Builds the messages of a frame; keeps the cloud buffer between frames."""

    def __init__(self):
        self._clouds = {False: OrganizedCloudBuilder(color=False),
                        True: OrganizedCloudBuilder(color=True)}

    def build(self, frame, intrinsics, header, scan_frame_id, topics=DEPTH_TOPICS):
        """``{topic: message}`` for the wanted ``topics`` the frame has products for."""
        messages = {}
        if 'depth/image' in topics:
            messages['depth/image'] = array_to_image(frame.depth, '32FC1', header)
        if 'depth/relative' in topics:
            messages['depth/relative'] = array_to_image(frame.relative, '32FC1', header)
        if 'depth/colormap' in topics and frame.colormap is not None:
            messages['depth/colormap'] = array_to_image(frame.colormap, 'bgr8', header)
        if 'depth/camera_info' in topics:
            messages['depth/camera_info'] = intrinsics_to_camera_info(intrinsics, header)
        if 'depth/points' in topics and frame.points is not None:
            cloud = self._clouds[frame.points_rgb is not None]
            messages['depth/points'] = cloud.build(frame.points, header, frame.points_rgb)
        if 'depth/scan' in topics and frame.scan is not None:
            scan = frame.scan
            messages['depth/scan'] = laser_scan(
                Header(stamp=header.stamp, frame_id=scan_frame_id), scan.angle_min,
                scan.angle_max, scan.angle_increment, scan.ranges, scan.range_min,
                scan.range_max)
        return messages
