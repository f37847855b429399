"""``python -m midas_ros finetune``: fine-tune a zoo model on a robot's RGB-D recordings.

    python -m midas_ros finetune --bag REC.mcap --image /camera/image --depth /camera/depth \\
        --model midas_v21_small_256 [--weights START.pt | --random-weights] --out OUT.pt \\
        [--steps N | --epochs E] [--batch B] [--lr LR] [--freeze-encoder] \\
        [--val-fraction F] [--device cpu|cuda|cuda:N] [--resume OUT.pt]

Reads the image + depth pairs (``midas_ros.training.rgbd_bag``), splits them by time
(``training.split``), scores the starting weights on the validation frames, trains with the
model's loss (``training.losses``) and writes, after every validation, OUT.pt (the official
state-dict layout: ``model.weights`` of depth_node, ``infer`` and every backend load it
strictly), OUT.pt.resume (optimizer state for ``--resume``) and OUT.json (data, pairs, split,
arguments, versions, ``{"validation": {"before": {...}, "after": {...}}}``), each atomically.

Bad input (topic not in the bag, no pairs, unreadable encoding, damaged MCAP, weights of
another model, validation split too small) is one line on stderr, exit status 2, and nothing
written. Ctrl-C stops after the current step: exit status 130, the last complete checkpoint
stays (or nothing, before the first).
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

from midas_ros.training import DatasetError

EXIT_BAD_INPUT = 2
# Fine-tuning trained weights takes small steps (larger ones wash out what they learned);
# random weights have nothing to keep and need larger ones to learn in minutes.
LR_PRETRAINED = 1e-4
LR_RANDOM = 1e-3
DEFAULT_STEPS = 300
RANDOM = 'random (seeded)'
EXIT_INTERRUPTED = 130


def add_data_arguments(parser):
    """The recording arguments ``finetune`` and ``evaluate`` share."""
    parser.add_argument('--bag', action='append', required=True, metavar='REC.mcap',
                        help='rosbag2 MCAP file or folder (repeat for several)')
    parser.add_argument('--image', required=True, metavar='TOPIC',
                        help='camera topic (sensor_msgs/Image or CompressedImage)')
    parser.add_argument('--depth', required=True, metavar='TOPIC',
                        help='depth topic registered to the camera (32FC1 m or 16UC1 mm)')
    parser.add_argument('--camera-info', metavar='TOPIC',
                        help="the camera's CameraInfo: resamples depth of another size onto "
                             'the image with the intrinsics')
    parser.add_argument('--depth-camera-info', metavar='TOPIC',
                        help="the depth image's CameraInfo when it is not the camera's scaled")
    parser.add_argument('--tolerance', type=float, default=0.02, metavar='S',
                        help='largest image-depth stamp difference of a pair (default: '
                             '%(default)s s)')
    parser.add_argument('--min-depth', type=float, default=0.1,
                        help='nearer depth is invalid (default: %(default)s m)')
    parser.add_argument('--max-depth', type=float, default=20.0,
                        help='farther depth is invalid (default: %(default)s m)')
    parser.add_argument('--model', default='midas_v21_small_256', metavar='NAME',
                        help='zoo model (default: %(default)s)')
    weights = parser.add_mutually_exclusive_group()
    weights.add_argument('--weights', metavar='FILE',
                         help='checkpoint to start from / evaluate (default: the official one, '
                              'found as depth_node finds it)')
    weights.add_argument('--random-weights', action='store_true',
                         help="the seeded random weights (what the demo runs offline)")
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')


def open_pairs(args):
    from midas_ros.training.rgbd_bag import RgbdPairReader
    return RgbdPairReader(args.bag, args.image, args.depth, args.camera_info,
                          args.depth_camera_info, args.tolerance, args.min_depth, args.max_depth)


def load_model(args, weights=None):
    """(model, cfg) of ``args.model`` with the requested weights; DatasetError in one line."""
    from midas_ros.models import create_model, get_config
    from midas_ros.models.weights import WeightsError
    try:
        cfg = get_config(args.model)
        model = create_model(args.model, pretrained=not args.random_weights,
                             weights=weights or args.weights)
    except (ValueError, WeightsError) as error:
        raise DatasetError(str(error).strip().splitlines()[0]) from None
    return model, cfg


def versions():
    import numpy
    import timm
    import torch

    import midas_ros
    return {'midas_ros': midas_ros.__version__, 'python': platform.python_version(),
            'torch': torch.__version__, 'timm': timm.__version__, 'numpy': numpy.__version__}


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m midas_ros finetune',
        description="Fine-tune a depth model on image + depth pairs of rosbag2 MCAP recordings.")
    add_data_arguments(parser)
    parser.add_argument('--out', metavar='OUT.pt', help='checkpoint to write (OUT.json beside)')
    length = parser.add_mutually_exclusive_group()
    length.add_argument('--steps', type=int,
                        help=f'optimizer steps (default: {DEFAULT_STEPS})')
    length.add_argument('--epochs', type=float, help='passes over the training frames')
    parser.add_argument('--batch', type=int, default=4, help='images per step (default: 4)')
    parser.add_argument('--lr', type=float,
                        help=f'AdamW learning rate (default: {LR_PRETRAINED:g} from trained '
                             f'weights, {LR_RANDOM:g} from --random-weights)')
    parser.add_argument('--weight-decay', type=float, default=1e-4,
                        help='AdamW weight decay (default: %(default)s)')
    parser.add_argument('--freeze-encoder', action='store_true',
                        help='train the decoder only (encoder weights and statistics kept)')
    parser.add_argument('--batch-norm', choices=('auto', 'frozen', 'batch'), default='auto',
                        help='BatchNorm statistics: frozen (kept) or batch; auto: frozen from '
                             'trained weights, batch from --random-weights')
    parser.add_argument('--val-fraction', type=float, default=0.2,
                        help='share of the pairs validated on (default: %(default)s)')
    parser.add_argument('--val-blocks', type=int, default=3,
                        help='contiguous validation blocks (default: %(default)s)')
    parser.add_argument('--split-gap', type=int, default=5,
                        help='frames left out on each side of a validation block (default: '
                             '%(default)s)')
    parser.add_argument('--val-every', type=int, default=50,
                        help='steps between validations and checkpoints (default: '
                             '%(default)s)')
    parser.add_argument('--time-budget', type=float, default=0.0, metavar='S',
                        help='stop training after this many seconds, validate and save '
                             '(default: 0, no limit)')
    parser.add_argument('--seed', type=int, default=0, help='batch sampling and flips')
    parser.add_argument('--resume', metavar='OUT.pt',
                        help='continue the run that wrote OUT.pt (its weights and optimizer)')
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = args.out or args.resume
    if not out:
        parser.error('--out is required (or --resume)')
    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        parser.error('--resume continues in the file it names: give the same --out or none')
    for name in ('batch', 'val_every'):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if (args.steps is not None and args.steps < 1) or (args.epochs is not None
                                                       and not args.epochs > 0):
        parser.error('--steps / --epochs must be positive')
    args.lr_given = args.lr is not None
    if args.lr is None:
        args.lr = LR_RANDOM if args.random_weights else LR_PRETRAINED
    if not args.lr > 0:
        parser.error('--lr must be positive')
    say = print
    try:
        return run(args, Path(out), say)
    except DatasetError as error:
        print(f'finetune: error: {error}', file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:   # before training started (the loop handles its own)
        print('\nfinetune: interrupted before training; nothing written', file=sys.stderr)
        return EXIT_INTERRUPTED


def run(args, out, say):
    import torch

    from midas_ros.inference import resolve_device
    from midas_ros.training.split import time_split
    from midas_ros.training.trainer import (PreparedData, Trainer, TrainOptions,
                                            load_resume_state)
    started = time.monotonic()
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise DatasetError(str(error)) from None
    reader = open_pairs(args)
    say(f'pairs: {reader.report.line()}')
    split = time_split(reader.report.pairs, args.val_fraction, args.val_blocks, args.split_gap)
    say(f'split by time: {len(split.train)} training, {len(split.validation)} validation '
        f'frames in {len(split.blocks)} blocks, {len(split.gap)} gap frames left out')
    resume_step, optimizer_state, previous = 0, None, {}
    if args.resume:
        resume_step, optimizer_state = load_resume_state(out)
        report_path = out.with_suffix('.json')
        previous = json.loads(report_path.read_text()) if report_path.is_file() else {}
        if not args.lr_given and 'lr' in previous.get('args', {}):
            args.lr = previous['args']['lr']     # the run goes on as it started
        args.random_weights = False
    model, cfg = load_model(args, weights=str(out) if args.resume else None)
    batch_norm = args.batch_norm
    if batch_norm == 'auto':   # a resumed run keeps the choice of its start
        started_random = (previous.get('start_weights') == RANDOM if args.resume
                          else args.random_weights)
        batch_norm = 'batch' if started_random else 'frozen'
    options = TrainOptions(
        steps=args.steps or (0 if args.epochs else DEFAULT_STEPS), epochs=args.epochs or 0.0,
        batch=args.batch, lr=args.lr, weight_decay=args.weight_decay,
        freeze_encoder=args.freeze_encoder, val_every=args.val_every,
        time_budget_s=args.time_budget, seed=args.seed, batch_norm=batch_norm,
        min_depth=args.min_depth,
        max_depth=args.max_depth)
    torch.manual_seed(args.seed)
    data = PreparedData(cfg, reader.pairs(), split)
    net_h, net_w = data.train_inputs.shape[2:]
    say(f'{cfg.name}: network input {net_w}x{net_h} (the official preprocessing of '
        f'{data.image_size[0]}x{data.image_size[1]} images), {device}, '
        f'{"encoder frozen" if args.freeze_encoder else "all layers trained"} '
        f'(data ready in {time.monotonic() - started:.0f} s)')
    trainer = Trainer(model, cfg, data, options, device, resume_step, optimizer_state)
    report = {
        'model': cfg.name,
        'start_weights': (RANDOM if args.random_weights and not args.resume
                          else str(getattr(model, 'weights_path', None))),
        'data': {'bags': [str(p) for p in reader.recording.files], 'image_topic': args.image,
                 'depth_topic': args.depth, 'camera_info_topic': args.camera_info,
                 'depth_range_m': [args.min_depth, args.max_depth],
                 'image_size': list(data.image_size), 'network_input': [net_w, net_h]},
        'pairs': reader.report.as_dict(),
        'split': split.as_dict(),
        'args': {k: v for k, v in vars(args).items()},
        'versions': versions(),
        'device': str(device),
    }
    before = previous.get('validation', {}).get('before') if args.resume else None
    if args.resume:
        report['resumed_from_step'] = resume_step
        if previous.get('start_weights'):
            report['start_weights'] = previous['start_weights']
    if trainer.step >= trainer.total_steps:
        say(f'{out} is already at step {trainer.step} of {trainer.total_steps}: nothing to do')
        return 0
    try:
        report = trainer.run(out, report, lambda line: say(line, flush=True), before)
    except KeyboardInterrupt:
        saved = out.with_suffix('.json')
        kept = (f'the last complete checkpoint is {out} (see {saved.name})' if out.is_file()
                else 'nothing was written (no checkpoint yet)')
        print(f'\nfinetune: interrupted at step {trainer.step}; {kept}', file=sys.stderr)
        return EXIT_INTERRUPTED
    after = report['validation']['after']
    before = report['validation']['before']
    say(f"done in {time.monotonic() - started:.0f} s: AbsRel {before['abs_rel']:.4f} -> "
        f"{after['abs_rel']:.4f}, RMSE {before['rmse']:.3f} -> {after['rmse']:.3f} m, delta1 "
        f"{before['delta1']:.3f} -> {after['delta1']:.3f}; wrote {out} and "
        f"{out.with_suffix('.json').name}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
