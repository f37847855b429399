"""TensorRT on a CUDA device: an engine built from the ONNX export, run on torch's stream.

An engine is specific to the GPU model, its compute capability and the TensorRT version, so all
three are part of the cache key: a cache moved to another machine builds anew instead of loading
a foreign engine. An engine file that still fails to load (e.g. passed by hand) is one clear
error asking to rebuild it. ``tensorrt`` is imported only when this backend is asked for.
"""
import torch

from midas_ros.backends.base import BackendError, ExportedRunner, import_backend_package
from midas_ros.backends.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx

_FILE = 'model.engine'
_WORKSPACE_BYTES = 2 << 30


class TensorRtRunner(ExportedRunner):
    """A TensorRT execution context of the exported graph, at fp32, fp16 or bf16."""

    name = 'tensorrt'

    def __init__(self, model, cfg, device, precision, cache):
        super().__init__(model, cfg, device, precision, cache)
        if device.type != 'cuda':
            raise BackendError(f"backend 'tensorrt' needs a CUDA device, got {device}: use "
                               "'onnxruntime' or 'openvino' on a CPU")
        if precision not in ('fp32', 'fp16', 'bf16'):
            raise BackendError(f"backend 'tensorrt' runs fp32, fp16 or bf16, got '{precision}'")
        self.trt = import_backend_package('tensorrt')
        self.logger = self.trt.Logger(self.trt.Logger.WARNING)

    def version(self):
        return self.trt.__version__

    def target(self):
        major, minor = torch.cuda.get_device_capability(self.device)
        return f'{torch.cuda.get_device_name(self.device)}-sm{major}{minor}'

    def build(self, directory, net_w, net_h):
        trt = self.trt
        onnx_path = export_onnx(self.model, self.cfg, net_w, net_h, directory / 'model.onnx')
        builder = trt.Builder(self.logger)
        # TensorRT 10 networks are always explicit-batch; 8.x must be asked.
        explicit = 0 if int(trt.__version__.split('.')[0]) >= 10 \
            else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        network = builder.create_network(explicit)
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT {trt.__version__} cannot parse the ONNX export of "
                               f"'{self.cfg.name}': {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
        if self.precision != 'fp32':
            config.set_flag(getattr(trt.BuilderFlag, self.precision.upper()))
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise BackendError(f"TensorRT {trt.__version__} failed to build an engine for "
                               f"'{self.cfg.name}' at {net_w}x{net_h} {self.precision} (see its "
                               "log above); use backend 'torch' or 'onnxruntime'")
        (directory / _FILE).write_bytes(engine)
        onnx_path.unlink()

    def load(self, directory, net_w, net_h):
        return load_engine(self.trt, self.logger, directory / _FILE, self.device, net_w, net_h)


def load_engine(trt, logger, path, device, net_w, net_h):
    """A callable running engine file ``path``; BackendError if it is not for this GPU/size."""
    with torch.cuda.device(device):
        engine = trt.Runtime(logger).deserialize_cuda_engine(path.read_bytes())
    if engine is None:
        raise BackendError(
            f'TensorRT {trt.__version__} cannot load the engine {path}: it was built for another '
            f'GPU or TensorRT version. Delete it, or rebuild it on this machine with '
            f'`python -m midas_ros export --format tensorrt`')
    expected = {INPUT_NAME: (1, 3, net_h, net_w), OUTPUT_NAME: (1, net_h, net_w)}
    actual = {name: tuple(engine.get_tensor_shape(name)) for name in expected}
    if actual != expected:
        raise BackendError(f'TensorRT engine {path} has shapes {actual}, this stream needs '
                           f'{expected}: rebuild it for this input size')
    return _ExecutionContext(engine, device, net_w, net_h)


class _ExecutionContext:
    """Enqueues the engine on torch's current stream, so no synchronization is added."""

    def __init__(self, engine, device, net_w, net_h):
        self.engine = engine
        self.context = engine.create_execution_context()
        self.device = device
        self.output = torch.empty((1, net_h, net_w), dtype=torch.float32, device=device)
        self.context.set_tensor_address(OUTPUT_NAME, self.output.data_ptr())

    def __call__(self, net_input):
        net_input = net_input.contiguous()
        self.context.set_tensor_address(INPUT_NAME, net_input.data_ptr())
        stream = torch.cuda.current_stream(self.device).cuda_stream
        if not self.context.execute_async_v3(stream):
            raise BackendError('TensorRT failed to enqueue the engine (see its log)')
        return self.output
