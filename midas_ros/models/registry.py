"""The MiDaS model zoo as data: one ``ModelConfig`` per official release, looked up by name.

In the spirit of timm's registry, a variant is a row of facts (architecture, backbone, network
input size and resize rule, normalization, checkpoint file, URL and hash), not code. Building an
architecture is the job of ``midas_ros.models.factory``; this module imports no torch, so listing
variants or validating a parameter costs nothing at node start-up.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

_RELEASE_URL = 'https://github.com/isl-org/MiDaS/releases/download'

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build, load and feed one official MiDaS variant.

    ``backbone`` is the official MiDaS backbone key (e.g. ``vitl16_384``) and ``timm_name`` the
    timm model it wraps (for BEiT, Swin and LeViT: the timm 0.6.13 model whose layout
    ``midas_ros.models.backbones`` rebuilds); ``hooks`` are the backbone blocks whose outputs
    feed the decoder.
    ``resize_mode`` follows the official ``Resize``: ``upper_bound`` fits the image inside the net
    size, ``minimal`` scales as little as possible so both sides reach it; with
    ``keep_aspect_ratio`` False the image is stretched to exactly ``net_w`` x ``net_h``.
    """

    name: str
    release: str
    arch: str                      # 'midas_net_small' | 'midas_net' | 'dpt'
    backbone: str
    timm_name: str
    net_w: int
    net_h: int
    resize_mode: str               # 'upper_bound' | 'minimal'
    keep_aspect_ratio: bool
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    num_parameters: int
    features: int = 256
    hooks: Tuple[int, ...] = ()
    head_features_1: Optional[int] = None   # DPT head widths; None -> features (official)
    head_features_2: int = 32
    multiple_of: int = 32
    # Where the official weights live. ``hub_file`` is the older torch.hub name of the same file
    # (torch.hub checks the 8-hex prefix of its SHA-256), looked for in the hub cache as well.
    file: str = ''
    url: str = ''
    sha256: Optional[str] = None
    hub_file: Optional[str] = None
    # Half precision autocast is only enabled where measured safe for the variant (GPU path).
    half_precision_safe: bool = True
    supported: bool = True
    unsupported_reason: str = ''
    extra: Dict[str, object] = field(default_factory=dict)


def _dpt(name, release, backbone, timm_name, hooks, size, keep_aspect, params, **kw):
    return ModelConfig(
        name=name, release=release, arch='dpt', backbone=backbone, timm_name=timm_name,
        hooks=tuple(hooks), net_w=size, net_h=size, resize_mode='minimal',
        keep_aspect_ratio=keep_aspect, mean=HALF, std=HALF, num_parameters=params,
        file=f'{name}.pt', url=f'{_RELEASE_URL}/{release_tag(release)}/{name}.pt', **kw)


def release_tag(release):
    """GitHub release tag of a MiDaS release ('v3.1' -> 'v3_1')."""
    return release.replace('.', '_')


_CONFIGS = (
    # MiDaS v2.1 (ImageNet normalization, upper-bound resize).
    ModelConfig(
        name='midas_v21_small_256', release='v2.1', arch='midas_net_small',
        backbone='efficientnet_lite3', timm_name='tf_efficientnet_lite3', features=64,
        net_w=256, net_h=256, resize_mode='upper_bound', keep_aspect_ratio=True,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, num_parameters=21_320_545,
        file='midas_v21_small_256.pt', url=f'{_RELEASE_URL}/v2_1/midas_v21_small_256.pt',
        hub_file='midas_v21_small-70d6b9c8.pt'),
    ModelConfig(
        name='midas_v21_384', release='v2.1', arch='midas_net',
        backbone='resnext101_wsl', timm_name='resnext101_32x8d', features=256,
        net_w=384, net_h=384, resize_mode='upper_bound', keep_aspect_ratio=True,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, num_parameters=105_362_945,
        file='midas_v21_384.pt', url=f'{_RELEASE_URL}/v2_1/midas_v21_384.pt',
        hub_file='midas_v21-f6b98070.pt'),
    # MiDaS v3 (DPT).
    _dpt('dpt_large_384', 'v3', 'vitl16_384', 'vit_large_patch16_384', (5, 11, 17, 23), 384,
         True, 344_055_465, hub_file='dpt_large-midas-2f21e586.pt'),
    # The official code names it vit_base_resnet50_384: the same network under the name both
    # timm 0.6.13 and timm 1.0 know (1.0 maps the old one with a deprecation warning).
    _dpt('dpt_hybrid_384', 'v3', 'vitb_rn50_384', 'vit_base_r50_s16_384', (0, 1, 8, 11), 384,
         True, 123_146_985, hub_file='dpt_hybrid-midas-501f0c75.pt'),
    # MiDaS v3.1.
    _dpt('dpt_beit_large_512', 'v3.1', 'beitl16_512', 'beit_large_patch16_512',
         (5, 11, 17, 23), 512, True, 345_014_441),
    _dpt('dpt_beit_large_384', 'v3.1', 'beitl16_384', 'beit_large_patch16_384',
         (5, 11, 17, 23), 384, True, 344_338_601),
    _dpt('dpt_beit_base_384', 'v3.1', 'beitb16_384', 'beit_base_patch16_384',
         (2, 5, 8, 11), 384, True, 111_531_689),
    # Swin attention overflows in fp16: the official run.py warns of non-finite depth in half.
    _dpt('dpt_swin2_large_384', 'v3.1', 'swin2l24_384',
         'swinv2_large_window12to24_192to384_22kft1k', (1, 1, 17, 1), 384, False, 213_411_869,
         half_precision_safe=False),
    _dpt('dpt_swin2_base_384', 'v3.1', 'swin2b24_384',
         'swinv2_base_window12to24_192to384_22kft1k', (1, 1, 17, 1), 384, False, 102_378_913,
         half_precision_safe=False),
    _dpt('dpt_swin2_tiny_256', 'v3.1', 'swin2t16_256', 'swinv2_tiny_window16_256',
         (1, 1, 5, 1), 256, False, 41_701_331, half_precision_safe=False),
    _dpt('dpt_swin_large_384', 'v3.1', 'swinl12_384', 'swin_large_patch4_window12_384',
         (1, 1, 17, 1), 384, False, 213_407_453, half_precision_safe=False),
    _dpt('dpt_levit_224', 'v3.1', 'levit_384', 'levit_384', (3, 11, 21), 224, False,
         50_630_837, head_features_1=64, head_features_2=8),
    _dpt('dpt_next_vit_large_384', 'v3.1', 'next_vit_large_6m', '', (2, 6, 36, 39), 384, True,
         0, supported=False,
         unsupported_reason='its Next-ViT backbone is not in timm nor on any package registry '
                            '(the official code vendors it as a git submodule)'),
)

_REGISTRY: Dict[str, ModelConfig] = {cfg.name: cfg for cfg in _CONFIGS}


def list_models(include_unsupported=False):
    """Names of the registered variants, in release order."""
    return [c.name for c in _CONFIGS if c.supported or include_unsupported]


def get_config(name):
    """The config of variant ``name``; a ValueError naming the valid ones otherwise."""
    cfg = _REGISTRY.get(name)
    if cfg is None:
        raise ValueError(f"unknown MiDaS model '{name}'; valid: {', '.join(list_models())}")
    if not cfg.supported:
        raise ValueError(f"MiDaS model '{name}' is not supported: {cfg.unsupported_reason}")
    return cfg
