"""DPT (Dense Prediction Transformer) depth model: the MiDaS v3 / v3.1 architecture.

A transformer encoder (``pretrained``: see ``midas_ros.models.backbones``) yields a pyramid of 3 or
4 feature maps; the convolutional decoder (``scratch``) projects each level to ``cfg.features``
channels, fuses them coarse to fine with residual refinement, and a small head turns the finest
map into one channel of relative inverse depth (ReLU: non-negative).

Attribute names are those of the official ``DPTDepthModel`` so the state_dict keys, and hence the
official checkpoints, match exactly.
"""
import torch
from torch import nn

from midas_ros.models.backbones import create_backbone
from midas_ros.models.blocks import FeatureFusionBlockCustom, Interpolate, make_scratch


def make_depth_head(in_features: int, mid_features: int) -> nn.Sequential:
    """Conv, 2x bilinear upsampling, conv-ReLU, 1x1 conv to one channel, ReLU (index layout as
    in the official head, whose key names are ``output_conv.{0,2,4}``)."""
    return nn.Sequential(
        nn.Conv2d(in_features, in_features // 2, kernel_size=3, padding=1),
        Interpolate(scale_factor=2, mode='bilinear', align_corners=True),
        nn.Conv2d(in_features // 2, mid_features, kernel_size=3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(mid_features, 1, kernel_size=1),
        nn.ReLU(inplace=True),
        nn.Identity(),
    )


class DPTDepthModel(nn.Module):
    """DPT for one ``ModelConfig`` (``arch == 'dpt'``), randomly initialized.

    ``forward``: (N, 3, H, W) normalized image -> (N, H, W) relative inverse depth. H and W:
    multiples of 32 for ViT/BEiT (any aspect ratio), exactly the network size for Swin and LeViT
    (a ValueError otherwise).
    """

    def __init__(self, cfg):
        super().__init__()
        if cfg.arch != 'dpt':
            raise ValueError(f"{cfg.name} is a '{cfg.arch}' model, not a DPT")
        features = cfg.features
        self.pretrained = create_backbone(cfg)
        self.num_levels = len(self.pretrained.out_channels)
        self.scratch = make_scratch(self.pretrained.out_channels, features)
        for level in range(1, self.num_levels + 1):
            setattr(self.scratch, f'refinenet{level}',
                    FeatureFusionBlockCustom(features, nn.ReLU(inplace=False), bn=False,
                                             expand=False, align_corners=True))
        # LeViT's coarser pyramid (1/16..1/64) needs a learned 4x upsampling before the head.
        self.has_stem_transpose = cfg.stem_transpose
        head_features_1 = cfg.head_features_1 or features
        if self.has_stem_transpose:
            from midas_ros.models.backbones.levit import make_stem_transpose
            self.scratch.stem_transpose = make_stem_transpose(features, 2 * head_features_1)
        self.scratch.output_conv = make_depth_head(head_features_1, cfg.head_features_2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = self.pretrained(x)
        scratch = self.scratch
        projected = [getattr(scratch, f'layer{i + 1}_rn')(f) for i, f in enumerate(levels)]
        # Coarse to fine: each fusion block resizes its result to the next finer level's size
        # (the finest one upsamples 2x).
        path = None
        for level in reversed(range(self.num_levels)):
            size = projected[level - 1].shape[2:] if level > 0 else None
            refine = getattr(scratch, f'refinenet{level + 1}')
            path = refine(projected[level], size=size) if path is None else \
                refine(path, projected[level], size=size)
        if self.has_stem_transpose:
            path = scratch.stem_transpose(path)
        return scratch.output_conv(path).squeeze(1)
