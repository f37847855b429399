"""``python -m midas_ros infer``: offline inference on image files, like the official run.py.

For each image writes ``<output>/<stem>.npy`` (float32, the image's height x width: the quantity
and scale of the official pipeline -- relative inverse depth for MiDaS and the relative Depth
Anything V2 models, metres for the metric ones, as ``metric_depth/run.py --save-numpy``) and
``<output>/<stem>.png`` (the same, min-max normalized and coloured with the inferno colormap).

Example::

    python -m midas_ros infer --model midas_v21_small_256 --weights midas_v21_small_256.pt \\
        --output out/ photos/*.jpg
"""
import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm', '.pgm')


class InferError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _bool(text):
    value = text.strip().lower()
    if value in ('1', 'true', 'yes', 'on'):
        return True
    if value in ('0', 'false', 'no', 'off'):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def add_network_arguments(parser):
    """The options that choose the network's weights and shape, the same for ``infer`` and
    ``export``: --weights, --input-size, --max-depth, --weights-dir, --pretrained (depth_node's
    model.weights, model.input_size, model.max_depth, model.weights_dir, model.pretrained)."""
    parser.add_argument('--weights', type=Path, help='checkpoint file (official .pt / .pth)')
    parser.add_argument('--input-size', type=int, default=0,
                        help='network input size of Depth Anything V2 (a multiple of 14; '
                             'smaller is faster and less accurate); 0 (default): 518')
    parser.add_argument('--max-depth', type=float, default=0.0,
                        help="metric models: metres of the network's full-scale output; "
                             "0 (default): the checkpoint's (20 indoor, 80 outdoor)")
    parser.add_argument('--weights-dir', type=Path,
                        help='folder searched for the official checkpoint file name')
    parser.add_argument('--pretrained', type=_bool, default=True, metavar='{true,false}',
                        help='false: random weights, for smoke tests (default: true)')


def build_parser():
    from midas_ros.inference import BACKENDS, PRECISIONS
    from midas_ros.models.registry import list_models
    parser = argparse.ArgumentParser(
        prog='python -m midas_ros infer',
        description='Depth of image files with a MiDaS or Depth Anything V2 model (.npy + .png): '
                    'relative inverse depth, or metres for a metric model.')
    parser.add_argument('images', nargs='+', metavar='IMAGE',
                        help='image files, or folders whose images are all processed')
    parser.add_argument('--model', default='midas_v21_small_256', choices=list_models(),
                        metavar='NAME', help='model (default: %(default)s); one of: '
                        + ', '.join(list_models()))
    add_network_arguments(parser)
    parser.add_argument('--allow-download', action='store_true',
                        help='download the official checkpoint if it is found nowhere')
    parser.add_argument('--device', default='auto', help='auto | cpu | cuda | cuda:N')
    # int8 needs a calibration set and an accuracy check first: depth_node and
    # `benchmark --precisions fp32,int8` run it.
    parser.add_argument('--precision', default='auto',
                        choices=[p for p in PRECISIONS if p != 'int8'])
    parser.add_argument('--backend', default='torch', choices=BACKENDS,
                        help='runtime of the network (default: %(default)s); the others export '
                             'it on first use into the artefact cache')
    parser.add_argument('--cache-dir', type=Path,
                        help='artefact cache of the exported backends (default: '
                             '$MIDAS_ROS_CACHE or ~/.cache/midas_ros/engines)')
    parser.add_argument('--mode', default='auto', choices=('auto', 'exact', 'fast'),
                        help='exact: OpenCV preprocessing and NCHW layout, bit-identical to the '
                             'official run.py on a CPU in fp32; fast: preprocessing on the '
                             'device and channels_last; auto (default): exact on a CPU in fp32')
    parser.add_argument('--output', '-o', type=Path, required=True, help='output folder')
    return parser


def image_files(paths):
    """The files named, folders expanded to their image files (sorted); InferError if none."""
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES))
        else:
            files.append(path)
    if not files:
        raise InferError('no images to process')
    return files


def read_rgb(path):
    """The image as RGB uint8, read like the official ``utils.read_image`` (3-channel OpenCV)."""
    if not path.is_file():
        raise InferError(f'no such image file: {path}')
    # imread, not imdecode: it applies EXIF orientation exactly as the official reader does.
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InferError(f'cannot read image {path} (missing, or not an image OpenCV decodes)')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def colorize(depth):
    """Inferno-coloured BGR uint8 image of ``depth``, min-max normalized (non-finite -> 0)."""
    depth = np.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(depth.min()), float(depth.max())
    scale = 255.0 / (high - low) if high - low > np.finfo(np.float32).eps else 0.0
    return cv2.applyColorMap(((depth - low) * scale).astype(np.uint8), cv2.COLORMAP_INFERNO)


def _runs_fp32_on_cpu(args):
    """Whether the estimator will run on the CPU in fp32 (where exact parity is possible)."""
    from midas_ros.inference import resolve_device, resolve_precision
    from midas_ros.models.registry import get_config
    device = resolve_device(args.device)
    return (device.type == 'cpu'
            and resolve_precision(args.precision, device, get_config(args.model)) == 'fp32')


def run(args):
    from midas_ros.inference import BackendError, DepthEstimator
    from midas_ros.models import WeightsError
    files = image_files(args.images)
    # Measured against the official run.py (same random-weight checkpoint, midas_v21_small_256,
    # 640x480, 480x640, 500x333, 97x61): the 'fast' path differs by up to 3.4e-5 of the depth's
    # maximum -- torch's bicubic computes source coordinates in float32 where OpenCV uses float64
    # (up to 2e-5 of the input range), and channels_last picks other oneDNN convolution kernels
    # (1.4e-5 alone). Both are far below the 1e-3 budget but not zero, and near-zero depth pixels
    # magnify them element-wise (5e-3 relative seen). The 'exact' path (OpenCV reference
    # preprocessing, NCHW) matched run.py bit for bit on all four, so it is the CPU default: an
    # offline tool can afford a 1 ms OpenCV resize.
    try:
        exact = args.mode == 'exact' or (args.mode == 'auto' and _runs_fp32_on_cpu(args))
        estimator = DepthEstimator(
            args.model, device=args.device, pretrained=args.pretrained, weights=args.weights,
            weights_dir=args.weights_dir, allow_download=args.allow_download,
            precision=args.precision, channels_last=not exact, backend=args.backend,
            cache_dir=args.cache_dir, input_size=args.input_size,
            max_depth=args.max_depth)
    except (WeightsError, BackendError, OSError, ValueError) as error:
        raise InferError(f'cannot load {args.model}: {error}') from error
    if not args.pretrained:
        sys.stderr.write('infer: warning: random weights (--pretrained false): the depth is '
                         'meaningless\n')
    args.output.mkdir(parents=True, exist_ok=True)
    failures = 0
    for path in files:
        try:
            depth = _infer_one(estimator, path, exact)
        except InferError as error:   # report it and go on with the other images
            sys.stderr.write(f'infer: error: {error}\n')
            failures += 1
            continue
        np.save(args.output / f'{path.stem}.npy', depth)
        cv2.imwrite(str(args.output / f'{path.stem}.png'), colorize(depth))
        print(f'{path} -> {args.output / path.stem}.npy/.png  {depth.shape[1]}x{depth.shape[0]}'
              f'  {1e3 * sum(estimator.last_timings.values()):.0f} ms', flush=True)
    return 1 if failures else 0


def _infer_one(estimator, path, exact):
    from midas_ros.inference import BackendError
    from midas_ros.models.transforms import reference_preprocess
    rgb = read_rgb(path)
    height, width = rgb.shape[:2]
    try:
        if exact:
            return estimator.predict_preprocessed(
                reference_preprocess(rgb, estimator.config), height, width)
        return estimator.predict(rgb, 'rgb')
    except (BackendError, ValueError) as error:
        raise InferError(f'{path}: {error}') from error


def main(argv=None):
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run(args)
    except InferError as error:
        sys.stderr.write(f'infer: error: {error}\n')
        return 1


if __name__ == '__main__':
    sys.exit(main())
