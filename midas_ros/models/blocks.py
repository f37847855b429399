"""Decoder pieces shared by the DPT and MidasNet architectures.

Module and attribute names follow the official MiDaS code (``resConfUnit1``, ``out_conv``,
``layer1_rn``...) because they become the checkpoint's key names, e.g.
``scratch.refinenet1.resConfUnit1.conv1.weight``; renaming an attribute breaks strict loading of
the official ``.pt`` files.
"""
from typing import Optional, Sequence

import torch
from torch import nn
import torch.nn.functional as F


class Interpolate(nn.Module):
    """Resize by a fixed ``scale_factor`` (a module so it can sit inside an ``nn.Sequential``)."""

    def __init__(self, scale_factor: float, mode: str, align_corners: bool = False):
        super().__init__()
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode=self.mode,
                             align_corners=self.align_corners)

    def extra_repr(self) -> str:
        return f'scale_factor={self.scale_factor}, mode={self.mode}, ' \
               f'align_corners={self.align_corners}'


class ResidualConvUnit(nn.Module):
    """Pre-activation residual unit of MidasNet v2.1: ``relu(x) + conv2(relu(conv1(relu(x))))``.

    The official unit applies an *in-place* ReLU to its input before the convolutions, so its skip
    connection adds ``relu(x)``, not ``x``; the trained weights depend on that, so it is reproduced
    here explicitly (without mutating the caller's tensor).
    """

    def __init__(self, features: int):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        return self.conv2(F.relu(self.conv1(x))) + x


class FeatureFusionBlock(nn.Module):
    """RefineNet-style fusion of MidasNet v2.1: merge a skip feature, refine, upsample 2x."""

    def __init__(self, features: int):
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        return F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=True)


class ResidualConvUnitCustom(nn.Module):
    """Residual unit of DPT and MidasNet-small: ``x + conv2(act(conv1(act(x))))``, optional BN.

    Unlike :class:`ResidualConvUnit` the activation is not in place, so the skip adds ``x`` itself.
    """

    def __init__(self, features: int, activation: nn.Module, bn: bool = False):
        super().__init__()
        self.bn = bn
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1, bias=True)
        if bn:
            self.bn1 = nn.BatchNorm2d(features)
            self.bn2 = nn.BatchNorm2d(features)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.activation(x))
        if self.bn:
            out = self.bn1(out)
        out = self.conv2(self.activation(out))
        if self.bn:
            out = self.bn2(out)
        return out + x


class FeatureFusionBlockCustom(nn.Module):
    """Fusion block of DPT and MidasNet-small: merge skip, refine, resize, 1x1 projection.

    The output is resized to ``size`` (given per call, else the one fixed at construction), or
    by 2x when neither is set. ``expand`` halves the channel count in the final projection.
    """

    def __init__(self, features: int, activation: nn.Module, bn: bool = False,
                 expand: bool = False, align_corners: bool = True,
                 size: Optional[Sequence[int]] = None):
        super().__init__()
        self.align_corners = align_corners
        self.size = size
        out_features = features // 2 if expand else features
        self.out_conv = nn.Conv2d(features, out_features, kernel_size=1, bias=True)
        self.resConfUnit1 = ResidualConvUnitCustom(features, activation, bn)
        self.resConfUnit2 = ResidualConvUnitCustom(features, activation, bn)

    def forward(self, x: torch.Tensor, skip: Optional[torch.Tensor] = None,
                size: Optional[Sequence[int]] = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        size = size if size is not None else self.size
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode='bilinear',
                              align_corners=self.align_corners)
        else:
            x = F.interpolate(x, size=tuple(size), mode='bilinear',
                              align_corners=self.align_corners)
        return self.out_conv(x)


def make_scratch(in_channels: Sequence[int], features: int, expand: bool = False,
                 groups: int = 1) -> nn.Module:
    """The decoder container with its ``layerN_rn`` 3x3 convs from encoder widths to ``features``.

    One conv per encoder level (3 or 4). With ``expand`` level ``i`` gets ``features * 2**i``
    channels (MidasNet-small), otherwise all levels get ``features``. The caller adds the
    ``refinenetN`` blocks and the ``output_conv`` head to the returned module.
    """
    if len(in_channels) not in (3, 4):
        raise ValueError(f'expected 3 or 4 encoder widths, got {list(in_channels)}')
    scratch = nn.Module()
    for level, width in enumerate(in_channels):
        out_width = features * 2 ** level if expand else features
        setattr(scratch, f'layer{level + 1}_rn',
                nn.Conv2d(width, out_width, kernel_size=3, padding=1, bias=False, groups=groups))
    return scratch
