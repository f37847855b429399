"""BEiT encoders of DPT (MiDaS v3.1: dpt_beit_large_512, dpt_beit_large_384, dpt_beit_base_384).

BEiT has no absolute position embedding; each block adds a learned *relative* position bias to its
attention logits, tabulated for the pretraining patch grid. To run on other grids (any aspect
ratio, a multiple of 16 pixels) the table of relative offsets is bilinearly resized to the new
grid's offset range, exactly as the official MiDaS code does by monkeypatching timm. Here the
blocks are run by :meth:`BeitBackbone.run_block` with the bias computed for the actual grid.
"""
from typing import Dict, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from midas_ros.models.backbones.vit import ViTBackbone

# The relative-bias table ends with 3 entries for cls->token, token->cls and cls->cls.
_NUM_CLASS_TOKEN_ENTRIES = 3


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
    """(1, heads, 1 + H*W, 1 + H*W) attention bias of a timm BEiT ``attn`` for ``grid`` patches.

    ``index`` is ``gen_relative_position_index(grid)`` (the module's own buffer at its grid).
    """
    table = resize_relative_position_table(attn.relative_position_bias_table, attn.window_size,
                                           grid)
    num_tokens = grid[0] * grid[1] + 1
    bias = table[index.view(-1)].view(num_tokens, num_tokens, -1)
    return bias.permute(2, 0, 1).unsqueeze(0)


def beit_block_forward(block: nn.Module, tokens: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """A timm BEiT ``Block`` applied with an explicit attention ``bias`` (any token count)."""
    attn = block.attn
    batch, num_tokens, _ = tokens.shape
    qkv_bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
    qkv = F.linear(block.norm1(tokens), attn.qkv.weight, qkv_bias)
    q, k, v = qkv.reshape(batch, num_tokens, 3, attn.num_heads, -1).permute(2, 0, 3, 1, 4)
    # Fused attention (flash / memory-efficient kernels on GPU): softmax(q k^T * scale + bias) v.
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=attn.scale)
    out = attn.proj_drop(attn.proj(out.transpose(1, 2).reshape(batch, num_tokens, -1)))
    if block.gamma_1 is None:
        tokens = tokens + block.drop_path(out)
        return tokens + block.drop_path(block.mlp(block.norm2(tokens)))
    tokens = tokens + block.drop_path(block.gamma_1 * out)
    return tokens + block.drop_path(block.gamma_2 * block.mlp(block.norm2(tokens)))


class BeitBackbone(ViTBackbone):
    """BEiT-L/16 or BEiT-B/16 with DPT reassemble heads; runs at any multiple of 16 pixels."""

    def __init__(self, cfg):
        super().__init__(cfg)
        # Index tables for grids other than the pretraining one, per (grid, device). Indices
        # depend on the grid only (never on weights), so caching them is always valid.
        self._position_index_cache: Dict[Tuple, torch.Tensor] = {}

    def _relative_position_index(self, attn: nn.Module, grid: Tuple[int, int]) -> torch.Tensor:
        if grid == tuple(attn.window_size):
            return attn.relative_position_index
        key = (grid, attn.relative_position_index.device)
        index = self._position_index_cache.get(key)
        if index is None:
            from timm.models.beit import gen_relative_position_index
            index = gen_relative_position_index(grid).to(key[1])
            self._position_index_cache[key] = index
        return index

    def run_block(self, block: nn.Module, tokens: torch.Tensor,
                  grid: Sequence[int]) -> torch.Tensor:
        grid = tuple(grid)
        bias = relative_position_bias(block.attn, grid,
                                      self._relative_position_index(block.attn, grid))
        return beit_block_forward(block, tokens, bias)
