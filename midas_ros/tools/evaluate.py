"""``python -m midas_ros evaluate``: depth error of a model on a robot's RGB-D recordings.

    python -m midas_ros evaluate --bag REC.mcap --image TOPIC --depth TOPIC \\
        --model NAME [--weights W | --random-weights] [--scale-mode MODE --params FILE] \\
        [--json OUT.json | --json -]

Runs the model exactly as depth_node does (``DepthEstimator``: the official preprocessing, the
prediction upsampled to the image) on every image + depth pair of the recording and prints:

* relative: AbsRel, RMSE (m) and delta1 (< 1.25) after per-frame scale-and-shift alignment in
  inverse depth (least squares on the valid pixels), the standard protocol for relative depth
  (``midas_ros.training.metrics``; the numbers ``finetune`` reports for its validation frames);
* with ``--scale-mode`` (fixed, ground_plane, sparse): the same errors of the metres depth_node
  would publish in that mode with its parameters (``--params`` depth_node YAML: ``scale.*``,
  ``depth.min``/``depth.max``, ``camera.hfov_deg``; flags override), scored on the pixels the
  node gives a depth (coverage). ``fixed`` uses ``scale.a``/``scale.b`` when the file sets them,
  else it calibrates on the first frame; ``sparse`` takes its anchors from the true depth.

``--json FILE`` writes the same numbers as JSON (``-``: print only the JSON). Bad input is one
line on stderr and exit status 2.
"""
import argparse
import json
import math
import sys
from pathlib import Path

from midas_ros.tools.evaluate_metric import MODES as SCALE_MODES
from midas_ros.tools.finetune import EXIT_BAD_INPUT, add_data_arguments, open_pairs, versions
from midas_ros.training import DatasetError

# depth_node parameter -> what the metric evaluation uses it for (and the node's default).
NODE_DEFAULTS = {
    'scale.a': None, 'scale.b': None, 'scale.camera_height': 1.0, 'scale.camera_pitch_deg': 0.0,
    'scale.camera_roll_deg': 0.0, 'scale.floor_rows': 0.35, 'depth.min': 0.1, 'depth.max': 20.0,
    'camera.hfov_deg': 60.0,
}


def _flatten(mapping, prefix=''):
    flat = {}
    for key, value in mapping.items():
        name = f'{prefix}{key}'
        if isinstance(value, dict):
            flat.update(_flatten(value, f'{name}.'))
        else:
            flat[name] = value
    return flat


def node_parameters(path):
    """depth_node's parameters in a ROS parameters YAML (``depth_node`` or ``/**/depth_node``
    section, nested or dotted names) over the node's defaults, for NODE_DEFAULTS' keys."""
    import yaml
    values = dict(NODE_DEFAULTS)
    if not path:
        return values
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise DatasetError(f'--params {path}: {type(error).__name__}: {error}') from None
    section = next((v for k, v in data.items() if str(k).rsplit('/', 1)[-1] == 'depth_node'),
                   None)
    if not isinstance(section, dict) or 'ros__parameters' not in section:
        raise DatasetError(f'--params {path}: no depth_node: ros__parameters: section')
    flat = _flatten(section['ros__parameters'] or {})
    values.update({k: v for k, v in flat.items() if k in NODE_DEFAULTS})
    return values


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m midas_ros evaluate',
        description='AbsRel, RMSE and delta1 of a depth model on image + depth pairs of rosbag2 '
                    'MCAP recordings, aligned per frame and, with --scale-mode, in metres as '
                    'depth_node publishes them.')
    add_data_arguments(parser)
    parser.add_argument('--scale-mode', choices=SCALE_MODES,
                        help="also score the metres depth_node publishes in this mode")
    parser.add_argument('--params', metavar='FILE',
                        help="depth_node parameters YAML (scale.*, depth.*, camera.hfov_deg)")
    parser.add_argument('--camera-height', type=float, help='overrides scale.camera_height (m)')
    parser.add_argument('--camera-pitch-deg', type=float,
                        help='overrides scale.camera_pitch_deg')
    parser.add_argument('--camera-roll-deg', type=float, help='overrides scale.camera_roll_deg')
    parser.add_argument('--anchors', type=int, default=300,
                        help='sparse mode: true-depth anchors per frame (default: %(default)s)')
    parser.add_argument('--max-frames', type=int, default=0,
                        help='evaluate at most this many pairs (evenly spread; 0: all)')
    parser.add_argument('--json', metavar='FILE', help="write the numbers as JSON ('-': stdout)")
    return parser


def _metric_evaluator(args, node, intrinsics):
    from midas_ros.tools.evaluate_metric import CameraSetup, MetricEvaluator
    height = args.camera_height if args.camera_height is not None else node['scale.camera_height']
    pitch = (args.camera_pitch_deg if args.camera_pitch_deg is not None
             else node['scale.camera_pitch_deg'])
    roll = (args.camera_roll_deg if args.camera_roll_deg is not None
            else node['scale.camera_roll_deg'])
    fixed = ((float(node['scale.a']), float(node['scale.b']))
             if node['scale.a'] is not None and node['scale.b'] is not None else None)
    camera = CameraSetup(intrinsics, float(height), float(pitch), float(roll))
    try:
        return MetricEvaluator(camera, (args.scale_mode,), float(node['depth.min']),
                               float(node['depth.max']), args.anchors,
                               floor_rows=float(node['scale.floor_rows']), fixed_scale=fixed)
    except ValueError as error:
        raise DatasetError(str(error)) from None


def evaluate(args):
    """The result dict (what --json writes)."""
    from midas_ros.geometry import Intrinsics
    from midas_ros.inference import DepthEstimator
    from midas_ros.models.weights import WeightsError
    from midas_ros.training.metrics import MetricAverager, frame_metrics
    from midas_ros.training.rgbd_bag import scaled_intrinsics
    node = node_parameters(args.params)
    reader = open_pairs(args)
    try:
        estimator = DepthEstimator(args.model, args.device, pretrained=not args.random_weights,
                                   weights=args.weights)
    except (ValueError, WeightsError) as error:
        raise DatasetError(str(error).strip().splitlines()[0]) from None
    total = reader.report.pairs
    keep = None
    if args.max_frames and args.max_frames < total:
        keep = {int(i * total / args.max_frames) for i in range(args.max_frames)}
    relative_scores, evaluator = MetricAverager(), None
    for index, pair in enumerate(reader.pairs()):
        if keep is not None and index not in keep:
            continue
        relative = estimator.predict(pair.rgb, 'rgb')
        relative_scores.add(frame_metrics(relative, pair.depth, args.min_depth, args.max_depth))
        if args.scale_mode:
            if evaluator is None:
                height, width = pair.depth.shape
                intrinsics = (scaled_intrinsics(reader.camera, width, height) if reader.camera
                              else Intrinsics.from_fov(width, height, node['camera.hfov_deg']))
                evaluator = _metric_evaluator(args, node, intrinsics)
            try:
                evaluator.add(relative, pair.depth)
            except ValueError:
                pass   # a frame without valid truth: counted by the relative scores
    result = {
        'model': args.model,
        'weights': 'random (seeded)' if args.random_weights else str(
            args.weights or '(official, resolved as depth_node does)'),
        'bags': [str(p) for p in reader.recording.files],
        'pairs': reader.report.as_dict(),
        'relative': relative_scores.result(),
        'versions': versions(),
    }
    if evaluator is not None:
        report = evaluator.reports[args.scale_mode]
        mean = report.mean()
        result['metric'] = {
            'scale_mode': args.scale_mode,
            'abs_rel': mean.abs_rel if mean else math.nan,
            'rmse': mean.rmse if mean else math.nan,
            'delta1': mean.delta1 if mean else math.nan,
            'coverage': mean.coverage if mean else 0.0,
            'frames': len(report.metrics), 'failed': report.failed,
            'rejected': report.rejected, 'rejected_most_often': report.main_rejection(),
            'node_parameters': node}
    return reader, result


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        reader, result = evaluate(args)
    except DatasetError as error:
        print(f'evaluate: error: {error}', file=sys.stderr)
        return EXIT_BAD_INPUT
    text = json.dumps(result, indent=2)
    if args.json and args.json != '-':
        Path(args.json).write_text(text + '\n')
    if args.json == '-':
        print(text)
        return 0
    from midas_ros.training.metrics import format_metrics
    print(f'{args.model} ({result["weights"]}): {reader.report.line()}')
    print(f'relative, aligned per frame in inverse depth: {format_metrics(result["relative"])}')
    metric = result.get('metric')
    if metric:
        print(f"metres as depth_node publishes them (scale.mode {metric['scale_mode']}): "
              f"AbsRel {metric['abs_rel']:.4f}  RMSE {metric['rmse']:.3f} m  delta1 "
              f"{metric['delta1']:.3f}  coverage {100 * metric['coverage']:.1f} % "
              f"({metric['frames']} frames, {metric['failed']} without a scale, "
              f"{metric['rejected']} fits rejected)")
        if metric['rejected_most_often']:
            print(f"  fits rejected most often because: {metric['rejected_most_often']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
