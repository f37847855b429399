"""Network backends: the same MiDaS graph on PyTorch, ONNX Runtime, OpenVINO or TensorRT.

``create_runner`` is the one door: it returns the runner ``DepthEstimator`` calls with the
normalized 1x3xHxW float32 input (see ``base``). Preprocessing, upsampling, scale and every
output stay the same whichever backend runs the network.

=============  ==========  =====================  =========================================
backend        devices     precisions             artefact (cached, built on first frame)
=============  ==========  =====================  =========================================
torch          cpu, cuda   fp32, fp16, bf16       none
onnxruntime    cpu, cuda   fp32, int8 (cpu)       ONNX graph (int8: QDQ-quantized graph)
openvino       cpu         fp32, fp16, bf16, int8 OpenVINO IR (+ its compiled blob)
tensorrt       cuda        fp32, fp16, bf16 (*)   TensorRT engine for this GPU and version
=============  ==========  =====================  =========================================

(*) TensorRT 8.6 to 11.x; bf16 needs TensorRT 10 or later.

int8 is post-training quantization of the exported graph on calibration inputs
(``backends.quantize``), made and accepted by ``midas_ros.quantization`` after measuring it
against fp32; ``auto`` never chooses it.

Importing this package imports torch only; each runtime is imported when its backend is asked
for, so a missing one costs nothing until then (and is then one ``BackendError``).
"""
from midas_ros.backends.base import BackendError
from midas_ros.backends.cache import ArtefactCache, default_cache_dir

__all__ = ['BACKENDS', 'BackendError', 'ArtefactCache', 'create_runner', 'default_cache_dir',
           'export_artefact', 'runner_class']

BACKENDS = ('torch', 'onnxruntime', 'openvino', 'tensorrt')


def runner_class(backend):
    """The runner class of ``backend`` (imports its module); ValueError for an unknown name."""
    if backend == 'torch':
        from midas_ros.backends.torch_backend import TorchRunner
        return TorchRunner
    if backend == 'onnxruntime':
        from midas_ros.backends.onnxruntime_backend import OnnxRuntimeRunner
        return OnnxRuntimeRunner
    if backend == 'openvino':
        from midas_ros.backends.openvino_backend import OpenVinoRunner
        return OpenVinoRunner
    if backend == 'tensorrt':
        from midas_ros.backends.tensorrt_backend import TensorRtRunner
        return TensorRtRunner
    raise ValueError(f"unknown backend '{backend}'; valid: {', '.join(BACKENDS)}")


def create_runner(backend, model, cfg, device, precision='fp32', cache_dir=None,
                  channels_last=True, compile=False):
    """The runner of ``model`` (variant ``cfg``) for ``backend`` on ``device`` at ``precision``.

    ``torch`` moves the model to ``device`` (``channels_last``, ``compile`` apply to it only) and,
    for fp16/bf16 with a variant safe in half precision, stores its weights in that type.
    The others keep it on the CPU to export it, lazily, when the first input shows the network
    input size; their artefacts live in ``cache_dir`` (None: ``default_cache_dir()``).
    Raises BackendError when the backend cannot run here (package, device, precision).
    """
    runner = runner_class(backend)
    if backend == 'torch':
        return runner(model, device, precision, channels_last, compile,
                      half_weights=cfg.half_precision_safe)
    return runner(model, cfg, device, precision, ArtefactCache(cache_dir))


def export_artefact(backend, model, cfg, device, precision, net_w, net_h, cache_dir=None):
    """Export (or find in the cache) ``backend``'s artefact for a ``net_w`` x ``net_h`` input.

    Returns the artefact's directory in the cache; what the node will load at that size.
    """
    if backend == 'torch':
        raise ValueError("backend 'torch' runs the network as it is: nothing to export")
    runner = create_runner(backend, model, cfg, device, precision, cache_dir)
    runner.prepare(net_w, net_h)
    return runner.artefact
