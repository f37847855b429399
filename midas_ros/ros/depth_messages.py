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
        self.problems = {}
        self._clouds = {False: OrganizedCloudBuilder(color=False),
                        True: OrganizedCloudBuilder(color=True)}

    def build(self, frame, intrinsics, header, scan_frame_id, topics=DEPTH_TOPICS):
        """``{topic: message}`` for the wanted ``topics`` the frame has products for.

        A message that cannot be built costs only itself: its topic and the reason are in
        ``self.problems`` ({topic: reason}, for this call) and the others are still built.
        """
        messages, self.problems = {}, {}
        for topic in topics:
            try:
                message = self._build_one(topic, frame, intrinsics, header, scan_frame_id)
            except Exception as error:  # one broken output must not cost the others
                self.problems[topic] = f'{type(error).__name__}: {error}'
                continue
            if message is not None:
                messages[topic] = message
        return messages

    def _build_one(self, topic, frame, intrinsics, header, scan_frame_id):
        if topic == 'depth/image':
            return array_to_image(frame.depth, '32FC1', header)
        if topic == 'depth/relative':
            return array_to_image(frame.relative, '32FC1', header)
        if topic == 'depth/colormap' and frame.colormap is not None:
            return array_to_image(frame.colormap, 'bgr8', header)
        if topic == 'depth/camera_info':
            return intrinsics_to_camera_info(intrinsics, header)
        if topic == 'depth/points' and frame.points is not None:
            cloud = self._clouds[frame.points_rgb is not None]
            return cloud.build(frame.points, header, frame.points_rgb)
        if topic == 'depth/scan' and frame.scan is not None:
            scan = frame.scan
            return laser_scan(
                Header(stamp=header.stamp, frame_id=scan_frame_id), scan.angle_min,
                scan.angle_max, scan.angle_increment, scan.ranges, scan.range_min,
                scan.range_max)
        return None


def skipped_topics(frame, topics, build_problems):
    """``{topic: reason}`` of the wanted ``topics`` this frame could not give: the pipeline's
    skipped products and the messages that could not be built."""
    skipped = {topic: frame.skipped[DEPTH_TOPICS[topic]] for topic in topics
               if DEPTH_TOPICS[topic] in frame.skipped}
    skipped.update(build_problems)
    return skipped
