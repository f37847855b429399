"""Reading sensor_msgs image messages into numpy, without ROS: the message memory layouts.

Works on any object with the fields of ``sensor_msgs/Image``, ``CompressedImage`` or
``CameraInfo``: rclpy messages (the nodes) and the messages ``rosbags`` decodes from a recording
(fine-tuning, evaluation), so the same code reads live topics and bags.

Incoming data is viewed, not copied: ``np.ndarray`` views over ``msg.data`` that honour row
padding (``step``) and byte order (``is_bigendian``), marked read-only because the message owns
the memory. Depth follows REP 118: ``32FC1`` in metres, ``16UC1`` in millimetres, NaN (float) or
0 (integer) where there is no reading.
"""
import sys

import cv2
import numpy as np

from midas_ros.geometry import Intrinsics


class ConversionError(ValueError):
    """A message cannot be converted; the text says exactly what is wrong with it."""


# encoding -> (element type, channels). 'mono16' and '16UC1' share a layout: image_transport
# publishes 16-bit depth as either.
IMAGE_ENCODINGS = {
    'rgb8': (np.uint8, 3),
    'bgr8': (np.uint8, 3),
    'rgba8': (np.uint8, 4),
    'bgra8': (np.uint8, 4),
    'mono8': (np.uint8, 1),
    'mono16': (np.uint16, 1),
    '16UC1': (np.uint16, 1),
    '32FC1': (np.float32, 1),
}
# Camera image encoding -> the channel order the estimator takes: what depth_node, the int8
# calibration and fine-tuning accept as a colour or mono camera image.
CHANNEL_ORDER = {'rgb8': 'rgb', 'bgr8': 'bgr', 'rgba8': 'rgba', 'bgra8': 'bgra', 'mono8': 'mono'}
DEPTH_ENCODINGS = ('32FC1', '16UC1', 'mono16')
MILLIMETRES_TO_METRES = np.float32(0.001)
NATIVE_IS_BIGENDIAN = sys.byteorder == 'big'
# What cv2.imdecode returns, by (channels, dtype), in ROS encoding names.
_DECODED_ENCODINGS = {
    (1, np.uint8): 'mono8', (1, np.uint16): 'mono16',
    (3, np.uint8): 'bgr8', (4, np.uint8): 'bgra8',
}
_COMPRESSED_CONTAINERS = ('jpeg', 'jpg', 'png')


def _read_only_view(buffer, shape, dtype, strides, offset=0):
    """A read-only ndarray over ``buffer`` (a message's data) without copying it."""
    view = np.ndarray(shape, dtype=dtype, buffer=buffer, offset=offset, strides=strides)
    view.flags.writeable = False
    return view


def image_to_array(msg, accepted=None):
    """View an ``Image`` as an array: ``(HxW or HxWxC ndarray, encoding)``, no copy.

    The array is read-only and valid as long as ``msg`` is; rows keep the message's padding as
    stride. Big-endian 16/32-bit data comes back with a big-endian dtype (numpy reads it
    correctly; ``astype`` to a native type when a library needs one).

    ``accepted``: the encodings the caller can use (a subset of ``IMAGE_ENCODINGS``; default
    all of them). Any other raises ConversionError listing exactly ``accepted``, so that a
    node's warning names what that node takes.
    """
    encoding = msg.encoding
    accepted = IMAGE_ENCODINGS if accepted is None else accepted
    if encoding not in accepted or encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"unsupported image encoding '{encoding}' "
                              f"(supported: {', '.join(accepted)})")
    if msg.width == 0 or msg.height == 0:
        raise ConversionError(f'zero-size image ({msg.width}x{msg.height})')
    element, channels = IMAGE_ENCODINGS[encoding]
    dtype = np.dtype(element).newbyteorder('>' if msg.is_bigendian else '<')
    pixel_bytes = dtype.itemsize * channels
    if msg.step < msg.width * pixel_bytes:
        raise ConversionError(f'step {msg.step} is smaller than width {msg.width} x '
                              f'{pixel_bytes} bytes per {encoding} pixel')
    expected = msg.step * msg.height
    if len(msg.data) < expected:
        raise ConversionError(f'data holds {len(msg.data)} bytes, step {msg.step} x height '
                              f'{msg.height} needs {expected}')
    shape = (msg.height, msg.width, channels)
    strides = (msg.step, pixel_bytes, dtype.itemsize)
    view = _read_only_view(msg.data, shape, dtype, strides)
    return (view[..., 0] if channels == 1 else view), encoding


def compressed_to_array(msg):
    """Decode a ``CompressedImage`` (jpeg or png) to ``(array, encoding)``.

    ``msg.format`` is what image_transport writes: ``'rgb8; jpeg compressed bgr8'``, or just
    ``'jpeg'`` / ``'png'`` from older publishers. The encoding returned describes the decoded
    array (``bgr8``, ``bgra8``, ``mono8`` or ``mono16``): OpenCV decodes colour to BGR order.
    """
    fmt = msg.format.lower()
    if 'compresseddepth' in fmt:
        raise ConversionError(f"format '{msg.format}' (compressedDepth) is not supported; "
                              'subscribe to the raw depth image')
    if fmt and not any(name in fmt for name in _COMPRESSED_CONTAINERS):
        raise ConversionError(f"unsupported compressed format '{msg.format}' (jpeg or png)")
    if len(msg.data) == 0:
        raise ConversionError('compressed image has no data')
    image = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ConversionError(f"could not decode {len(msg.data)} bytes of '{msg.format}' data")
    channels = 1 if image.ndim == 2 else image.shape[2]
    encoding = _DECODED_ENCODINGS.get((channels, image.dtype.type))
    if encoding is None:
        raise ConversionError(f'decoded image has an unsupported layout: {channels} channels '
                              f'of {image.dtype.name}')
    return image, encoding


def depth_to_metres(msg, out=None):
    """A depth ``Image`` as float32 metres (HxW), NaN where there is no reading (REP 118).

    ``32FC1`` (metres) is returned as a read-only view of the message. ``16UC1``/``mono16``
    (millimetres, 0 = no reading) is converted into ``out`` (float32 HxW, reused across frames
    when given) or a new array.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ConversionError(f"depth image encoding must be 32FC1 (metres) or 16UC1 "
                              f"(millimetres), got '{msg.encoding}'")
    depth, _ = image_to_array(msg)
    if msg.encoding == '32FC1':
        return depth if depth.dtype.isnative else depth.astype(np.float32)
    if out is None:
        out = np.empty(depth.shape, np.float32)
    elif out.shape != depth.shape or out.dtype != np.float32:
        raise ValueError(f'out must be float32 {depth.shape}, got {out.dtype} {out.shape}')
    np.multiply(depth, MILLIMETRES_TO_METRES, out=out)
    out[depth == 0] = np.nan
    return out


def projection_is_set(msg):
    """True when a ``CameraInfo``'s projection matrix P holds a camera (P[0] = fx' != 0).

    Calibrated drivers always fill P: for a distorted (raw) image it is the camera matrix of
    the *rectified* image; uncalibrated or hand-made messages may leave it all zero.
    """
    return float(msg.p[0]) != 0.0


def camera_info_to_intrinsics(msg):
    """Pinhole ``Intrinsics`` of the (rectified) image a ``CameraInfo`` describes.

    As image_geometry's PinholeCameraModel does for rectified images, the projection comes from
    P (fx' = P[0], fy' = P[5], cx' = P[2], cy' = P[6]); K only where P is unset (all zero).
    depth_node and obstacle_node treat their images as rectified: feed them ``image_rect``
    (for which P is the exact pinhole camera even when D is not zero; D and R describe the raw
    image). P's Tx, Ty (stereo baselines) play no part in a single camera's back-projection.
    Binning and region of interest are applied as image_geometry applies them. Raises
    ConversionError when the camera is uncalibrated (zero focal length) or the sizes are zero.
    """
    binning_x, binning_y = max(msg.binning_x, 1), max(msg.binning_y, 1)
    roi = msg.roi
    full_roi = roi.width == 0 or roi.height == 0
    width = msg.width if full_roi else roi.width
    height = msg.height if full_roi else roi.height
    if projection_is_set(msg):
        p = msg.p
        fx, fy, cx, cy = float(p[0]), float(p[5]), float(p[2]), float(p[6])
    else:
        k = msg.k
        fx, fy, cx, cy = float(k[0]), float(k[4]), float(k[2]), float(k[5])
    x_offset, y_offset = (0, 0) if full_roi else (roi.x_offset, roi.y_offset)
    intrinsics = Intrinsics(
        width // binning_x, height // binning_y, fx / binning_x, fy / binning_y,
        (cx - x_offset) / binning_x, (cy - y_offset) / binning_y)
    try:
        return intrinsics.validate()
    except ValueError as error:
        raise ConversionError(f'CameraInfo unusable: {error}') from None
