"""Build the architecture of a registered MiDaS variant (random init; weights are loaded apart).

Each architecture module is imported only when its variant is built: importing timm (all DPT
backbones and EfficientNet) costs seconds that listing or validating variants should not pay.
"""
import warnings
from importlib import import_module

from torch import nn

# timm 0.6.13 (the official checkpoints' release, still supported) predates torch 2.14: it
# decorates activations with the deprecated torch.jit.script and calls torch.meshgrid without
# `indexing` (whose default, 'ij', is what it means). Neither changes a result; both warnings
# would only clutter every node's start-up log.
warnings.filterwarnings('ignore', message='`torch.jit.script` is deprecated',
                        category=FutureWarning)
warnings.filterwarnings('ignore', message='torch.meshgrid: in an upcoming release',
                        category=UserWarning)


def build_model(cfg) -> nn.Module:
    """The randomly initialized network of ``cfg`` (a ``registry.ModelConfig``), in eval mode.

    The class is the row's ``builder`` (``'module:Class'`` in ``midas_ros.models``): a model
    family is one module, imported only when one of its variants is built. Nothing is
    downloaded: timm backbones are created with ``pretrained=False`` because the official
    checkpoint carries every weight, backbone included.
    """
    if not cfg.supported:
        raise ValueError(f"MiDaS model '{cfg.name}' is not supported: {cfg.unsupported_reason}")
    module_name, _, class_name = cfg.builder.partition(':')
    try:
        builder = getattr(import_module(f'midas_ros.models.{module_name}'), class_name)
    except (ImportError, AttributeError) as error:
        raise ValueError(f"model '{cfg.name}' names builder '{cfg.builder}', which does not "
                         f'exist ({error})') from None
    return builder(cfg).eval()
