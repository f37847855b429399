"""The timm 0.6.13 encoders of BEiT, Swin and LeViT, as midas_ros ran them before it built them
itself: the reference the project's own encoders are checked against.

The official MiDaS code builds these backbones with ``timm.create_model`` under timm 0.6.13 (the
release its checkpoints were saved from); this module does the same and taps the blocks the same
way (the code midas_ros shipped until its encoders stopped depending on timm's module layout,
whose outputs matched the official code's). It needs timm 0.6.13: under later releases the
modules' layouts differ, which is why the project no longer uses them. Test-only.
"""
import math
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from midas_ros.models.backbones import check_input_size, tokens_to_map
from midas_ros.models.backbones.beit import relative_position_bias
from midas_ros.models.backbones.swin import check_stage_hooks
from midas_ros.models.backbones.vit import ViTBackbone

REFERENCE_TIMM = '0.6.13'


class TimmSwinBackbone(nn.Module):
    """Taps ``cfg.hooks[i]`` (a block index within stage ``i``) of a timm Swin / Swin V2."""

    def __init__(self, cfg):
        super().__init__()
        import timm  # deferred: importing timm takes seconds
        self.model = timm.create_model(cfg.timm_name, pretrained=False)
        self.name = cfg.name
        self.hooks = tuple(cfg.hooks)
        layers = self.model.layers
        check_stage_hooks(cfg.name, layers, self.hooks)
        self.out_channels = tuple(layer.blocks[0].norm1.normalized_shape[0] for layer in layers)
        self.input_size = tuple(self.model.patch_embed.img_size)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        check_input_size(x, self.input_size, self.name)
        model = self.model
        x = model.patch_embed(x)
        if model.absolute_pos_embed is not None:
            x = x + model.absolute_pos_embed
        x = model.pos_drop(x)
        features = []
        for layer, hook in zip(model.layers, self.hooks):
            for index, block in enumerate(layer.blocks):
                x = block(x)
                if index == hook:
                    features.append(tokens_to_map(x, layer.blocks[0].input_resolution))
            if layer.downsample is not None:  # timm: None (Swin) or Identity (Swin V2) at the end
                x = layer.downsample(x)
        return features


class TimmLevitBackbone(nn.Module):
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


class TimmBeitBackbone(ViTBackbone):
    """timm 0.6.13's BEiT with the official code's resized relative-position bias: timm's own
    block forward at the pretraining grid, the official patched attention (plain softmax) on
    other grids."""

    def __init__(self, cfg):
        super().__init__(cfg)
        self._position_index_cache: Dict[Tuple, torch.Tensor] = {}

    @staticmethod
    def create_encoder(cfg) -> nn.Module:
        import timm
        return timm.create_model(cfg.timm_name, pretrained=False)

    def _relative_position_index(self, attn: nn.Module, grid: Tuple[int, int]) -> torch.Tensor:
        from timm.models.beit import gen_relative_position_index
        if grid not in self._position_index_cache:
            self._position_index_cache[grid] = gen_relative_position_index(grid)
        return self._position_index_cache[grid]

    def run_block(self, block: nn.Module, tokens: torch.Tensor,
                  grid: Sequence[int]) -> torch.Tensor:
        grid = tuple(grid)
        if grid == tuple(block.attn.window_size):
            return block(tokens)
        attn = block.attn
        bias = relative_position_bias(attn, grid, self._relative_position_index(attn, grid))
        batch, num_tokens, _ = tokens.shape
        qkv = F.linear(block.norm1(tokens), attn.qkv.weight,
                       torch.cat((attn.q_bias, attn.k_bias, attn.v_bias)))
        q, k, v = qkv.reshape(batch, num_tokens, 3, attn.num_heads, -1).permute(
            2, 0, 3, 1, 4).unbind(0)
        weights = ((q * attn.scale) @ k.transpose(-2, -1) + bias).softmax(dim=-1)
        out = attn.proj((weights @ v).transpose(1, 2).reshape(batch, num_tokens, -1))
        tokens = tokens + block.drop_path(block.gamma_1 * out)
        return tokens + block.drop_path(block.gamma_2 * block.mlp(block.norm2(tokens)))


REFERENCE_BACKBONES = {'beit': TimmBeitBackbone, 'swin': TimmSwinBackbone,
                       'levit': TimmLevitBackbone}


def reference_model(cfg):
    """The variant's model with its BEiT / Swin / LeViT encoder replaced by timm 0.6.13's (the
    others already use timm's modules). Raises RuntimeError under another timm."""
    import timm
    if timm.__version__ != REFERENCE_TIMM:
        raise RuntimeError(f'the reference encoders need timm {REFERENCE_TIMM}, '
                           f'not {timm.__version__}')
    from midas_ros.models.factory import build_model
    model = build_model(cfg)
    family = next((f for f in REFERENCE_BACKBONES if cfg.backbone.startswith(f)), None)
    if family is not None:
        model.pretrained = REFERENCE_BACKBONES[family](cfg).eval()
    return model.eval()
