"""Depth Anything V2: a DINOv2 ViT encoder (patch 14) and a DPT head, relative or metric.

The whole model family lives in this module (registry rows name it as their builder): the DINOv2
encoder (``pretrained``), the DPT head (``depth_head``) and the network that joins them. Module
and attribute names are those of the official code (DepthAnything/Depth-Anything-V2 at a561b84:
``depth_anything_v2/dinov2.py``, ``dinov2_layers/``, ``dpt.py``, ``util/blocks.py``), so the
official ``.pth`` files load strictly; timm 0.6.13 has no DINOv2, so nothing here comes from timm.

Differences from the official code that do not change the result: attention runs through
``F.scaled_dot_product_attention`` (the same softmax(q k^T / sqrt(d)) v, fused), the encoder
collects the tapped blocks in one pass without the chunking / masking / register-token options
no released checkpoint uses, and the reassembly lays tokens out on the actual patch grid.

Output (``forward``): (N, H, W) at the network input size (H, W multiples of 14),
* relative models: non-negative relative inverse depth (affine-invariant, larger = nearer);
* metric models: depth in metres, ``sigmoid(x) * max_depth`` (in (0, max_depth)).
The pipeline upsamples it to the image size with bilinear ``align_corners=True``, as the
official ``infer_image`` does (``ModelConfig.upsampling``).
"""
import functools
import math
from typing import List, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from midas_ros.models.backbones.layers import Mlp, init_linear
from midas_ros.models.blocks import FeatureFusionBlockCustom, make_scratch

PATCH_SIZE = 14
PRETRAIN_GRID = 37           # 518 / 14: the grid the position embedding was trained at
# The official DINOv2 adds 0.1 to the target grid before turning it into a scale factor, so that
# floating point gives exactly the intended output size (``interpolate_offset``).
INTERPOLATE_OFFSET = 0.1

# embed_dim, depth, heads of the official vit_small / vit_base / vit_large (mlp_ratio 4).
ENCODERS = {
    'vits': (384, 12, 6),
    'vitb': (768, 12, 12),
    'vitl': (1024, 24, 16),
}


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch (``gamma``, as the checkpoint names it)."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (bias on qkv and proj)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale on both residual branches."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """14x14 patches -> tokens by one strided convolution (``proj``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH_SIZE, stride=PATCH_SIZE)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class DinoV2Encoder(nn.Module):
    """The DINOv2 ViT of Depth Anything V2 (img_size 518, patch 14, no register tokens).

    ``forward(x, taps)``: (N, 3, H, W), H and W multiples of 14 -> for each block index of
    ``taps`` its output through the final ``norm``, patch tokens only: (N, H/14 * W/14, C).
    ``mask_token`` is in the checkpoint but used only in training (masked image modelling).
    """

    def __init__(self, encoder: str):
        super().__init__()
        dim, depth, heads = ENCODERS[encoder]
        self.embed_dim = dim
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, PRETRAIN_GRID ** 2 + 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(init_linear)

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """The (1, 1 + grid_h * grid_w, C) position embedding for a grid_h x grid_w patch grid.

        As the official ``interpolate_pos_encoding``: the 37x37 table is resized bicubically
        (no antialiasing) by a *scale factor* ((grid + 0.1) / 37 per axis), not to a target size:
        the sampling positions follow that factor. Kept as is for the 37x37 grid. Bicubic
        resizing is linear and separable, so it is done as ``Wh @ table @ Ww^T`` with the
        interpolation matrices of :func:`bicubic_matrix`: plain matrix products that every
        exporter and runtime handles (ONNX's Resize has no scale-factor bicubic that matches).
        """
        pos_embed = self.pos_embed
        if grid_h == grid_w == PRETRAIN_GRID:
            return pos_embed
        dim = pos_embed.shape[-1]
        table = pos_embed[:, 1:].float().reshape(PRETRAIN_GRID, PRETRAIN_GRID, dim)
        rows = bicubic_matrix(grid_h, PRETRAIN_GRID, (grid_h + INTERPOLATE_OFFSET)
                              / PRETRAIN_GRID).to(table)
        columns = bicubic_matrix(grid_w, PRETRAIN_GRID, (grid_w + INTERPOLATE_OFFSET)
                                 / PRETRAIN_GRID).to(table)
        table = rows @ table.permute(2, 0, 1) @ columns.T          # (C, grid_h, grid_w)
        table = table.permute(1, 2, 0).reshape(1, grid_h * grid_w, dim)
        return torch.cat((pos_embed[:, :1].float(), table), dim=1).to(pos_embed.dtype)

    def forward(self, x: torch.Tensor, taps: Sequence[int]) -> List[torch.Tensor]:
        grid_h, grid_w = x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self.position_embedding(grid_h, grid_w).to(tokens.dtype)
        outputs = []
        last = max(taps)
        for index, block in enumerate(self.blocks[:last + 1]):
            tokens = block(tokens)
            if index in taps:
                outputs.append(self.norm(tokens)[:, 1:])
        return outputs


@functools.lru_cache(maxsize=32)
def bicubic_matrix(out_size: int, in_size: int, scale_factor: float) -> torch.Tensor:
    """(out_size, in_size) float64 matrix of ``F.interpolate(mode='bicubic',
    align_corners=False, antialias=False, scale_factor=scale_factor)`` along one axis.

    PyTorch's kernel: source position ``(o + 0.5) / scale_factor - 0.5`` (the given factor, not
    in / out), cubic convolution with a = -0.75 on the four neighbours, indices clamped to the
    border. Computed in float64, it equals PyTorch's float64 kernel to 1e-13; PyTorch's float32
    kernel (the official code's) rounds the source positions to float32, a difference of up
    to 3e-6 of the table's range. Cached per size (a few hundred floats).
    """
    a = -0.75
    matrix = torch.zeros(out_size, in_size, dtype=torch.float64)
    for out in range(out_size):
        source = (out + 0.5) / scale_factor - 0.5
        index = math.floor(source)
        t = source - index
        weights = (((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
                   ((a + 2) * t - (a + 3)) * t * t + 1,
                   ((a + 2) * (1 - t) - (a + 3)) * (1 - t) * (1 - t) + 1,
                   ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a)
        for offset, weight in enumerate(weights):
            matrix[out, min(max(index - 1 + offset, 0), in_size - 1)] += weight
    return matrix


class DPTHead(nn.Module):
    """The Depth Anything V2 DPT decoder: reassemble 4 token maps, fuse, predict one channel.

    ``projects`` (1x1 convs to ``out_channels``) and ``resize_layers`` (4x and 2x transposed
    convs, identity, a stride-2 conv) build the 1/4..1/32 pyramid from the 1/14 token grid;
    ``scratch`` holds the ``layerN_rn`` convs, the ``refinenetN`` fusion blocks and the output
    convs. ``metric``: sigmoid at the end (the caller multiplies by ``max_depth``), else ReLU.
    """

    def __init__(self, in_channels: int, features: int, out_channels: Sequence[int],
                 metric: bool):
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, width, kernel_size=1)
                                      for width in out_channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], kernel_size=4, stride=4),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], kernel_size=3, stride=2, padding=1),
        ])
        self.scratch = make_scratch(out_channels, features)
        for level in range(1, 5):
            setattr(self.scratch, f'refinenet{level}',
                    FeatureFusionBlockCustom(features, nn.ReLU(inplace=False), bn=False,
                                             expand=False, align_corners=True))
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 1, kernel_size=1),
            nn.Sigmoid() if metric else nn.ReLU(inplace=True),
        )

    def forward(self, tokens: Sequence[torch.Tensor], grid_h: int, grid_w: int) -> torch.Tensor:
        scratch = self.scratch
        levels = []
        for index, level_tokens in enumerate(tokens):
            grid = level_tokens.transpose(1, 2).unflatten(2, (grid_h, grid_w))
            grid = self.resize_layers[index](self.projects[index](grid))
            levels.append(getattr(scratch, f'layer{index + 1}_rn')(grid))
        path = scratch.refinenet4(levels[3], size=levels[2].shape[2:])
        path = scratch.refinenet3(path, levels[2], size=levels[1].shape[2:])
        path = scratch.refinenet2(path, levels[1], size=levels[0].shape[2:])
        path = scratch.refinenet1(path, levels[0])
        out = scratch.output_conv1(path)
        out = F.interpolate(out, (grid_h * PATCH_SIZE, grid_w * PATCH_SIZE), mode='bilinear',
                            align_corners=True)
        return scratch.output_conv2(out)


class DepthAnythingV2(nn.Module):
    """Depth Anything V2 for one ``ModelConfig`` (randomly initialized; weights load apart).

    ``cfg.backbone`` is the DINOv2 size ('vits', 'vitb', 'vitl'), ``cfg.hooks`` the tapped
    blocks, ``cfg.features`` / ``cfg.head_channels`` the head widths, ``cfg.max_depth`` (metric
    models; None for relative ones) the metres a sigmoid output of 1 stands for.
    ``forward``: (N, 3, H, W) normalized image, H and W multiples of 14 (ValueError otherwise)
    -> (N, H, W) relative inverse depth or metres (see the module docstring).
    """

    def __init__(self, cfg):
        super().__init__()
        if cfg.backbone not in ENCODERS:
            raise ValueError(f"{cfg.name}: unknown DINOv2 size '{cfg.backbone}'; known: "
                             f"{', '.join(ENCODERS)}")
        self.taps = tuple(cfg.hooks)
        self.max_depth = cfg.max_depth
        self.pretrained = DinoV2Encoder(cfg.backbone)
        self.depth_head = DPTHead(self.pretrained.embed_dim, cfg.features, cfg.head_channels,
                                  metric=cfg.max_depth is not None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if height % PATCH_SIZE or width % PATCH_SIZE:
            raise ValueError(f'Depth Anything V2 takes inputs whose sides are multiples of '
                             f'{PATCH_SIZE}, got {height}x{width}')
        grid_h, grid_w = height // PATCH_SIZE, width // PATCH_SIZE
        depth = self.depth_head(self.pretrained(x, self.taps), grid_h, grid_w).squeeze(1)
        if self.max_depth is not None:
            return depth * self.max_depth
        return depth   # the head's final ReLU already made it non-negative (official: twice)
