"""Message <-> numpy conversions: round trips, zero-copy views, REP 118, clouds, bad input.

Also the layout of the project's own vision_msgs build, which the conversions' consumers rely on.
"""
import importlib
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.qos import ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, LaserScan, PointCloud2
from std_msgs.msg import Header

from midas_ros.geometry import Intrinsics
from midas_ros.ros.conversions import (IMAGE_ENCODINGS, ConversionError, OrganizedCloudBuilder,
                                       array_to_image, camera_info_to_intrinsics, cloud_field,
                                       cloud_to_rgb, cloud_to_xyz, compressed_to_array,
                                       depth_to_metres, image_to_array,
                                       intrinsics_to_camera_info, laser_scan)
from midas_ros.ros.qos import QOS_NAMES, qos_profile

RNG = np.random.default_rng(7)
HEIGHT, WIDTH = 6, 10


def random_image(encoding, height=HEIGHT, width=WIDTH):
    element, channels = IMAGE_ENCODINGS[encoding]
    shape = (height, width) if channels == 1 else (height, width, channels)
    if np.dtype(element).kind == 'f':
        return RNG.uniform(0.1, 20.0, shape).astype(element)
    return RNG.integers(0, np.iinfo(element).max, shape, dtype=element, endpoint=True)


def header(frame_id='camera_optical', sec=12, nanosec=345):
    stamped = Header(frame_id=frame_id)
    stamped.stamp.sec, stamped.stamp.nanosec = sec, nanosec
    return stamped


def through_the_wire(msg):
    """What a subscriber receives: the message serialized to CDR and back."""
    return deserialize_message(serialize_message(msg), type(msg))


def shares_data(view, msg):
    return np.shares_memory(view, np.frombuffer(msg.data, np.uint8))


def raw_image(array, encoding, step, bigendian=False):
    """An Image built by hand: rows padded to ``step`` bytes with junk, any byte order."""
    height, width = array.shape[:2]
    row_bytes = array.reshape(height, -1).astype(array.dtype.newbyteorder(
        '>' if bigendian else '<')).view(np.uint8).reshape(height, -1)
    padded = np.full((height, step), 0xAB, np.uint8)
    padded[:, :row_bytes.shape[1]] = row_bytes
    return Image(height=height, width=width, encoding=encoding, is_bigendian=bigendian,
                 step=step, data=padded.tobytes())


@pytest.mark.parametrize('encoding', list(IMAGE_ENCODINGS))
def test_image_round_trip_every_encoding(encoding):
    image = random_image(encoding)
    msg = through_the_wire(array_to_image(image, encoding, header()))
    assert (msg.height, msg.width, msg.encoding) == (HEIGHT, WIDTH, encoding)
    assert msg.step == WIDTH * image.itemsize * (1 if image.ndim == 2 else image.shape[2])
    assert (msg.header.frame_id, msg.header.stamp.sec, msg.header.stamp.nanosec) == \
        ('camera_optical', 12, 345)
    view, decoded_encoding = image_to_array(msg)
    assert decoded_encoding == encoding
    assert view.dtype.type is image.dtype.type and view.shape == image.shape
    np.testing.assert_array_equal(view, image)
    assert shares_data(view, msg), 'image_to_array must view the message data, not copy it'
    assert not view.flags.writeable


@pytest.mark.parametrize('encoding', ['rgb8', 'mono8', '16UC1', '32FC1', 'bgra8'])
def test_padded_rows_are_viewed_without_copy(encoding):
    image = random_image(encoding)
    row_bytes = image.nbytes // HEIGHT
    msg = raw_image(image, encoding, step=row_bytes + 7)  # odd padding: unaligned rows
    view, _ = image_to_array(msg)
    np.testing.assert_array_equal(view, image)
    assert shares_data(view, msg)


def test_big_endian_16uc1_reads_values_and_converts_to_metres():
    millimetres = RNG.integers(1, 65535, (HEIGHT, WIDTH), dtype=np.uint16)
    millimetres[2, 3] = 0
    msg = raw_image(millimetres, '16UC1', step=WIDTH * 2, bigendian=True)
    view, _ = image_to_array(msg)
    np.testing.assert_array_equal(view, millimetres)
    metres = depth_to_metres(msg)
    assert math.isnan(metres[2, 3])
    valid = millimetres != 0
    np.testing.assert_allclose(metres[valid], millimetres[valid] / 1000.0, rtol=1e-6)
    again = array_to_image(view, '16UC1')  # a big-endian view is written in native order
    np.testing.assert_array_equal(image_to_array(again)[0], millimetres)


def test_depth_16uc1_millimetres_become_metres_in_reused_buffer():
    millimetres = np.array([[0, 1, 1500], [65535, 250, 0]], np.uint16)
    out = np.empty((2, 3), np.float32)
    result = depth_to_metres(array_to_image(millimetres, '16UC1'), out=out)
    assert result is out
    expected = np.array([[np.nan, 0.001, 1.5], [65.535, 0.25, np.nan]], np.float32)
    np.testing.assert_allclose(result, expected, rtol=1e-6, equal_nan=True)
    with pytest.raises(ValueError, match='out must be float32'):
        depth_to_metres(array_to_image(millimetres, '16UC1'), out=np.empty((3, 2), np.float32))


def test_depth_32fc1_is_a_view_and_keeps_nan():
    metres = random_image('32FC1')
    metres[0, 0] = np.nan
    msg = array_to_image(metres, '32FC1')
    depth = depth_to_metres(msg)
    np.testing.assert_array_equal(depth, metres)
    assert shares_data(depth, msg)


def test_depth_rejects_colour_images():
    with pytest.raises(ConversionError, match="32FC1 .* or 16UC1 .* got 'rgb8'"):
        depth_to_metres(array_to_image(random_image('rgb8'), 'rgb8'))


def smooth_bgr(height=48, width=64):
    """A smooth image: jpeg reproduces it closely, so the tolerance below is meaningful."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([u * 3, v * 4, 128 + 60 * np.sin(u / 9)], axis=-1).astype(np.uint8)


def compressed(image, extension, fmt):
    ok, encoded = cv2.imencode(extension, image)
    assert ok
    return CompressedImage(format=fmt, data=encoded.tobytes())


def test_compressed_jpeg_as_image_transport_publishes_it():
    bgr = smooth_bgr()
    msg = through_the_wire(compressed(bgr, '.jpg', 'rgb8; jpeg compressed bgr8'))
    decoded, encoding = compressed_to_array(msg)
    assert encoding == 'bgr8' and decoded.shape == bgr.shape
    assert np.abs(decoded.astype(int) - bgr).mean() < 3.0


@pytest.mark.parametrize('encoding, fmt', [('bgr8', 'png'), ('bgra8', 'bgra8; png compressed'),
                                           ('mono8', 'mono8; png compressed mono8'),
                                           ('mono16', 'mono16; png compressed mono16')])
def test_compressed_png_is_exact(encoding, fmt):
    image = random_image(encoding, 20, 30)
    decoded, decoded_encoding = compressed_to_array(compressed(image, '.png', fmt))
    assert decoded_encoding == encoding
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize('msg, reason', [
    (CompressedImage(format='16UC1; compressedDepth png', data=b'\x00' * 20), 'compressedDepth'),
    (CompressedImage(format='theora', data=b'\x00' * 20), "unsupported compressed format"),
    (CompressedImage(format='jpeg', data=b''), 'no data'),
    (CompressedImage(format='jpeg', data=b'not a jpeg at all'), 'could not decode 17 bytes'),
])
def test_bad_compressed_images_say_why(msg, reason):
    with pytest.raises(ConversionError, match=reason):
        compressed_to_array(msg)


def valid_rgb8(**changes):
    msg = array_to_image(random_image('rgb8'), 'rgb8')
    for name, value in changes.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize('msg, reason', [
    (valid_rgb8(encoding='yuv422'), r"unsupported image encoding 'yuv422'"),
    (valid_rgb8(width=0), r'zero-size image \(0x6\)'),
    (valid_rgb8(height=0, data=b''), r'zero-size image \(10x0\)'),
    (valid_rgb8(step=29), r'step 29 is smaller than width 10 x 3 bytes per rgb8 pixel'),
    (valid_rgb8(data=b'\x00' * 100), r'data holds 100 bytes, step 30 x height 6 needs 180'),
    (valid_rgb8(encoding='32FC1'), r'step 30 is smaller than width 10 x 4 bytes'),
])
def test_bad_images_say_why(msg, reason):
    with pytest.raises(ConversionError, match=reason):
        image_to_array(msg)


@pytest.mark.parametrize('array, encoding, reason', [
    (np.zeros((4, 4), np.float64), '32FC1', 'needs a float32 array'),
    (np.zeros((4, 4, 3), np.uint8), 'mono8', 'needs a uint8 array of shape HxW,'),
    (np.zeros((4, 4), np.uint8), 'rgb8', 'shape HxWx3'),
    (np.zeros((0, 4, 3), np.uint8), 'rgb8', 'zero-size'),
    (np.zeros((4, 4), np.uint8), '8UC1', "unsupported image encoding '8UC1'"),
])
def test_array_to_image_rejects_mismatched_arrays(array, encoding, reason):
    with pytest.raises(ConversionError, match=reason):
        array_to_image(array, encoding)


def random_cloud(height=HEIGHT, width=WIDTH):
    xyz = RNG.uniform(-5.0, 5.0, (height, width, 3)).astype(np.float32)
    xyz[1, 2] = np.nan  # an invalid point
    return xyz


def test_cloud_fill_and_readback_with_colour():
    builder = OrganizedCloudBuilder(color=True)
    xyz, rgb = random_cloud(), random_image('rgb8')
    rgb[0, 0] = (255, 128, 1)
    msg = through_the_wire(builder.build(xyz, header(), rgb=rgb))
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (HEIGHT, WIDTH, 16, 160)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ('x', 0, 7, 1), ('y', 4, 7, 1), ('z', 8, 7, 1), ('rgb', 12, 7, 1)]
    assert not msg.is_dense and not msg.is_bigendian and msg.header.frame_id == 'camera_optical'
    np.testing.assert_array_equal(cloud_to_xyz(msg), xyz)  # NaN compares equal here
    np.testing.assert_array_equal(cloud_to_rgb(msg), rgb)
    assert cloud_field(msg, 'rgb', np.uint32)[0, 0] == 0x00FF8001  # PCL/RViz packing


def test_cloud_without_colour_keeps_16_byte_points_and_zero_padding():
    xyz = random_cloud()
    msg = OrganizedCloudBuilder().build(xyz)
    assert [f.name for f in msg.fields] == ['x', 'y', 'z'] and msg.point_step == 16
    np.testing.assert_array_equal(cloud_to_xyz(msg), xyz)
    padding = np.frombuffer(msg.data, np.uint8).reshape(-1, 16)[:, 12:]
    assert not padding.any()


def test_cloud_builder_reuses_its_buffer_but_never_changes_sent_messages():
    builder = OrganizedCloudBuilder()
    first_xyz, second_xyz = random_cloud(), random_cloud()
    first = builder.build(first_xyz)
    buffer = builder._bytes
    second = builder.build(second_xyz)
    assert builder._bytes is buffer, 'same size: the point buffer must be reused'
    np.testing.assert_array_equal(cloud_to_xyz(first), first_xyz)
    np.testing.assert_array_equal(cloud_to_xyz(second), second_xyz)
    resized = random_cloud(3, 4)
    np.testing.assert_array_equal(cloud_to_xyz(builder.build(resized)), resized)


def test_cloud_builder_rejects_bad_arrays():
    with pytest.raises(ConversionError, match='xyz must be float32 HxWx3, got float64'):
        OrganizedCloudBuilder().build(np.zeros((2, 3, 3)))
    with pytest.raises(ConversionError, match='rgb must be uint8 .* got None'):
        OrganizedCloudBuilder(color=True).build(random_cloud())


def test_cloud_field_validates_layout():
    msg = OrganizedCloudBuilder().build(random_cloud())
    with pytest.raises(ConversionError, match="no field 'rgb'"):
        cloud_field(msg, 'rgb')
    msg.data = msg.data[:-1]
    with pytest.raises(ConversionError, match='data holds 959 bytes'):
        cloud_to_xyz(msg)


def test_camera_info_intrinsics_round_trip():
    intrinsics = Intrinsics(640, 480, 525.5, 524.25, 319.75, 241.5)
    msg = through_the_wire(intrinsics_to_camera_info(intrinsics, header()))
    assert msg.header.frame_id == 'camera_optical' and msg.distortion_model == 'plumb_bob'
    assert list(msg.p) == [525.5, 0, 319.75, 0, 0, 524.25, 241.5, 0, 0, 0, 1, 0]
    assert camera_info_to_intrinsics(msg) == intrinsics


def test_camera_info_binning_and_roi_follow_image_geometry():
    intrinsics = Intrinsics(640, 480, 500.0, 500.0, 320.0, 240.0)
    msg = intrinsics_to_camera_info(intrinsics)
    msg.binning_x = msg.binning_y = 2
    msg.roi.x_offset, msg.roi.y_offset, msg.roi.width, msg.roi.height = 100, 40, 400, 300
    assert camera_info_to_intrinsics(msg) == Intrinsics(200, 150, 250.0, 250.0, 110.0, 100.0)


def test_uncalibrated_camera_info_is_rejected():
    with pytest.raises(ConversionError, match='CameraInfo unusable: focal lengths'):
        camera_info_to_intrinsics(CameraInfo(width=640, height=480))


def test_laser_scan_round_trip_and_count_check():
    ranges = np.array([1.0, np.inf, np.nan, 2.5, 3.0], np.float32)
    msg = through_the_wire(laser_scan(header(), -0.5, 0.5, 0.25, ranges, 0.1, 10.0,
                                      scan_time=1 / 30))
    assert isinstance(msg, LaserScan) and msg.header.frame_id == 'camera_optical'
    np.testing.assert_array_equal(np.asarray(msg.ranges, np.float32), ranges)
    assert (msg.angle_min, msg.angle_max, msg.range_max) == (-0.5, 0.5, 10.0)
    with pytest.raises(ConversionError, match=r'needs 5'):
        laser_scan(header(), -0.5, 0.5, 0.25, ranges[:4], 0.1, 10.0)
    with pytest.raises(ConversionError, match='angle_increment'):
        laser_scan(header(), -0.5, 0.5, 0.0, ranges, 0.1, 10.0)


def test_outgoing_messages_own_their_header():
    stamped = header()
    msg = array_to_image(random_image('mono8'), 'mono8', stamped)
    stamped.frame_id = 'changed later'
    assert msg.header.frame_id == 'camera_optical'


@pytest.mark.parametrize('name, reliability', [('sensor_data', ReliabilityPolicy.BEST_EFFORT),
                                               ('reliable', ReliabilityPolicy.RELIABLE),
                                               ('default', ReliabilityPolicy.SYSTEM_DEFAULT)])
def test_qos_profiles_from_parameter_strings(name, reliability):
    profile = qos_profile(name, depth=3)
    assert profile.reliability == reliability and profile.depth == 3


def test_qos_rejects_unknown_names_and_depths():
    assert set(QOS_NAMES) == {'sensor_data', 'reliable', 'default'}
    with pytest.raises(ValueError, match="unknown QoS 'best_effort'.*sensor_data"):
        qos_profile('best_effort')
    with pytest.raises(ValueError, match='depth must be an integer >= 1'):
        qos_profile('reliable', depth=0)


def test_messages_built_here_are_the_real_types():
    assert isinstance(OrganizedCloudBuilder().build(random_cloud()), PointCloud2)
    assert isinstance(array_to_image(random_image('mono8'), 'mono8'), Image)


def test_cloud_builder_accepts_strided_views_such_as_decimated_images():
    xyz, rgb = random_cloud(12, 20), random_image('rgb8', 12, 20)
    msg = OrganizedCloudBuilder(color=True).build(xyz[::2, ::2], rgb=rgb[::2, ::2])
    assert (msg.height, msg.width) == (6, 10)
    np.testing.assert_array_equal(cloud_to_xyz(msg), xyz[::2, ::2])
    np.testing.assert_array_equal(cloud_to_rgb(msg), rgb[::2, ::2])


# Upstream ros-perception/vision_msgs 4.1.x (Humble/Jazzy), field for field, as rosidl reports
# the types of the generated classes. Wire compatibility with real detectors depends on it.
UPSTREAM_VISION_MSGS = {
    'BoundingBox2D': {'center': 'vision_msgs/Pose2D', 'size_x': 'double', 'size_y': 'double'},
    'BoundingBox2DArray': {'header': 'std_msgs/Header',
                           'boxes': 'sequence<vision_msgs/BoundingBox2D>'},
    'BoundingBox3D': {'center': 'geometry_msgs/Pose', 'size': 'geometry_msgs/Vector3'},
    'BoundingBox3DArray': {'header': 'std_msgs/Header',
                           'boxes': 'sequence<vision_msgs/BoundingBox3D>'},
    'Classification': {'header': 'std_msgs/Header',
                       'results': 'sequence<vision_msgs/ObjectHypothesis>'},
    'Detection2D': {'header': 'std_msgs/Header',
                    'results': 'sequence<vision_msgs/ObjectHypothesisWithPose>',
                    'bbox': 'vision_msgs/BoundingBox2D', 'id': 'string'},
    'Detection2DArray': {'header': 'std_msgs/Header',
                         'detections': 'sequence<vision_msgs/Detection2D>'},
    'Detection3D': {'header': 'std_msgs/Header',
                    'results': 'sequence<vision_msgs/ObjectHypothesisWithPose>',
                    'bbox': 'vision_msgs/BoundingBox3D', 'id': 'string'},
    'Detection3DArray': {'header': 'std_msgs/Header',
                         'detections': 'sequence<vision_msgs/Detection3D>'},
    'LabelInfo': {'header': 'std_msgs/Header', 'class_map': 'sequence<vision_msgs/VisionClass>',
                  'threshold': 'float'},
    'ObjectHypothesis': {'class_id': 'string', 'score': 'double'},
    'ObjectHypothesisWithPose': {'hypothesis': 'vision_msgs/ObjectHypothesis',
                                 'pose': 'geometry_msgs/PoseWithCovariance'},
    'Point2D': {'x': 'double', 'y': 'double'},
    'Pose2D': {'position': 'vision_msgs/Point2D', 'theta': 'double'},
    'VisionClass': {'class_id': 'uint16', 'class_name': 'string'},
    'VisionInfo': {'header': 'std_msgs/Header', 'method': 'string',
                   'database_location': 'string', 'database_version': 'int32'},
}
VISION_MSGS_SOURCES = Path(__file__).resolve().parent.parent / 'interfaces' / 'vision_msgs' / 'msg'


def test_vision_msgs_sources_define_exactly_the_upstream_messages():
    assert sorted(p.stem for p in VISION_MSGS_SOURCES.glob('*.msg')) == \
        sorted(UPSTREAM_VISION_MSGS)


@pytest.mark.parametrize('name', sorted(UPSTREAM_VISION_MSGS))
def test_built_vision_msgs_match_the_upstream_layout(name):
    try:
        msg_module = importlib.import_module('vision_msgs.msg')
    except ImportError:
        pytest.skip('vision_msgs not built: python interfaces/build_interfaces.py --prefix .venv')
    msg_type = getattr(msg_module, name)
    # Field order is part of the CDR layout, so compare ordered lists, not dicts.
    assert list(msg_type.get_fields_and_field_types().items()) == \
        list(UPSTREAM_VISION_MSGS[name].items())
    assert deserialize_message(serialize_message(msg_type()), msg_type) == msg_type()


@pytest.mark.parametrize('encoding', ['16UC1', 'mono16', '32FC1', 'yuv422'])
def test_the_unsupported_encoding_message_lists_exactly_what_depth_node_accepts(encoding):
    """Public report f: depth_node's warning for an image it cannot use names the encodings it
    takes (its one table, CHANNEL_ORDER), not every encoding the conversions know."""
    from midas_ros.image_messages import CHANNEL_ORDER
    from midas_ros.ros.depth_camera import DepthCamera
    msg = Image(height=2, width=2, encoding=encoding, step=8, data=bytes(16))
    with pytest.raises(ConversionError) as error:
        DepthCamera._decode(None, msg)
    listed = str(error.value).split('(supported: ')[1].rstrip(')').split(', ')
    assert listed == list(CHANNEL_ORDER)
    rgb = array_to_image(np.zeros((2, 2, 3), np.uint8), 'rgb8')
    assert DepthCamera._decode(None, rgb)[1] == 'rgb'
