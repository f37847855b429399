"""``python -m midas_ros gpu_check``: every backend and precision on a GPU vs. CPU fp32.

One command for a person with an NVIDIA GPU: it runs the small model and one DPT model through
every backend (torch, torch.compile, ONNX Runtime CUDA, TensorRT) at every precision it offers
(fp32, fp16, bf16), each on the same synthetic camera image, and compares each depth map with
the CPU fp32 output of the same weights: the maximum deviation as a fraction of the reference's
output range. It also reports the warm-up (export / build / compile), the median time per frame
(image in -> depth on the host) and peak memory: torch's allocator peak and the device memory in
use (which includes what TensorRT and ONNX Runtime allocate outside torch). The table is printed
and saved as JSON (``--output``).

Exit status: 0 when every combination that could run here ran and stayed within its tolerance
(combinations this machine cannot run -- a package not installed, bf16 on TensorRT 8.6 -- are
listed as skipped), 1 otherwise. Without CUDA it says so and exits 0: there is nothing to check.
``--device cpu`` runs the same matrix over the CPU backends (a check of the tool itself).

Without ``--weights-dir`` the weights are random (seeded) with the last ReLU of the DPT head
removed, as the parity tests do: random weights can zero a ReLU'd output, and zeros match
anything. Example::

    python -m midas_ros gpu_check --device cuda:0 --output gpu_check.json
"""
import argparse
import copy
import json
import sys
import time
from dataclasses import asdict, dataclass
from typing import Optional

import numpy as np

DEFAULT_MODELS = ('midas_v21_small_256', 'dpt_hybrid_384')
GPU_COMBINATIONS = (
    ('torch', 'fp32'), ('torch', 'fp16'), ('torch', 'bf16'), ('torch.compile', 'auto'),
    ('onnxruntime', 'fp32'), ('tensorrt', 'fp32'), ('tensorrt', 'fp16'), ('tensorrt', 'bf16'))
CPU_COMBINATIONS = (('torch', 'bf16'), ('onnxruntime', 'fp32'), ('openvino', 'fp32'),
                    ('openvino', 'bf16'))
# Max |output - CPU fp32| / range of the CPU fp32 output. fp32 on a GPU differs by TF32 and
# kernel choice; half precisions by their 8 (bf16) and 11 (fp16) bit mantissas through the net.
# First estimates, to be revisited with the first GPU run's numbers.
TOLERANCES = {'fp32': 0.01, 'fp16': 0.05, 'bf16': 0.1}
# BackendErrors meaning "this machine lacks it" (a package, a provider, a TensorRT feature).
_SKIP_MARKERS = ('needs the Python package', 'here lacks', 'can build neither')


@dataclass
class CheckRow:
    """One backend x precision of one model; ``status`` is 'ok', 'deviates', 'failed' or
    'skipped' (with ``detail`` saying why)."""

    model: str
    backend: str
    requested: str
    precision: str = ''
    status: str = ''
    detail: str = ''
    max_deviation: Optional[float] = None   # fraction of the reference output range
    tolerance: Optional[float] = None
    warmup_s: Optional[float] = None
    ms_per_frame: Optional[float] = None
    torch_peak_mib: Optional[float] = None
    device_used_mib: Optional[float] = None


def cuda_unavailable_reason():
    """Why CUDA cannot be used here, or None when it can."""
    import torch
    if torch.version.cuda is None:
        return f'this torch ({torch.__version__}) is a CPU-only build'
    if not torch.cuda.is_available():
        return (f'torch {torch.__version__} (CUDA {torch.version.cuda}) finds no NVIDIA driver '
                'or GPU')
    return None


def camera_view(width, height):
    """A synthetic camera view (textures, edges, a floor): an RGB uint8 HxWx3 image."""
    from midas_ros.synthetic import SceneConfig, SyntheticScene
    return SyntheticScene(SceneConfig(width=width, height=height)).render(0).rgb


def load_model(name, weights_dir=None):
    """The network of ``name``: official weights from ``weights_dir``, else seeded random ones."""
    import torch

    from midas_ros.models import create_model
    if weights_dir:
        return create_model(name, pretrained=True, weights_dir=weights_dir)
    torch.manual_seed(0)
    model = create_model(name, pretrained=False)
    # The final head: MiDaS' scratch.output_conv, Depth Anything V2's depth_head's output_conv2
    # (whose metric variant ends in a sigmoid, left as it is).
    scratch = getattr(model, 'scratch', None)
    if scratch is None:
        scratch = getattr(getattr(model, 'depth_head', None), 'scratch', None)
    head = getattr(scratch, 'output_conv', None) or getattr(scratch, 'output_conv2', None)
    if head is not None:   # see the module docstring
        for index, layer in enumerate(head):
            if isinstance(layer, torch.nn.ReLU):
                head[index] = torch.nn.Identity()
    return model


def check_combination(name, model, backend, precision, device, image, reference, frames,
                      cache_dir=None):
    """Run one combination; a CheckRow (never raises for a backend's own failure)."""
    import torch

    from midas_ros.backends import BackendError
    from midas_ros.inference import DepthEstimator
    compile = backend == 'torch.compile'
    row = CheckRow(name, backend, precision)
    cuda = torch.device(device).type == 'cuda'
    try:
        estimator = DepthEstimator(name, device=device, model=copy.deepcopy(model),
                                   precision=precision, compile=compile,
                                   backend='torch' if compile else backend, cache_dir=cache_dir)
        row.precision = estimator.precision
        if cuda:
            torch.cuda.synchronize(estimator.device)
            torch.cuda.reset_peak_memory_stats(estimator.device)
        height, width = image.shape[:2]
        row.warmup_s = estimator.warmup(width, height)
        times = []
        for _ in range(frames):
            start = time.perf_counter()
            depth = estimator.predict(image)   # returns on the host: the GPU has finished
            times.append(time.perf_counter() - start)
    except BackendError as error:
        message = str(error)
        row.status = 'skipped' if any(m in message for m in _SKIP_MARKERS) else 'failed'
        row.detail = message
        return row
    except Exception as error:   # torch.compile, CUDA: report it and go on with the others
        row.status, row.detail = 'failed', f'{type(error).__name__}: {error}'.splitlines()[0]
        return row
    row.ms_per_frame = float(np.median(times)) * 1e3
    if cuda:
        row.torch_peak_mib = torch.cuda.max_memory_allocated(estimator.device) / 2**20
        free, total = torch.cuda.mem_get_info(estimator.device)
        row.device_used_mib = (total - free) / 2**20
    span = float(reference.max() - reference.min())
    row.max_deviation = float(np.abs(depth - reference).max()) / max(span, 1e-12)
    row.tolerance = TOLERANCES[row.precision]
    finite = bool(np.isfinite(depth).all())
    row.status = 'ok' if finite and row.max_deviation <= row.tolerance else 'deviates'
    if not finite:
        row.detail = 'non-finite depth'
    del estimator
    if cuda:
        torch.cuda.empty_cache()
    return row


def run_checks(models, device, combinations, width=640, height=480, frames=10, weights_dir=None,
               cache_dir=None, say=print):
    """Every combination on every model: a list of CheckRows (``say`` reports progress)."""
    from midas_ros.inference import DepthEstimator
    image = camera_view(width, height)
    rows = []
    for name in models:
        model = load_model(name, weights_dir)
        reference = DepthEstimator(name, device='cpu', model=copy.deepcopy(model),
                                   precision='fp32').predict(image)
        for backend, precision in combinations:
            say(f'{name}: {backend} {precision} ...')
            rows.append(check_combination(name, model, backend, precision, device, image,
                                          reference, frames, cache_dir))
    return rows


def format_table(rows):
    """The rows as a fixed-width text table."""
    header = ('model', 'backend', 'precision', 'status', 'max dev % of range', 'warm-up s',
              'ms/frame', 'torch peak MiB', 'device used MiB')

    def number(value, digits):
        return '-' if value is None else f'{value:.{digits}f}'
    lines = [header]
    for row in rows:
        precision = row.precision or row.requested
        if row.requested == 'auto' and row.precision:
            precision = f'auto={row.precision}'
        deviation = '-' if row.max_deviation is None else \
            f'{100 * row.max_deviation:.3f} (<= {100 * row.tolerance:g})'
        lines.append((row.model, row.backend, precision, row.status, deviation,
                      number(row.warmup_s, 1), number(row.ms_per_frame, 2),
                      number(row.torch_peak_mib, 0), number(row.device_used_mib, 0)))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    text = ['  '.join(str(cell).ljust(width) for cell, width in zip(line, widths)).rstrip()
            for line in lines]
    text.insert(1, '  '.join('-' * width for width in widths))
    notes = [f'{row.model} {row.backend} {row.requested}: {row.status}: {row.detail}'
             for row in rows if row.detail]
    return '\n'.join(text + ([''] + notes if notes else []))


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m midas_ros gpu_check',
        description='Run every backend and precision on the GPU and compare with CPU fp32.')
    parser.add_argument('--device', default='cuda',
                        help='cuda | cuda:N (default: cuda); cpu: the CPU backends instead')
    parser.add_argument('--models', nargs='+', default=list(DEFAULT_MODELS),
                        help='variants to check (default: %(default)s)')
    parser.add_argument('--width', type=int, default=640, help='image width (640)')
    parser.add_argument('--height', type=int, default=480, help='image height (480)')
    parser.add_argument('--frames', type=int, default=10, help='timed frames per row (10)')
    parser.add_argument('--weights-dir', help='official checkpoints (default: random weights)')
    parser.add_argument('--cache-dir', help='artefact cache (default: $MIDAS_ROS_CACHE or '
                                            '~/.cache/midas_ros/engines)')
    parser.add_argument('--output', default='gpu_check.json',
                        help='JSON file of the results (default: %(default)s)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    import torch

    from midas_ros.inference import resolve_device
    from midas_ros.tools.benchmark import hardware_description
    cpu = args.device.strip().lower() == 'cpu'
    if not cpu:
        reason = cuda_unavailable_reason()
        if reason is not None:
            print(f'gpu_check: CUDA is not available here ({reason}): nothing to check. Run it '
                  'on a machine with an NVIDIA GPU and a CUDA build of torch.')
            return 0
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        sys.stderr.write(f'gpu_check: error: {error}\n')
        return 2
    hardware = hardware_description('cpu')
    if device.type == 'cuda':
        major, minor = torch.cuda.get_device_capability(device)
        hardware += (f' | {device}: {torch.cuda.get_device_name(device)} sm_{major}{minor}, '
                     f'CUDA {torch.version.cuda}')
    versions = _runtime_versions()
    print(f'Hardware: {hardware}\nRuntimes: {versions}', flush=True)
    combinations = CPU_COMBINATIONS if cpu else GPU_COMBINATIONS
    rows = run_checks(args.models, str(device), combinations, args.width, args.height,
                      args.frames, args.weights_dir, args.cache_dir,
                      say=lambda text: print(text, flush=True))
    table = format_table(rows)
    print('\n' + table)
    with open(args.output, 'w') as output:
        json.dump({'date': time.strftime('%Y-%m-%d %H:%M:%S %z'), 'hardware': hardware,
                   'runtimes': versions, 'image': f'{args.width}x{args.height}',
                   'weights': args.weights_dir or 'random (seeded)',
                   'rows': [asdict(row) for row in rows]}, output, indent=1)
    print(f'\nsaved {args.output}')
    return 1 if any(row.status in ('failed', 'deviates') for row in rows) else 0


def _runtime_versions():
    """'torch 2.x, onnxruntime 1.x, tensorrt 10.x, ...' for the packages installed here."""
    import importlib
    parts = []
    for name in ('torch', 'onnxruntime', 'tensorrt', 'openvino'):
        try:
            module = importlib.import_module(name)
        except ImportError:
            parts.append(f'{name} not installed')
            continue
        version = getattr(module, '__version__', None) or module.get_version()
        parts.append(f'{name} {version}')
    return ', '.join(parts)


if __name__ == '__main__':
    sys.exit(main())
