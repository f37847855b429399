"""MiDaS v2.1 CNNs: ``MidasNet`` (ResNeXt-101 encoder) and ``MidasNetSmall`` (EfficientNet-Lite3).

Both are a four-level encoder from timm (built with ``pretrained=False``: the MiDaS checkpoint
carries every weight) followed by the RefineNet-style decoder of :mod:`.blocks`. Output: relative
inverse depth, ``N x H x W``, non-negative, at the input resolution (which must be a multiple of
32, as the preprocessing guarantees).

Module names reproduce the official key names exactly (``pretrained.layer1.0.weight``,
``scratch.refinenet4.resConfUnit2.conv1.bias``...), so the official ``.pt`` files load with
``strict=True``.
"""
import timm
import torch
from torch import nn

from .blocks import (FeatureFusionBlock, FeatureFusionBlockCustom, Interpolate,
                     make_scratch)

# Output widths of the four encoder levels that feed the decoder.
_RESNEXT_WIDTHS = (256, 512, 1024, 2048)
_EFFICIENTNET_LITE3_WIDTHS = (32, 48, 136, 384)


class _FourLevelEncoder(nn.Module):
    """``layer1`` .. ``layer4``: the encoder sliced at the four resolutions the decoder taps."""

    def __init__(self, layer1, layer2, layer3, layer4):
        super().__init__()
        self.layer1, self.layer2, self.layer3, self.layer4 = layer1, layer2, layer3, layer4


def resnext101_wsl_encoder(timm_name: str) -> _FourLevelEncoder:
    """ResNeXt-101 32x8d sliced like the official ``_make_resnet_backbone``.

    The official code takes torchvision's model (via the WSL torch.hub entry); timm's ResNeXt has
    the same parameter names and the same computation, only its ReLU is called ``act1``, which
    owns no parameters and so does not show in the keys.
    """
    resnet = timm.create_model(timm_name, pretrained=False)
    stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.act1, resnet.maxpool, resnet.layer1)
    return _FourLevelEncoder(stem, resnet.layer2, resnet.layer3, resnet.layer4)


def efficientnet_lite3_encoder(timm_name: str) -> _FourLevelEncoder:
    """EfficientNet-Lite3 sliced like the official ``_make_efficientnet_backbone``.

    The official code builds it with ``geffnet`` (``exportable=True``), whose stem is
    ``conv_stem, bn1, act1`` -- three modules, so the first block sits at index 3 of
    ``layer1`` (``pretrained.layer1.3.0...``). timm folds the ReLU6 into ``bn1``
    (``BatchNormAct2d``, same parameter names); an ``nn.Identity`` holds index 2 so the indices,
    and thus the checkpoint keys, stay the official ones.

    Numerics: both use TF "same" padding. geffnet's exportable ``Conv2dSameExport`` freezes the
    padding computed for the first input size, timm's ``Conv2dSame`` recomputes it per call; for
    the even feature maps a multiple-of-32 input produces, a stride-2 ``k x k`` conv is padded by
    ``k - 2`` pixels (``(k - 2) // 2`` before, the rest after) either way: identical outputs.
    """
    effnet = timm.create_model(timm_name, pretrained=False)
    blocks = effnet.blocks
    stem = nn.Sequential(effnet.conv_stem, effnet.bn1, nn.Identity(), *blocks[0:2])
    return _FourLevelEncoder(stem, nn.Sequential(*blocks[2:3]), nn.Sequential(*blocks[3:5]),
                             nn.Sequential(*blocks[5:]))


class _MidasNetBase(nn.Module):
    """The forward pass both v2.1 networks share; subclasses build ``pretrained`` and ``scratch``.

    ``pretrained`` and ``scratch`` are the official attribute names (they prefix every key).
    """

    pretrained: _FourLevelEncoder
    scratch: nn.Module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``N x 3 x H x W`` normalized image -> ``N x H x W`` relative inverse depth."""
        enc, dec = self.pretrained, self.scratch
        layer_1 = enc.layer1(x)
        layer_2 = enc.layer2(layer_1)
        layer_3 = enc.layer3(layer_2)
        layer_4 = enc.layer4(layer_3)

        path = dec.refinenet4(dec.layer4_rn(layer_4))
        path = dec.refinenet3(path, dec.layer3_rn(layer_3))
        path = dec.refinenet2(path, dec.layer2_rn(layer_2))
        path = dec.refinenet1(path, dec.layer1_rn(layer_1))
        return dec.output_conv(path).squeeze(1)


class MidasNet(_MidasNetBase):
    """MiDaS v2.1 (``midas_v21_384``): ResNeXt-101 32x8d WSL encoder, 256-wide decoder."""

    def __init__(self, cfg):
        super().__init__()
        features = cfg.features
        self.pretrained = resnext101_wsl_encoder(cfg.timm_name)
        self.scratch = make_scratch(_RESNEXT_WIDTHS, features)
        for level in (4, 3, 2, 1):  # the official registration order (and key order)
            setattr(self.scratch, f'refinenet{level}', FeatureFusionBlock(features))
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(features, 128, kernel_size=3, padding=1),
            Interpolate(scale_factor=2, mode='bilinear'),
            nn.Conv2d(128, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 1, kernel_size=1),
            nn.ReLU(inplace=True),  # inverse depth is non-negative
        )


class MidasNetSmall(_MidasNetBase):
    """MiDaS v2.1 small (``midas_v21_small_256``): EfficientNet-Lite3 encoder, expanding decoder.

    The decoder is "expanded": level ``i`` is ``features * 2**i`` wide (64, 128, 256, 512) and
    each fusion block halves the width on its way up.
    """

    def __init__(self, cfg):
        super().__init__()
        features = cfg.features
        self.pretrained = efficientnet_lite3_encoder(cfg.timm_name)
        self.scratch = make_scratch(_EFFICIENTNET_LITE3_WIDTHS, features, expand=True)
        # One activation module shared by all blocks, as in the official model (no parameters).
        self.scratch.activation = activation = nn.ReLU(inplace=False)
        for level in (4, 3, 2, 1):  # the official registration order (and key order)
            setattr(self.scratch, f'refinenet{level}', FeatureFusionBlockCustom(
                features * 2 ** (level - 1), activation, expand=level > 1, align_corners=True))
        self.scratch.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, kernel_size=3, padding=1),
            Interpolate(scale_factor=2, mode='bilinear'),
            nn.Conv2d(features // 2, 32, kernel_size=3, padding=1),
            activation,
            nn.Conv2d(32, 1, kernel_size=1),
            nn.ReLU(inplace=True),  # inverse depth is non-negative
        )
