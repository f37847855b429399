"""What every network backend shares: the error type, package imports, and lazy per-size export.

A *runner* is the network seam of ``DepthEstimator``: a callable mapping the normalized 1x3xHxW
float32 input tensor (on the estimator's device) to a float32 1xHxW prediction tensor on that
device. The returned tensor may be a buffer the runner reuses on its next call: consume it first.

Exported graphs (ONNX Runtime, OpenVINO, TensorRT) have one fixed input size. A camera stream has
one size, which the runner first learns from the first frame: ``ExportedRunner`` then fetches
the graph for that network input size from the cache, exporting it on a miss, and loads it. A new
size (another camera, a resized stream) repeats that once; the previous graph is released.

Whatever goes wrong in a backend -- a missing package, an API the installed runtime lacks, a
failed export, build, load or first run -- reaches the estimator as one ``BackendError`` with a
one-line reason, and is remembered per size: a broken backend is never re-exported or rebuilt
frame after frame (``DepthEstimator`` then falls back to torch once, or reports the error).
"""
import importlib

import torch

from midas_ros.backends.cache import artefact_key
from midas_ros.models.registry import variant_label

# The pins midas_ros is tested with; the install hint of the error raised when one is missing.
INSTALL_HINTS = {
    'onnxruntime': 'pip install onnxruntime==1.32.0 (onnxruntime-gpu for the CUDA provider)',
    'openvino': 'pip install openvino==2026.4.1',
    'tensorrt': "pip install tensorrt-cu12 (NVIDIA's wheel matching the CUDA of your torch), "
                'or use the TensorRT of JetPack on a Jetson',
    'onnx': 'pip install onnx==1.23.2',
    'nncf': 'pip install nncf==3.4.0 (the release matching openvino 2026.4)',
}


class BackendError(RuntimeError):
    """A backend cannot run here: missing package, failed export, stale or foreign engine.

    The message says what to install or rebuild; ``DepthEstimator(backend_fallback=True)``
    catches it and runs the torch path instead.
    """


def run_batch(runner, net_inputs, out):
    """Run ``runner`` on an Nx3xHxW batch into ``out`` (an NxH'xW' float32 tensor on the same
    device): in one call when the runner takes batches (``runner.batched``: torch), else one
    frame after another (graphs exported for batch 1), each result copied out before the next
    run reuses the runner's output buffer. Returns ``out``."""
    if getattr(runner, 'batched', False):
        out.copy_(runner(net_inputs))
    else:
        for index in range(net_inputs.shape[0]):
            out[index].copy_(runner(net_inputs[index:index + 1])[0])
    return out


def one_line(error):
    """The first non-empty line of ``error``'s message (its type name if it has none)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def as_backend_error(error, context):
    """``error`` itself if it is a BackendError, else a BackendError '<context>: <Type>: <line>'.

    Runtimes fail with their own types (AttributeError for an API a TensorRT version lacks,
    onnxruntime's Fail, RuntimeError from CUDA); one type with one line lets the estimator fall
    back and the node report it without a traceback.
    """
    if isinstance(error, BackendError):
        return error
    wrapped = BackendError(f'{context}: {type(error).__name__}: {one_line(error)}')
    wrapped.__cause__ = error
    return wrapped


def import_backend_package(name, purpose=None):
    """Import package ``name``, or a BackendError saying how to install it.

    ``purpose`` names what needs it in the message (default: the backend of the same name).
    """
    try:
        return importlib.import_module(name)
    except ImportError as error:
        raise BackendError(f"{purpose or f'backend {name!r}'} needs the Python package "
                           f"'{name}', which does not import here ({error}): "
                           f'{INSTALL_HINTS[name]}') from error


class ExportedRunner:
    """A runner backed by a graph exported for one network input size, built lazily and cached.

    Subclasses set ``name`` and implement ``version`` (the runtime's version, part of the cache
    key), ``target`` (what else the artefact is specific to, e.g. the GPU; '' if nothing),
    ``build(directory, net_w, net_h)`` (write the artefact's files into an empty directory) and
    ``load(directory, net_w, net_h)`` (return a callable running it: input tensor -> output).

    ``model`` is the torch network (on the CPU, fp32), kept to export again when the size
    changes; ``cache`` an ``ArtefactCache``.
    """

    name = ''

    def __init__(self, model, cfg, device, precision, cache):
        self.model = model
        self.cfg = cfg
        self.device = device
        self.precision = precision
        self.cache = cache
        self.artefact = None    # directory of the loaded artefact
        self._weights_hash = None
        self._failures = {}     # (net_w, net_h) -> BackendError: not retried on every frame
        self._size = None       # (net_w, net_h) of the loaded artefact
        self._run = None
        self.threads = None     # see intra_op_threads

    def version(self):
        raise NotImplementedError

    def target(self):
        return ''

    def build(self, directory, net_w, net_h):
        raise NotImplementedError

    def load(self, directory, net_w, net_h):
        raise NotImplementedError

    def describe(self, net_w, net_h):
        """'tensorrt 10.3.0 fp16 at 256x192': names a graph in error messages."""
        try:
            version = self.version()
        except Exception:   # the runtime's own version call failing must not hide the error
            version = '?'
        return f'{self.name} {version} {self.precision} at {net_w}x{net_h}'

    def prepare(self, net_w, net_h):
        """Make the graph for a ``net_w`` x ``net_h`` input ready (cache hit or export + load).

        Raises BackendError, the same one again for a size that failed before.
        """
        if self._size == (net_w, net_h):
            return
        if (net_w, net_h) in self._failures:
            raise self._failures[net_w, net_h]
        self._run = self._size = None    # release the previous graph before building another
        try:
            directory = self.artefact_directory(net_w, net_h)
            self._run = self.load(directory, net_w, net_h)
        except Exception as error:
            failure = as_backend_error(
                error, f'{self.describe(net_w, net_h)} failed to build or load')
            self._failures[net_w, net_h] = failure
            raise failure
        self.artefact, self._size = directory, (net_w, net_h)

    def artefact_directory(self, net_w, net_h):
        """The cached artefact's directory for a ``net_w`` x ``net_h`` input, exported (built)
        on a miss; nothing is loaded. Raises what the build raises, BackendError for an
        unwritable cache."""
        if self._weights_hash is None:   # once: hashing a large state_dict takes a second
            self._weights_hash = self.cache.weights_fingerprint(self.model)
        key = artefact_key(variant_label(self.cfg), self.name, self.version(), self.target(),
                           net_w, net_h, self.precision, self._weights_hash)
        try:
            return self.cache.get_or_build(
                key, lambda tmp: self.build(tmp, net_w, net_h), what=f'{self.name} graph')
        except OSError as error:   # read-only home, full disk: say where to point it
            raise BackendError(
                f'cannot write the artefact cache {self.cache.directory} ({error}): set '
                '$MIDAS_ROS_CACHE (or cache_dir) to a writable folder') from error

    def intra_op_threads(self):
        """Threads the loaded session runs on: ``threads`` if set (a session loaded in another
        thread than the frames', e.g. a background quantization), else torch's intra-op count,
        which the estimator sized to the usable cores."""
        return self.threads or torch.get_num_threads()

    def __call__(self, net_input):
        self.prepare(net_input.shape[3], net_input.shape[2])
        try:
            return self._run(net_input)
        except Exception as error:   # a graph that loaded but cannot run: remembered as well
            size = self._size
            failure = as_backend_error(error, f'{self.describe(*size)} failed to run')
            self._failures[size] = failure
            self._run = self._size = None
            raise failure
