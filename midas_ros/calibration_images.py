"""Where the images that calibrate an int8 quantization come from (``inference.calibration``).

Three sources, named by one string:

* ``''`` (default): the first frames the estimator is given (``LIVE``); nothing to load here.
* a folder: its image files (``IMAGE_SUFFIXES``), in name order;
* an MCAP recording and an image topic, ``path/to/run.mcap:/camera/image_raw``
  (``sensor_msgs/Image`` or ``CompressedImage``); ``path/to/run.mcap`` alone takes its only
  image topic. Reading a recording needs rclpy (the messages' own deserializer) and ``mcap``.

``load_calibration_images`` returns up to ``count`` images spread evenly over the source (a
recording's first seconds are often the robot standing still), as ``(label, array,
channel_order)`` for ``DepthEstimator``'s preprocessing. Every failure is one
``CalibrationError`` whose message names the source and what is wrong with it.
"""
from pathlib import Path

import numpy as np

from midas_ros.image_messages import CHANNEL_ORDER

LIVE = ''
IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
IMAGE_TYPES = ('sensor_msgs/msg/Image', 'sensor_msgs/msg/CompressedImage')


class CalibrationError(ValueError):
    """The calibration images cannot be had as asked; the text says why, in one line."""


def parse_source(text):
    """``inference.calibration`` -> ``('live', None, None)``, ``('folder', Path, None)`` or
    ``('mcap', Path, topic or None)``; CalibrationError for a path that does not exist."""
    text = str(text).strip()
    if text == LIVE:
        return 'live', None, None
    path, topic = text, None
    head, sep, tail = text.rpartition(':')
    if sep and head.endswith('.mcap') and (tail.startswith('/') or not tail):
        path, topic = head, tail or None
    path = Path(path).expanduser()
    if path.suffix == '.mcap':
        if not path.is_file():
            raise CalibrationError(f'calibration recording {path} does not exist')
        return 'mcap', path, topic
    if path.is_dir():
        return 'folder', path, None
    raise CalibrationError(f"calibration source '{text}' is neither a folder of images nor an "
                           'MCAP recording (path.mcap:/image_topic)')


def spread(total, count):
    """Indices of ``count`` items spread evenly over ``total`` (all of them if fewer)."""
    if total <= count:
        return list(range(total))
    return sorted({int(i) for i in np.linspace(0, total - 1, count)})


def load_calibration_images(source, count):
    """Up to ``count`` images of ``source`` (see ``parse_source``) as ``(label, array,
    channel_order)``; [] for the live source. Raises CalibrationError (one line)."""
    kind, path, topic = parse_source(source)
    if kind == 'live':
        return []
    if kind == 'folder':
        return _folder_images(path, count)
    return _recording_images(path, topic, count)


def _folder_images(folder, count):
    import cv2
    files = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise CalibrationError(f"calibration folder {folder} holds no images "
                               f"({', '.join(IMAGE_SUFFIXES)})")
    images = []
    for index in spread(len(files), count):
        image = cv2.imread(str(files[index]), cv2.IMREAD_COLOR)   # 3 x uint8, BGR order
        if image is None:
            raise CalibrationError(f'calibration image {files[index]} cannot be read as an '
                                   'image')
        images.append((files[index].name, image, 'bgr'))
    return images


def recording_image_topics(path):
    """{topic: message type} of the image topics of MCAP recording ``path``."""
    try:
        from mcap.reader import make_reader
    except ImportError:
        raise CalibrationError("reading a calibration recording needs the Python package "
                               "'mcap' (pip install mcap)") from None
    try:
        with open(path, 'rb') as stream:
            summary = make_reader(stream).get_summary()
    except Exception as error:   # the mcap package raises its own types for a bad file
        raise CalibrationError(f'calibration recording {path} cannot be read: '
                               f'{type(error).__name__}: {error}') from error
    if summary is None:
        raise CalibrationError(f'calibration recording {path} has no summary (not closed '
                               'properly?): rewrite it with `mcap recover`')
    return {channel.topic: summary.schemas[channel.schema_id].name
            for channel in summary.channels.values()
            if channel.schema_id in summary.schemas
            and summary.schemas[channel.schema_id].name in IMAGE_TYPES}


def _recording_images(path, topic, count):
    topics = recording_image_topics(path)
    if topic is None:
        if len(topics) != 1:
            raise CalibrationError(
                f'calibration recording {path} has {len(topics)} image topics '
                f"({', '.join(sorted(topics)) or 'none'}): name one, {path}:/topic")
        topic = next(iter(topics))
    if topic not in topics:
        raise CalibrationError(f"calibration recording {path} has no image topic '{topic}' "
                               f"(its image topics: {', '.join(sorted(topics)) or 'none'})")
    from mcap.reader import make_reader
    from rclpy.serialization import deserialize_message

    from midas_ros.ros.conversions import ConversionError, compressed_to_array, image_to_array
    from midas_ros.ros.recorder import message_class
    msg_type = message_class(topics[topic])
    with open(path, 'rb') as stream:
        reader = make_reader(stream)
        total = sum(1 for _ in reader.iter_messages(topics=[topic]))
        wanted = set(spread(total, count))
        images = []
        for index, (_, _, message) in enumerate(
                reader.iter_messages(topics=[topic], log_time_order=True)):
            if index not in wanted:
                continue
            msg = deserialize_message(message.data, msg_type)
            label = f'{topic} message {index}'
            try:
                array, encoding = (compressed_to_array(msg) if hasattr(msg, 'format')
                                   else image_to_array(msg))
            except ConversionError as error:
                raise CalibrationError(f'calibration {label} of {path}: {error}') from error
            if encoding not in CHANNEL_ORDER:
                raise CalibrationError(f"calibration {label} of {path} has encoding "
                                       f"'{encoding}' (supported: {', '.join(CHANNEL_ORDER)})")
            images.append((label, np.array(array), CHANNEL_ORDER[encoding]))
    if not images:
        raise CalibrationError(f"calibration recording {path} has no message on '{topic}'")
    return images
