"""Finding, verifying and strictly loading the official MiDaS checkpoint of a variant.

Resolution order (first hit wins):

1. an explicit file path (an error if it does not exist: an explicit choice is never overridden);
2. a weights directory given by the caller, then the directory in ``$MIDAS_WEIGHTS_DIR``;
3. the torch hub checkpoint cache, ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``),
   where ``torch.hub`` and the official ``hubconf.py`` put the files;
4. only with ``allow_download=True``: a download of ``cfg.url`` into that cache, SHA-256 checked.

Each directory is searched for the release file name (``cfg.file``) and the older torch.hub name
(``cfg.hub_file``, e.g. ``midas_v21_small-70d6b9c8.pt``), whose 8 hex digits are the first
digits of the file's SHA-256 (torch.hub's ``check_hash`` convention).

Loading never leaves a half-loaded model: keys and shapes are compared before
``load_state_dict(strict=True)`` is called, and every problem raises one of the
:class:`WeightsError` subclasses with a message that says what to do.
"""
import hashlib
import logging
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import torch

WEIGHTS_DIR_ENV = 'MIDAS_WEIGHTS_DIR'

# torch.hub's HASH_REGEX: '<name>-<sha256 prefix>.<ext>'.
_HUB_HASH_PREFIX = re.compile(r'-([a-f0-9]{8,64})\.')
_SHOWN_KEYS = 5   # how many key names of each kind a mismatch message lists

_log = logging.getLogger(__name__)


class WeightsError(RuntimeError):
    """Base class of every weights resolution and loading error."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """No checkpoint was found (or could be downloaded) for the variant."""


class WeightsFormatError(WeightsError, ValueError):
    """The file is not a readable PyTorch checkpoint holding a state_dict."""


class WeightsChecksumError(WeightsError, ValueError):
    """The file's SHA-256 differs from the published one."""


class WeightsMismatchError(WeightsError, ValueError):
    """The checkpoint's keys or shapes are not those of the variant's architecture."""


def hub_checkpoint_dir() -> Path:
    """torch.hub's checkpoint cache: ``$TORCH_HOME/hub/checkpoints`` (honours ``set_dir``)."""
    return Path(torch.hub.get_dir()) / 'checkpoints'


def checkpoint_names(cfg) -> Tuple[str, ...]:
    """File names a checkpoint of ``cfg`` may have: the release name, then the legacy hub name."""
    return tuple(name for name in (cfg.file, cfg.hub_file) if name)


def search_dirs(weights_dir=None) -> List[Tuple[str, Optional[Path]]]:
    """``(label, directory)`` in search order; directory None where the source is not set."""
    env_dir = os.environ.get(WEIGHTS_DIR_ENV) or None
    return [
        ('weights directory parameter', Path(weights_dir).expanduser() if weights_dir else None),
        (f'${WEIGHTS_DIR_ENV}', Path(env_dir).expanduser() if env_dir else None),
        ('torch hub cache', hub_checkpoint_dir()),
    ]


def expected_sha256(cfg, path) -> Optional[str]:
    """Return the SHA-256 (or its leading part) a file of ``cfg`` named like ``path`` needs.

    The full published hash for the release file when the registry knows it, else the prefix a
    torch.hub-style name carries; None when nothing is known.
    """
    name = Path(path).name
    if name == cfg.file and cfg.sha256:
        return cfg.sha256.lower()
    match = _HUB_HASH_PREFIX.search(name)
    return match.group(1) if match else None


def file_sha256(path) -> str:
    """Hex SHA-256 of a file, read in chunks (checkpoints are up to 1.5 GB)."""
    with open(path, 'rb') as f:
        return hashlib.file_digest(f, 'sha256').hexdigest()


def verify_sha256(cfg, path, name=None):
    """Raise :class:`WeightsChecksumError` if ``path`` does not hash to what ``cfg`` expects.

    ``name`` is the file name that selects the expected hash (default: that of ``path``; a
    download is checked under its final name). Returns True when a hash was checked, False when
    none is known for the file.
    """
    expected = expected_sha256(cfg, name or path)
    if expected is None:
        return False
    actual = file_sha256(path)
    if not actual.startswith(expected):
        raise WeightsChecksumError(
            f"{path}: SHA-256 {actual} does not match the published {expected} of MiDaS model "
            f"'{cfg.name}': the file is corrupt, truncated or not the official release")
    return True


def resolve_weights(cfg, weights=None, weights_dir=None, allow_download=False,
                    check_hash=False, progress=True) -> Path:
    """Find the checkpoint to load for ``cfg``, in the resolution order of this module.

    ``check_hash`` also verifies files found on disk (downloads are always verified when a hash is
    known); it reads the whole file, so it is off by default: a damaged or foreign file is caught
    anyway by the strict key/shape check when loading.
    """
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            what = 'is a directory (pass it as the weights directory)' if path.is_dir() \
                else 'does not exist'
            raise WeightsNotFoundError(
                f"weights file for MiDaS model '{cfg.name}' {what}: {path}")
        return _checked(cfg, path, check_hash)

    places = search_dirs(weights_dir)
    for _, directory in places:
        for name in checkpoint_names(cfg) if directory else ():
            if (directory / name).is_file():
                return _checked(cfg, directory / name, check_hash)

    hub_dir = hub_checkpoint_dir()
    if not allow_download:
        raise WeightsNotFoundError(_not_found_message(cfg, places, hub_dir, download_error=None))
    try:
        return download_weights(cfg, hub_dir, progress=progress)
    except WeightsChecksumError:
        raise
    except Exception as exc:  # offline, HTTP error, disk full: one error that says it all
        raise WeightsNotFoundError(
            _not_found_message(cfg, places, hub_dir, download_error=exc)) from exc


def download_weights(cfg, directory, progress=True) -> Path:
    """Download ``cfg.url`` into ``directory`` as ``cfg.file``; verify it before it lands there.

    The file is fetched under a temporary name and moved into place only after the SHA-256 check,
    so an interrupted or forged download never becomes a cached checkpoint.
    """
    if not cfg.url:
        raise WeightsNotFoundError(f"MiDaS model '{cfg.name}' has no download URL")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / cfg.file
    partial = directory / f'{cfg.file}.{os.getpid()}.download'  # one per process
    _log.info("downloading MiDaS model '%s' from %s to %s", cfg.name, cfg.url, target)
    try:
        torch.hub.download_url_to_file(cfg.url, str(partial), hash_prefix=None,
                                       progress=progress)
        checked = verify_sha256(cfg, partial, name=target.name)
        if not checked:
            _log.warning("no published SHA-256 for '%s': its integrity rests on the strict "
                         'key/shape check at load time', cfg.file)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def load_state_dict_file(path) -> Dict[str, torch.Tensor]:
    """Read the state_dict of a checkpoint file: a plain one, or the official training wrapper.

    Loaded with ``weights_only=True`` (no code from the file runs) onto the CPU. The official
    training code saved ``{'model': state_dict, 'optimizer': ...}``; ``BaseModel.load`` accepts
    both forms, and so does this.
    """
    # torch.save's zip format can be memory-mapped: the tensors are paged in from the file as
    # load_state_dict copies them, instead of first being read whole into a second RAM copy
    # (1.3 GB for the BEiT-L checkpoints). Older pickle-format files are read normally.
    mmap = zipfile.is_zipfile(path)
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True, mmap=mmap)
    except Exception as exc:
        raise WeightsFormatError(
            f'{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: '
            f'{_first_line(exc)}); the file may be truncated, or another format') from exc
    if isinstance(obj, Mapping) and isinstance(obj.get('model'), Mapping):
        obj = obj['model']
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise WeightsFormatError(
            f'{path} does not hold a state_dict (a mapping of names to tensors, or '
            f"{{'model': state_dict, ...}}); found {type(obj).__name__}")
    return obj


def check_state_dict(model, state_dict, cfg, source='<state_dict>'):
    """Raise :class:`WeightsMismatchError` unless ``state_dict`` fits ``model`` exactly.

    The message names the variant, the source and the missing, unexpected and mis-shaped keys
    (the first few of each, with counts), which is usually enough to see that the file belongs to
    another variant.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state_dict.items()}
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    misshaped = [f'{k}: file {list(found[k])} vs model {list(shape)}'
                 for k, shape in expected.items() if k in found and found[k] != shape]
    if not (missing or unexpected or misshaped):
        return
    parts = [_listing(title, items) for title, items in (
        ('missing', missing), ('unexpected', unexpected), ('mis-shaped', misshaped)) if items]
    raise WeightsMismatchError(
        f"{source} does not match MiDaS model '{cfg.name}' ({len(expected)} tensors): "
        + '; '.join(parts)
        + '. Is it the checkpoint of another variant, or a damaged file?')


def architectural_buffers(model) -> Dict[str, torch.Tensor]:
    """The saved buffers of ``model`` that its architecture alone defines, by state_dict key.

    Index tables of relative positions and shifted-window attention masks follow from the layer
    sizes, not from training: every persistent buffer except BatchNorm's running statistics
    (which are learned). The official checkpoints carry these tables because timm 0.6.13 saved
    them; loading keeps the model's own (see :func:`load_weights`).
    """
    from torch.nn.modules.batchnorm import _BatchNorm
    parameters = {name for name, _ in model.named_parameters()}
    batch_norms = {name for name, module in model.named_modules()
                   if isinstance(module, _BatchNorm)}
    return {name: tensor for name, tensor in model.state_dict().items()
            if name not in parameters and name.rpartition('.')[0] not in batch_norms}


def load_weights(model, cfg, path):
    """Load checkpoint ``path`` into ``model`` strictly; on any error the model is untouched.

    Every key of the file must be a key of the model with the same shape and vice versa
    (:func:`check_state_dict`). The architectural tables among them (:func:`architectural_buffers`)
    must be present, but their values are not taken from the file: the model's own, rebuilt from
    its layer sizes, stay. A file whose tables differ from them is loaded with a warning that
    names them (the official checkpoints' tables are exactly the rebuilt ones).
    """
    state_dict = load_state_dict_file(path)
    check_state_dict(model, state_dict, cfg, source=str(path))
    rebuilt = architectural_buffers(model)
    differing = [name for name, table in rebuilt.items()
                 if not torch.equal(state_dict[name].to(table.dtype), table)]
    if differing:
        _log.warning("%s: %s of MiDaS model '%s' differ from the ones its architecture "
                     'defines; the rebuilt tables are used, not the file\'s', path,
                     _listing('architectural tables', differing), cfg.name)
    model.load_state_dict({**state_dict, **rebuilt}, strict=True)
    return model


def _checked(cfg, path, check_hash):
    if check_hash:
        verify_sha256(cfg, path)
    return path


def _listing(title, items):
    shown = ', '.join(items[:_SHOWN_KEYS])
    more = f', ... (+{len(items) - _SHOWN_KEYS} more)' if len(items) > _SHOWN_KEYS else ''
    return f'{len(items)} {title} ({shown}{more})'


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else 'no detail'


def _not_found_message(cfg, places, hub_dir, download_error):
    names = ', '.join(checkpoint_names(cfg))
    lines = [f"no weights found for MiDaS model '{cfg.name}' (file names tried: {names}). "
             'Looked in:']
    for label, directory in places:
        lines.append(f'  - {label}: {directory if directory else "(not set)"}')
    if download_error is None:
        lines.append('Downloading is disabled (allow_download=False).')
    else:
        lines.append(f'Download from {cfg.url} failed: {type(download_error).__name__}: '
                     f'{_first_line(download_error)}')
    lines.append(f'Fetch {cfg.url}')
    lines.append(f'and put it at {hub_dir / cfg.file} (or into ${WEIGHTS_DIR_ENV}), or pass the '
                 'file path explicitly; e.g.:')
    lines.append(f'  mkdir -p {hub_dir} && curl -L -o {hub_dir / cfg.file} {cfg.url}')
    return '\n'.join(lines)
