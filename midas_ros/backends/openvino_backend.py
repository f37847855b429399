"""OpenVINO on the CPU: the exported graph as OpenVINO IR, run at an explicit precision.

OpenVINO's CPU plugin picks its inference precision itself unless told: on CPUs with AVX512-BF16
it runs bf16, which moved MiDaS's output by 16% of its range here. So the precision is always
set explicitly (``INFERENCE_PRECISION_HINT``): fp32 by default, where it matches torch to 1e-5;
bf16 or fp16 only when asked for (fp16 also stores the IR's weights in half precision).

The IR (``model.xml`` + ``model.bin``) is converted from the ONNX export. Its compiled form is
cached too (OpenVINO's ``CACHE_DIR``, inside the artefact directory), which makes a second
start skip most of the compilation.
"""
import numpy as np
import torch

from midas_ros.backends.base import BackendError, ExportedRunner, import_backend_package
from midas_ros.backends.onnx_export import export_onnx

_HINTS = {'fp32': 'f32', 'fp16': 'f16', 'bf16': 'bf16'}
_FILE = 'model.xml'


class OpenVinoRunner(ExportedRunner):
    """An OpenVINO CPU infer request of the exported graph, at ``precision`` (fp32/fp16/bf16)."""

    name = 'openvino'

    def __init__(self, model, cfg, device, precision, cache):
        super().__init__(model, cfg, device, precision, cache)
        self.ov = import_backend_package('openvino')
        if device.type != 'cpu':
            raise BackendError(f"backend 'openvino' runs on the CPU here, not on {device}: "
                               "use 'tensorrt' or 'onnxruntime' for a CUDA device")
        if precision not in _HINTS:
            raise BackendError(f"backend 'openvino' runs fp32, fp16 or bf16, got '{precision}'")
        self.core = self.ov.Core()

    def version(self):
        return self.ov.get_version().split('-')[0]

    def build(self, directory, net_w, net_h):
        onnx_path = export_onnx(self.model, self.cfg, net_w, net_h, directory / 'model.onnx')
        try:
            graph = self.core.read_model(str(onnx_path))
            self.ov.save_model(graph, str(directory / _FILE),
                               compress_to_fp16=self.precision == 'fp16')
        except Exception as error:   # OpenVINO raises plain RuntimeErrors with long traces
            raise BackendError(f"OpenVINO cannot convert the ONNX export of '{self.cfg.name}': "
                               f'{str(error).strip().splitlines()[0]}') from error
        finally:
            onnx_path.unlink(missing_ok=True)   # the IR is the artefact; the ONNX was a step

    def inference_hint(self):
        """OpenVINO's ``INFERENCE_PRECISION_HINT`` for this runner's precision."""
        return _HINTS[self.precision]

    def load(self, directory, net_w, net_h):
        config = {
            'INFERENCE_PRECISION_HINT': self.inference_hint(),
            'PERFORMANCE_HINT': 'LATENCY',   # one frame at a time, every core on it
            'INFERENCE_NUM_THREADS': self.intra_op_threads(),
            'NUM_STREAMS': 1,
            # Pinned threads cannot move off a core another process is busy on.
            'ENABLE_CPU_PINNING': False,
            'CACHE_DIR': str(directory / 'compiled'),
        }
        try:
            compiled = self.core.compile_model(str(directory / _FILE), 'CPU', config)
        except Exception as error:
            raise BackendError(f'OpenVINO cannot compile {directory / _FILE} '
                               f'({str(error).strip().splitlines()[0]}); delete that directory to '
                               'export it again') from error
        return _InferRequest(compiled, self.ov, net_w, net_h)


class _InferRequest:
    """One infer request writing into an output buffer allocated once: input -> 1xHxW buffer."""

    def __init__(self, compiled, ov, net_w, net_h):
        self.ov = ov
        self.request = compiled.create_infer_request()
        self.output = torch.empty((1, net_h, net_w), dtype=torch.float32)
        self.request.set_output_tensor(ov.Tensor(self.output.numpy(), shared_memory=True))

    def __call__(self, net_input):
        # Shared, not copied: OpenVINO reads the preprocessor's buffer where it lies.
        array = np.ascontiguousarray(net_input.numpy())
        self.request.set_input_tensor(self.ov.Tensor(array, shared_memory=True))
        self.request.infer()
        return self.output
