"""Build the architecture of a registered MiDaS variant (random init; weights are loaded apart).

Each architecture module is imported only when its variant is built: importing timm (all DPT
backbones and EfficientNet) costs seconds that listing or validating variants should not pay.
"""
import warnings

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

    Nothing is downloaded: timm backbones are created with ``pretrained=False`` because the
    official MiDaS checkpoint carries every weight, backbone included.
    """
    if not cfg.supported:
        raise ValueError(f"MiDaS model '{cfg.name}' is not supported: {cfg.unsupported_reason}")
    if cfg.arch == 'dpt':
        from midas_ros.models.dpt import DPTDepthModel
        model = DPTDepthModel(cfg)
    elif cfg.arch == 'midas_net':
        from midas_ros.models.midas_net import MidasNet
        model = MidasNet(cfg)
    elif cfg.arch == 'midas_net_small':
        from midas_ros.models.midas_net import MidasNetSmall
        model = MidasNetSmall(cfg)
    else:
        raise ValueError(f"MiDaS model '{cfg.name}' has unknown architecture '{cfg.arch}'")
    return model.eval()
