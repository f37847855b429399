"""LeViT-384 encoder of DPT (dpt_levit_224) and the transposed-conv stem of its decoder.

LeViT is a convolution-stem transformer with two subsampling attention stages: taps at the end of
its three stages give a 1/16, 1/32, 1/64 pyramid (14, 7 and 4 patches at 224x224: subsampling
keeps the first of every two rows, hence the ceiling). Its attention biases are laid out for one
resolution, so it takes exactly 224x224. The decoder upsamples the finest fused map 4x with
``stem_transpose`` (two stride-2 transposed convs, the mirror image of LeViT's stem).
"""
import math
from collections import OrderedDict
from typing import List

import torch
from torch import nn

from midas_ros.models.backbones import check_input_size, tokens_to_map


class LevitBackbone(nn.Module):
    """Taps blocks ``cfg.hooks`` (indices into timm's flat ``blocks``), one per LeViT stage."""

    def __init__(self, cfg):
        super().__init__()
        import timm  # deferred: importing timm takes seconds
        self.model = timm.create_model(cfg.timm_name, pretrained=False)
        self.name = cfg.name
        self.hooks = tuple(cfg.hooks)
        self.out_channels = tuple(self.model.embed_dim)
        self.input_size = tuple(self.model.default_cfg['input_size'][1:])
        self.patch_size = 16  # the stride of LeViT's conv stem (stem_b16)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        check_input_size(x, self.input_size, self.name)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        tokens = self.model.patch_embed(x).flatten(2).transpose(1, 2)
        taps = []
        for index, block in enumerate(self.model.blocks[:max(self.hooks) + 1]):
            tokens = block(tokens)
            if index in self.hooks:
                taps.append(tokens)
        return [tokens_to_map(tap, (math.ceil(grid[0] / 2 ** level),
                                    math.ceil(grid[1] / 2 ** level)))
                for level, tap in enumerate(taps)]


class ConvTransposeNorm(nn.Sequential):
    """Bias-free transposed conv + BatchNorm (named ``c``, ``bn`` like timm's ``ConvNorm``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int, stride: int, padding: int,
                 output_padding: int):
        super().__init__(OrderedDict([
            ('c', nn.ConvTranspose2d(in_chs, out_chs, kernel_size, stride, padding,
                                     output_padding=output_padding, bias=False)),
            ('bn', nn.BatchNorm2d(out_chs)),
        ]))


def make_stem_transpose(in_chs: int, out_chs: int) -> nn.Sequential:
    """Two 3x3 stride-2 transposed conv-norm-hardswish stages: ``in_chs`` -> ``out_chs // 2``.

    Each stage maps n pixels to exactly 2n: the official module passes its ``dilation=1``
    positionally into ConvTranspose2d's ``output_padding`` slot, and the weights were trained so.
    """
    return nn.Sequential(
        ConvTransposeNorm(in_chs, out_chs, 3, 2, 1, output_padding=1), nn.Hardswish(),
        ConvTransposeNorm(out_chs, out_chs // 2, 3, 2, 1, output_padding=1), nn.Hardswish())
