"""BEiT encoders of DPT (MiDaS v3.1: dpt_beit_large_512, dpt_beit_large_384, dpt_beit_base_384),
built from this module, not from timm.

BEiT has no absolute position embedding; each block adds a learned *relative* position bias to its
attention logits, tabulated for the pretraining patch grid. To run on other grids (any aspect
ratio, a multiple of 16 pixels) the table of relative offsets is bilinearly resized to the new
grid's offset range, exactly as the official MiDaS code does by monkeypatching timm. Here the
blocks are run by :meth:`BeitBackbone.run_block` with the bias computed for the actual grid.

Why not timm: the official checkpoints were saved from timm 0.6.13, which stored each block's
``relative_position_index``; timm 0.9 and later no longer save it (and renamed the blocks'
internals), so the file no longer fits timm's module. The encoder built here keeps the
checkpoint layout whatever timm is installed; the index is rebuilt from the grid, never read from
the file (``midas_ros.models.weights``). Names follow timm 0.6.13, and test_backbone_parity.py
compares the outputs with timm 0.6.13 itself.
"""
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from midas_ros.models.backbones.layers import Mlp, init_linear
from midas_ros.models.backbones.vit import ViTBackbone

# The relative-bias table ends with 3 entries for cls->token, token->cls and cls->cls.
_NUM_CLASS_TOKEN_ENTRIES = 3
_NORM_EPS = 1e-6
PATCH_SIZE = 16


@dataclass(frozen=True)
class BeitSpec:
    """Hyper-parameters of one BEiT (timm 0.6.13's constructor arguments)."""

    img_size: int
    embed_dim: int
    depth: int
    num_heads: int
    init_values: float          # initial value of the layer scales gamma_1, gamma_2
    mlp_ratio: float = 4.0
    num_classes: int = 1000


BEIT_SPECS = {
    'beit_large_patch16_512': BeitSpec(512, 1024, 24, 16, 1e-5),
    'beit_large_patch16_384': BeitSpec(384, 1024, 24, 16, 1e-5),
    'beit_base_patch16_384': BeitSpec(384, 768, 12, 12, 0.1),
}


def gen_relative_position_index(grid: Sequence[int]) -> torch.Tensor:
    """(1 + H*W, 1 + H*W) int64 index into a BEiT relative-bias table for an H x W patch grid.

    Token pairs index their (dy, dx) offset in the (2H-1)(2W-1) table; pairs with the class token
    use its last three entries (token->cls, cls->token, cls->cls).
    """
    height, width = grid
    distances = (2 * height - 1) * (2 * width - 1)
    coords = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width),
                                        indexing='ij')).flatten(1)
    offsets = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    index = torch.zeros((height * width + 1,) * 2, dtype=torch.int64)
    index[1:, 1:] = (offsets[..., 0] + height - 1) * (2 * width - 1) + offsets[..., 1] + width - 1
    index[0, 0:] = distances
    index[0:, 0] = distances + 1
    index[0, 0] = distances + 2
    return index


def resize_relative_position_table(table: torch.Tensor, old_grid: Sequence[int],
                                   new_grid: Sequence[int]) -> torch.Tensor:
    """Resize a BEiT relative-position bias table from ``old_grid`` to ``new_grid`` patches."""
    old_span = (2 * old_grid[0] - 1, 2 * old_grid[1] - 1)
    new_span = (2 * new_grid[0] - 1, 2 * new_grid[1] - 1)
    if old_span == new_span:
        return table
    offsets = table[:-_NUM_CLASS_TOKEN_ENTRIES]
    offsets = offsets.reshape(1, old_span[0], old_span[1], -1).permute(0, 3, 1, 2)
    offsets = F.interpolate(offsets, size=new_span, mode='bilinear', align_corners=False)
    offsets = offsets.permute(0, 2, 3, 1).reshape(new_span[0] * new_span[1], -1)
    return torch.cat([offsets, table[-_NUM_CLASS_TOKEN_ENTRIES:]])


def relative_position_bias(attn: nn.Module, grid: Tuple[int, int],
                           index: torch.Tensor) -> torch.Tensor:
    """(1, heads, 1 + H*W, 1 + H*W) attention bias of a BEiT ``attn`` for ``grid`` patches.

    ``index`` is ``gen_relative_position_index(grid)`` (the module's own buffer at its grid).
    """
    table = resize_relative_position_table(attn.relative_position_bias_table, attn.window_size,
                                           grid)
    num_tokens = grid[0] * grid[1] + 1
    bias = table[index.view(-1)].view(num_tokens, num_tokens, -1)
    return bias.permute(2, 0, 1).unsqueeze(0)


class Attention(nn.Module):
    """Multi-head self-attention with q and v biases (no k bias) and a relative-position table."""

    def __init__(self, dim: int, num_heads: int, window_size: Tuple[int, int]):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.window_size = window_size
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer('k_bias', torch.zeros(dim), persistent=False)
        self.v_bias = nn.Parameter(torch.zeros(dim))
        num_distances = (2 * window_size[0] - 1) * (2 * window_size[1] - 1)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(num_distances + _NUM_CLASS_TOKEN_ENTRIES, num_heads))
        self.register_buffer('relative_position_index', gen_relative_position_index(window_size))
        self.proj = nn.Linear(dim, dim)


class Block(nn.Module):
    """Pre-norm attention and MLP branches, each scaled per channel (``gamma_1``, ``gamma_2``)."""

    def __init__(self, dim: int, num_heads: int, window_size: Tuple[int, int],
                 mlp_ratio: float = 4.0, init_values: float = 0.1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=_NORM_EPS)
        self.attn = Attention(dim, num_heads, window_size)
        self.norm2 = nn.LayerNorm(dim, eps=_NORM_EPS)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
        self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, tokens: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """(B, N, C) tokens with a (1, heads, N, N) attention bias -> (B, N, C)."""
        return beit_block_forward(self, tokens, bias)


def beit_block_forward(block: Block, tokens: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A BEiT ``Block`` applied with an explicit attention ``bias`` (any token count)."""
    attn = block.attn
    batch, num_tokens, _ = tokens.shape
    qkv_bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
    qkv = F.linear(block.norm1(tokens), attn.qkv.weight, qkv_bias)
    q, k, v = qkv.reshape(batch, num_tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    # Fused attention (flash / memory-efficient kernels on GPU): softmax(q k^T * scale + bias) v.
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=attn.scale)
    out = attn.proj(out.transpose(1, 2).reshape(batch, num_tokens, -1))
    tokens = tokens + block.gamma_1 * out
    return tokens + block.gamma_2 * block.mlp(block.norm2(tokens))


class PatchEmbed(nn.Module):
    """The 16x16 patch projection (``proj``); the backbone lays the patches out itself."""

    def __init__(self, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, PATCH_SIZE, PATCH_SIZE)


class Beit(nn.Module):
    """BEiT with timm 0.6.13's module names: ``cls_token``, ``patch_embed``, ``blocks``, and the
    classifier (``fc_norm``, ``head``), kept only because the official checkpoints carry it."""

    def __init__(self, spec: BeitSpec):
        super().__init__()
        grid = (spec.img_size // PATCH_SIZE,) * 2
        self.embed_dim = spec.embed_dim
        self.patch_embed = PatchEmbed(spec.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.embed_dim))
        self.pos_embed = None          # BEiT uses relative positions only
        self.pos_drop = nn.Identity()
        self.blocks = nn.ModuleList(
            Block(spec.embed_dim, spec.num_heads, grid, spec.mlp_ratio, spec.init_values)
            for _ in range(spec.depth))
        self.fc_norm = nn.LayerNorm(spec.embed_dim, eps=_NORM_EPS)
        self.head = nn.Linear(spec.embed_dim, spec.num_classes)
        self.apply(init_linear)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for block in self.blocks:
            nn.init.trunc_normal_(block.attn.relative_position_bias_table, std=0.02)


class BeitBackbone(ViTBackbone):
    """BEiT-L/16 or BEiT-B/16 with DPT reassemble heads; runs at any multiple of 16 pixels."""

    def __init__(self, cfg):
        super().__init__(cfg)
        # Index tables for grids other than the pretraining one, per (grid, device). Indices
        # depend on the grid only (never on weights), so caching them is always valid.
        self._position_index_cache: Dict[Tuple, torch.Tensor] = {}

    @staticmethod
    def create_encoder(cfg) -> nn.Module:
        try:
            return Beit(BEIT_SPECS[cfg.timm_name])
        except KeyError:
            raise ValueError(f"{cfg.name}: no BEiT model '{cfg.timm_name}'; known: "
                             f"{', '.join(sorted(BEIT_SPECS))}") from None

    def _relative_position_index(self, attn: nn.Module, grid: Tuple[int, int]) -> torch.Tensor:
        if grid == tuple(attn.window_size):
            return attn.relative_position_index
        key = (grid, attn.relative_position_index.device)
        index = self._position_index_cache.get(key)
        if index is None:
            index = gen_relative_position_index(grid).to(key[1])
            self._position_index_cache[key] = index
        return index

    def run_block(self, block: nn.Module, tokens: torch.Tensor,
                  grid: Sequence[int]) -> torch.Tensor:
        grid = tuple(grid)
        bias = relative_position_bias(block.attn, grid,
                                      self._relative_position_index(block.attn, grid))
        return block(tokens, bias)
