"""The artefact cache: exported graphs on disk, keyed by everything that changes their content.

One artefact is one directory under the cache directory (default ``$MIDAS_ROS_CACHE``, else
``~/.cache/midas_ros/engines``) whose name is its key, e.g.::

    midas_v21_small_256-256x192-fp32-openvino-2026.4.1-w3f2a9c01d4e5b6a7-timm1.0.31-torch2.14.1-e1

variant, network input size, precision, backend and its version, the target the artefact is
tied to (a TensorRT engine: the GPU model and compute capability), a fingerprint of the weights,
the versions of timm and torch that built and exported the network (timm's modules are part of
the graph, torch's exporter writes it) and ``EXPORT_FORMAT`` (bumped when midas_ros exports
differently). Any change of these is a new
directory, never a stale reuse; old ones are left for the user to delete.

Writes are atomic: an artefact is built in a temporary sibling directory and renamed into place,
so a crash or a concurrent start never leaves a half-written artefact under a valid name (two
processes building the same key race harmlessly: the first rename wins, the other is discarded).
"""
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

# Bump when the exported graphs change for the same weights (export code, opset, model code).
EXPORT_FORMAT = 1
_UNSAFE = re.compile(r'[^A-Za-z0-9._+-]+')


def default_cache_dir():
    """``$MIDAS_ROS_CACHE`` if set, else ``~/.cache/midas_ros/engines``."""
    return Path(os.environ.get('MIDAS_ROS_CACHE') or '~/.cache/midas_ros/engines').expanduser()


def artefact_key(variant, backend, backend_version, target, net_w, net_h, precision,
                 weights_hash):
    """The directory name of one artefact (file-system safe)."""
    parts = [variant, f'{net_w}x{net_h}', precision, backend, backend_version, target,
             f'w{weights_hash[:16]}', f"timm{library_version('timm')}",
             f"torch{library_version('torch')}", f'e{EXPORT_FORMAT}']
    return '-'.join(_UNSAFE.sub('_', str(part)) for part in parts if part)


def library_version(distribution):
    """The installed version of ``distribution`` (from its metadata: nothing is imported), or
    ``none``."""
    from importlib import metadata
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return 'none'


class ArtefactCache:
    """Exported artefacts in ``directory`` (created on first write); ``None``: the default."""

    def __init__(self, directory=None):
        self.directory = Path(directory).expanduser() if directory else default_cache_dir()

    def get_or_build(self, key, build, what='artefact'):
        """The directory of artefact ``key``; on a miss ``build(tmp_dir)`` fills it first.

        ``build`` writes the artefact's files into the empty directory it is given; if it raises,
        nothing is cached and the exception propagates.
        """
        final = self.directory / key
        if final.is_dir():
            return final
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f'.{key}.', dir=self.directory))
        os.chmod(tmp, 0o777 & ~current_umask())   # mkdtemp's 0o700 would hide it from others
        try:
            start = time.perf_counter()
            build(tmp)
            _write_json(tmp / 'artefact.json', {
                'key': key, 'what': what, 'build_seconds': round(time.perf_counter() - start, 3),
                'created': time.strftime('%Y-%m-%dT%H:%M:%S%z')})
            try:
                os.rename(tmp, final)
            except OSError:
                if not final.is_dir():   # not a lost race with another process: a real error
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return final

    def weights_fingerprint(self, model):
        """Hex SHA-256 identifying ``model``'s weights.

        A model loaded from a checkpoint (``model.weights_path``, as ``create_model`` sets it)
        is identified by the file's full SHA-256. Hashing a 1.3 GB checkpoint takes seconds, so
        the hash is remembered in a sidecar (``weights-sha256/<hash of the path>.json``) together
        with the file's size and modification time, and computed again only when either changes:
        a restart costs one ``stat``. Hashing only parts of the file (size, first and last MB)
        would be as fast but could miss a fine-tune that changes neither end. A model without a
        file (random weights, or a network built in memory) is identified by its state_dict:
        names, dtypes, shapes and bytes of every tensor, in order.
        """
        path = getattr(model, 'weights_path', None)
        if path is not None:
            return self._file_sha256(Path(path).resolve())
        return state_dict_sha256(model)

    def _file_sha256(self, path):
        from midas_ros.models.weights import file_sha256
        stat = path.stat()
        identity = {'path': str(path), 'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns}
        path_hash = hashlib.sha256(str(path).encode()).hexdigest()[:24]
        sidecar = self.directory / 'weights-sha256' / f'{path_hash}.json'
        try:
            known = json.loads(sidecar.read_text())
            if all(known.get(k) == v for k, v in identity.items()):
                return known['sha256']
        except (OSError, ValueError, KeyError):
            pass   # no sidecar yet, or an unreadable one: hash again
        digest = file_sha256(path)
        try:
            sidecar.parent.mkdir(parents=True, exist_ok=True)
            _write_json(sidecar, dict(identity, sha256=digest), atomic=True)
        except OSError:
            pass   # an unwritable cache is reported when an artefact is built; hash next time
        return digest


def current_umask():
    """The process's umask (reading it means setting it: set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def state_dict_sha256(model):
    """Hex SHA-256 over ``model``'s state_dict (names, dtypes, shapes and tensor bytes)."""
    import torch
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f'{name}:{tensor.dtype}:{tuple(tensor.shape)};'.encode())
        # Viewed as bytes so that every dtype (bf16 included) hashes without a conversion.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def _write_json(path, data, atomic=False):
    """Write ``data`` as JSON; ``atomic``: via a temporary file renamed over ``path``."""
    text = json.dumps(data, indent=1, sort_keys=True) + '\n'
    if not atomic:
        path.write_text(text)
        return
    handle, tmp = tempfile.mkstemp(prefix=f'.{path.name}.', dir=path.parent)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        with os.fdopen(handle, 'w') as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
