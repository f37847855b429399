"""``benchmark --precisions fp32,int8``: fp32 against int8 per backend and thread count, one run.

For each model, backend (``--backends``, default the CPU runtimes that quantize: openvino,
onnxruntime) and thread count (``--thread-counts``, default 1 and every usable core), the
estimator is built as depth_node builds it with ``inference.precision: int8``; the calibration
images (``--calibration``: a folder or ``recording.mcap:/topic``; default the benchmark's
synthetic frames) are quantized exactly as in the node (``midas_ros.quantization``), then the
network alone is timed on one preprocessed input, fp32 and int8 forwards *alternating*, so a
load that comes and goes on a shared machine hits both alike. Printed per row: median and p90
forward ms of each, the int8 speed-up (below 1.00x: int8 is slower there), the seconds the
quantization took (0 for a cache hit) and int8's accuracy against fp32 on the held-out
calibration inputs (relative inverse depth after per-frame scale-and-shift alignment: median
and 95th percentile of the relative error, delta1) -- the figures the node logs and gates on.

With random weights (no ``--weights``; the network depth_node runs with ``model.pretrained:
false``) the accuracy describes the quantization of a random network, not of the official one,
and the gate is off (``int8_max_error`` unbounded) so that the speed is measured anyway;
with a checkpoint the node's default limit applies and a refused quantization is a row saying
why.
"""
import os
import tempfile
import time
from dataclasses import dataclass
from typing import List, Optional

UNBOUNDED_ERROR = 1000.0   # inference.int8_max_error's maximum: 100000 %, no gate


@dataclass
class PrecisionRow:
    model: str
    backend: str
    threads: int
    net_input: str
    fp32_ms: List[float]
    int8_ms: List[float]
    quantize_s: float
    accuracy: Optional[object]
    note: str = ''


def thread_counts(text):
    """``--thread-counts``: '1,2' -> [1, 2]; '' -> [1, usable cores] (one if a single core)."""
    from midas_ros.inference import usable_cpu_count
    if text:
        return [int(x) for x in text.split(',')]
    return sorted({1, usable_cpu_count()})


def write_frames(folder, frames):
    """The benchmark's synthetic frames as PNG files: a calibration folder for the node."""
    import cv2
    for index, rgb in enumerate(frames):
        cv2.imwrite(os.path.join(folder, f'{index:03d}.png'), rgb[..., ::-1])
    return folder


def measure_row(model_name, backend, threads, args, calibration, frames, max_error):
    """One ``PrecisionRow``: quantize (or load from the cache), then alternate forwards."""
    import torch

    from midas_ros.inference import DepthEstimator
    estimator = DepthEstimator(model_name, device='cpu', pretrained=args.weights is not None,
                               weights=args.weights, cpu_threads=threads, backend=backend,
                               precision='int8', calibration=calibration,
                               calibration_frames=args.calibration_frames,
                               int8_max_error=max_error, int8_background=False,
                               cache_dir=args.cache_dir or None)
    int8 = estimator.int8
    start, wall_start = time.perf_counter(), time.time()
    estimator.predict(frames[0])    # the folder / recording quantizes at the first frame
    for rgb in frames[1:]:
        if int8.state != 'collecting':
            break
        estimator.predict(rgb)      # live source: the frames themselves calibrate
    quantize_s = time.perf_counter() - start
    # Made before this row started: another row (thread count) or an earlier run made it.
    cached = int8.artefact is not None and int8.artefact.stat().st_mtime < wall_start
    with torch.inference_mode():
        net_input = estimator.preprocessor(torch.from_numpy(frames[0]), 'rgb').clone()
        net = f'{net_input.shape[3]}x{net_input.shape[2]}'
        if int8.state != 'int8':
            return PrecisionRow(model_name, backend, threads, net, [], [], quantize_s,
                                int8.accuracy, int8.reason)
        estimator.predict(frames[0])    # swaps the int8 runner in
        fp32_runner, int8_runner = estimator._fp32_runner, estimator.runner
        fp32_ms, int8_ms = [], []
        for index in range(args.warmup + args.frames):
            for runner, times in ((fp32_runner, fp32_ms), (int8_runner, int8_ms)):
                tick = time.perf_counter()
                runner(net_input)
                if index >= args.warmup:
                    times.append((time.perf_counter() - tick) * 1e3)
    return PrecisionRow(model_name, backend, threads, net, fp32_ms, int8_ms,
                        0.0 if cached else quantize_s, int8.accuracy,
                        'graph from the cache' if cached else '')


def run_precisions(args):
    """Measure and print the fp32 / int8 table (``benchmark --precisions fp32,int8``)."""
    from midas_ros.backends.quantize import cpu_has_vnni
    from midas_ros.tools.benchmark import (BenchmarkError, hardware_description, median_p90,
                                           synthetic_frames)
    models = args.models.split(',')
    backends = args.backends.split(',')
    max_error = UNBOUNDED_ERROR if args.weights is None else args.int8_max_error
    frames, _, _ = synthetic_frames(args.width, args.height,
                                    count=max(args.calibration_frames, 2))
    rows = []
    with tempfile.TemporaryDirectory(prefix='midas_int8_') as folder:
        calibration = args.calibration or write_frames(folder, frames)
        for model_name in models:
            for backend in backends:
                for threads in thread_counts(args.thread_counts):
                    try:
                        rows.append(measure_row(model_name, backend, threads, args,
                                                calibration, frames, max_error))
                    except ValueError as error:   # bad source, backend that cannot int8
                        raise BenchmarkError(str(error)) from error
    source = args.calibration or f'{len(frames)} synthetic {args.width}x{args.height} frames'
    print(f'## midas_ros benchmark, fp32 vs int8 forward (network alone), '
          f'{time.strftime("%Y-%m-%d %H:%M")} UTC')
    print(f'Hardware: {hardware_description("cpu")}; 8-bit dot-product instructions (VNNI): '
          f'{"yes" if cpu_has_vnni() else "no"}')
    print(f"{'weights ' + args.weights if args.weights else 'random weights (int8 gate off)'}; "
          f'calibration: {source}, every 4th held out for the accuracy; {args.frames} timed '
          f'forwards of each precision, alternating, after {args.warmup} warm-up.\n')
    print('| model | backend | threads | net input | fp32 ms (median / p90) | int8 ms (median '
          '/ p90) | int8 speed-up | quantize s | int8 vs fp32: median / p95 rel. error, '
          'delta1 |')
    print('|---|---|---|---|---|---|---|---|---|')
    for row in rows:
        accuracy = ('-' if row.accuracy is None else
                    f'{row.accuracy.median:.2%} / {row.accuracy.p95:.2%}, '
                    f'{row.accuracy.delta1:.4f}')
        if not row.int8_ms:
            print(f'| {row.model} | {row.backend} | {row.threads} | {row.net_input} | - | - | '
                  f'- | {row.quantize_s:.1f} | {accuracy} ({row.note}) |')
            continue
        fp32, fp32_p90 = median_p90(row.fp32_ms)
        int8, int8_p90 = median_p90(row.int8_ms)
        print(f'| {row.model} | {row.backend} | {row.threads} | {row.net_input} | '
              f'{fp32:.1f} / {fp32_p90:.1f} | {int8:.1f} / {int8_p90:.1f} | '
              f'{fp32 / int8:.2f}x | '
              f"{row.quantize_s:.1f}{' (cached)' if row.note else ''} | {accuracy} |")
    return rows


def node_parameters(args, folder):
    """depth_node parameters for ``benchmark --node --precision int8``: calibrated on
    ``--calibration-frames`` views of the benchmark's synthetic scene (written to ``folder``)
    unless ``--calibration``, so the node quantizes at warm-up and serves int8 from its first
    measured frame."""
    if args.precision != 'int8':
        return {} if args.precision == 'auto' else {'inference.precision': args.precision}
    if args.calibration:
        calibration = args.calibration
    else:
        from midas_ros.tools.benchmark import synthetic_frames
        frames, _, _ = synthetic_frames(args.width, args.height, args.calibration_frames)
        calibration = write_frames(folder, frames)
    params = {'inference.precision': 'int8', 'inference.calibration': calibration,
              'inference.calibration_frames': args.calibration_frames}
    params['inference.int8_max_error'] = (UNBOUNDED_ERROR if args.weights is None
                                          else args.int8_max_error)
    return params


def int8_log_lines(log_path):
    """The node's int8 result lines (accepted / refused) from its log."""
    try:
        with open(log_path, errors='replace') as log:
            return [line.strip() for line in log if 'int8 accepted' in line
                    or 'int8 refused' in line or 'int8 failed' in line]
    except OSError:
        return []


def add_arguments(parser):
    """The benchmark's int8 options."""
    parser.add_argument('--precisions', default='',
                        help="'fp32,int8': time fp32 and int8 forwards per backend and thread "
                             'count in one run, with int8 accuracy against fp32')
    parser.add_argument('--backends', default='openvino,onnxruntime',
                        help='--precisions: backends compared (default %(default)s)')
    parser.add_argument('--thread-counts', default='',
                        help='--precisions: comma-separated thread counts (default: 1 and '
                             'every usable core)')
    parser.add_argument('--precision', default='auto',
                        choices=('auto', 'fp32', 'fp16', 'bf16', 'int8'),
                        help="--node: depth_node's inference.precision (default %(default)s)")
    parser.add_argument('--calibration', default='',
                        help='int8 calibration: a folder of images or recording.mcap:/topic '
                             "(default: the benchmark's synthetic frames)")
    parser.add_argument('--calibration-frames', type=int, default=32,
                        help='int8: calibration images (default %(default)s)')
    parser.add_argument('--int8-max-error', type=float, default=0.1,
                        help='int8 gate with --weights (random weights: off; default '
                             '%(default)s)')
    parser.add_argument('--cache-dir', default='',
                        help='artefact cache (default $MIDAS_ROS_CACHE or '
                             '~/.cache/midas_ros/engines)')


def check_precisions(args):
    """An error line for bad --precisions options, or None."""
    if args.precisions and set(args.precisions.split(',')) != {'fp32', 'int8'}:
        return "--precisions: only 'fp32,int8' is compared"
    if args.calibration_frames < 2:
        return '--calibration-frames must be at least 2'
    if args.precisions and args.node:
        return '--precisions times the network in-process; use --node --precision int8'
    return None
