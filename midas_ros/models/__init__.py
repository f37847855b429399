"""The model zoo (MiDaS, Depth Anything V2): ``create_model(name, ...)`` is the one door to a
ready network.

Importing this package is cheap: it loads only the torch-free registry. torch, timm and the
architecture of the requested variant are imported when a model is created (or an error class is
first used), so listing or validating variant names costs nothing at node start-up.

    >>> from midas_ros.models import create_model, list_models
    >>> model = create_model('midas_v21_small_256')               # official weights, eval mode
    >>> model = create_model('midas_v21_small_256', pretrained=False)   # random weights
"""
import logging

from midas_ros.models.registry import (ModelConfig, get_config, is_non_commercial, list_models,
                                       resolve_config)

__all__ = [
    'ModelConfig', 'create_model', 'get_config', 'list_models', 'resolve_config', 'WeightsError',
    'WeightsNotFoundError', 'WeightsFormatError', 'WeightsChecksumError', 'WeightsMismatchError',
]

# Names re-exported from ``weights`` on first use (PEP 562), so that importing the package does
# not import torch.
_LAZY_FROM_WEIGHTS = frozenset({
    'WeightsError', 'WeightsNotFoundError', 'WeightsFormatError', 'WeightsChecksumError',
    'WeightsMismatchError',
})


RANDOM_WEIGHTS_SEED = 0
_log = logging.getLogger(__name__)
_licences_logged = set()   # variants whose non-commercial licence this process has logged


def create_model(name, pretrained=True, weights=None, weights_dir=None, allow_download=False,
                 max_depth=0.0):
    """Build variant ``name``, in eval mode on the CPU, with its official weights.

    With ``pretrained`` (the default) the official checkpoint is found as
    :func:`midas_ros.models.weights.resolve_weights` describes -- ``weights`` (a file path), then
    ``weights_dir`` and ``$MIDAS_WEIGHTS_DIR``, then the torch hub cache, then, only if
    ``allow_download``, the official URL -- and loaded strictly. The weights are located before
    the network is built, so a missing file fails fast. ``pretrained=False`` gives random
    weights: useless depth, for tests and demos only (the caller should warn).

    ``max_depth`` (metres, metric variants only; 0: the checkpoint's): see
    ``registry.resolve_config``. The returned module's ``weights_path`` attribute is the loaded
    file (None if random). Loading a checkpoint whose licence forbids commercial use is logged
    once per variant and process.

    Raises ValueError for an unknown or unsupported name (listing the valid ones),
    ``WeightsNotFoundError`` naming every place looked and the URL to fetch, and
    ``WeightsFormatError`` / ``WeightsMismatchError`` / ``WeightsChecksumError`` for a file that
    is not the variant's official checkpoint.
    """
    cfg = resolve_config(name, max_depth=max_depth)
    if not pretrained and (weights or weights_dir):
        raise ValueError(f"weights given for MiDaS model '{name}' together with "
                         'pretrained=False; drop one of them')
    from midas_ros.models.factory import build_model
    from midas_ros.models.weights import load_weights, resolve_weights

    path = resolve_weights(cfg, weights, weights_dir, allow_download) if pretrained else None
    import torch
    # Random weights are seeded, so runs without a checkpoint (tests, demos) are repeatable.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_WEIGHTS_SEED)
        model = build_model(cfg)
    if path is None:
        _positive_output_layer(model)
    else:
        load_weights(model, cfg, path)
        log_licence(cfg)
    model.weights_path = path
    return model.eval()


def _positive_output_layer(model):
    """Random weights only: the network's last convolution (the 1-channel output layer of every
    variant's head) gets non-negative weights and no bias.

    Its input comes out of a ReLU, so the output is then positive and varies with the image like
    a trained network's (a random positive bias would dominate it: 0.1 % variation for
    dpt_levit_224). With PyTorch's default initialization the head's final ReLU zeroes most
    pixels (all of them for dpt_levit_224): an image of +inf depth, and nothing to measure an
    int8 quantization (or a fine-tuning) against. The layout and the compute are unchanged.
    """
    import torch
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():
        last.weight.abs_()
        if last.bias is not None:
            last.bias.zero_()


def log_licence(cfg):
    """Say once per process that ``cfg``'s checkpoint is for non-commercial use only."""
    if is_non_commercial(cfg) and cfg.name not in _licences_logged:
        _licences_logged.add(cfg.name)
        _log.info("weights of '%s' are licensed %s by their authors: non-commercial use only",
                  cfg.name, cfg.license)


def __getattr__(name):
    if name in _LAZY_FROM_WEIGHTS:
        from midas_ros.models import weights
        return getattr(weights, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
