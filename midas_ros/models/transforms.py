"""MiDaS preprocessing: the official OpenCV path as a reference, and the same maths on any device.

The official pipeline (``run.py`` + ``midas/transforms.py``) reads an image with OpenCV, converts
it to RGB in [0, 1] (float64), resizes it with ``cv2.INTER_CUBIC`` to a network size chosen by the
variant's rule, normalizes it with the variant's mean/std and feeds it as a 1x3xHxW float32 tensor.

* ``network_input_size`` reproduces the official ``Resize.get_size`` bit for bit.
* ``reference_preprocess`` is that CPU path, op for op: the specification and the test oracle.
* ``DevicePreprocessor`` does the same on the model's device from a uint8 HxWxC tensor with torch
  ops (bicubic ``F.interpolate`` without antialiasing, which matches OpenCV's cubic kernel:
  a = -0.75, half-pixel centres, replicated border), into buffers reused across frames.
"""
import cv2
import numpy as np
import torch

# Where each supported channel order keeps R, G and B (mono: the one channel serves all three).
CHANNEL_SOURCES = {
    'rgb': (0, 1, 2),
    'bgr': (2, 1, 0),
    'rgba': (0, 1, 2),
    'bgra': (2, 1, 0),
    'mono': (0, 0, 0),
}
_CHANNEL_COUNTS = {'rgb': 3, 'bgr': 3, 'rgba': 4, 'bgra': 4, 'mono': 1}
# ``F.interpolate`` arguments of the official output resizing, by ``ModelConfig.upsampling``:
# MiDaS run.py and Depth Anything V2 infer_image.
OFFICIAL_UPSAMPLING = {'bicubic': {'mode': 'bicubic', 'align_corners': False},
                       'bilinear': {'mode': 'bilinear', 'align_corners': True}}


def _constrain_to_multiple_of(x, multiple_of, max_val=None, min_val=0):
    """The official ``Resize.constrain_to_multiple_of`` (round half to even, then the bounds)."""
    y = int(np.round(x / multiple_of) * multiple_of)
    if max_val is not None and y > max_val:
        y = int(np.floor(x / multiple_of) * multiple_of)
    # min_val: 0 for the MiDaS rules (a size of 0 is caught by the caller with a message
    # instead of OpenCV's assertion), the net size for Depth Anything's lower_bound.
    if y < min_val:
        y = int(np.ceil(x / multiple_of) * multiple_of)
    return y


def network_input_size(cfg, width, height):
    """``(net_w, net_h)`` the official ``Resize`` gives an image of ``width`` x ``height``.

    ``upper_bound`` scales the image to fit inside ``cfg.net_w`` x ``cfg.net_h``; ``minimal``
    scales it as little as possible so that one side reaches the net size; ``lower_bound``
    (Depth Anything V2) so that both sides reach at least the net size; without
    ``keep_aspect_ratio`` each side is scaled on its own. Sides are then rounded to
    ``cfg.multiple_of`` (the floating-point operations are the official ones, in the same order,
    so ties round the same way). Raises ValueError for an empty image or one so elongated that a
    side would round to zero.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f'cannot preprocess an empty image ({width}x{height})')
    scale_height = cfg.net_h / height
    scale_width = cfg.net_w / width
    if cfg.keep_aspect_ratio:
        if cfg.resize_mode == 'upper_bound':
            fit_width = scale_width < scale_height
        elif cfg.resize_mode == 'lower_bound':
            fit_width = scale_width > scale_height
        elif cfg.resize_mode == 'minimal':
            fit_width = abs(1 - scale_width) < abs(1 - scale_height)
        else:
            raise ValueError(f"resize mode '{cfg.resize_mode}' is not implemented")
        if fit_width:
            scale_height = scale_width
        else:
            scale_width = scale_height
    if cfg.resize_mode == 'upper_bound':
        new_height = _constrain_to_multiple_of(scale_height * height, cfg.multiple_of, cfg.net_h)
        new_width = _constrain_to_multiple_of(scale_width * width, cfg.multiple_of, cfg.net_w)
    elif cfg.resize_mode == 'lower_bound':
        new_height = _constrain_to_multiple_of(scale_height * height, cfg.multiple_of,
                                               min_val=cfg.net_h)
        new_width = _constrain_to_multiple_of(scale_width * width, cfg.multiple_of,
                                              min_val=cfg.net_w)
    elif cfg.resize_mode == 'minimal':
        new_height = _constrain_to_multiple_of(scale_height * height, cfg.multiple_of)
        new_width = _constrain_to_multiple_of(scale_width * width, cfg.multiple_of)
    else:
        raise ValueError(f"resize mode '{cfg.resize_mode}' is not implemented")
    if new_width <= 0 or new_height <= 0:
        raise ValueError(
            f'image {width}x{height} is too elongated for {cfg.name}: its network input would be '
            f'{new_width}x{new_height}')
    return new_width, new_height


def reference_preprocess(rgb_uint8, cfg):
    """The official CPU preprocessing of an RGB uint8 HxWx3 image: a 1x3xHxW float32 array.

    Deliberately the official sequence of operations, float64 included: it is the oracle the
    device implementation is tested against and what ``infer`` uses to reproduce ``run.py``.
    """
    rgb_uint8 = np.asarray(rgb_uint8)
    if rgb_uint8.dtype != np.uint8 or rgb_uint8.ndim != 3 or rgb_uint8.shape[2] != 3:
        raise ValueError(
            f'expected an RGB uint8 HxWx3 image, got {rgb_uint8.dtype} {rgb_uint8.shape}')
    height, width = rgb_uint8.shape[:2]
    net_w, net_h = network_input_size(cfg, width, height)
    image = rgb_uint8 / 255.0
    image = cv2.resize(image, (net_w, net_h), interpolation=cv2.INTER_CUBIC)
    image = (image - np.asarray(cfg.mean)) / np.asarray(cfg.std)
    return np.ascontiguousarray(image.transpose(2, 0, 1)).astype(np.float32)[None]


def check_image(image, channel_order):
    """ValueError unless ``image`` (numpy array or tensor) is uint8 and fits ``channel_order``."""
    if channel_order not in CHANNEL_SOURCES:
        raise ValueError(
            f"unknown channel order '{channel_order}'; valid: {', '.join(CHANNEL_SOURCES)}")
    channels = 1 if image.ndim == 2 else (image.shape[2] if image.ndim == 3 else None)
    dtype_ok = image.dtype in (np.uint8, torch.uint8)
    if not dtype_ok or channels != _CHANNEL_COUNTS[channel_order]:
        raise ValueError(
            f"expected a uint8 image with {_CHANNEL_COUNTS[channel_order]} channel(s) for channel "
            f"order '{channel_order}', got {image.dtype} of shape {tuple(image.shape)}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f'cannot preprocess an empty image of shape {tuple(image.shape)}')


class DevicePreprocessor:
    """Official-equivalent preprocessing with torch ops on one device, into reused buffers.

    ``__call__(image, channel_order)`` takes a uint8 HxW or HxWxC tensor already on ``device``
    and returns the normalized 1x3xHxW float32 network input (in ``channels_last`` layout when
    asked, which is what the model then consumes without another copy). The returned tensor is a
    buffer reused by the next call of the same image size: consume it before calling again.

    The official order is scale (/255), resize, normalize. Resizing is linear with weights summing
    to one, so the scale is folded into the normalization: ``x * (1 / (255 std)) - mean / std``
    is applied once to the small resized image instead of the full-size one.
    """

    def __init__(self, cfg, device='cpu', channels_last=True):
        self.cfg = cfg
        # The canonical form ('cuda' -> 'cuda:0'), so that it compares equal to tensors' devices.
        self.device = torch.empty(0, device=device).device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        std = torch.tensor(cfg.std, dtype=torch.float64)
        mean = torch.tensor(cfg.mean, dtype=torch.float64)
        self._gain = (1.0 / (255.0 * std)).float().view(1, 3, 1, 1).to(self.device)
        self._offset = (-mean / std).float().view(1, 3, 1, 1).to(self.device)
        self._shape = None
        self._staging = None
        self._net_input = None

    def output_size(self, width, height):
        """The network input size (width, height) for an image of this size."""
        return network_input_size(self.cfg, width, height)

    def _buffers_for(self, height, width):
        if self._shape != (height, width):
            net_w, net_h = network_input_size(self.cfg, width, height)
            # The staging buffer is NCHW in channels_last layout, i.e. HxWx3 in memory, so filling
            # it from an HxWxC image is a plain dtype conversion; the bicubic kernel keeps that
            # layout for its output.
            self._staging = torch.empty((1, 3, height, width), dtype=torch.float32,
                                        device=self.device, memory_format=self.memory_format)
            self._net_input = torch.empty((1, 3, net_h, net_w), dtype=torch.float32,
                                          device=self.device, memory_format=self.memory_format)
            self._shape = (height, width)
        return self._staging, self._net_input

    def __call__(self, image, channel_order='rgb'):
        check_image(image, channel_order)
        if image.device != self.device:
            raise ValueError(f'image is on {image.device}, the preprocessor on {self.device}')
        height, width = image.shape[:2]
        staging, net_input = self._buffers_for(height, width)
        pixels = image if image.ndim == 3 else image.unsqueeze(2)
        if channel_order in ('rgb', 'rgba') and self.memory_format == torch.channels_last:
            staging[0].permute(1, 2, 0).copy_(pixels[..., :3])   # one contiguous conversion
        else:
            for target, source in enumerate(CHANNEL_SOURCES[channel_order]):
                staging[0, target].copy_(pixels[..., source])
        # antialias=False is what matches cv2.INTER_CUBIC (antialiasing changes the depth by
        # several percent when downscaling).
        torch.ops.aten.upsample_bicubic2d.out(
            staging, [net_input.shape[2], net_input.shape[3]], False, None, None, out=net_input)
        return net_input.mul_(self._gain).add_(self._offset)


def upsample_prediction(prediction, height, width, out=None, mode='bicubic'):
    """Upsample an NxHxW prediction to ``height`` x ``width`` as the official pipeline does.

    ``mode`` (the variant's ``ModelConfig.upsampling``): ``'bicubic'`` is MiDaS ``run.py``'s
    ``F.interpolate(mode='bicubic', align_corners=False)`` on float32; ``'bilinear'`` is Depth
    Anything V2 ``infer_image``'s ``F.interpolate(mode='bilinear', align_corners=True)``.
    Returns Nx1xHxW, written into ``out`` when given (a contiguous float32 tensor of that shape
    on the prediction's device). Bicubic on the CPU is done by OpenCV's ``INTER_CUBIC``: the
    same kernel (a = -0.75, half-pixel centres, replicated border) 20x faster than torch's CPU
    kernel (0.2 vs 4 ms for 256x192 -> 640x480 on one core), equal to it within float rounding
    (1.5e-5 of the range). OpenCV has no align_corners=True bilinear: torch's kernel does it.
    """
    if mode not in OFFICIAL_UPSAMPLING:
        raise ValueError(f"upsampling mode must be 'bicubic' or 'bilinear', got '{mode}'")
    prediction = prediction.unsqueeze(1).float()
    if out is None:
        out = torch.empty((prediction.shape[0], 1, height, width), dtype=torch.float32,
                          device=prediction.device)
    if mode == 'bilinear':
        torch.ops.aten.upsample_bilinear2d.out(prediction, [height, width], True, None, None,
                                               out=out)
        return out
    if prediction.device.type != 'cpu':
        torch.ops.aten.upsample_bicubic2d.out(prediction, [height, width], False, None, None,
                                              out=out)
        return out
    if not out.is_contiguous():
        raise ValueError('out must be a contiguous float32 tensor')
    for source, target in zip(prediction[:, 0].numpy(), out[:, 0].numpy()):
        cv2.resize(np.ascontiguousarray(source), (width, height), dst=target,
                   interpolation=cv2.INTER_CUBIC)
    return out
