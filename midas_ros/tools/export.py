"""``python -m midas_ros export``: build a backend's artefact ahead of time.

Exports a MiDaS variant for the network input size a camera of ``--width`` x ``--height`` gives
(the graphs have static shapes: a camera stream has one size). Without ``--output`` the artefact
goes into the cache, exactly where ``depth_node`` with that backend, model, weights, precision and
image size will look, so a robot's first start is as fast as its second. With ``--output`` the
file is written there instead (``--format openvino``: ``PATH.xml`` + ``PATH.bin``).

Example::

    python -m midas_ros export --model midas_v21_small_256 --weights midas_v21_small_256.pt \\
        --format openvino --width 640 --height 480
"""
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from midas_ros.tools.infer import add_network_arguments

# Export format -> the backend that runs it (whose cache entry it fills).
FORMATS = {'onnx': 'onnxruntime', 'openvino': 'openvino', 'tensorrt': 'tensorrt'}
# The artefact's files inside a cache entry, and the suffix each takes next to --output.
_FILES = {'onnx': (('model.onnx', ''),), 'tensorrt': (('model.engine', ''),),
          'openvino': (('model.xml', '.xml'), ('model.bin', '.bin'))}


class ExportError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def build_parser():
    from midas_ros.models.registry import list_models
    parser = argparse.ArgumentParser(
        prog='python -m midas_ros export',
        description='Export a MiDaS or Depth Anything V2 model to ONNX, OpenVINO IR or a '
                    'TensorRT engine.')
    parser.add_argument('--model', required=True, choices=list_models(), metavar='NAME',
                        help='model; one of: ' + ', '.join(list_models()))
    add_network_arguments(parser)
    parser.add_argument('--format', required=True, choices=tuple(FORMATS))
    parser.add_argument('--precision', default='auto', choices=('auto', 'fp32', 'fp16', 'bf16'),
                        help="default auto: what depth_node's inference.precision auto picks "
                             'for this format, variant and device (onnx, openvino: fp32; '
                             'tensorrt: by the GPU, see docs/backends.md), so the node finds the '
                             'artefact; onnx: fp32 only; openvino: fp16 also halves the IR '
                             'weights; tensorrt: engine precision')
    parser.add_argument('--width', type=int, default=640, help='camera image width (640)')
    parser.add_argument('--height', type=int, default=480, help='camera image height (480)')
    parser.add_argument('--device', default='auto',
                        help='tensorrt: the CUDA device to build for (auto | cuda | cuda:N)')
    parser.add_argument('--cache-dir', type=Path,
                        help='artefact cache (default: $MIDAS_ROS_CACHE or '
                             '~/.cache/midas_ros/engines)')
    parser.add_argument('--output', '-o', type=Path,
                        help='write the artefact here instead of into the cache')
    return parser


def export_precision(format, precision, device, cfg):
    """``(precision, reason)`` of an export: 'auto' resolves as depth_node's does.

    So the artefact lands under the cache key the node looks for: ONNX Runtime runs fp32 on any
    device, OpenVINO runs on the CPU (fp32), TensorRT by the GPU's compute capability.
    """
    from midas_ros.inference import choose_precision
    if format == 'onnx' and precision == 'auto':
        return 'fp32', 'ONNX Runtime runs fp32'
    return choose_precision(precision, device, cfg)


def run(args):
    from midas_ros.backends import BackendError, export_artefact
    from midas_ros.backends.onnx_export import export_onnx
    from midas_ros.inference import resolve_device
    from midas_ros.models import WeightsError, create_model, resolve_config
    from midas_ros.models.transforms import network_input_size
    try:
        cfg = resolve_config(args.model, args.input_size, args.max_depth)
    except ValueError as error:
        raise ExportError(str(error)) from error
    if args.format == 'onnx' and args.precision not in ('auto', 'fp32'):
        raise ExportError('--format onnx exports fp32 only (openvino and tensorrt offer fp16)')
    try:
        net_w, net_h = network_input_size(cfg, args.width, args.height)
        device = resolve_device('cpu' if args.format != 'tensorrt' else args.device)
        precision, reason = export_precision(args.format, args.precision, device, cfg)
        model = create_model(args.model, pretrained=args.pretrained, weights=args.weights,
                             weights_dir=args.weights_dir, max_depth=args.max_depth)
    except (WeightsError, OSError, ValueError) as error:
        raise ExportError(f'cannot load {args.model}: {error}') from error
    if not args.pretrained:
        sys.stderr.write('export: warning: random weights (--pretrained false)\n')
    print(f'{args.model}: {args.width}x{args.height} images -> network input {net_w}x{net_h}, '
          f'{precision} ({reason})', flush=True)
    try:
        if args.format == 'onnx' and args.output:   # plain ONNX: no runtime needed
            _atomic_output(args.output, lambda tmp: export_onnx(model, cfg, net_w, net_h, tmp))
            print(f'wrote {args.output}')
            return 0
        artefact = export_artefact(FORMATS[args.format], model, cfg, device, precision,
                                   net_w, net_h, args.cache_dir)
    except BackendError as error:
        raise ExportError(str(error)) from error
    if not args.output:
        print(f'cached {artefact}')
        return 0
    for name, suffix in _FILES[args.format]:
        target = args.output.with_suffix(suffix) if suffix else args.output
        _atomic_output(target, lambda tmp: shutil.copyfile(artefact / name, tmp))
        print(f'wrote {target}')
    return 0


def _atomic_output(path, write):
    """``write(tmp_path)`` next to ``path``, then rename it there: no half-written outputs."""
    from midas_ros.backends.cache import current_umask
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    os.close(handle)
    os.chmod(tmp, 0o666 & ~current_umask())   # mkstemp's 0o600 is for secrets, not models
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except ExportError as error:
        sys.stderr.write(f'export: error: {error}\n')
        return 1


if __name__ == '__main__':
    sys.exit(main())
