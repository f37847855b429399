"""ONNX Runtime: the CPU execution provider, or the CUDA one for a CUDA device (onnxruntime-gpu).

Inputs and outputs are bound to torch tensors by pointer (I/O binding): the preprocessed input
is read where it lies and the prediction is written into a buffer allocated once per size, so a
frame costs no copies and no allocations on either side of the session.

``get_available_providers()`` lists CUDAExecutionProvider whenever onnxruntime-gpu is installed,
even when its CUDA / cuDNN libraries then fail to load; ONNX Runtime then quietly builds a CPU
session, and binding CUDA buffers fails on every frame. So the providers the *session* reports
are checked after it is created: no CUDA provider there is one BackendError, as is any I/O
binding or run failure (``ExportedRunner`` remembers it: no retry per frame).
"""
import numpy as np
import torch

from midas_ros.backends.base import (BackendError, ExportedRunner, as_backend_error,
                                     import_backend_package, one_line)
from midas_ros.backends.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx

_FILE = 'model.onnx'


class OnnxRuntimeRunner(ExportedRunner):
    """fp32 ONNX Runtime session of the exported graph, on the CPU or a CUDA device."""

    name = 'onnxruntime'

    def __init__(self, model, cfg, device, precision, cache):
        super().__init__(model, cfg, device, precision, cache)
        self.ort = import_backend_package('onnxruntime')
        if precision != 'fp32':
            raise BackendError(f"backend 'onnxruntime' runs fp32 only, got precision "
                               f"'{precision}': use 'openvino' for bf16/fp16 on a CPU or "
                               "'tensorrt' for fp16 on a GPU")
        self.provider = 'CUDAExecutionProvider' if device.type == 'cuda' \
            else 'CPUExecutionProvider'
        if self.provider not in self.ort.get_available_providers():
            raise BackendError(
                f"backend 'onnxruntime' on {device} needs {self.provider}, which onnxruntime "
                f'{self.ort.__version__} here lacks (it has '
                f"{', '.join(self.ort.get_available_providers())}): "
                'pip uninstall onnxruntime && pip install onnxruntime-gpu (same version)')

    def version(self):
        return self.ort.__version__

    def build(self, directory, net_w, net_h):
        export_onnx(self.model, self.cfg, net_w, net_h, directory / _FILE)

    def load(self, directory, net_w, net_h):
        options = self.ort.SessionOptions()
        options.graph_optimization_level = self.ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.device.type == 'cpu':
            # The estimator sized torch's pool to the usable cores; ORT's own default may count
            # cores the process cannot run on (containers) and oversubscribe them.
            options.intra_op_num_threads = self.intra_op_threads()
            options.inter_op_num_threads = 1   # one chain of operators: no parallel branches
            # Spinning threads burn the core another process (the camera driver...) needs.
            options.add_session_config_entry('session.intra_op.allow_spinning', '0')
            options.add_session_config_entry('session.inter_op.allow_spinning', '0')
        provider_options = [{'device_id': str(self.device.index or 0)}] \
            if self.device.type == 'cuda' else [{}]
        try:
            session = self.ort.InferenceSession(str(directory / _FILE), sess_options=options,
                                                providers=[self.provider],
                                                provider_options=provider_options)
        except Exception as error:   # ORT raises its own Fail/InvalidGraph/... types
            raise BackendError(f'onnxruntime cannot load {directory / _FILE} ({one_line(error)});'
                               ' delete that directory to export it again') from error
        active = session.get_providers()
        if self.provider not in active:
            raise BackendError(
                f'onnxruntime {self.ort.__version__} created the session without '
                f"{self.provider} (active: {', '.join(active) or 'none'}): its CUDA / cuDNN "
                'libraries did not load (see the onnxruntime log above); install the CUDA and '
                'cuDNN versions this onnxruntime-gpu was built for')
        return _BoundSession(session, self.device, net_w, net_h)


class _BoundSession:
    """One session and its output buffer: ``__call__(input) -> 1xHxW`` (the buffer, reused).

    Binding or running errors (ONNX Runtime raises RuntimeError and its own types) are
    BackendErrors naming the step.
    """

    def __init__(self, session, device, net_w, net_h):
        self.session = session
        self.device_type = 'cuda' if device.type == 'cuda' else 'cpu'
        self.device_id = device.index or 0
        self.shape = (1, 3, net_h, net_w)
        self.output = None   # allocated and bound once, where the first input lies
        try:
            self.binding = session.io_binding()
        except Exception as error:
            raise as_backend_error(error, 'onnxruntime cannot create an I/O binding') from error

    def _bind_output(self, device):
        self.output = torch.empty(self.shape[:1] + self.shape[2:], dtype=torch.float32,
                                  device=device)
        self.binding.bind_output(OUTPUT_NAME, self.device_type, self.device_id, np.float32,
                                 tuple(self.output.shape), self.output.data_ptr())

    def __call__(self, net_input):
        net_input = net_input.contiguous()   # a no-op for the NCHW input the estimator makes
        step = 'bind the output'
        try:
            if self.output is None:
                self._bind_output(net_input.device)
            # Rebinding by pointer is cheap, and the preprocessor's buffer moves on a size change.
            step = 'bind the input'
            self.binding.bind_input(INPUT_NAME, self.device_type, self.device_id,
                                    np.float32, self.shape, net_input.data_ptr())
            if self.device_type == 'cuda':   # ORT runs on its own stream: let torch's finish
                torch.cuda.current_stream(net_input.device).synchronize()
            step = 'run'
            self.session.run_with_iobinding(self.binding)
            if self.device_type == 'cuda':   # and torch's next kernels must see ORT's output
                step = 'synchronize the outputs'
                self.binding.synchronize_outputs()
        except Exception as error:
            raise as_backend_error(error, f'onnxruntime failed to {step} '
                                          f'({self.device_type}:{self.device_id})') from error
        return self.output
