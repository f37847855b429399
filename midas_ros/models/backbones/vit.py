"""Plain and hybrid vision-transformer encoders of DPT (MiDaS v3: dpt_large_384, dpt_hybrid_384).

The transformer runs at any input size that is a multiple of the patch size: the learned position
embedding (made for a 24x24 grid at 384x384) is bilinearly resized to the actual patch grid, as
the official ``forward_flex`` does. Four blocks are tapped; each tap is "reassembled" into an
image-like feature map: the class token is folded into every patch token (``ProjectReadout``),
the tokens are laid out on the patch grid, projected by a 1x1 conv and resampled to 1/4, 1/8,
1/16, 1/32 of the input. The hybrid (ViT-B + ResNet-50 stem) takes its two finest levels straight
from ResNet stages.
"""
import math
from collections import OrderedDict
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn
import torch.nn.functional as F

from midas_ros.models.backbones import tokens_to_map

# Widths of the four reassembled feature maps, finest first (official ``_make_encoder``).
REASSEMBLE_WIDTHS = {
    'vitl16_384': (256, 512, 1024, 1024),
    'vitb_rn50_384': (256, 512, 768, 768),
    'beitl16_512': (256, 512, 1024, 1024),
    'beitl16_384': (256, 512, 1024, 1024),
    'beitb16_384': (96, 192, 384, 768),
}


class ProjectReadout(nn.Module):
    """Fold the class token into each patch token: ``GELU(W [patch; cls] + b)``.

    The official module concatenates every patch token with a broadcast copy of the class token
    before one Linear; splitting the weight into its patch and class halves gives the same result
    without materializing the (B, N, 2C) concatenation, and computes the class term once.
    """

    def __init__(self, dim: int, start_index: int = 1):
        super().__init__()
        self.start_index = start_index
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        linear, activation = self.project
        dim = tokens.shape[-1]
        patch_term = F.linear(tokens[:, self.start_index:], linear.weight[:, :dim])
        class_term = F.linear(tokens[:, :1], linear.weight[:, dim:], linear.bias)
        return activation(patch_term + class_term)


class Reassemble(nn.Sequential):
    """Tokens of one transformer tap -> NCHW map: readout, grid layout, 1x1 conv, resample.

    Children are named ``0``, ``3`` and ``4`` because the official ``act_postprocessN`` Sequential
    holds two parameter-free modules (transpose, unflatten) at indices 1 and 2; the grid layout is
    done here in ``forward`` instead, for the actual (not the construction-time) patch grid.
    """

    def __init__(self, readout: nn.Module, project: nn.Module,
                 resample: Optional[nn.Module] = None):
        layers = OrderedDict([('0', readout), ('3', project)])
        if resample is not None:
            layers['4'] = resample
        super().__init__(layers)

    def forward(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        readout, *convs = self._modules.values()
        x = tokens_to_map(readout(tokens), grid)
        for conv in convs:
            x = conv(x)
        return x


def make_reassemble(level: int, dim: int, width: int) -> Reassemble:
    """Reassemble head of pyramid ``level`` (0..3): patch grid (1/16) -> 1/4, 1/8, 1/16, 1/32."""
    if level == 0:
        resample = nn.ConvTranspose2d(width, width, kernel_size=4, stride=4)
    elif level == 1:
        resample = nn.ConvTranspose2d(width, width, kernel_size=2, stride=2)
    elif level == 2:
        resample = None
    else:
        resample = nn.Conv2d(width, width, kernel_size=3, stride=2, padding=1)
    return Reassemble(ProjectReadout(dim), nn.Conv2d(dim, width, kernel_size=1), resample)


def resize_position_embedding(pos_embed: torch.Tensor, grid: Sequence[int],
                              num_prefix_tokens: int = 1) -> torch.Tensor:
    """Bilinearly resize a square grid of position embeddings to ``grid`` (prefix tokens kept)."""
    prefix, patch = pos_embed[:, :num_prefix_tokens], pos_embed[0, num_prefix_tokens:]
    side = math.isqrt(int(patch.shape[0]))
    if (side, side) == tuple(grid):
        return pos_embed
    patch = patch.reshape(1, side, side, -1).permute(0, 3, 1, 2)
    patch = F.interpolate(patch, size=tuple(grid), mode='bilinear', align_corners=False)
    patch = patch.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1)
    return torch.cat([prefix, patch], dim=1)


class ViTBackbone(nn.Module):
    """ViT-L/16 encoder of dpt_large_384; subclasses swap the patch stem or the blocks."""

    #: pyramid levels that come from the CNN stem instead of transformer taps (hybrid: 2)
    num_stem_levels = 0

    def __init__(self, cfg):
        super().__init__()
        self.model = self.create_encoder(cfg)
        widths = REASSEMBLE_WIDTHS[cfg.backbone]
        self.out_channels = tuple(widths)
        # Hybrid: the first hooks name CNN stages (the official code always uses stages 0, 1).
        self.block_hooks = tuple(cfg.hooks[self.num_stem_levels:])
        dim = self.model.embed_dim
        for level in range(self.num_stem_levels, 4):
            setattr(self, f'act_postprocess{level + 1}',
                    make_reassemble(level, dim, widths[level]))

    @staticmethod
    def create_encoder(cfg) -> nn.Module:
        """The transformer: timm's ViT, whose layout the checkpoints share in every timm
        release this package supports (0.6.13 to 1.0)."""
        import timm  # deferred: importing timm takes seconds
        return timm.create_model(cfg.timm_name, pretrained=False)

    def embed_patches(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Input image -> (stem feature maps, NCHW patch embeddings on the patch grid)."""
        return [], self.model.patch_embed.proj(x)

    def run_block(self, block: nn.Module, tokens: torch.Tensor,
                  grid: Sequence[int]) -> torch.Tensor:
        return block(tokens)

    def add_position(self, tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
        pos_embed = self.model.pos_embed
        if pos_embed is None:
            return tokens
        return tokens + resize_position_embedding(pos_embed, grid)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        features, patches = self.embed_patches(x)
        grid = tuple(patches.shape[-2:])
        tokens = patches.flatten(2).transpose(1, 2)
        norm = getattr(self.model.patch_embed, 'norm', None)
        if norm is not None:
            tokens = norm(tokens)
        cls_token = self.model.cls_token.expand(tokens.shape[0], -1, -1)
        tokens = self.add_position(torch.cat((cls_token, tokens), dim=1), grid)
        tokens = self.model.pos_drop(tokens)

        taps = []
        # Blocks after the last tap (and the final norm) do not influence the depth: skip them.
        for index, block in enumerate(self.model.blocks[:max(self.block_hooks) + 1]):
            tokens = self.run_block(block, tokens, grid)
            if index in self.block_hooks:
                taps.append(tokens)
        for level, tap in enumerate(taps, start=self.num_stem_levels):
            features.append(getattr(self, f'act_postprocess{level + 1}')(tap, grid))
        return features


class HybridViTBackbone(ViTBackbone):
    """ViT-B/16 on a ResNet-50 stem (dpt_hybrid_384): ResNet stages 0 and 1 are levels 0 and 1."""

    num_stem_levels = 2

    def embed_patches(self, x: torch.Tensor) -> Tuple[List[torch.Tensor], torch.Tensor]:
        resnet = self.model.patch_embed.backbone
        x = resnet.stem(x)
        features = []
        for index, stage in enumerate(resnet.stages):
            x = stage(x)
            if index < self.num_stem_levels:
                features.append(x)
        # The ResNet's head is global_pool='' and num_classes=0: an identity, skipped.
        return features, self.model.patch_embed.proj(resnet.norm(x))
