"""DPT encoders: timm transformers wrapped so that they return multi-scale NCHW feature maps.

Each backbone is an ``nn.Module`` holding the timm model as ``model`` and, for the plain vision
transformers, the reassemble heads ``act_postprocess1..4``: exactly the official MiDaS key
prefixes, so an official checkpoint's ``pretrained.*`` entries load into it strictly. Unlike the
official code, intermediate outputs are collected by iterating the timm blocks in ``forward``
(no forward hooks, no module-level state), and the pieces of timm that assume a fixed input size
are re-expressed here rather than monkeypatched.

Every backbone exposes ``out_channels`` (the widths of its feature maps, finest first) and
``forward(x) -> List[Tensor]``. Modules are imported lazily: timm costs seconds to import.
"""
from typing import Sequence

_BACKBONE_MODULES = {
    'vitl16_384': ('vit', 'ViTBackbone'),
    'vitb_rn50_384': ('vit', 'HybridViTBackbone'),
    'beitl16_512': ('beit', 'BeitBackbone'),
    'beitl16_384': ('beit', 'BeitBackbone'),
    'beitb16_384': ('beit', 'BeitBackbone'),
    'swin2l24_384': ('swin', 'SwinBackbone'),
    'swin2b24_384': ('swin', 'SwinBackbone'),
    'swin2t16_256': ('swin', 'SwinBackbone'),
    'swinl12_384': ('swin', 'SwinBackbone'),
    'levit_384': ('levit', 'LevitBackbone'),
}


def create_backbone(cfg):
    """Build the (randomly initialized) DPT encoder named by ``cfg.backbone``."""
    try:
        module_name, class_name = _BACKBONE_MODULES[cfg.backbone]
    except KeyError:
        raise ValueError(f"no DPT backbone '{cfg.backbone}' (model '{cfg.name}'); known: "
                         f"{', '.join(sorted(_BACKBONE_MODULES))}") from None
    from importlib import import_module
    module = import_module(f'{__name__}.{module_name}')
    return getattr(module, class_name)(cfg)


def tokens_to_map(tokens, grid: Sequence[int]):
    """(B, H*W, C) row-major tokens -> (B, C, H, W) feature map (a view, no copy)."""
    return tokens.transpose(1, 2).unflatten(2, tuple(grid))


def check_input_size(x, expected: Sequence[int], model_name: str):
    """Raise a clear error for backbones whose attention layout is fixed at one input size."""
    if tuple(x.shape[-2:]) != tuple(expected):
        raise ValueError(f'{model_name} takes only {expected[0]}x{expected[1]} (HxW) input '
                         f'(its attention windows are fixed at construction); got '
                         f'{x.shape[-2]}x{x.shape[-1]}')
