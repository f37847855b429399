"""depth/points, depth/scan, depth/obstacle_points and depth/confidence of a metric depth image:
the one ROS module depth_node and depth_cloud_node share (the maths is
:mod:`midas_ros.navigation`).

Parameters (``NAVIGATION_PARAMS``, plus the rows of ``SHARED_PARAMS`` that depth_node already
declares): the edge filter (``filter.*``), the obstacle cloud (``obstacle_points.*``), the
scan mode and its height band (``scan.mode``, ``scan.min_height``, ``scan.max_height``), and
the floor: ``scale.ground_frame`` through TF at the image's stamp, else
``scale.camera_height`` / ``scale.camera_pitch_deg`` / ``scale.camera_roll_deg``, whatever
``scale.mode`` is.

Topics: the ``navigation`` rows of depth_node's one output table
(``midas_ros.depth_outputs.NAVIGATION_OUTPUTS``), each under the stream's prefix (depth_node's
camera ``front``: ``front/depth/obstacle_points``; depth_cloud_node and depth_node's single
unnamed camera: ``depth/obstacle_points``).

Frames: depth/points and depth/confidence are in the image's frame; depth/scan in
``scan.frame_id`` (height_band: bearings and ranges in that frame through TF, else in the
camera's level frame: x the optical axis projected onto the floor, z up); depth/obstacle_points
in ``obstacle_points.frame_id``, or, when empty, the ground frame when TF gave the floor, else
the image's frame. Each output is computed only while it has subscribers.
"""
import math
import time

import numpy as np
from sensor_msgs.msg import PointCloud2, PointField
from std_msgs.msg import Header

from midas_ros.depth_edges import DEFAULT_RADIUS, DEFAULT_RTOL
from midas_ros.depth_outputs import NAVIGATION_OUTPUTS, camera_topic
from midas_ros.navigation import SCAN_MODES, NavigationDepth, NavigationSettings
from midas_ros.ros.conversions import (NATIVE_IS_BIGENDIAN, OrganizedCloudBuilder,
                                       array_to_image, laser_scan)
from midas_ros.ros.depth_messages import MESSAGE_TYPES
from midas_ros.ros.parameters import Param
from midas_ros.ros.tf_frames import TransformUnavailable
from midas_ros.scale import FloorPlane

# How long a frame may wait for the transform of its own stamp (as depth_node).
TF_WAIT_S = 0.1
# topic (relative to the stream) -> message class.
NAVIGATION_TOPICS = {output.topic: MESSAGE_TYPES[output.topic] for output in NAVIGATION_OUTPUTS}
_PRODUCT_OF = {'depth/points': 'points', 'depth/scan': 'scan',
               'depth/obstacle_points': 'obstacle_points', 'depth/confidence': 'confidence'}
_DEFAULTS = NavigationSettings()

NAVIGATION_PARAMS = (
    Param('filter.edge_radius', DEFAULT_RADIUS, 'depth edges: a pixel whose depth differs '
          'from a neighbour within this many pixels by more than filter.edge_rtol of its depth '
          'is an edge, left out of depth/points, depth/obstacle_points and depth/scan '
          '(depth/image keeps it); 0: no edge filter', min=0, max=32),
    Param('filter.edge_rtol', DEFAULT_RTOL, 'depth edges: relative depth difference that makes '
          'an edge', min=0.001, max=10.0),
    Param('scan.mode', _DEFAULTS.scan_mode, 'rows: the image rows around the principal point '
          '(depthimage_to_laserscan); height_band: per bearing the nearest point between '
          'scan.min_height and scan.max_height above the floor (pointcloud_to_laserscan)',
          choices=SCAN_MODES),
    Param('scan.min_height', _DEFAULTS.scan_min_height, 'height_band scan: lowest height above '
          'the floor that counts (m)', min=-10.0, max=100.0),
    Param('scan.max_height', _DEFAULTS.scan_max_height, 'height_band scan: highest height '
          'above the floor that counts (m)', min=-10.0, max=100.0),
    Param('obstacle_points.min_height', _DEFAULTS.obstacle_min_height, 'depth/obstacle_points: '
          'lowest height above the floor kept (m; the floor itself is below it)', min=-10.0,
          max=100.0),
    Param('obstacle_points.max_height', _DEFAULTS.obstacle_max_height, 'depth/obstacle_points: '
          'highest height above the floor kept (m)', min=-10.0, max=100.0),
    Param('obstacle_points.max_range', _DEFAULTS.obstacle_max_range, 'depth/obstacle_points: '
          'farthest distance from the camera kept (m)', min=0.01, max=1000.0),
    Param('obstacle_points.voxel_size', _DEFAULTS.obstacle_voxel_size, 'depth/obstacle_points:'
          ' one point (the centroid) per cube of this size (m); 0: every point', min=0.0,
          max=10.0),
    Param('obstacle_points.frame_id', '', 'frame of depth/obstacle_points (through TF at the '
          "image's stamp; not published while that transform is missing); empty: "
          'scale.ground_frame when TF gives the floor, else the image frame'),
)

# Rows of depth_node's table these outputs read too; depth_cloud_node declares the same rows.
SHARED_PARAM_NAMES = (
    'frame_id', 'scale.camera_height', 'scale.camera_pitch_deg', 'scale.camera_roll_deg',
    'scale.ground_frame', 'cloud.enabled', 'cloud.decimation', 'cloud.color', 'scan.enabled',
    'scan.height', 'scan.range_min', 'scan.range_max', 'scan.frame_id')


def settings_from_parameters(values):
    """``NavigationSettings`` from a node's parameter values (both nodes' names)."""
    return NavigationSettings(
        edge_radius=values['filter.edge_radius'], edge_rtol=values['filter.edge_rtol'],
        cloud_decimation=values['cloud.decimation'], scan_mode=values['scan.mode'],
        scan_height=values['scan.height'], scan_range_min=values['scan.range_min'],
        scan_range_max=values['scan.range_max'], scan_min_height=values['scan.min_height'],
        scan_max_height=values['scan.max_height'],
        obstacle_min_height=values['obstacle_points.min_height'],
        obstacle_max_height=values['obstacle_points.max_height'],
        obstacle_max_range=values['obstacle_points.max_range'],
        obstacle_voxel_size=values['obstacle_points.voxel_size'])


def floor_from_parameters(values):
    """The floor of ``scale.camera_height`` / ``_pitch_deg`` / ``_roll_deg``."""
    return FloorPlane.from_height_pitch_roll(
        values['scale.camera_height'], math.radians(values['scale.camera_pitch_deg']),
        math.radians(values['scale.camera_roll_deg']))


def rgb_view(pixels, channel_order):
    """An RGB HxWx3 view (or, for mono, an expanded copy) of a camera image."""
    if channel_order == 'mono':
        return np.repeat(pixels[..., None], 3, axis=-1)
    if channel_order in ('rgb', 'rgba'):
        return pixels[..., :3]
    return pixels[..., 2::-1]       # bgr, bgra


class UnorganizedCloudBuilder:
    """``PointCloud2`` of N points (x, y, z float32, 16 bytes a point as PCL's PointXYZ),
    height 1, every point valid (``is_dense``)."""

    POINT_STEP = 16

    def build(self, xyz, header):
        count = len(xyz)
        buffer = np.zeros((count, 4), np.float32)
        buffer[:, :3] = xyz
        msg = PointCloud2(header=header, height=1, width=count, is_bigendian=NATIVE_IS_BIGENDIAN,
                          point_step=self.POINT_STEP, row_step=self.POINT_STEP * count,
                          is_dense=True,
                          fields=[PointField(name=name, offset=4 * i,
                                             datatype=PointField.FLOAT32, count=1)
                                  for i, name in enumerate('xyz')])
        msg.data = buffer.tobytes()
        return msg


class NavigationOutputs:
    """Publishers, parameters and per-frame work of the navigation outputs of one depth stream.

    ``node`` is a ``ManagedNode`` with ``tf`` (``FrameTransforms``); by default the stream is
    the node's own: its ``values`` (parameter values, these rows included), its topics, its
    logger and its ``throttled`` (``ThrottledLog``). A node serving several streams (depth_node's
    cameras) gives each its own: ``values`` (a callable returning the stream's current values,
    unprefixed names), ``prefix`` (its topics' namespace, e.g. the camera name), ``log`` and
    ``throttled``. Call ``configure(qos)`` / ``cleanup()`` from the node's, ``check(candidate)``
    from its set-parameters callback and ``publish(...)`` once per frame from one thread.
    """

    def __init__(self, node, values=None, prefix='', log=None, throttled=None):
        self.node = node
        self._values = values or (lambda: node.values)
        self.prefix = prefix
        self.log = log or node.get_logger()
        self._throttled = throttled
        self.publishers = {}
        self.core = NavigationDepth(settings_from_parameters(self.values))
        self.stage_times = {}
        self.geometry = {}          # where the last frame's floor and frames came from
        self._clouds = {False: OrganizedCloudBuilder(color=False),
                        True: OrganizedCloudBuilder(color=True)}
        self._obstacles = UnorganizedCloudBuilder()
        self._colors = None

    @property
    def values(self):
        """The stream's current parameter values (unprefixed names)."""
        return self._values()

    @property
    def throttled(self):
        return self._throttled or self.throttled

    def configure(self, qos):
        self.publishers = {
            topic: self.node.create_lifecycle_publisher(
                msg_type, camera_topic(self.prefix, topic), qos)
            for topic, msg_type in NAVIGATION_TOPICS.items()}

    def cleanup(self):
        for publisher in self.publishers.values():
            self.node.destroy_lifecycle_publisher(publisher)
        self.publishers = {}

    @staticmethod
    def check(values):
        """The reason the candidate parameter ``values`` cannot work, or None. Changes nothing:
        once the node has swapped the values in, the next frame uses them."""
        try:
            settings_from_parameters(values).check()
            floor_from_parameters(values)
        except ValueError as error:
            return str(error)
        return None

    def wanted(self):
        """The navigation topics with subscribers that the parameters enable."""
        values = self.values
        enabled = {'depth/points': values['cloud.enabled'], 'depth/scan': values['scan.enabled'],
                   'depth/obstacle_points': True, 'depth/confidence': True}
        return [topic for topic, publisher in self.publishers.items()
                if enabled[topic] and publisher.get_subscription_count() > 0]

    def publish(self, depth, intrinsics, header, wanted, scale=1.0, pixels=None,
                channel_order='rgb'):
        """Make and publish the ``wanted`` topics of one frame.

        ``depth``: HxW float32 metres (REP 118) in ``header.frame_id`` (the optical frame);
        ``intrinsics``: for its size; ``scale``: ``navigation.scale_confidence`` of the frame
        (1 for a depth sensor); ``pixels`` / ``channel_order``: the camera image for the rgb
        field of depth/points (``cloud.color``), None for none. Returns ``{topic: reason}``
        of the wanted topics this camera and these settings cannot give (the others are
        published; the node reports them, e.g. with ``SkippedOutputs``). ValueError when the
        depth does not fit the intrinsics.
        """
        if not wanted:
            return {}
        values = self.values
        settings = settings_from_parameters(values)
        if settings != self.core.settings:      # parameters changed (checked when set)
            self.core.configure(settings)
        products = {_PRODUCT_OF[topic] for topic in wanted}
        floor, ground = self._floor(header)
        scan_from_optical = None
        if 'scan' in products and values['scan.mode'] == 'height_band':
            scan_from_optical = self._scan_transform(header)
        obstacles_header, obstacles_from_optical = None, None
        if 'obstacle_points' in products:
            placed = self._obstacle_frame(header, ground)
            if placed is None:
                products.discard('obstacle_points')
            else:
                obstacles_header, obstacles_from_optical = placed
        tick = time.perf_counter()
        frame = self.core.process(depth, intrinsics, floor, products, scan_from_optical,
                                  obstacles_from_optical, scale)
        timings = dict(frame.timings)
        timings['navigation_total'] = time.perf_counter() - tick
        messages = {}
        if frame.points is not None and 'points' in products:
            color = values['cloud.color'] and pixels is not None
            rgb = self._sampled_colors(pixels, channel_order) if color else None
            messages['depth/points'] = self._clouds[color].build(frame.points, header, rgb)
        if frame.scan is not None:
            scan = frame.scan
            messages['depth/scan'] = laser_scan(
                Header(stamp=header.stamp, frame_id=values['scan.frame_id']), scan.angle_min,
                scan.angle_max, scan.angle_increment, scan.ranges, scan.range_min,
                scan.range_max)
        if frame.obstacle_points is not None:
            messages['depth/obstacle_points'] = self._obstacles.build(frame.obstacle_points,
                                                                      obstacles_header)
        if frame.confidence is not None:
            messages['depth/confidence'] = array_to_image(frame.confidence, '32FC1', header)
        for topic, message in messages.items():
            self.publishers[topic].publish(message)
        for stage, seconds in timings.items():
            previous = self.stage_times.get(stage, seconds)
            self.stage_times[stage] = previous + 0.1 * (seconds - previous)
        return {topic: frame.skipped[_PRODUCT_OF[topic]] for topic in wanted
                if _PRODUCT_OF[topic] in frame.skipped}

    def _sampled_colors(self, pixels, channel_order):
        sampled = self.core.sample(rgb_view(pixels, channel_order))
        if self._colors is None or self._colors.shape != sampled.shape:
            self._colors = np.empty(sampled.shape, np.uint8)
        np.copyto(self._colors, sampled)
        return self._colors

    def _lookup(self, target, source, stamp):
        return self.node.tf.lookup(target, source, stamp, TF_WAIT_S)

    def _floor(self, header):
        """(FloorPlane in the image frame, ground_from_optical 4x4 or None): TF from
        ``scale.ground_frame`` at the stamp, else the parameters."""
        values = self.values
        ground_frame = values['scale.ground_frame']
        if ground_frame and self.node.tf.available:
            try:
                transform = self._lookup(ground_frame, header.frame_id, header.stamp)
                self.geometry['navigation floor'] = f'tf {ground_frame} -> {header.frame_id}'
                return FloorPlane.from_transform(transform), transform
            except TransformUnavailable as error:
                self.node.tf.report_missing(
                    self.throttled, f'navigation outputs: no transform {error}; using '
                    'scale.camera_height/_pitch_deg/_roll_deg for the floor')
        self.geometry['navigation floor'] = 'parameters'
        return floor_from_parameters(values), None

    def _scan_transform(self, header):
        """scan_from_optical for the height-band scan: TF to ``scan.frame_id``, else None (the
        camera's level frame)."""
        scan_frame = self.values['scan.frame_id']
        if self.node.tf.available:
            try:
                return self._lookup(scan_frame, header.frame_id, header.stamp)
            except TransformUnavailable:
                pass
        self.log.info(
            f"height_band scan: no transform from '{header.frame_id}' to scan.frame_id "
            f"'{scan_frame}': bearings and ranges are in the camera's level frame (x forward "
            'along the floor, z up), published as that frame', once=True)
        return None

    def _obstacle_frame(self, header, ground):
        """(header, target_from_optical or None) of depth/obstacle_points; None when the
        configured frame has no transform (warned, rate-limited)."""
        values = self.values
        target = values['obstacle_points.frame_id']
        if not target:
            if ground is not None:
                return Header(stamp=header.stamp,
                              frame_id=values['scale.ground_frame']), ground
            return Header(stamp=header.stamp, frame_id=header.frame_id), None
        if target == header.frame_id:
            return Header(stamp=header.stamp, frame_id=target), None
        try:
            transform = self._lookup(target, header.frame_id, header.stamp)
        except TransformUnavailable as error:
            self.node.tf.report_missing(self.throttled, 'depth/obstacle_points not '
                                        f'published: no transform {error}')
            return None
        return Header(stamp=header.stamp, frame_id=target), transform
