"""Swin and Swin V2 encoders of DPT (dpt_swin_large_384, dpt_swin2_{large,base}_384,
dpt_swin2_tiny_256), built from this module, not from timm.

A hierarchical transformer already yields a pyramid: the tokens at the end of each of the four
stages (before the patch merging that starts the next one) are laid out on that stage's grid,
1/4 ... 1/32 of the input. The shifted-window attention masks are made for one input resolution,
so these encoders take exactly their network size (MiDaS resizes the image to it without keeping
the aspect ratio).

Why not timm: the official checkpoints were saved from timm 0.6.13's Swin modules, and timm 0.9
and later moved the patch merging to the start of the next stage, the classifier to
``head.fc``, and stopped saving the attention masks; its forward changed to NHWC. Building the
encoder here keeps the checkpoint layout (the file format) and the arithmetic of the official
release fixed whatever timm a robot has. Module and parameter names are timm 0.6.13's, so the
``pretrained.model.*`` keys load strictly; the arithmetic is the same (test_backbone_parity.py
compares it with timm 0.6.13 itself).
"""
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from midas_ros.models.backbones import check_input_size, tokens_to_map
from midas_ros.models.backbones.layers import Mlp, init_linear

# The additive attention mask value between tokens of different sub-windows (as in the reference
# implementation: large enough to zero the softmax weight, small enough to stay finite in fp16).
_MASKED = -100.0


@dataclass(frozen=True)
class SwinSpec:
    """Hyper-parameters of one Swin / Swin V2 model (timm 0.6.13's constructor arguments)."""

    version: int                    # 1 or 2
    img_size: int
    embed_dim: int
    depths: Tuple[int, ...]
    num_heads: Tuple[int, ...]
    window_size: int
    pretrained_window_sizes: Tuple[int, ...] = (0, 0, 0, 0)   # Swin V2 only
    patch_size: int = 4
    mlp_ratio: float = 4.0
    num_classes: int = 1000


SWIN_SPECS = {
    'swin_large_patch4_window12_384': SwinSpec(
        1, 384, 192, (2, 2, 18, 2), (6, 12, 24, 48), 12),
    'swinv2_large_window12to24_192to384_22kft1k': SwinSpec(
        2, 384, 192, (2, 2, 18, 2), (6, 12, 24, 48), 24, (12, 12, 12, 6)),
    'swinv2_base_window12to24_192to384_22kft1k': SwinSpec(
        2, 384, 128, (2, 2, 18, 2), (4, 8, 16, 32), 24, (12, 12, 12, 6)),
    'swinv2_tiny_window16_256': SwinSpec(
        2, 256, 96, (2, 2, 6, 2), (3, 6, 12, 24), 16),
}


def window_partition(x: torch.Tensor, window: Sequence[int]) -> torch.Tensor:
    """(B, H, W, C) -> (B * windows, window_h * window_w, C), windows in row-major order."""
    batch, height, width, channels = x.shape
    x = x.view(batch, height // window[0], window[0], width // window[1], window[1], channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], channels)


def window_reverse(windows: torch.Tensor, window: Sequence[int],
                   grid: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`window_partition`: -> (B, H, W, C)."""
    height, width = grid
    channels = windows.shape[-1]
    x = windows.view(-1, height // window[0], width // window[1], window[0], window[1], channels)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, height, width, channels)


def relative_position_index(window: Sequence[int]) -> torch.Tensor:
    """(Wh*Ww, Wh*Ww) int64 index of each token pair's offset in the (2Wh-1)(2Ww-1) table."""
    coords = torch.stack(torch.meshgrid(torch.arange(window[0]), torch.arange(window[1]),
                                        indexing='ij')).flatten(1)
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    rows, cols = offsets[..., 0] + window[0] - 1, offsets[..., 1] + window[1] - 1
    return rows * (2 * window[1] - 1) + cols


def relative_coords_table(window: Sequence[int], pretrained_window: Sequence[int]) -> torch.Tensor:
    """Swin V2's log-spaced relative coordinates, (1, 2Wh-1, 2Ww-1, 2) float32, in [-1, 1]*k.

    Normalized by the pretraining window when there was one, so that a fine-tuned larger window
    reuses the continuous position bias learned for the smaller one.
    """
    span = [torch.arange(-(w - 1), w, dtype=torch.float32) for w in window]
    table = torch.stack(torch.meshgrid(*span, indexing='ij')).permute(1, 2, 0).unsqueeze(0)
    scale = pretrained_window if pretrained_window[0] > 0 else window
    table = table / torch.tensor([scale[0] - 1, scale[1] - 1], dtype=torch.float32) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def shifted_window_mask(grid: Sequence[int], window: Sequence[int],
                        shift: Sequence[int]) -> torch.Tensor:
    """(windows, N, N) additive mask keeping attention inside each region of a shifted window."""
    regions = torch.zeros(1, grid[0], grid[1], 1)
    label = 0
    for rows in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for cols in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            regions[:, rows, cols, :] = label
            label += 1
    labels = window_partition(regions, window).squeeze(-1)
    different = labels.unsqueeze(1) != labels.unsqueeze(2)
    return torch.zeros(different.shape).masked_fill(different, _MASKED)


class WindowAttention(nn.Module):
    """Swin V1 window attention: scaled dot product plus a learned relative-position bias."""

    def __init__(self, dim: int, num_heads: int, window: Tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window[0] - 1) * (2 * window[1] - 1), num_heads))
        self.register_buffer('relative_position_index', relative_position_index(window))
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def position_bias(self) -> torch.Tensor:
        """(heads, N, N) additive bias of the window's token pairs."""
        area = self.window[0] * self.window[1]
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        return bias.view(area, area, -1).permute(2, 0, 1)

    def qkv_heads(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        batch, tokens, _ = x.shape
        qkv = F.linear(x, self.qkv.weight, self.qkv_bias())
        return qkv.reshape(batch, tokens, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)

    def qkv_bias(self) -> Optional[torch.Tensor]:
        return self.qkv.bias

    def attend(self, q, k, v, bias):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype),
                                              scale=self.scale)

    def forward(self, x: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B * windows, N, C) window tokens, optional (windows, N, N) mask -> same shape."""
        q, k, v = self.qkv_heads(x)
        bias = self.position_bias()
        if mask is not None:
            # (B, windows, heads, N, D): the mask broadcasts over the batch, the bias over windows.
            windows = mask.shape[0]
            q, k, v = (t.unflatten(0, (-1, windows)) for t in (q, k, v))
            bias = bias.unsqueeze(0) + mask.unsqueeze(1)
        out = self.attend(q, k, v, bias)
        out = out.reshape(x.shape[0], self.num_heads, x.shape[1], -1)
        return self.proj(out.transpose(1, 2).reshape(x.shape))


class WindowAttentionV2(WindowAttention):
    """Swin V2 window attention: cosine similarity times a learned per-head temperature, and a
    bias from a small MLP over log-spaced relative coordinates (continuous position bias)."""

    def __init__(self, dim: int, num_heads: int, window: Tuple[int, int],
                 pretrained_window: Tuple[int, int]):
        nn.Module.__init__(self)
        self.num_heads = num_heads
        self.window = window
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones((num_heads, 1, 1))))
        self.cpb_mlp = nn.Sequential(nn.Linear(2, 512), nn.ReLU(inplace=True),
                                     nn.Linear(512, num_heads, bias=False))
        # Both tables follow from the window alone: not part of the checkpoint.
        self.register_buffer('relative_coords_table',
                             relative_coords_table(window, pretrained_window), persistent=False)
        self.register_buffer('relative_position_index', relative_position_index(window),
                             persistent=False)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer('k_bias', torch.zeros(dim), persistent=False)
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def position_bias(self) -> torch.Tensor:
        area = self.window[0] * self.window[1]
        table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
        bias = table[self.relative_position_index.view(-1)].view(area, area, -1)
        return 16 * torch.sigmoid(bias.permute(2, 0, 1))

    def qkv_bias(self) -> torch.Tensor:
        return torch.cat((self.q_bias, self.k_bias, self.v_bias))

    def attend(self, q, k, v, bias):
        temperature = torch.clamp(self.logit_scale, max=math.log(1.0 / 0.01)).exp()
        q = F.normalize(q, dim=-1) * temperature
        return F.scaled_dot_product_attention(q, F.normalize(k, dim=-1), v,
                                              attn_mask=bias.to(q.dtype), scale=1.0)


class SwinBlock(nn.Module):
    """One (shifted) window attention + MLP block on an (B, H*W, C) token grid.

    V1 normalizes before each branch (pre-norm); V2 normalizes each branch's output
    (res-post-norm).
    A window at least as large as the grid shrinks to it and is not shifted (as in the reference).
    """

    def __init__(self, spec: SwinSpec, stage: int, dim: int, grid: Tuple[int, int],
                 shifted: bool):
        super().__init__()
        self.post_norm = spec.version == 2
        self.grid = grid
        self.window = tuple(min(g, spec.window_size) for g in grid)
        self.shift = tuple(0 if g <= spec.window_size or not shifted else spec.window_size // 2
                           for g in grid)
        heads = spec.num_heads[stage]
        if spec.version == 1:
            self.attn = WindowAttention(dim, heads, self.window)
        else:
            pretrained = spec.pretrained_window_sizes[stage]
            self.attn = WindowAttentionV2(dim, heads, self.window, (pretrained, pretrained))
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * spec.mlp_ratio))
        self.norm2 = nn.LayerNorm(dim)
        mask = shifted_window_mask(grid, self.window, self.shift) if any(self.shift) else None
        self.register_buffer('attn_mask', mask)

    def window_attention(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, channels = x.shape
        x = x.view(batch, self.grid[0], self.grid[1], channels)
        if any(self.shift):
            x = torch.roll(x, shifts=(-self.shift[0], -self.shift[1]), dims=(1, 2))
        windows = self.attn(window_partition(x, self.window), mask=self.attn_mask)
        x = window_reverse(windows, self.window, self.grid)
        if any(self.shift):
            x = torch.roll(x, shifts=self.shift, dims=(1, 2))
        return x.reshape(batch, tokens, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            x = x + self.norm1(self.window_attention(x))
            return x + self.norm2(self.mlp(x))
        x = x + self.window_attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    """2x2 neighbouring tokens concatenated (4C) and projected to 2C: the grid halves.

    V1 normalizes the 4C input, V2 the 2C output (``norm`` has the matching width).
    """

    def __init__(self, dim: int, grid: Tuple[int, int], version: int):
        super().__init__()
        self.grid = grid
        self.norm_first = version == 1
        self.norm = nn.LayerNorm(4 * dim if self.norm_first else 2 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, channels = x.shape
        x = x.view(batch, self.grid[0], self.grid[1], channels)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]],
                      dim=-1).view(batch, -1, 4 * channels)
        if self.norm_first:
            return self.reduction(self.norm(x))
        return self.norm(self.reduction(x))


class SwinStage(nn.Module):
    """The blocks of one stage and, except for the last stage, the patch merging that ends it."""

    def __init__(self, spec: SwinSpec, stage: int, dim: int, grid: Tuple[int, int]):
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(spec, stage, dim, grid, shifted=index % 2 == 1)
                                    for index in range(spec.depths[stage]))
        last = stage == len(spec.depths) - 1
        self.downsample = None if last else PatchMerging(dim, grid, spec.version)


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection + LayerNorm: (B, 3, H, W) -> (B, H/p * W/p, C)."""

    def __init__(self, spec: SwinSpec):
        super().__init__()
        self.img_size = (spec.img_size, spec.img_size)
        self.grid_size = (spec.img_size // spec.patch_size,) * 2
        self.proj = nn.Conv2d(3, spec.embed_dim, spec.patch_size, spec.patch_size)
        self.norm = nn.LayerNorm(spec.embed_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformer(nn.Module):
    """Swin (V1 or V2) with timm 0.6.13's module names; the classifier (``norm``, ``head``) is
    kept only because the official checkpoints carry it."""

    def __init__(self, spec: SwinSpec):
        super().__init__()
        self.spec = spec
        self.patch_embed = PatchEmbed(spec)
        self.layers = nn.ModuleList()
        for stage in range(len(spec.depths)):
            grid = tuple(g // 2 ** stage for g in self.patch_embed.grid_size)
            self.layers.append(SwinStage(spec, stage, spec.embed_dim * 2 ** stage, grid))
        num_features = spec.embed_dim * 2 ** (len(spec.depths) - 1)
        self.norm = nn.LayerNorm(num_features)
        self.head = nn.Linear(num_features, spec.num_classes)
        self.apply(init_linear)
        if spec.version == 2:   # timm's res-post-norm init: every block starts as the identity
            for block in (b for layer in self.layers for b in layer.blocks):
                for norm in (block.norm1, block.norm2):
                    nn.init.zeros_(norm.weight)


def check_stage_hooks(name, stages, hooks):
    """ValueError unless ``hooks`` holds one block index per stage, each within its stage's
    ``blocks`` (the Swin layout of timm 0.6.13, which both our Swin and timm's follow)."""
    if len(hooks) != len(stages):
        raise ValueError(f'{name}: {len(stages)} Swin stages need one hook each, got {hooks}')
    for stage, (layer, hook) in enumerate(zip(stages, hooks)):
        if not 0 <= hook < len(layer.blocks):
            raise ValueError(f'{name}: hook {hook} of stage {stage} is outside its '
                             f'{len(layer.blocks)} blocks')


class SwinBackbone(nn.Module):
    """Taps ``cfg.hooks[i]`` (a block index within stage ``i``) of a Swin / Swin V2."""

    def __init__(self, cfg):
        super().__init__()
        try:
            spec = SWIN_SPECS[cfg.timm_name]
        except KeyError:
            raise ValueError(f"{cfg.name}: no Swin model '{cfg.timm_name}'; known: "
                             f"{', '.join(sorted(SWIN_SPECS))}") from None
        self.model = SwinTransformer(spec)
        self.name = cfg.name
        self.hooks = tuple(cfg.hooks)
        layers = self.model.layers
        check_stage_hooks(cfg.name, layers, self.hooks)
        self.out_channels = tuple(spec.embed_dim * 2 ** stage for stage in range(len(layers)))
        self.input_size = self.model.patch_embed.img_size

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        check_input_size(x, self.input_size, self.name)
        x = self.model.patch_embed(x)
        features = []
        for layer, hook in zip(self.model.layers, self.hooks):
            for index, block in enumerate(layer.blocks):
                x = block(x)
                if index == hook:
                    features.append(tokens_to_map(x, block.grid))
            if layer.downsample is not None:
                x = layer.downsample(x)
        return features
