"""Image + depth pairs from rosbag2 MCAP recordings, without ROS.

Reads what ``ros2 bag record -s mcap`` (a folder with ``metadata.yaml`` and ``*.mcap``, or one
of its files) and the project's ``recorder`` write: CDR messages whose types come from the
``ros2msg`` schemas stored in the file itself (decoded with ``rosbags``), so no ROS install and
no message package is needed.

* camera: ``sensor_msgs/Image`` (rgb8, bgr8, rgba8, bgra8, mono8) or ``CompressedImage``
  (jpeg, png);
* depth: ``sensor_msgs/Image`` ``32FC1`` (metres) or ``16UC1``/``mono16`` (millimetres),
  registered to the camera: the same size, or any size together with a ``CameraInfo`` topic,
  when it is resampled onto the camera's pixels with the intrinsics (nearest neighbour, so no
  depth is invented across edges).

Pairing is by header stamp: each image takes the nearest depth within a tolerance, each depth
serves one image at most (the closer one). Depth that is 0, NaN, +-Inf or outside
``[min_depth, max_depth]`` is invalid and becomes NaN (masked out of losses and metrics).

Two passes over the files: the first reads only the stamps (the header at the start of every
CDR message), pairs them and so validates everything before any pixel is decoded; the second
decodes just the paired messages, in stamp order.
"""
import bisect
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence

import cv2
import numpy as np

from midas_ros.image_messages import (ConversionError, camera_info_to_intrinsics,
                                      compressed_to_array, depth_to_metres, image_to_array)
from midas_ros.training import DatasetError

IMAGE_TYPE = 'sensor_msgs/msg/Image'
COMPRESSED_TYPE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO_TYPE = 'sensor_msgs/msg/CameraInfo'
IMAGE_LIKE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
DEFAULT_TOLERANCE_S = 0.02
# Colour encodings the camera may use, and the OpenCV conversion of each to RGB.
_TO_RGB = {
    'rgb8': None, 'bgr8': cv2.COLOR_BGR2RGB, 'rgba8': cv2.COLOR_RGBA2RGB,
    'bgra8': cv2.COLOR_BGRA2RGB, 'mono8': cv2.COLOR_GRAY2RGB,
}


@dataclass(frozen=True)
class RgbdPair:
    """One training or evaluation sample: ``rgb`` HxWx3 uint8, ``depth`` HxW float32 metres
    on the camera's pixels (NaN = no valid reading), ``stamp_ns`` the image's header stamp."""

    stamp_ns: int
    rgb: np.ndarray
    depth: np.ndarray


@dataclass(frozen=True)
class PairingReport:
    """How the stamps paired: counts and the stamp offsets (s) of the pairs."""

    images: int
    depths: int
    pairs: int
    tolerance_s: float
    median_offset_s: float
    max_offset_s: float

    def line(self):
        return (f'{self.pairs} pairs of {self.images} images and {self.depths} depth images '
                f'(stamps within {self.tolerance_s * 1e3:g} ms; median offset '
                f'{self.median_offset_s * 1e3:.1f} ms, max {self.max_offset_s * 1e3:.1f} ms)')

    def as_dict(self):
        return {'images': self.images, 'depths': self.depths, 'pairs': self.pairs,
                'tolerance_s': self.tolerance_s, 'median_offset_s': self.median_offset_s,
                'max_offset_s': self.max_offset_s}


def mcap_files(bags: Sequence) -> List[Path]:
    """The MCAP files of ``bags``: files as given, folders (rosbag2) as their ``*.mcap``."""
    files = []
    for bag in bags:
        path = Path(bag)
        if path.is_dir():
            found = sorted(path.glob('*.mcap'))
            if not found:
                raise DatasetError(f'{path}: folder holds no .mcap file (a rosbag2 recording '
                                   'made with -s mcap has one)')
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DatasetError(f'{path}: no such file or folder')
    return files


def header_stamp_ns(cdr):
    """Stamp (ns) of the ``std_msgs/Header`` that begins a CDR-serialized message.

    CDR is a 4-byte encapsulation header (byte 1: 0 big, 1 little endian) then the fields in
    order; Image, CompressedImage and CameraInfo start with header.stamp (int32 sec, uint32
    nanosec), so the stamp is read without decoding the pixels.
    """
    if len(cdr) < 12:
        raise DatasetError('message too short to hold a header')
    order = '<' if cdr[1] & 1 else '>'
    sec, nanosec = struct.unpack_from(order + 'iI', cdr, 4)
    return sec * 1_000_000_000 + nanosec


class Recording:
    """One or more MCAP files read as one recording (message types from their schemas)."""

    def __init__(self, bags):
        try:   # neither has a rosdep key: a robot installed with rosdep alone may lack them
            import mcap.reader  # noqa: F401
            from rosbags.typesys import Stores, get_typestore
        except ImportError as error:
            raise DatasetError(f'reading recordings needs the Python packages mcap and rosbags '
                               f'(pip install mcap rosbags): {error}') from None
        self.files = mcap_files(bags)
        self.topics = {}    # topic -> type name
        self.counts = {}    # topic -> messages
        self._typestore = get_typestore(Stores.EMPTY)
        for path in self.files:
            self._index(path)

    def _index(self, path):
        from mcap.reader import make_reader
        try:
            with open(path, 'rb') as stream:
                reader = make_reader(stream)
                header = reader.get_header()
                summary = reader.get_summary()
                if summary is None:
                    raise DatasetError(f'{path}: MCAP file has no summary section (was the '
                                       'recording cut off? `mcap recover` repairs it)')
                for channel_id, channel in summary.channels.items():
                    schema = summary.schemas.get(channel.schema_id)
                    type_name = schema.name if schema else ''
                    known = self.topics.setdefault(channel.topic, type_name)
                    if known != type_name:
                        raise DatasetError(f'{path}: topic {channel.topic} is {type_name} here '
                                           f'but {known} in another file')
                    count = (summary.statistics.channel_message_counts.get(channel_id, 0)
                             if summary.statistics else 0)
                    self.counts[channel.topic] = self.counts.get(channel.topic, 0) + count
        except DatasetError:
            raise
        except Exception as error:   # the mcap package raises many kinds on a damaged file
            raise DatasetError(f'{path}: not a readable MCAP file (truncated or corrupt? '
                               f'{type(error).__name__}: {_first_line(error)})') from None
        if header.profile not in ('ros2', ''):
            raise DatasetError(f"{path}: MCAP profile '{header.profile}' is not ROS 2")

    def image_topics(self):
        """Topics of Image or CompressedImage messages, sorted."""
        return sorted(t for t, kind in self.topics.items() if kind in IMAGE_LIKE_TYPES)

    def check_topic(self, topic, types, role):
        """DatasetError unless ``topic`` is in the recording with one of ``types``."""
        if topic not in self.topics:
            listed = ', '.join(f'{t} ({self.topics[t].rsplit("/", 1)[-1]})'
                               for t in self.image_topics()) or 'none'
            raise DatasetError(f'{role} topic {topic} is not in the recording; its image topics: '
                               f'{listed}')
        if self.topics[topic] not in types:
            raise DatasetError(f'{role} topic {topic} is {self.topics[topic]}, not '
                               f"{' or '.join(types)}")

    def raw_messages(self, topics):
        """``(topic, type name, cdr bytes)`` of ``topics``, file by file in log-time order."""
        from mcap.reader import make_reader
        for path in self.files:
            try:
                with open(path, 'rb') as stream:
                    for schema, channel, message in make_reader(stream).iter_messages(
                            topics=list(topics), log_time_order=True):
                        yield channel.topic, schema.name, message.data
            except DatasetError:
                raise
            except Exception as error:
                raise DatasetError(f'{path}: not a readable MCAP file (truncated or corrupt? '
                                   f'{type(error).__name__}: {_first_line(error)})') from None

    def decode(self, type_name, cdr, topic):
        """The message of ``cdr`` (a ``rosbags`` object with the ROS field names)."""
        if type_name not in self._typestore.fielddefs:
            self._register(type_name, topic)
        try:
            return self._typestore.deserialize_cdr(cdr, type_name)
        except Exception as error:
            raise DatasetError(f'{topic}: cannot decode a {type_name} message '
                               f'({type(error).__name__}: {_first_line(error)})') from None

    def _register(self, type_name, topic):
        from mcap.reader import make_reader
        from rosbags.typesys import get_types_from_msg
        for path in self.files:
            with open(path, 'rb') as stream:
                for schema in make_reader(stream).get_summary().schemas.values():
                    if schema.name == type_name:
                        try:
                            self._typestore.register(
                                get_types_from_msg(schema.data.decode(), schema.name))
                        except Exception as error:
                            raise DatasetError(
                                f'{topic}: the recording\'s definition of {type_name} cannot '
                                f'be parsed ({_first_line(error)})') from None
                        return
        raise DatasetError(f'{topic}: the recording holds no definition of {type_name}')


def _first_line(error):
    text = str(error).strip()
    return text.splitlines()[0] if text else 'no detail'


def pair_stamps(image_stamps, depth_stamps, tolerance_ns):
    """Pairs ``[(image index, depth index)]`` by nearest stamp within ``tolerance_ns``.

    Each image takes its nearest depth; a depth claimed by several images stays with the
    nearest of them (ties: the earlier image). Returned in image-stamp order.
    """
    order = sorted(range(len(depth_stamps)), key=depth_stamps.__getitem__)
    sorted_depth = [depth_stamps[i] for i in order]
    best = {}   # depth index -> (offset, image index)
    for image_index, stamp in enumerate(image_stamps):
        k = bisect.bisect_left(sorted_depth, stamp)
        candidates = [j for j in (k - 1, k) if 0 <= j < len(sorted_depth)]
        if not candidates:
            continue
        j = min(candidates, key=lambda j: (abs(sorted_depth[j] - stamp), j))
        offset = abs(sorted_depth[j] - stamp)
        if offset > tolerance_ns:
            continue
        depth_index = order[j]
        if depth_index not in best or offset < best[depth_index][0]:
            best[depth_index] = (offset, image_index)
    pairs = [(image_index, depth_index) for depth_index, (_, image_index) in best.items()]
    return sorted(pairs, key=lambda p: image_stamps[p[0]])


def to_rgb(msg, type_name, topic):
    """The camera message as an RGB uint8 HxWx3 array (a copy)."""
    try:
        if type_name == COMPRESSED_TYPE:
            pixels, encoding = compressed_to_array(msg)
        else:
            pixels, encoding = image_to_array(msg)
    except ConversionError as error:
        raise DatasetError(f'{topic}: {error}') from None
    if encoding not in _TO_RGB:
        raise DatasetError(f"{topic}: camera encoding '{encoding}' cannot be read as colour "
                           f"(supported: {', '.join(_TO_RGB)}, jpeg, png)")
    conversion = _TO_RGB[encoding]
    return pixels.copy() if conversion is None else cv2.cvtColor(
        np.ascontiguousarray(pixels), conversion)


def to_metres(msg, topic, min_depth, max_depth):
    """The depth message as float32 metres (a copy), NaN where invalid."""
    try:
        depth = np.array(depth_to_metres(msg), dtype=np.float32)
    except ConversionError as error:
        raise DatasetError(f'{topic}: {error}') from None
    with np.errstate(invalid='ignore'):
        depth[~(np.isfinite(depth) & (depth >= min_depth) & (depth <= max_depth)
                & (depth > 0))] = np.nan
    return depth


def scaled_intrinsics(camera, width, height):
    """``camera`` (``Intrinsics``) for the same view sampled at ``width`` x ``height``: pixel
    centres scale about the image corner, ``(c + 0.5) * s - 0.5``."""
    sx, sy = width / camera.width, height / camera.height
    return type(camera)(width, height, camera.fx * sx, camera.fy * sy,
                        (camera.cx + 0.5) * sx - 0.5, (camera.cy + 0.5) * sy - 0.5)


def register_depth(depth, camera, depth_camera=None):
    """``depth`` resampled onto the pixels of ``camera`` (the image's ``Intrinsics``).

    ``depth_camera``: the depth image's intrinsics (default: the camera's scaled to the depth
    size, i.e. a registered depth image at another resolution). Camera pixel (u, v) sees the
    ray ((u - cx) / fx, (v - cy) / fy); the depth pixel on that ray is read (nearest
    neighbour, so no depth is invented across edges; outside the depth image: NaN).
    """
    if depth_camera is None:
        depth_camera = scaled_intrinsics(camera, depth.shape[1], depth.shape[0])
    u = np.arange(camera.width, dtype=np.float32)
    v = np.arange(camera.height, dtype=np.float32)
    map_x = (u - camera.cx) * (depth_camera.fx / camera.fx) + depth_camera.cx
    map_y = (v - camera.cy) * (depth_camera.fy / camera.fy) + depth_camera.cy
    map_x, map_y = np.meshgrid(map_x, map_y)
    return cv2.remap(depth, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=float('nan'))


class RgbdPairReader:
    """The image + depth pairs of a recording.

    Construction reads and pairs the stamps, and checks topics and sizes, raising
    DatasetError with one line for anything unusable; ``pairs()`` then decodes the pairs
    (``RgbdPair``) in stamp order. ``report`` is the ``PairingReport``.
    """

    def __init__(self, bags, image_topic, depth_topic, camera_info_topic=None,
                 depth_camera_info_topic=None, tolerance_s=DEFAULT_TOLERANCE_S, min_depth=0.1,
                 max_depth=20.0):
        if not tolerance_s >= 0:
            raise DatasetError(f'the pairing tolerance must be >= 0 s, got {tolerance_s}')
        if not 0 <= min_depth < max_depth:
            raise DatasetError(f'need 0 <= min depth < max depth, got [{min_depth}, '
                               f'{max_depth}]')
        if image_topic == depth_topic:
            raise DatasetError(f'image and depth topics are both {image_topic}')
        self.recording = Recording(bags)
        self.image_topic, self.depth_topic = image_topic, depth_topic
        self.min_depth, self.max_depth = min_depth, max_depth
        self.recording.check_topic(image_topic, IMAGE_LIKE_TYPES, 'image')
        self.recording.check_topic(depth_topic, (IMAGE_TYPE,), 'depth')
        self.camera = self.depth_camera = None
        for topic, attribute in ((camera_info_topic, 'camera'),
                                 (depth_camera_info_topic, 'depth_camera')):
            if topic:
                self.recording.check_topic(topic, (CAMERA_INFO_TYPE,), 'camera info')
                setattr(self, attribute, self._first_intrinsics(topic))
        image_stamps, depth_stamps = [], []
        for topic, _, cdr in self.recording.raw_messages([image_topic, depth_topic]):
            (image_stamps if topic == image_topic else depth_stamps).append(
                header_stamp_ns(cdr))
        if not image_stamps or not depth_stamps:
            empty = image_topic if not image_stamps else depth_topic
            raise DatasetError(f'{empty} holds no message in the recording')
        pairs = pair_stamps(image_stamps, depth_stamps, int(round(tolerance_s * 1e9)))
        offsets = [abs(image_stamps[i] - depth_stamps[j]) / 1e9 for i, j in pairs]
        self.report = PairingReport(
            len(image_stamps), len(depth_stamps), len(pairs), tolerance_s,
            float(np.median(offsets)) if offsets else float('nan'),
            max(offsets) if offsets else float('nan'))
        if not pairs:
            gap = min(abs(a - b) for a in image_stamps[:200] for b in depth_stamps[:200]) / 1e9
            raise DatasetError(
                f'no image of {image_topic} has a depth of {depth_topic} within '
                f'{tolerance_s * 1e3:g} ms ({len(image_stamps)} images, {len(depth_stamps)} '
                f'depth images, closest stamps {gap * 1e3:.1f} ms apart): raise --tolerance or '
                'check the topics')
        self._image_stamps = {image_stamps[i] for i, _ in pairs}
        self._depth_for_image = {image_stamps[i]: depth_stamps[j] for i, j in pairs}
        self.stamps = sorted(self._image_stamps)
        # Decode the first pair now: an unreadable encoding or size is reported before any
        # work (or any output) starts.
        first = self.pairs()
        next(first)
        first.close()

    def _first_intrinsics(self, topic):
        for _, type_name, cdr in self.recording.raw_messages([topic]):
            msg = self.recording.decode(type_name, cdr, topic)
            try:
                return camera_info_to_intrinsics(msg)
            except ConversionError as error:
                raise DatasetError(f'{topic}: {error}') from None
        raise DatasetError(f'{topic} holds no message in the recording')

    def pairs(self):
        """Decode and yield every pair (``RgbdPair``) in stamp order."""
        wanted_depth = set(self._depth_for_image.values())
        images, depths = {}, {}
        recording = self.recording
        for topic, type_name, cdr in recording.raw_messages([self.image_topic,
                                                             self.depth_topic]):
            stamp = header_stamp_ns(cdr)
            if topic == self.image_topic and stamp in self._image_stamps:
                images[stamp] = to_rgb(recording.decode(type_name, cdr, topic), type_name,
                                       topic)
            elif topic == self.depth_topic and stamp in wanted_depth:
                depths[stamp] = to_metres(recording.decode(type_name, cdr, topic), topic,
                                          self.min_depth, self.max_depth)
            else:
                continue
            # Yield every pair now complete; the two halves are close in the file.
            for image_stamp in [s for s in images if self._depth_for_image[s] in depths]:
                rgb = images.pop(image_stamp)
                depth_stamp = self._depth_for_image[image_stamp]
                depth = depths[depth_stamp]
                if not any(self._depth_for_image[s] == depth_stamp for s in images):
                    del depths[depth_stamp]
                yield RgbdPair(image_stamp, rgb, self._registered(depth, rgb))

    def _registered(self, depth, rgb):
        height, width = rgb.shape[:2]
        if depth.shape == (height, width) and self.depth_camera is None:
            return depth
        if self.camera is None:
            raise DatasetError(
                f'depth of {self.depth_topic} is {depth.shape[1]}x{depth.shape[0]}, the image '
                f'{width}x{height}: give the camera\'s CameraInfo topic (--camera-info) to '
                'resample the depth onto the image with the intrinsics')
        camera = self.camera
        if (camera.width, camera.height) != (width, height):
            camera = scaled_intrinsics(camera, width, height)
        return register_depth(depth, camera, self.depth_camera)
