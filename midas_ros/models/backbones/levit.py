"""LeViT-384 encoder of DPT (dpt_levit_224), built from this module, and the transposed-conv stem
of its decoder.

LeViT is a convolution-stem transformer with two subsampling attention stages: taps at the end of
its three stages give a 1/16, 1/32, 1/64 pyramid (14, 7 and 4 patches at 224x224: subsampling
keeps the first of every two rows, hence the ceiling). Its attention biases are laid out for one
resolution, so it takes exactly 224x224. The decoder upsamples the finest fused map 4x with
``stem_transpose`` (two stride-2 transposed convs, the mirror image of LeViT's stem).

Why not timm: the official checkpoint was saved from timm 0.6.13's LeViT, a flat ``blocks``
sequence; timm 0.9 and later regrouped it into ``stages`` with other module names (almost every
key differs). Building it here keeps the checkpoint layout (the file format) and the arithmetic
fixed whatever timm is installed; names are timm 0.6.13's, and test_backbone_parity.py compares
the outputs with timm 0.6.13 itself.
"""
import math
from collections import OrderedDict
from typing import List, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from midas_ros.models.backbones import check_input_size, tokens_to_map

# levit_384: widths, key width, heads and depth per stage; attention/MLP expansion ratios.
EMBED_DIM = (384, 512, 768)
KEY_DIM = 32
NUM_HEADS = (6, 9, 12)
DEPTH = (4, 4, 4)
ATTN_RATIO = 2
MLP_RATIO = 2
# Between stages: subsampling attention with 4x value width, 2x MLP, stride 2.
SUBSAMPLE_ATTN_RATIO = 4
SUBSAMPLE_STRIDE = 2
PATCH_SIZE = 16
IMG_SIZE = 224
NUM_CLASSES = 1000


class ConvNorm(nn.Sequential):
    """Bias-free conv + BatchNorm (``c``, ``bn``)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 1, stride: int = 1,
                 padding: int = 0):
        super().__init__(OrderedDict([
            ('c', nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=False)),
            ('bn', nn.BatchNorm2d(out_chs)),
        ]))


class LinearNorm(nn.Sequential):
    """Bias-free linear + BatchNorm over all tokens (``c``, ``bn``): (B, N, in) -> (B, N, out)."""

    def __init__(self, in_features: int, out_features: int, bn_weight_init: float = 1.0):
        super().__init__(OrderedDict([
            ('c', nn.Linear(in_features, out_features, bias=False)),
            ('bn', nn.BatchNorm1d(out_features)),
        ]))
        nn.init.constant_(self.bn.weight, bn_weight_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.c(x)
        return self.bn(x.flatten(0, 1)).reshape_as(x)


class NormLinear(nn.Sequential):
    """BatchNorm + linear classifier (``bn``, ``l``); unused by DPT, kept for the checkpoint."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__(OrderedDict([
            ('bn', nn.BatchNorm1d(in_features)),
            ('l', nn.Linear(in_features, out_features)),
        ]))


class Residual(nn.Module):
    """``x + m(x)`` (the wrapped module is named ``m``)."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class Subsample(nn.Module):
    """Keep every ``stride``-th token of each row and column of a square token grid."""

    def __init__(self, stride: int, resolution: int):
        super().__init__()
        self.stride = stride
        self.resolution = resolution

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        x = x.view(batch, self.resolution, self.resolution, channels)
        return x[:, ::self.stride, ::self.stride].reshape(batch, -1, channels)


def attention_bias_index(resolution: int, stride: int = 1) -> torch.Tensor:
    """(queries, keys) int64 index of |dy| * resolution + |dx| for query and key grid cells.

    Queries lie on every ``stride``-th cell of the ``resolution`` x ``resolution`` key grid.
    """
    def cells(step):
        axis = torch.arange(0, resolution, step)
        return torch.stack(torch.meshgrid(axis, axis, indexing='ij')).flatten(1)
    offsets = (cells(stride)[:, :, None] - cells(1)[:, None, :]).abs()
    return offsets[0] * resolution + offsets[1]


class Attention(nn.Module):
    """Multi-head attention with a learned bias per head and per absolute grid offset."""

    def __init__(self, dim: int, key_dim: int, num_heads: int, attn_ratio: int,
                 resolution: int):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = attn_ratio * key_dim
        self.scale = key_dim ** -0.5
        self.qkv = LinearNorm(dim, num_heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Sequential(nn.Hardswish(),
                                  LinearNorm(num_heads * self.val_dim, dim, bn_weight_init=0))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution ** 2))
        self.register_buffer('attention_bias_idxs', attention_bias_index(resolution))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, self.num_heads, -1).transpose(1, 2).split(
            [self.key_dim, self.key_dim, self.val_dim], dim=3)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                             scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, -1))


class AttentionSubsample(nn.Module):
    """Attention whose queries come from a ``stride``-subsampled grid: the grid shrinks and the
    width grows from ``in_dim`` to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, key_dim: int, num_heads: int, attn_ratio: int,
                 stride: int, resolution: int):
        super().__init__()
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.val_dim = attn_ratio * key_dim
        self.scale = key_dim ** -0.5
        self.kv = LinearNorm(in_dim, num_heads * (key_dim + self.val_dim))
        self.q = nn.Sequential(Subsample(stride, resolution),
                               LinearNorm(in_dim, num_heads * key_dim))
        self.proj = nn.Sequential(nn.Hardswish(), LinearNorm(num_heads * self.val_dim, out_dim))
        self.attention_biases = nn.Parameter(torch.zeros(num_heads, resolution ** 2))
        self.register_buffer('attention_bias_idxs', attention_bias_index(resolution, stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        k, v = self.kv(x).view(batch, tokens, self.num_heads, -1).transpose(1, 2).split(
            [self.key_dim, self.val_dim], dim=3)
        q = self.q(x)
        q = q.view(batch, q.shape[1], self.num_heads, self.key_dim).transpose(1, 2)
        bias = self.attention_biases[:, self.attention_bias_idxs]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                             scale=self.scale)
        return self.proj(out.transpose(1, 2).reshape(batch, q.shape[2], -1))


def _mlp(dim: int, ratio: int) -> Residual:
    return Residual(nn.Sequential(LinearNorm(dim, dim * ratio), nn.Hardswish(),
                                  LinearNorm(dim * ratio, dim, bn_weight_init=0)))


class Levit(nn.Module):
    """LeViT-384 (distilled: two classifier heads) with timm 0.6.13's flat ``blocks`` layout."""

    def __init__(self):
        super().__init__()
        dims = EMBED_DIM
        self.embed_dim = dims
        self.patch_embed = nn.Sequential(
            ConvNorm(3, dims[0] // 8, 3, 2, 1), nn.Hardswish(),
            ConvNorm(dims[0] // 8, dims[0] // 4, 3, 2, 1), nn.Hardswish(),
            ConvNorm(dims[0] // 4, dims[0] // 2, 3, 2, 1), nn.Hardswish(),
            ConvNorm(dims[0] // 2, dims[0], 3, 2, 1))
        blocks = []
        resolution = IMG_SIZE // PATCH_SIZE
        self.stage_ends = []   # index of the last block of each stage
        for stage, (dim, heads, depth) in enumerate(zip(dims, NUM_HEADS, DEPTH)):
            for _ in range(depth):
                blocks.append(Residual(Attention(dim, KEY_DIM, heads, ATTN_RATIO, resolution)))
                blocks.append(_mlp(dim, MLP_RATIO))
            self.stage_ends.append(len(blocks) - 1)
            if stage + 1 < len(dims):
                blocks.append(AttentionSubsample(
                    dim, dims[stage + 1], KEY_DIM, dim // KEY_DIM, SUBSAMPLE_ATTN_RATIO,
                    SUBSAMPLE_STRIDE, resolution))
                resolution = (resolution - 1) // SUBSAMPLE_STRIDE + 1
                blocks.append(_mlp(dims[stage + 1], MLP_RATIO))
        self.blocks = nn.Sequential(*blocks)
        self.head = NormLinear(dims[-1], NUM_CLASSES)
        self.head_dist = NormLinear(dims[-1], NUM_CLASSES)
        for module in self.modules():
            if isinstance(module, nn.Linear) and module.out_features == NUM_CLASSES:
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)


class LevitBackbone(nn.Module):
    """Taps blocks ``cfg.hooks`` (indices into the flat ``blocks``), one per LeViT stage."""

    def __init__(self, cfg):
        super().__init__()
        self.model = Levit()
        self.name = cfg.name
        self.hooks = tuple(cfg.hooks)
        ends = self.model.stage_ends
        starts = [0] + [end + 1 for end in ends[:-1]]
        if len(self.hooks) != len(ends) or not all(
                start <= hook <= end for hook, start, end in zip(self.hooks, starts, ends)):
            raise ValueError(f'{cfg.name}: LeViT hooks {self.hooks} must name one block of each '
                             f'stage (stages end at blocks {self.model.stage_ends})')
        self.out_channels = EMBED_DIM
        self.input_size = (IMG_SIZE, IMG_SIZE)
        self.patch_size = PATCH_SIZE

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        check_input_size(x, self.input_size, self.name)
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        tokens = self.model.patch_embed(x).flatten(2).transpose(1, 2)
        taps = []
        for index, block in enumerate(self.model.blocks[:max(self.hooks) + 1]):
            tokens = block(tokens)
            if index in self.hooks:
                taps.append(tokens)
        return [tokens_to_map(tap, _grid_at(grid, level)) for level, tap in enumerate(taps)]


def _grid_at(grid: Tuple[int, int], level: int) -> Tuple[int, int]:
    return math.ceil(grid[0] / 2 ** level), math.ceil(grid[1] / 2 ** level)


class ConvTransposeNorm(nn.Sequential):
    """Bias-free transposed conv + BatchNorm (named ``c``, ``bn`` like ``ConvNorm``)."""

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
