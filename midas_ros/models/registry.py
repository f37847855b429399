"""The model zoo as data: one ``ModelConfig`` per official checkpoint, looked up by name.

MiDaS v2.1 / v3 / v3.1 and Depth Anything V2 (relative and metric) share one table.

In the spirit of timm's registry, a variant is a row of facts (architecture, backbone, network
input size and resize rule, normalization, checkpoint file, URL and hash), not code. Building an
architecture is the job of ``midas_ros.models.factory``; this module imports no torch, so listing
variants or validating a parameter costs nothing at node start-up.
"""
from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Tuple

_RELEASE_URL = 'https://github.com/isl-org/MiDaS/releases/download'
_HF_URL = 'https://huggingface.co/depth-anything'

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to build, load and feed one official checkpoint (MiDaS, Depth Anything).

    ``backbone`` is the official MiDaS backbone key (e.g. ``vitl16_384``) and ``timm_name`` the
    timm model it wraps (for BEiT, Swin and LeViT: the timm 0.6.13 model whose layout
    ``midas_ros.models.backbones`` rebuilds); ``hooks`` are the backbone blocks whose outputs
    feed the decoder.
    ``resize_mode`` follows the official ``Resize``: ``upper_bound`` fits the image inside the net
    size, ``minimal`` scales as little as possible so both sides reach it; with
    ``keep_aspect_ratio`` False the image is stretched to exactly ``net_w`` x ``net_h``;
    ``lower_bound`` (Depth Anything V2) scales so that both sides reach at least the net size.

    ``builder`` is ``'module:Class'`` in ``midas_ros.models``: the class built with this config
    (one module per model family). ``output`` is ``'relative'`` (relative inverse depth, larger
    = nearer, arbitrary scale and shift) or ``'metric'`` (metres; ``max_depth`` is the largest
    depth the network can output). ``upsampling`` is how the official pipeline brings the
    network output back to the image size: ``'bicubic'`` (MiDaS ``run.py``) or ``'bilinear'``
    (``align_corners=True``, Depth Anything V2 ``infer_image``). ``input_size_configurable``:
    the network runs at any multiple of ``multiple_of`` (``model.input_size``; see
    :func:`resolve_config`). ``license``: the checkpoint's licence as its authors state it.
    """

    name: str
    release: str
    arch: str                      # 'midas_net_small' | 'midas_net' | 'dpt' | 'depth_anything_v2'
    builder: str                   # 'module:Class' in midas_ros.models
    backbone: str
    timm_name: str
    net_w: int
    net_h: int
    resize_mode: str               # 'upper_bound' | 'minimal' | 'lower_bound'
    keep_aspect_ratio: bool
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    num_parameters: int
    features: int = 256
    hooks: Tuple[int, ...] = ()
    head_features_1: Optional[int] = None   # DPT head widths; None -> features (official)
    head_features_2: int = 32
    head_channels: Tuple[int, ...] = ()     # Depth Anything V2: widths of the head's projects
    stem_transpose: bool = False            # DPT-LeViT: learned 4x upsampling before the head
    multiple_of: int = 32
    output: str = 'relative'                # 'relative' | 'metric'
    max_depth: Optional[float] = None       # metric models: metres at the sigmoid's top
    dataset: str = ''                       # metric models: what the scale was learned on
    upsampling: str = 'bicubic'             # 'bicubic' | 'bilinear' (align_corners=True)
    input_size_configurable: bool = False
    license: str = 'MIT'
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
        name=name, release=release, arch='dpt', builder='dpt:DPTDepthModel', backbone=backbone,
        timm_name=timm_name,
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
        builder='midas_net:MidasNetSmall',
        backbone='efficientnet_lite3', timm_name='tf_efficientnet_lite3', features=64,
        net_w=256, net_h=256, resize_mode='upper_bound', keep_aspect_ratio=True,
        mean=IMAGENET_MEAN, std=IMAGENET_STD, num_parameters=21_320_545,
        file='midas_v21_small_256.pt', url=f'{_RELEASE_URL}/v2_1/midas_v21_small_256.pt',
        hub_file='midas_v21_small-70d6b9c8.pt'),
    ModelConfig(
        name='midas_v21_384', release='v2.1', arch='midas_net', builder='midas_net:MidasNet',
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
         50_630_837, head_features_1=64, head_features_2=8, stem_transpose=True),
    _dpt('dpt_next_vit_large_384', 'v3.1', 'next_vit_large_6m', '', (2, 6, 36, 39), 384, True,
         0, supported=False,
         unsupported_reason='its Next-ViT backbone is not in timm nor on any package registry '
                            '(the official code vendors it as a git submodule)'),
)

# Depth Anything V2 (DepthAnything/Depth-Anything-V2): DINOv2 size -> (HF repository suffix,
# head features, head channels, tapped blocks, parameters, licence). The official README: Small
# is Apache-2.0, Base/Large CC-BY-NC-4.0; the metric checkpoints carry their size's licence.
_DA2_SIZES = {
    'vits': ('Small', 64, (48, 96, 192, 384), (2, 5, 8, 11), 24_785_089, 'Apache-2.0'),
    'vitb': ('Base', 128, (96, 192, 384, 768), (2, 5, 8, 11), 97_470_785, 'CC-BY-NC-4.0'),
    'vitl': ('Large', 256, (256, 512, 1024, 1024), (4, 11, 17, 23), 335_315_649,
             'CC-BY-NC-4.0'),
}
# Metric training sets: name in the file -> (HF repository part, max depth in m, description).
_DA2_METRIC = {
    'hypersim': ('Hypersim', 20.0, 'Hypersim (synthetic indoor scenes, up to 20 m)'),
    'vkitti': ('VKITTI', 80.0, 'Virtual KITTI 2 (synthetic driving scenes, up to 80 m)'),
}


def _depth_anything_v2(size, metric=None):
    """The row of one official Depth Anything V2 checkpoint (``metric``: a _DA2_METRIC key)."""
    label, features, channels, taps, params, licence = _DA2_SIZES[size]
    if metric is None:
        name, repo, max_depth, dataset = f'depth_anything_v2_{size}', label, None, ''
    else:
        part, max_depth, dataset = _DA2_METRIC[metric]
        name, repo = f'depth_anything_v2_metric_{metric}_{size}', f'Metric-{part}-{label}'
    return ModelConfig(
        name=name, release='depth-anything-v2', arch='depth_anything_v2',
        builder='depth_anything_v2:DepthAnythingV2', backbone=size, timm_name='',
        features=features, head_channels=channels, hooks=taps, net_w=518, net_h=518,
        resize_mode='lower_bound', keep_aspect_ratio=True, multiple_of=14, mean=IMAGENET_MEAN,
        std=IMAGENET_STD, num_parameters=params,
        output='relative' if metric is None else 'metric', max_depth=max_depth,
        dataset=dataset, upsampling='bilinear', input_size_configurable=True, license=licence,
        file=f'{name}.pth', url=f'{_HF_URL}/Depth-Anything-V2-{repo}/resolve/main/{name}.pth')


_CONFIGS += tuple(_depth_anything_v2(size) for size in _DA2_SIZES)
_CONFIGS += tuple(_depth_anything_v2(size, metric) for metric in _DA2_METRIC
                  for size in _DA2_SIZES)

_REGISTRY: Dict[str, ModelConfig] = {cfg.name: cfg for cfg in _CONFIGS}

NON_COMMERCIAL_LICENSES = frozenset({'CC-BY-NC-4.0'})


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


def resolve_config(name, input_size=0, max_depth=0.0):
    """The config of variant ``name`` with the user's overrides applied (ValueError if invalid).

    ``input_size`` (pixels; 0: the variant's own): the network input size of variants whose
    network runs at any multiple of ``multiple_of`` (Depth Anything V2: 518 by default; a
    smaller one, e.g. 266, trades accuracy for speed): the short side of the network input for
    ``lower_bound`` resizing. ``max_depth`` (metres; 0: the checkpoint's): for metric variants,
    the depth a network output of 1 (sigmoid) stands for -- what the official metric scripts
    take as ``--max-depth``.
    """
    cfg = get_config(name)
    if input_size:
        if not cfg.input_size_configurable:
            raise ValueError(f"model '{name}' runs at its own input size only "
                             f'({cfg.net_w}x{cfg.net_h}); set the input size to 0')
        if not (isinstance(input_size, int) and input_size > 0
                and input_size % cfg.multiple_of == 0):
            raise ValueError(f"input size of '{name}' must be a positive multiple of "
                             f'{cfg.multiple_of} (e.g. {cfg.net_w}), got {input_size}')
        cfg = replace(cfg, net_w=input_size, net_h=input_size)
    if max_depth:
        if cfg.output != 'metric':
            raise ValueError(f"max_depth applies to metric models only; '{name}' gives "
                             'relative inverse depth: set it to 0')
        if not (max_depth > 0 and max_depth < float('inf')):
            raise ValueError(f'max_depth must be a positive number of metres, got {max_depth}')
        cfg = replace(cfg, max_depth=float(max_depth))
    return cfg


def is_non_commercial(cfg):
    """Whether the checkpoint's licence forbids commercial use (e.g. CC-BY-NC-4.0)."""
    return cfg.license in NON_COMMERCIAL_LICENSES


def variant_label(cfg):
    """The variant's name, plus what changes its network's output beyond the weights: the
    ``max_depth`` a metric network multiplies by (an exported graph holds it as a constant)."""
    return cfg.name if cfg.max_depth is None else f'{cfg.name}-max{cfg.max_depth:g}m'
