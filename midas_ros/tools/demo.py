"""demo: the main job. The whole pipeline on the built-in synthetic scene, recorded, then the
pictures and numbers a person looks at.

    python -m midas_ros demo --output out/demo [--frames 60]

Runs camera_source (synthetic) -> depth_node -> obstacle_node with synthetic_detector through
the pipeline runner, records to ``DIR/recording.mcap`` and reads the recording back to write:

* ``montage.png``: input | coloured metric depth | obstacles with measured (and true) distances,
  for the frame with the most measured obstacles; ``montage.mp4`` (``.avi`` if this OpenCV
  cannot write MP4) of every frame;
* ``cloud.ply``: that frame's depth/points, valid points only, x y z + rgb;
* ``summary.json`` (and printed): frames, FPS, latency percentiles (image stamp to the
  recorder receiving depth / obstacles), scale-fit quality from depth_node's diagnostics, depth
  error and obstacle distance error against the scene's ground truth;
* ``demo_params.yaml``: the parameters the demo ran with on top of config/*.yaml.

The model uses the official weights when they can be found (``model.weights_dir``,
``$MIDAS_WEIGHTS_DIR``, the torch hub cache); when they cannot and downloading is possible (not
``--no-download``), the official checkpoint is downloaded into the torch hub cache first
(:func:`fetch_official_weights`). Offline it runs on random weights, said loudly: every output
still flows, the depth is meaningless, and every picture (montage, each video frame) carries a
red "RANDOM WEIGHTS" bar; summary.json has ``"random_weights": true``. depth_node runs in
``ground_plane`` scale mode with the scene's true camera height and pitch, the metric path a
robot with a known camera mount uses.
"""
import argparse
import json
import math
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import yaml

from midas_ros import report
from midas_ros.synthetic import SceneConfig
from midas_ros.ros.pipeline_monitor import DEPTH_STATUS_SUFFIX
from midas_ros.tools import pipeline

DEFAULT_FRAMES = 60
DEFAULT_MODEL = 'midas_v21_small_256'
DEMO_RATE_HZ = 10.0          # what the depth node keeps up with on a 2-core CPU


def fetch_official_weights(model_name, console, download=True, timeout_s=30.0):
    """True when the official checkpoint of ``model_name`` is available: found where depth_node
    looks (``models.weights.resolve_weights``), or, when it is not and ``download`` is true,
    downloaded now with ``models.weights.download_weights``: into the torch hub cache where
    depth_node finds it, with a progress bar (torch.hub's), SHA-256 (prefix) checked where the
    registry knows one, written under a temporary name and moved into place only when complete
    (an HTTP body shorter than its Content-Length fails in http.client). Says what it did on
    ``console``. Offline (or any failure) it says why in one line and returns False; nothing is
    left in the cache then.
    """
    import socket

    from midas_ros.models.registry import get_config
    from midas_ros.models.weights import (WeightsNotFoundError, download_weights,
                                          expected_sha256, hub_checkpoint_dir, resolve_weights)
    cfg = get_config(model_name)
    try:
        path = resolve_weights(cfg)
    except WeightsNotFoundError:
        pass
    else:
        console.line('demo', f'official {model_name} weights found: {path}')
        return True
    if not download or not cfg.url:
        return False
    directory = hub_checkpoint_dir()
    console.line('demo', f'official {model_name} weights not found: downloading {cfg.url} '
                 f'into the torch hub cache ({directory})')
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)     # a network that drops packets must not hang
    try:
        path = download_weights(cfg, directory, progress=True)
    except Exception as error:  # offline, HTTP error, checksum, disk full: one line, go on
        text = str(error).strip().splitlines()[0] if str(error).strip() else ''
        console.line('demo', f'download not possible ({type(error).__name__}: {text})')
        return False
    finally:
        socket.setdefaulttimeout(previous)
    checked = ('SHA-256 checked' if expected_sha256(cfg, path) else
               'no published SHA-256: checked by the strict key/shape load')
    console.line('demo', f'downloaded {path.stat().st_size / 1e6:.1f} MB to {path} ({checked})')
    return True


def demo_parameters(pretrained, model_name, scene=SceneConfig()):
    """The demo's settings over config/*.yaml, as a ROS parameters file mapping."""
    return {
        'camera_source': {'ros__parameters': {'rate': DEMO_RATE_HZ}},
        'depth_node': {'ros__parameters': {
            'model.name': model_name,
            'model.pretrained': pretrained,
            'scale.mode': 'ground_plane',
            'scale.camera_height': scene.camera_height,
            'scale.camera_pitch_deg': scene.camera_pitch_deg,
            # From camera_source's /tf_static when tf2_ros is installed; the two above else.
            'scale.ground_frame': 'base_footprint',
            'scan.enabled': True,
            # Every other pixel in each direction: a quarter of the cloud bytes to record.
            'cloud.decimation': 2,
        }},
    }


# -- reading the recording back ----------------------------------------------------------------

def _stamp_ns(header):
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def _diagnostic_values(msg):
    for status in msg.status:
        if status.name.endswith(DEPTH_STATUS_SUFFIX):
            return {kv.key: kv.value for kv in status.values}
    return None


def _float(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


class _RunReader:
    """Everything the artefacts need from a recording, collected in three passes over it so
    that only a few frames of images are held at any time."""

    def __init__(self, path):
        self.path = path
        self.image_stamps, self.depth_latency, self.obstacle_latency = [], [], []
        self.depth_times, self.obstacle_stamps = [], set()
        self.depth_errors, self.distance_errors = [], []
        self.diagnostics = []
        self.boxes = {}              # stamp -> [LabelledBox]
        self.weights = None          # depth_node's diagnostics: 'pretrained' | 'random'
        self.intrinsics = None

    def read_numbers(self):
        """Pass 1: counts, latencies, diagnostics, depth and distance errors, boxes."""
        from midas_ros.fusion import Box, fuse
        from midas_ros.ros.conversions import camera_info_to_intrinsics, depth_to_metres
        from midas_ros.ros.recorder import read_messages
        pending = defaultdict(dict)  # stamp -> parts of a frame still waiting for the others
        topics = ['/camera_info', '/depth/camera_info', '/depth/image', '/ground_truth/depth',
                  '/detections', '/obstacles', '/diagnostics']
        for topic, msg, log_time in read_messages(self.path, topics):
            if topic == '/diagnostics':
                values = _diagnostic_values(msg)
                if values and 'weights' in values:
                    self.weights = values['weights']
                if values and 'fit inlier ratio' in values:
                    self.diagnostics.append(values)
                continue
            stamp = _stamp_ns(msg.header)
            if topic == '/camera_info':
                self.image_stamps.append(stamp)
                if self.intrinsics is None:
                    self.intrinsics = camera_info_to_intrinsics(msg)
                continue
            if topic == '/depth/camera_info':
                # The small message published with each depth image: its receive time is not
                # delayed by the transport of a large one.
                self.depth_latency.append((log_time - stamp) / 1e6)
                self.depth_times.append(log_time)
                continue
            part = pending[stamp]
            if topic == '/depth/image':
                part['depth'] = depth_to_metres(msg)
            elif topic == '/ground_truth/depth':
                part['truth'] = depth_to_metres(msg)
            elif topic == '/detections':
                part['boxes'] = [(d.id, Box(d.bbox.center.position.x, d.bbox.center.position.y,
                                            d.bbox.size_x, d.bbox.size_y,
                                            d.results[0].hypothesis.class_id if d.results
                                            else ''))
                                 for d in msg.detections]
            elif topic == '/obstacles':
                self.obstacle_latency.append((log_time - stamp) / 1e6)
                self.obstacle_stamps.add(stamp)
                part['distances'] = {d.id: d.bbox.center.position.z for d in msg.detections}
            # Parts come in any order (a large depth image may be received after the
            # obstacles measured in it); each result is computed once its parts are there.
            if {'depth', 'truth'} <= part.keys():
                self.depth_errors.append(
                    report.depth_abs_rel(part.pop('depth'), part['truth'])[0])
                part['depth_done'] = True
            if {'truth', 'boxes', 'distances'} <= part.keys() and stamp not in self.boxes:
                self._measure_truth(stamp, part, fuse)
            if 'depth_done' in part and stamp in self.boxes:
                del pending[stamp]
        for stamp, part in pending.items():   # frames depth_node or obstacle_node dropped
            if 'boxes' in part and stamp not in self.boxes:
                self._measure_truth(stamp, part, fuse)

    def _measure_truth(self, stamp, part, fuse):
        """Boxes to draw, and the distance errors: the pipeline's distance against the same
        measurement (fusion.fuse, obstacle_node's defaults) on the true depth."""
        ids = [object_id for object_id, _ in part['boxes']]
        boxes = [box for _, box in part['boxes']]
        truths = {}
        if 'truth' in part and self.intrinsics is not None:
            measured = fuse(part['truth'], self.intrinsics, boxes)
            truths = {i: o.position[2] for i, o in zip(ids, measured) if o.valid}
        distances = part.get('distances', {})
        self.distance_errors += report.relative_errors(distances, truths)
        self.boxes[stamp] = [
            report.LabelledBox(b.center_x - b.width / 2, b.center_y - b.height / 2,
                               b.center_x + b.width / 2, b.center_y + b.height / 2,
                               i, distances.get(i), truths.get(i))
            for i, b in zip(ids, boxes)]

    def best_stamp(self):
        """The frame to show: most obstacles with a measured distance, latest on a tie."""
        def measured(stamp):
            return sum(1 for b in self.boxes[stamp]
                       if b.distance is not None and math.isfinite(b.distance))
        candidates = [s for s in self.boxes if s in self.obstacle_stamps]
        return max(candidates, key=lambda s: (measured(s), s)) if candidates else None

    def write_pictures(self, output, best, banner=None):
        """Pass 2: the montage of every frame with depth into the video; the best one as PNG;
        ``banner`` (e.g. report.RANDOM_WEIGHTS_BANNER) across the top of every one.
        Returns (video path, frames, montage path or None)."""
        from midas_ros.ros.conversions import image_to_array
        from midas_ros.ros.recorder import read_messages
        fps = min(max(report.frame_rate(self.image_stamps), 1.0), 30.0)
        video = report.VideoWriter(output / 'montage', fps)
        pending = defaultdict(dict)
        png = None
        try:
            for topic, msg, _ in read_messages(self.path, ['/image', '/depth/colormap']):
                stamp = _stamp_ns(msg.header)
                pixels, encoding = image_to_array(msg)
                if encoding == 'rgb8':
                    pixels = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
                pending[stamp][topic] = pixels
                frame = pending[stamp]
                if len(frame) < 2:
                    continue
                del pending[stamp]
                for old in [s for s in pending if s < stamp]:   # never got a depth image
                    del pending[old]
                image = frame['/image']
                picture = report.montage(
                    [image, frame['/depth/colormap'],
                     report.draw_boxes(image, self.boxes.get(stamp, ()))],
                    ['input', 'depth (near = red)', 'obstacles: measured (true) distance'],
                    banner=banner)
                video.write(picture)
                if stamp == best or png is None:
                    png = output / 'montage.png'
                    cv2.imwrite(str(png), picture)
        finally:
            video.close()
        return video.path, video.frames, png

    def write_cloud(self, path, best):
        """Pass 3: the best frame's cloud (or the last one) as PLY; returns the point count."""
        from midas_ros.ros.conversions import cloud_to_rgb, cloud_to_xyz
        from midas_ros.ros.recorder import read_messages
        chosen = None
        for _, msg, _ in read_messages(self.path, ['/depth/points']):
            chosen = msg
            if _stamp_ns(msg.header) == best:
                break
        if chosen is None:
            return 0
        rgb = cloud_to_rgb(chosen) if any(f.name == 'rgb' for f in chosen.fields) else None
        return report.write_ply(path, cloud_to_xyz(chosen), rgb)

    def summary(self):
        diagnostics = self.diagnostics
        accepted = [d.get('fit accepted') == 'True' for d in diagnostics]
        return {
            'frames': {'source': len(self.image_stamps), 'depth': len(self.depth_latency),
                       'obstacles': len(self.obstacle_latency),
                       # Of the camera's frames, those depth_node turned into depth.
                       'processed_fraction': (round(len(self.depth_latency)
                                                    / len(self.image_stamps), 3)
                                              if self.image_stamps else None)},
            'fps': report.frame_rate(self.depth_times),
            'latency_ms': {'depth': report.percentiles(self.depth_latency),
                           'obstacles': report.percentiles(self.obstacle_latency)},
            'scale_fit': {
                'mode': diagnostics[-1].get('scale mode') if diagnostics else None,
                'floor_source': diagnostics[-1].get('floor source') if diagnostics else None,
                'inlier_ratio': report.median_or_none(
                    _float(d.get('fit inlier ratio')) for d in diagnostics),
                'residual': report.median_or_none(
                    _float(d.get('fit residual')) for d in diagnostics),
                'accepted_fraction': (sum(accepted) / len(accepted)) if accepted else None,
                'samples': len(diagnostics)},
            'depth_error': {'median_abs_rel': report.median_or_none(self.depth_errors),
                            'frames': len(self.depth_errors)} if self.depth_errors else None,
            # 'matched' 0 (and no error) when no obstacle had a measured and a true distance.
            'obstacle_distance_error': {
                'median_abs_rel': report.median_or_none(self.distance_errors),
                'matched': len(self.distance_errors)},
        }


def write_artefacts(recording, output, console=None, model='-', random_weights=None):
    """Read ``recording`` back and write montage, video, cloud and summary into ``output``.
    Returns the summary dict (also written to summary.json and printed).

    ``random_weights`` (None: as depth_node's diagnostics in the recording say): every
    picture then carries report.RANDOM_WEIGHTS_BANNER, and summary.json says so
    (``random_weights``)."""
    say = (console or pipeline.Console()).line
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    run = _RunReader(recording)
    run.read_numbers()
    best = run.best_stamp()
    if random_weights is None:
        random_weights = run.weights == 'random'
    video, video_frames, png = run.write_pictures(
        output, best, banner=report.RANDOM_WEIGHTS_BANNER if random_weights else None)
    points = run.write_cloud(output / 'cloud.ply', best)
    summary = run.summary()
    summary['model'] = model
    summary['random_weights'] = bool(random_weights)
    summary['artefacts'] = {
        'recording': str(recording), 'montage': str(png) if png else None,
        'video': str(video) if video else None, 'video_frames': video_frames,
        'cloud': str(output / 'cloud.ply') if points else None, 'cloud_points': points}
    (output / 'summary.json').write_text(json.dumps(summary, indent=2) + '\n')
    for line in report.format_summary(summary):
        say('summary', line)
    say('summary', f'artefacts in {output}/ ({time.monotonic() - started:.1f} s): '
        f"{', '.join(Path(p).name for p in summary['artefacts'].values() if isinstance(p, str))}")
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m midas_ros demo', description=(
        'Run the whole pipeline on the built-in synthetic scene, record it and write a '
        'montage, a video, a point cloud and a summary.'))
    parser.add_argument('--output', default='out/demo', metavar='DIR',
                        help='folder for the recording and artefacts (default: %(default)s)')
    parser.add_argument('--frames', type=int, default=DEFAULT_FRAMES,
                        help='frames of the synthetic scene to run (default: %(default)s)')
    parser.add_argument('--model', default=DEFAULT_MODEL, help='MiDaS variant '
                        '(default: %(default)s)')
    parser.add_argument('--params', nargs='+', default=[], metavar='FILE',
                        help='more ROS parameter files, applied after the demo settings')
    parser.add_argument('--no-download', action='store_true',
                        help='do not download the official weights when they are not found')
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error('--frames must be at least 1')
    console = pipeline.Console()
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    pretrained = fetch_official_weights(args.model, console, download=not args.no_download)
    if not pretrained:
        for line in ('*' * 72,
                     f'NO OFFICIAL WEIGHTS FOUND FOR {args.model}: RUNNING WITH RANDOM WEIGHTS.',
                     'Every output flows, but the depth (and so every distance) is meaningless.',
                     'Put the checkpoint in $MIDAS_WEIGHTS_DIR or the torch hub cache (README).',
                     '*' * 72):
            console.line('demo', line)
    params = output / 'demo_params.yaml'
    params.write_text('# Written by `python -m midas_ros demo`: its settings over config/*.yaml\n'
                      + yaml.safe_dump(demo_parameters(pretrained, args.model),
                                       sort_keys=False))
    run_args = argparse.Namespace(
        source=pipeline.SYNTHETIC, frames=args.frames, params=[str(params)] + args.params,
        record=str(output / 'recording.mcap'), topics=None, output=None)
    recording = output / 'recording.mcap'
    if recording.exists():
        recording.unlink()   # never report on a previous run's file
    started = time.monotonic()
    status = pipeline.run_and_report(run_args, console)
    if status not in (0, pipeline.EXIT_INTERRUPTED) or not recording.is_file():
        return status or 1
    model = f"{args.model} ({'official' if pretrained else 'RANDOM'} weights)"
    write_artefacts(recording, output, console, model=model, random_weights=not pretrained)
    console.line('demo', f'done in {time.monotonic() - started:.1f} s')
    return status


if __name__ == '__main__':
    sys.exit(main())
