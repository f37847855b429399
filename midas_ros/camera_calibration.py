"""Camera calibration files in the ROS format (camera_calibration / camera_info_manager YAML).

The file the ROS calibrator writes and ``camera_info_url`` points at::

    image_width: 640
    image_height: 480
    camera_name: front
    camera_matrix: {rows: 3, cols: 3, data: [fx, 0, cx, 0, fy, cy, 0, 0, 1]}
    distortion_model: plumb_bob
    distortion_coefficients: {rows: 1, cols: 5, data: [k1, k2, t1, t2, k3]}
    rectification_matrix: {rows: 3, cols: 3, data: [...]}
    projection_matrix: {rows: 3, cols: 4, data: [...]}

Every problem is a ``ValueError`` whose one-line message names the file and the field.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Tuple
from urllib.parse import unquote, urlparse

import yaml

from midas_ros.geometry import Intrinsics

_IDENTITY_3X3 = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True)
class CameraCalibration:
    """Intrinsics plus what CameraInfo carries beyond them (distortion, rectification, P)."""

    intrinsics: Intrinsics
    camera_name: str = 'camera'
    distortion_model: str = 'plumb_bob'
    distortion: Tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    rectification: Tuple[float, ...] = _IDENTITY_3X3
    projection: Tuple[float, ...] = ()     # 3x4 row-major; empty: [K | 0]

    @classmethod
    def from_intrinsics(cls, intrinsics, camera_name='camera'):
        """An ideal pinhole camera (no distortion)."""
        return cls(intrinsics, camera_name)

    def projection_matrix(self):
        """P, 3x4 row-major: as given, or [K | 0] for a monocular camera."""
        if self.projection:
            return tuple(self.projection)
        intr = self.intrinsics
        return (intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0)

    def to_dict(self):
        """The YAML mapping, in the calibrator's field order."""
        def matrix(rows, cols, data):
            return {'rows': rows, 'cols': cols, 'data': [float(x) for x in data]}

        intr = self.intrinsics
        return {
            'image_width': intr.width,
            'image_height': intr.height,
            'camera_name': self.camera_name,
            'camera_matrix': matrix(3, 3, intr.k()),
            'distortion_model': self.distortion_model,
            'distortion_coefficients': matrix(1, len(self.distortion), self.distortion),
            'rectification_matrix': matrix(3, 3, self.rectification),
            'projection_matrix': matrix(3, 4, self.projection_matrix()),
        }


def parse_calibration(document, source='calibration'):
    """A ``CameraCalibration`` from the YAML mapping; ``source`` names it in error messages."""
    if not isinstance(document, dict):
        raise ValueError(f'{source}: not a camera calibration file (expected a YAML mapping '
                         f'with image_width, camera_matrix, ...)')

    def field(name):
        if name not in document:
            raise ValueError(f"{source}: missing field '{name}'")
        return document[name]

    def positive_int(name):
        value = field(name)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"{source}: '{name}' must be a positive integer, got {value!r}")
        return value

    def matrix(name, rows, cols=None, required=True):
        """A {rows, cols, data} field of the given shape (``cols=None``: any column count)."""
        if name not in document and not required:
            return None
        value = field(name)
        data = value.get('data') if isinstance(value, dict) else None
        if not isinstance(data, list):
            raise ValueError(f"{source}: '{name}' must be a mapping with rows, cols and data")
        shape = (value.get('rows'), value.get('cols'))
        wanted_cols = shape[1] if cols is None and isinstance(shape[1], int) else cols
        if (not isinstance(wanted_cols, int) or shape != (rows, wanted_cols)
                or len(data) != rows * wanted_cols):
            raise ValueError(f"{source}: '{name}' must be {rows}x{cols or 'N'} with as many "
                             f'values, got rows={shape[0]} cols={shape[1]} and {len(data)} '
                             'values')
        try:
            numbers = tuple(float(x) for x in data)
        except (TypeError, ValueError):
            raise ValueError(f"{source}: '{name}' data must be numbers") from None
        if not all(math.isfinite(x) for x in numbers):
            raise ValueError(f"{source}: '{name}' data must be finite")
        return numbers

    width, height = positive_int('image_width'), positive_int('image_height')
    k = matrix('camera_matrix', 3, 3)
    intrinsics = Intrinsics.from_k(width, height, k)
    try:
        intrinsics.validate()
    except ValueError as error:
        raise ValueError(f"{source}: 'camera_matrix': {error}") from None
    distortion = matrix('distortion_coefficients', 1, required=False) or ()
    model = document.get('distortion_model', 'plumb_bob' if distortion else 'none')
    if not isinstance(model, str):
        raise ValueError(f"{source}: 'distortion_model' must be a string, got {model!r}")
    rectification = matrix('rectification_matrix', 3, 3, required=False) or _IDENTITY_3X3
    projection = matrix('projection_matrix', 3, 4, required=False) or ()
    name = document.get('camera_name', 'camera')
    return CameraCalibration(intrinsics, str(name), model, distortion, rectification,
                             projection)


def load_calibration(path):
    """Read a calibration YAML file; ``ValueError`` with a one-line reason if it is not one."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ValueError(f'{path}: cannot read calibration file ({error.strerror})') from None
    except UnicodeDecodeError:
        raise ValueError(f'{path}: not a camera calibration file (not text)') from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, 'problem_mark', None)
        where = f' at line {mark.line + 1}' if mark is not None else ''
        raise ValueError(f'{path}: not valid YAML{where}') from None
    return parse_calibration(document, str(path))


def save_calibration(calibration: CameraCalibration, path):
    """Write the calibrator's YAML format (readable back by ``load_calibration`` and ROS)."""
    Path(path).write_text(yaml.safe_dump(calibration.to_dict(), sort_keys=False,
                                         default_flow_style=None))


def resolve_calibration_url(url):
    """The file a camera_info_manager URL names: ``file:///abs/path``, ``package://pkg/rel``
    or a plain path. ``ValueError`` for other schemes or unknown packages."""
    parsed = urlparse(url)
    if parsed.scheme in ('', 'file'):
        return Path(unquote(parsed.path) if parsed.scheme else url).expanduser()
    if parsed.scheme == 'package':
        return _package_share(parsed.netloc) / unquote(parsed.path).lstrip('/')
    raise ValueError(f"camera_info_url '{url}': unsupported scheme '{parsed.scheme}' (use "
                     f'file://, package:// or a path)')


def _package_share(package):
    if package == 'midas_ros':
        from midas_ros.ros_env import share_dir  # the source tree when not installed by ament
        return share_dir()
    try:
        from ament_index_python.packages import get_package_share_directory
        return Path(get_package_share_directory(package))
    except Exception:  # not installed, or no ament index in this environment
        raise ValueError(f"package '{package}' not found for a package:// URL") from None
