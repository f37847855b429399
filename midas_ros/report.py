"""What a person looks at after a run: montage, video, PLY point cloud and summary numbers.

ROS-free (numpy + OpenCV): callers turn recorded messages into arrays and plain values first.
"""
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

import cv2
import numpy as np

PERCENTILES = (50, 90, 99)
PANEL_TITLE_HEIGHT = 28
_FONT = cv2.FONT_HERSHEY_SIMPLEX
# Codecs tried in order: MPEG-4 in .mp4 plays nearly everywhere; MJPG in .avi is the fallback
# every OpenCV build (headless wheels included) can write.
VIDEO_CODECS = (('mp4v', '.mp4'), ('MJPG', '.avi'))


@dataclass(frozen=True)
class LabelledBox:
    """A detection to draw: pixel box (inclusive corners), its label and distances (m)."""

    u0: float
    v0: float
    u1: float
    v1: float
    label: str
    distance: Optional[float] = None         # what the pipeline measured
    true_distance: Optional[float] = None    # the same measurement on the true depth


# -- numbers -----------------------------------------------------------------------------------

def percentiles(values, qs=PERCENTILES):
    """``{'p50': ..., 'p90': ..., 'p99': ...}`` of the finite values (None when there are none)."""
    values = np.asarray(list(values), dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return {f'p{q}': None for q in qs}
    return {f'p{q}': float(v) for q, v in zip(qs, np.percentile(values, qs))}


def frame_rate(times_ns):
    """Frames per second of events at these times: (count - 1) / span; 0 for fewer than 2."""
    times = np.sort(np.asarray(list(times_ns), dtype=np.int64))
    if times.size < 2 or times[-1] == times[0]:
        return 0.0
    return float((times.size - 1) / ((times[-1] - times[0]) * 1e-9))


def relative_errors(estimates: Dict[str, float], truths: Dict[str, float]):
    """``|estimate - truth| / truth`` for each key in both (matched by id), finite values and
    positive truths only, in key order."""
    errors = []
    for key in sorted(set(estimates) & set(truths)):
        estimate, truth = estimates[key], truths[key]
        if math.isfinite(estimate) and math.isfinite(truth) and truth > 0:
            errors.append(abs(estimate - truth) / truth)
    return errors


def depth_abs_rel(depth, truth):
    """Median of ``|depth - truth| / truth`` over pixels valid in both, and the fraction of
    truth pixels the depth covers; (None, 0.0) when no pixel is valid in both."""
    valid_truth = np.isfinite(truth) & (truth > 0)
    both = valid_truth & np.isfinite(depth) & (depth > 0)
    count = int(np.count_nonzero(both))
    if count == 0:
        return None, 0.0
    error = np.abs(depth[both] - truth[both]) / truth[both]
    return float(np.median(error)), count / max(int(np.count_nonzero(valid_truth)), 1)


def median_or_none(values):
    values = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(values)) if values else None


# -- pictures ----------------------------------------------------------------------------------

RANDOM_WEIGHTS_BANNER = ('RANDOM WEIGHTS (no official checkpoint): depth and distances are '
                         'meaningless')
_BANNER_COLOR = (0, 0, 200)        # BGR red


def _label_text(box):
    measured = box.distance is not None and math.isfinite(box.distance)
    text = box.label + (f' {box.distance:.2f} m' if measured else ' no depth')
    if box.true_distance is not None and math.isfinite(box.true_distance):
        text += f' (true {box.true_distance:.2f})'
    return text, measured


def _overlaps(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(boxes: Sequence[LabelledBox], sizes, image_size):
    """Where each label goes: ``[(x0, y0, x1, y1) or None]`` in pixels (exclusive ends), no two
    overlapping, all inside the image (``image_size`` = (width, height)).

    ``sizes`` are the labels' (width, height). A label sits above its box's top-left corner
    when that place is free, else below the box, else at the first free row scanning down the
    image at the box's column (then anywhere along the row); None when the image has no free
    place left for it (the box is still drawn)."""
    width, height = image_size
    placed = []
    for box, (w, h) in zip(boxes, sizes):
        w, h = min(int(w), width), min(int(h), height)
        x = int(min(max(round(box.u0), 0), width - w))
        top, bottom = int(round(box.v0)), int(round(box.v1))
        rows = [top - h, bottom + 1, top] + list(range(0, height - h + 1, max(h // 2, 1)))
        columns = [x] + list(range(0, width - w + 1, max(w // 4, 1)))
        spot = None
        for column in columns:
            for row in rows:
                rect = (column, row, column + w, row + h)
                if 0 <= row <= height - h and not any(
                        other is not None and _overlaps(rect, other) for other in placed):
                    spot = rect
                    break
            if spot is not None:
                break
        placed.append(spot)
    return placed


def draw_boxes(image_bgr, boxes: Iterable[LabelledBox]):
    """A copy of ``image_bgr`` with each box and 'label 2.34 m (true 2.10)' drawn on it. Labels
    never overlap each other (:func:`place_labels`); one moved away from its box is joined to
    it by a line."""
    out = image_bgr.copy()
    boxes = list(boxes)
    scale = max(out.shape[0] / 480.0, 0.35) * 0.5
    thickness = max(int(round(scale * 2)), 1)
    texts, sizes = [], []
    for box in boxes:
        text, measured = _label_text(box)
        (width, height), baseline = cv2.getTextSize(text, _FONT, scale, thickness)
        texts.append((text, measured, baseline))
        sizes.append((width + 2, height + baseline + 2))
    spots = place_labels(boxes, sizes, (out.shape[1], out.shape[0]))
    for box, (text, measured, baseline), spot in zip(boxes, texts, spots):
        color = (0, 220, 0) if measured else (0, 160, 255)
        top_left = (int(round(box.u0)), int(round(box.v0)))
        cv2.rectangle(out, top_left, (int(round(box.u1)), int(round(box.v1))), color,
                      thickness)
        if spot is None:
            continue
        x0, y0, x1, y1 = spot
        bottom = int(round(box.v1))
        if not (x0 <= top_left[0] + 1 and y1 >= top_left[1] and y0 <= bottom + 1):
            # Moved away from its box by other labels: a line says which box it names.
            cv2.line(out, ((x0 + x1) // 2, (y0 + y1) // 2),
                     ((top_left[0] + int(round(box.u1))) // 2, top_left[1]), color, 1)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), color, cv2.FILLED)
        cv2.putText(out, text, (x0 + 1, y1 - 1 - baseline), _FONT, scale, (0, 0, 0),
                    thickness, cv2.LINE_AA)
    return out


def with_banner(picture, text):
    """``picture`` (HxWx3 uint8) with a red bar of PANEL_TITLE_HEIGHT rows above it saying
    ``text`` in white: what the whole picture is (e.g. RANDOM_WEIGHTS_BANNER)."""
    bar = np.empty((PANEL_TITLE_HEIGHT, picture.shape[1], 3), np.uint8)
    bar[:] = _BANNER_COLOR
    cv2.putText(bar, text, (6, PANEL_TITLE_HEIGHT - 8), _FONT, 0.6, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.vstack([bar, picture])


def montage(panels: Sequence[np.ndarray], titles: Sequence[str], banner: Optional[str] = None):
    """Panels (HxWx3 uint8 BGR, resized to the first one's height) side by side, each under a
    title bar of PANEL_TITLE_HEIGHT rows; with ``banner``, a red bar across the top says it
    (:func:`with_banner`)."""
    if not panels or len(panels) != len(titles):
        raise ValueError(f'need one title per panel, got {len(panels)} panels and '
                         f'{len(titles)} titles')
    height = panels[0].shape[0]
    columns = []
    for panel, title in zip(panels, titles):
        if panel.ndim != 3 or panel.shape[2] != 3 or panel.dtype != np.uint8:
            raise ValueError(f'panels must be HxWx3 uint8, got {panel.dtype} {panel.shape}')
        if panel.shape[0] != height:
            width = int(round(panel.shape[1] * height / panel.shape[0]))
            panel = cv2.resize(panel, (width, height), interpolation=cv2.INTER_AREA)
        column = np.zeros((height + PANEL_TITLE_HEIGHT, panel.shape[1], 3), np.uint8)
        column[PANEL_TITLE_HEIGHT:] = panel
        cv2.putText(column, title, (6, PANEL_TITLE_HEIGHT - 8), _FONT, 0.6, (255, 255, 255), 1,
                    cv2.LINE_AA)
        columns.append(column)
    picture = np.hstack(columns)
    return picture if banner is None else with_banner(picture, banner)


class VideoWriter:
    """Frames of equal size to a video: ``.mp4`` (MPEG-4) if this OpenCV can, else ``.avi``
    (MJPG). ``path`` is the file actually written, known after the first frame."""

    def __init__(self, stem, fps):
        self.stem, self.fps = Path(stem), float(fps)
        self.path = None
        self.frames = 0
        self._writer = None

    def _open(self, size):
        for fourcc, suffix in VIDEO_CODECS:
            path = self.stem.with_suffix(suffix)
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), self.fps, size)
            if writer.isOpened():
                self.path, self._writer, self._size = path, writer, size
                return
            writer.release()
        raise RuntimeError(f'OpenCV cannot write video here (tried {VIDEO_CODECS})')

    def write(self, frame_bgr):
        """Append a frame (HxWx3 uint8 BGR); later frames are resized to the first's size."""
        size = (frame_bgr.shape[1], frame_bgr.shape[0])
        if self._writer is None:
            self._open(size)
        elif size != self._size:
            frame_bgr = cv2.resize(frame_bgr, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame_bgr)
        self.frames += 1

    def close(self):
        if self._writer is not None:
            self._writer.release()
            self._writer = None


# -- point cloud -------------------------------------------------------------------------------

PLY_VERTEX = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'),
                       ('red', 'u1'), ('green', 'u1'), ('blue', 'u1')])


def write_ply(path, xyz, rgb=None):
    """Binary little-endian PLY of the finite points of ``xyz`` (...x3 float, metres) with
    their ``rgb`` (...x3 uint8, R G B; grey if None). Returns the number of points written."""
    xyz = np.asarray(xyz, dtype=np.float32).reshape(-1, 3)
    valid = np.isfinite(xyz).all(axis=1)
    vertices = np.empty(int(np.count_nonzero(valid)), PLY_VERTEX)
    for axis, name in enumerate('xyz'):
        vertices[name] = xyz[valid, axis]
    colors = (np.full((vertices.size, 3), 200, np.uint8) if rgb is None
              else np.asarray(rgb, dtype=np.uint8).reshape(-1, 3)[valid])
    for channel, name in enumerate(('red', 'green', 'blue')):
        vertices[name] = colors[:, channel]
    header = ('ply\nformat binary_little_endian 1.0\ncomment midas_ros depth/points\n'
              f'element vertex {vertices.size}\n'
              'property float x\nproperty float y\nproperty float z\n'
              'property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n')
    with open(path, 'wb') as stream:
        stream.write(header.encode('ascii'))
        stream.write(vertices.tobytes())
    return vertices.size


# -- text --------------------------------------------------------------------------------------

def _number(value, unit='', digits=1):
    return '-' if value is None else f'{value:.{digits}f}{unit}'


def format_summary(summary) -> List[str]:
    """The summary dict (as written to summary.json) as a few lines of text."""
    frames, latency = summary['frames'], summary['latency_ms']
    fit = summary['scale_fit']
    lines = [
        f"model        {summary['model']}"
        + (' -- RANDOM WEIGHTS: depth and distances are meaningless'
           if summary.get('random_weights') else ''),
        f"frames       {frames['source']} published, {frames['depth']} with depth, "
        f"{frames['obstacles']} with obstacles"
        + (f" ({frames['processed_fraction']:.0%} of the camera's frames processed)"
           if frames.get('processed_fraction') is not None else ''),
        f"rate         {_number(summary['fps'], ' FPS')} (depth output)",
        'latency      image to depth   p50/p90/p99 ' + '/'.join(
            _number(latency['depth'][f'p{q}']) for q in PERCENTILES) + ' ms',
        '             image to obstacles p50/p90/p99 ' + '/'.join(
            _number(latency['obstacles'][f'p{q}']) for q in PERCENTILES) + ' ms',
        f"scale fit    mode {fit['mode']}: inlier ratio {_number(fit['inlier_ratio'], '', 2)}, "
        f"residual {_number(fit['residual'], '', 3)}, accepted "
        f"{_number(fit['accepted_fraction'] and fit['accepted_fraction'] * 100, '%', 0)} "
        f"of {fit['samples']} diagnostics",
    ]
    depth = summary.get('depth_error')
    if depth:
        lines.append(f"depth error  median abs rel {_number(depth['median_abs_rel'], '', 3)} "
                     f"vs true depth over {depth['frames']} frames")
    obstacles = summary.get('obstacle_distance_error')
    if obstacles:
        lines.append(f"obstacles    distance median abs rel error "
                     f"{_number(obstacles['median_abs_rel'], '', 3)} over "
                     f"{obstacles['matched']} detections matched by id")
    return lines
