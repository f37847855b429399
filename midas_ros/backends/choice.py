"""``backend='auto'``: the fastest runtime installed here that gives torch's fp32 results.

Measured on a 2-core AVX-512 EPYC (midas_v21_small_256, 256x192 input, 2026-11): torch eager
66-155 ms per forward, ONNX Runtime 28-40 ms, OpenVINO (fp32 hint) 27-44 ms; with one core busy in
another process torch went to 230 ms, ONNX Runtime (no spinning) to 54 ms. On one thread, as
each of depth_node's frames in parallel runs, OpenVINO takes 76 ms and ONNX Runtime 82 ms
(2026-11-30), and depth_node at a 30 Hz camera, every output, gave 13.1-13.3 frames/s with
OpenVINO against 12.0-12.6 with ONNX Runtime (equal, 9.1-9.7, with one core busy elsewhere);
both start in the same time (export and compile of 2 sessions: 2 s, 0.5 s from the cache). So
OpenVINO comes first, ONNX Runtime next; torch is always there. On a CUDA device the torch GPU
path runs (cuDNN, fp16/bf16 autocast where the variant allows it); TensorRT only when asked for,
as its engine build takes minutes on a first start. int8 is never chosen here: it needs a
calibration set and a measured accuracy (``inference.precision: int8``, see
``midas_ros.quantization``).

"Parity" is checked, not assumed: ``ParityCheckedRunner`` compares the exported graph's output
with the torch network's on the first input of each size and raises ``BackendError`` (the
estimator then falls back to torch, with a warning) when they differ by more than
``PARITY_TOLERANCE`` of the output's largest magnitude.
"""
import importlib.util
from dataclasses import dataclass

import torch

from midas_ros.backends.base import BackendError

CPU_ORDER = ('openvino', 'onnxruntime', 'torch')
# Measured deviations of fp32 ORT / OpenVINO from torch are 1e-5 of the maximum; OpenVINO's bf16
# default was 0.16. 1e-3 separates the two by two orders of magnitude either way.
PARITY_TOLERANCE = 1e-3
# Packages each exported backend needs: its runtime, and onnx for the export.
_NEEDS = {'onnxruntime': ('onnxruntime', 'onnx'), 'openvino': ('openvino', 'onnx')}


@dataclass(frozen=True)
class BackendChoice:
    """The backend ``auto`` resolved to and why (logged at start, shown in /diagnostics)."""

    backend: str
    reason: str


def missing_packages(backend, find_spec=importlib.util.find_spec):
    """The packages ``backend`` needs that are not installed (names, possibly empty)."""
    return [name for name in _NEEDS.get(backend, ()) if find_spec(name) is None]


def choose_backend(device, precision, find_spec=importlib.util.find_spec):
    """The ``BackendChoice`` for ``device`` (torch.device) at ``precision`` (resolved).

    CPU: the first of ``CPU_ORDER`` whose packages are installed and that runs ``precision``
    (ONNX Runtime runs fp32 only); CUDA: torch.
    """
    if device.type == 'cuda':
        return BackendChoice('torch', f'{device}: the torch GPU path ({precision}); TensorRT '
                                      "only when asked for (model.backend 'tensorrt')")
    skipped = []
    for backend in CPU_ORDER:
        if backend == 'torch':
            break
        if backend == 'onnxruntime' and precision != 'fp32':
            skipped.append(f'onnxruntime runs fp32 only, not {precision}')
            continue
        missing = missing_packages(backend, find_spec)
        if missing:
            skipped.append(f"{backend} needs {', '.join(missing)}")
            continue
        return BackendChoice(backend, f'fastest installed CPU runtime at {precision}, output '
                                      'checked against torch on the first frame'
                             + (f" ({'; '.join(skipped)})" if skipped else ''))
    return BackendChoice('torch', 'no faster CPU runtime usable here'
                         + (f" ({'; '.join(skipped)})" if skipped else ''))


class ParityCheckedRunner:
    """``runner`` whose first output of each input size is compared with ``model``'s (torch).

    Raises ``BackendError`` on a deviation above ``tolerance`` x the reference's maximum; the
    check costs one torch forward per input size (a few hundred ms at the first frame).
    """

    def __init__(self, runner, model, tolerance=PARITY_TOLERANCE):
        self.runner = runner
        self.model = model
        self.tolerance = tolerance
        self.name = getattr(runner, 'name', type(runner).__name__)
        self.deviation = None     # relative deviation measured at the last check
        self._checked = set()

    @property
    def artefact(self):
        return getattr(self.runner, 'artefact', None)

    def __getattr__(self, name):   # prepare(), version()...: the wrapped runner's
        if name == 'runner':
            raise AttributeError(name)
        return getattr(self.runner, name)

    def __call__(self, net_input):
        output = self.runner(net_input)
        size = tuple(net_input.shape[2:])
        if size not in self._checked:
            self._check(net_input, output)
            self._checked.add(size)
        return output

    def _check(self, net_input, output):
        with torch.inference_mode():
            reference = self.model(net_input.to(torch.float32)).reshape(output.shape)
        # Relative to the output's largest magnitude (its range can be ~0 for a flat image).
        scale = float(reference.abs().max()) or 1.0
        self.deviation = float((output.detach().float() - reference).abs().max()) / scale
        if not self.deviation <= self.tolerance:
            raise BackendError(
                f'{self.name} output deviates from torch fp32 by {self.deviation:.2g} of its '
                f'maximum (allowed {self.tolerance:g}) at input {tuple(net_input.shape)}')
