"""Export a MiDaS network to ONNX for one fixed input size: the source of every exported backend.

The TorchScript-based exporter (``dynamo=False``, opset 17; it writes through the ``onnx``
package) is used: it traces the eager model that ``create_model`` builds, the one validated
against the official checkpoints, and exported every variant tried here in seconds to a minute
(the dynamo exporter needs ``onnxscript`` and re-derives the graph from the Python code). The graph
has one input ``image`` (1x3xHxW float32, normalized) and one output ``depth`` (1xHxW float32),
both with static shapes: a camera stream has one size, and static shapes let every runtime plan
memory and fuse ahead of time.

``dtype=torch.float16`` (or bfloat16) exports a *typed* low-precision graph for runtimes without
a precision switch of their own (TensorRT 11, strongly typed networks): the weights are stored in
that type and the graph casts its float32 input to it and its output back, so the graph's I/O is
float32 whatever runs inside.
"""
import warnings

import torch

from midas_ros.backends.base import BackendError, import_backend_package

INPUT_NAME = 'image'
OUTPUT_NAME = 'depth'
OPSET = 17


def export_onnx(model, cfg, net_w, net_h, path, dtype=torch.float32):
    """Write ``model`` (variant ``cfg``) as an ONNX graph for a ``net_w`` x ``net_h`` input.

    Exports a CPU fp32 copy when the model lives elsewhere (or a ``dtype`` copy, see the module
    docstring). Raises BackendError naming the variant, the size and the exporter's own first
    line when the export fails.
    """
    # torch's exporter writes through the onnx package; without it, it fails after tracing.
    import_backend_package('onnx', purpose='exporting to ONNX')
    parameter = next(model.parameters())
    if dtype != torch.float32:
        model = _TypedGraph(_cpu_copy(model).to(dtype), dtype)
    elif parameter.device.type != 'cpu' or parameter.dtype != torch.float32:
        model = _cpu_copy(model)
    example = torch.zeros((1, 3, net_h, net_w), dtype=torch.float32)
    # Tracing records autograd-capable ops: leave inference mode (DepthEstimator.predict, which
    # exports lazily on the first frame, runs in it) and do not record gradients either.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings flag Python-side shape arithmetic; shapes are static here, so they are
        # noise (each variant prints dozens).
        warnings.simplefilter('ignore')
        try:
            torch.onnx.export(model.eval(), (example,), str(path), opset_version=OPSET,
                              dynamo=False, input_names=[INPUT_NAME],
                              output_names=[OUTPUT_NAME], do_constant_folding=True)
        except Exception as error:   # the exporter raises many types; one message for all
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise BackendError(
                f"exporting MiDaS model '{cfg.name}' to ONNX at input {net_w}x{net_h} failed "
                f'(torch {torch.__version__}, opset {OPSET}): {type(error).__name__}: '
                f"{first_line}; use backend 'torch' for this variant") from error
    return path


def _cpu_copy(model):
    import copy
    return copy.deepcopy(model).float().cpu()


class _TypedGraph(torch.nn.Module):
    """``network`` (weights in ``dtype``) between float32 casts: float32 in, float32 out."""

    def __init__(self, network, dtype):
        super().__init__()
        self.network = network
        self.dtype = dtype

    def forward(self, image):
        return self.network(image.to(self.dtype)).float()
