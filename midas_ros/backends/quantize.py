"""int8 graphs: post-training quantization of the exported fp32 graph, for the CPU runtimes.

Both runtimes quantize the graph that ``ExportedRunner`` already exports (and caches), with the
network inputs of a calibration set (``CalibrationSet``: preprocessed 1x3xHxW float32 arrays of
one size) giving the activation ranges:

* OpenVINO: NNCF's ``nncf.quantize`` on the fp32 IR (8-bit weights per output channel,
  activations per tensor; DPT variants as ``ModelType.TRANSFORMER``, which keeps softmax,
  layer norms and the attention's matmul inputs where int8 loses most); the IR is saved
  quantized (FakeQuantize nodes) and OpenVINO's CPU plugin runs those layers in int8.
* ONNX Runtime: ``onnxruntime.quantization.quantize_static`` in the QDQ format (Quantize /
  DequantizeLinear pairs around each layer, which its CPU provider fuses into int8 kernels),
  per-channel int8 weights, uint8 activations from min/max calibration. On x86 CPUs without
  VNNI, ONNX Runtime's u8s8 kernels multiply-add in 16 bits and can saturate: weights are then
  quantized to 7 bits (``reduce_range``), as ONNX Runtime's documentation advises.

The int8 artefact is cached like every export, its key adding the calibration set's digest
(``target``): other calibration data is another graph, the same data on the next start a cache
hit. Whether the int8 graph is accurate enough is not decided here (``midas_ros.quantization``
measures it against fp32).
"""
import hashlib
import logging
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from midas_ros.backends.base import BackendError, import_backend_package
from midas_ros.backends.onnx_export import INPUT_NAME
from midas_ros.backends.onnxruntime_backend import OnnxRuntimeRunner
from midas_ros.backends.openvino_backend import OpenVinoRunner

INT8_BACKENDS = ('openvino', 'onnxruntime')
_VNNI_FLAGS = ('avx512_vnni', 'avx_vnni', 'amx_int8')


@dataclass(frozen=True)
class CalibrationSet:
    """Network inputs that calibrate a quantization: float32 arrays of one shape 1x3xHxW.

    ``digest``: hex SHA-256 of their shapes and bytes, in order (part of the artefact key).
    """

    inputs: Tuple[np.ndarray, ...]
    digest: str

    @classmethod
    def of(cls, inputs):
        """The set of ``inputs`` (float32 1x3xHxW arrays of one shape; at least one)."""
        inputs = tuple(np.ascontiguousarray(x, dtype=np.float32) for x in inputs)
        if not inputs:
            raise ValueError('a calibration set needs at least one network input')
        shapes = {x.shape for x in inputs}
        if len(shapes) != 1 or len(next(iter(shapes))) != 4:
            raise ValueError(f'calibration inputs must share one 1x3xHxW shape, got {shapes}')
        digest = hashlib.sha256()
        for x in inputs:
            digest.update(repr(x.shape).encode())
            digest.update(x.data)
        return cls(inputs, digest.hexdigest())

    @property
    def size(self):
        """(net_w, net_h) of the inputs."""
        return self.inputs[0].shape[3], self.inputs[0].shape[2]


def cpu_has_vnni(cpuinfo='/proc/cpuinfo'):
    """Whether the CPU has 8-bit dot-product instructions (AVX-512 VNNI, AVX-VNNI or AMX)."""
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(':', 1)[1].split() for line in f
                          if line.startswith('flags')), [])
    except OSError:
        return False
    return any(flag in flags for flag in _VNNI_FLAGS)


class _Int8Mixin:
    """What both int8 runners share: the fp32 sibling they quantize, the key, the checks."""

    fp32_class = None

    def _init_int8(self, calibration):
        if self.device.type != 'cpu':
            raise BackendError(f"int8 runs on the CPU here, not on {self.device}")
        self.calibration = calibration
        self.precision = 'int8'
        self.fp32 = self.fp32_class(self.model, self.cfg, self.device, 'fp32', self.cache)

    def target(self):
        # The calibration data decide the activation ranges: part of what the graph is.
        return f'cal{self.calibration.digest[:16]}'

    def fp32_graph(self, net_w, net_h):
        """Directory of the cached fp32 export this int8 graph is made from."""
        if self.calibration.size != (net_w, net_h):
            raise BackendError(
                'the calibration inputs are {}x{} but the frames give a {}x{} network input: '
                'calibrate with images of the camera\'s size'.format(*self.calibration.size,
                                                                     net_w, net_h))
        return self.fp32.artefact_directory(net_w, net_h)


class OpenVinoInt8Runner(_Int8Mixin, OpenVinoRunner):
    """OpenVINO running the NNCF-quantized IR of the network (CPU)."""

    fp32_class = OpenVinoRunner

    def __init__(self, model, cfg, device, precision, cache, calibration):
        super().__init__(model, cfg, device, 'fp32', cache)
        self._init_int8(calibration)

    def inference_hint(self):
        # int8 layers run in int8 whatever the hint; the rest stays fp32 (a bf16-capable CPU
        # would otherwise run it in bf16: another, unmeasured, error on top).
        return 'f32'

    def build(self, directory, net_w, net_h):
        source = self.fp32_graph(net_w, net_h) / 'model.xml'
        nncf = import_backend_package('nncf', purpose='int8 quantization with OpenVINO')
        inputs = self.calibration.inputs
        options = {'model_type': nncf.ModelType.TRANSFORMER} if self.cfg.arch == 'dpt' else {}
        try:
            graph = self.core.read_model(str(source))
            quantized = nncf.quantize(graph, nncf.Dataset(list(inputs)),
                                      subset_size=len(inputs), **options)
            self.ov.save_model(quantized, str(directory / 'model.xml'), compress_to_fp16=False)
        except Exception as error:   # NNCF and OpenVINO raise many types
            raise BackendError(f"NNCF cannot quantize '{self.cfg.name}' at {net_w}x{net_h}: "
                               f'{type(error).__name__}: '
                               f'{(str(error).strip().splitlines() or [""])[0]}') from error


class _CalibrationReader:
    """onnxruntime.quantization's data reader over a calibration set."""

    def __init__(self, inputs):
        self._inputs = iter(inputs)

    def get_next(self):
        x = next(self._inputs, None)
        return None if x is None else {INPUT_NAME: x}


class OnnxRuntimeInt8Runner(_Int8Mixin, OnnxRuntimeRunner):
    """ONNX Runtime (CPU provider) running the statically quantized QDQ graph."""

    fp32_class = OnnxRuntimeRunner

    def __init__(self, model, cfg, device, precision, cache, calibration):
        super().__init__(model, cfg, device, 'fp32', cache)
        self._init_int8(calibration)
        self.reduce_range = not cpu_has_vnni()

    def target(self):
        return super().target() + ('-r7' if self.reduce_range else '')

    def build(self, directory, net_w, net_h):
        source = self.fp32_graph(net_w, net_h) / 'model.onnx'
        from onnxruntime import quantization as q
        from onnxruntime.quantization.shape_inference import quant_pre_process
        prepared = directory / 'prepared.onnx'
        # onnxruntime.quantization logs through the root logger, e.g. one warning per rank-1
        # weight (LeViT's batch norms) that per-channel quantization skips for per-tensor:
        # hundreds of lines of expected noise in a node's log. Muted while it runs (the
        # outcome is checked against fp32 afterwards; errors still raise).
        logging.disable(logging.WARNING)
        try:
            # Shapes inferred and the graph optimized first, as ONNX Runtime recommends, so
            # that quantization sees the fused operators the session will run.
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            q.quantize_static(
                str(prepared), str(directory / 'model.onnx'),
                _CalibrationReader(self.calibration.inputs), quant_format=q.QuantFormat.QDQ,
                per_channel=True, reduce_range=self.reduce_range,
                activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                calibrate_method=q.CalibrationMethod.MinMax)
        except Exception as error:
            raise BackendError(f"onnxruntime cannot quantize '{self.cfg.name}' at "
                               f'{net_w}x{net_h}: {type(error).__name__}: '
                               f'{(str(error).strip().splitlines() or [""])[0]}') from error
        finally:
            logging.disable(logging.NOTSET)
            prepared.unlink(missing_ok=True)


def create_int8_runner(backend, model, cfg, device, cache, calibration):
    """The int8 runner of ``backend`` ('openvino' or 'onnxruntime') calibrated on
    ``calibration`` (a ``CalibrationSet``); BackendError for another backend."""
    classes = {'openvino': OpenVinoInt8Runner, 'onnxruntime': OnnxRuntimeInt8Runner}
    if backend not in classes:
        raise BackendError(f"precision int8 runs on backends {', '.join(INT8_BACKENDS)}, not "
                           f"'{backend}'")
    return classes[backend](model, cfg, device, 'int8', cache, calibration)
