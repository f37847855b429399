"""Swin and Swin V2 encoders of DPT (dpt_swin_large_384, dpt_swin2_{large,base}_384,
dpt_swin2_tiny_256).

A hierarchical transformer already yields a pyramid: the tokens at the end of each of the four
stages (before the patch merging that starts the next one) are laid out on that stage's grid,
1/4 ... 1/32 of the input. timm builds the shifted-window attention masks for one input
resolution, so these encoders take exactly their network size (MiDaS resizes the image to it
without keeping the aspect ratio).
"""
from typing import List

import torch
from torch import nn

from midas_ros.models.backbones import check_input_size, tokens_to_map


class SwinBackbone(nn.Module):
    """Taps ``cfg.hooks[i]`` (a block index within stage ``i``) of a timm Swin / Swin V2."""

    def __init__(self, cfg):
        super().__init__()
        import timm  # deferred: importing timm takes seconds
        self.model = timm.create_model(cfg.timm_name, pretrained=False)
        self.name = cfg.name
        self.hooks = tuple(cfg.hooks)
        layers = self.model.layers
        if len(self.hooks) != len(layers):
            raise ValueError(f'{cfg.name}: {len(layers)} Swin stages need one hook each, '
                             f'got {self.hooks}')
        for stage, (layer, hook) in enumerate(zip(layers, self.hooks)):
            if not 0 <= hook < len(layer.blocks):
                raise ValueError(f'{cfg.name}: hook {hook} of stage {stage} is outside its '
                                 f'{len(layer.blocks)} blocks')
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
