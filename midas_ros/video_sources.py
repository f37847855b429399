"""Frame sources behind one small interface: video files, image folders, V4L2 cameras, and the
built-in synthetic scene.

A source knows its image size and pixel order before the first frame (it reads one frame when it
opens), hands out ``Frame``s from ``read()`` until it returns None at the end of the stream, and
can ``rewind()`` when it is replayable. OpenCV decodes to BGR; those frames stay BGR (``bgr8``) so
nothing converts pixels that a subscriber can take either way. Every failure is a
``SourceError`` with a one-line message.
"""
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from midas_ros.synthetic import SceneConfig, SyntheticFrame, SyntheticScene

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')
SYNTHETIC = 'synthetic'

# OpenCV's and FFmpeg's own messages ("can't open camera by index", "moov atom not found") would
# add lines to our one-line errors; their failures come back as return values that become
# SourceError. FFmpeg's level is read when OpenCV first creates an FFmpeg capture; a level the
# user set is kept.
# Recent OpenCV has cv2.utils.logging, 4.6 (Ubuntu 24.04) only cv2.setLogLevel; both take
# OpenCV's LogLevel enum, in which ERROR is 2.
_OPENCV_LOGGING = getattr(cv2.utils, 'logging', None)
if _OPENCV_LOGGING is not None:
    _OPENCV_LOGGING.setLogLevel(_OPENCV_LOGGING.LOG_LEVEL_ERROR)
else:
    cv2.setLogLevel(2)
os.environ.setdefault('OPENCV_FFMPEG_LOGLEVEL', '-8')   # AV_LOG_QUIET


class SourceError(RuntimeError):
    """A source cannot be opened or read; the message is one line meant for the user."""


@dataclass
class Frame:
    image: np.ndarray                 # (H, W, 3) uint8 in the source's ``encoding``
    index: int                        # position in the stream since open or rewind
    timestamp: Optional[float] = None  # seconds on the source's own timeline, if it has one
    truth: Optional[SyntheticFrame] = None   # synthetic scene: depth, boxes, pose


class FrameSource:
    """Base class: ``width``, ``height``, ``encoding`` ('rgb8' | 'bgr8'), ``nominal_rate`` (frames
    per second the source is meant to play at, 0 if unknown), ``replayable``."""

    encoding = 'bgr8'
    nominal_rate = 0.0
    replayable = True

    def __init__(self, description):
        self.description = description
        self.width = self.height = 0
        self._index = 0

    def read(self) -> Optional[Frame]:
        """The next frame, or None at the end of the stream."""
        raise NotImplementedError

    def rewind(self):
        """Start again from the first frame (replayable sources only)."""
        raise SourceError(f'{self.description} cannot be replayed')

    def close(self):
        pass

    def __iter__(self):
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _check_size(self, image, where):
        height, width = image.shape[:2]
        if self.width and (width, height) != (self.width, self.height):
            raise SourceError(f'{where} is {width}x{height}, but the stream is '
                              f'{self.width}x{self.height}')
        self.width, self.height = width, height

    def _next_frame(self, image, timestamp=None, truth=None):
        frame = Frame(image, self._index, timestamp, truth)
        self._index += 1
        return frame


class _CaptureSource(FrameSource):
    """A cv2.VideoCapture; the first frame is read at open to learn the size."""

    def __init__(self, description):
        super().__init__(description)
        self._capture = None
        self._pending = None

    def _open_capture(self, capture):
        if not capture.isOpened():
            capture.release()
            raise SourceError(f'cannot open {self.description}')
        ok, image = capture.read()
        if not ok or image is None:
            capture.release()
            raise SourceError(f'{self.description} delivers no frames')
        self._capture, self._pending = capture, image
        self._check_size(image, self.description)
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.nominal_rate = float(fps) if 0.0 < fps < 1000.0 else 0.0

    def read(self):
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            ok, image = self._capture.read() if self._capture is not None else (False, None)
            if not ok or image is None:
                return None
        if image.ndim == 2:   # some backends hand out grey frames
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        self._check_size(image, f'frame {self._index} of {self.description}')
        return self._next_frame(image, self._timestamp())

    def _timestamp(self):
        return None

    def close(self):
        if self._capture is not None:
            self._capture.release()
            self._capture = None


class VideoFileSource(_CaptureSource):
    """A video file OpenCV can decode (its FFmpeg build decides the containers and codecs)."""

    def __init__(self, path):
        self.path = Path(path)
        super().__init__(f"video '{self.path}'")
        if not self.path.is_file():
            raise SourceError(f'{self.description}: no such file')
        self._open_capture(cv2.VideoCapture(str(self.path)))

    def _timestamp(self):
        return self._capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0

    def rewind(self):
        # Reopening is the one restart every codec supports (seeking to 0 is not reliable).
        self.close()
        self._index = 0
        self._open_capture(cv2.VideoCapture(str(self.path)))


class V4L2CameraSource(_CaptureSource):
    """A V4L2 camera by index (``0``) or device path (``/dev/video0``)."""

    replayable = False

    def __init__(self, device, width=0, height=0):
        self.device = f'/dev/video{device}' if str(device).isdigit() else str(device)
        super().__init__(f"camera '{self.device}'")
        if not Path(self.device).exists():
            raise SourceError(f'{self.description}: no such device')
        capture = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if width > 0 and height > 0:  # a request; the driver picks the nearest mode it has
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        self._open_capture(capture)


def _natural_key(path):
    """'frame2.png' before 'frame10.png'."""
    return [int(part) if part.isdigit() else part.lower()
            for part in re.split(r'(\d+)', path.name)]


class ImageFolderSource(FrameSource):
    """The images of a folder in natural name order; all must have the first one's size."""

    def __init__(self, path):
        self.path = Path(path)
        super().__init__(f"folder '{self.path}'")
        if not self.path.is_dir():
            raise SourceError(f'{self.description}: no such folder')
        self.files = sorted((p for p in self.path.iterdir()
                             if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                            key=_natural_key)
        if not self.files:
            raise SourceError(f'{self.description} holds no images '
                              f"({', '.join(IMAGE_SUFFIXES)})")
        self._pending = self._load(self.files[0])

    def _load(self, path):
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SourceError(f"cannot read image '{path}'")
        self._check_size(image, f"image '{path.name}'")
        return image

    def read(self):
        if self._index >= len(self.files):
            return None
        if self._pending is not None:
            image, self._pending = self._pending, None
        else:
            image = self._load(self.files[self._index])
        return self._next_frame(image)

    def rewind(self):
        self._index = 0


class SyntheticSource(FrameSource):
    """The built-in scene, endless (its camera path loops); frames carry their ground truth.

    Rendering a 640x480 frame takes 30-70 ms of a core, which at 10 Hz would compete with
    the depth network it feeds. With ``replay_frames`` N > 0 the first N frames of the camera
    path are rendered once, when the source opens, and replayed forwards then backwards
    (0..N-1, N-2..1, 0...): the motion stays continuous and a frame costs no rendering.
    0 renders every frame live along the whole path.
    """

    encoding = 'rgb8'

    def __init__(self, config: SceneConfig = SceneConfig(), first_index=0, replay_frames=0):
        super().__init__(f'synthetic scene (seed {config.seed})')
        if replay_frames < 0:
            raise SourceError(f'replay_frames must be >= 0, got {replay_frames}')
        try:
            self.scene = SyntheticScene(config)
        except ValueError as error:
            raise SourceError(f'{self.description}: {error}') from None
        self.width, self.height = config.width, config.height
        self._first = self._index = first_index
        self._replay = [self.scene.render(first_index + i) for i in range(replay_frames)]

    def read(self):
        if not self._replay:
            truth = self.scene.render(self._index)
        else:
            count = len(self._replay)
            period = max(1, 2 * count - 2)
            step = (self._index - self._first) % period
            truth = self._replay[step if step < count else period - step]
        return self._next_frame(truth.rgb, None, truth)

    def rewind(self):
        self._index = self._first


def open_source(spec, width=640, height=480, hfov_deg=70.0, seed=0,
                replay_frames=0) -> FrameSource:
    """A source from one string, as the ``source`` parameter gives it.

    ``synthetic``: the built-in scene at width x height with that field of view and seed
    (``replay_frames``: see ``SyntheticSource``);
    ``0`` or ``/dev/video0``: a V4L2 camera (width x height requested when both are > 0);
    a folder: its images; any other path: a video file.
    """
    spec = str(spec).strip()
    if not spec:
        raise SourceError('no source given (synthetic, a video file, an image folder or a '
                          'camera such as /dev/video0)')
    if spec == SYNTHETIC:
        return SyntheticSource(SceneConfig(width=width, height=height, hfov_deg=hfov_deg,
                                           seed=seed), replay_frames=replay_frames)
    if spec.isdigit() or spec.startswith('/dev/video'):
        return V4L2CameraSource(spec, width, height)
    path = Path(spec).expanduser()
    if path.is_dir():
        return ImageFolderSource(path)
    if not path.exists():
        raise SourceError(f"'{spec}': no such file, folder or camera")
    return VideoFileSource(path)
