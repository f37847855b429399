"""TensorRT on a CUDA device: an engine built from the ONNX export, run on the estimator's stream.

Supported TensorRT: 8.6 (JetPack 5/6) through 11.x. What differs between them, and how it is met
(NVIDIA's 8.x->10.x and 10.x->11.x migration guides):

===========  ==================  =====================================  ======================
TensorRT     network flags       fp16 / bf16                            execution
===========  ==================  =====================================  ======================
8.6          EXPLICIT_BATCH      BuilderFlag.FP16; no bf16 at all       execute_async_v3 with
10.x         none (always        BuilderFlag.FP16 / BF16 (deprecated    named tensor
             explicit batch)     since 10.12)                           addresses
11.x         STRONGLY_TYPED      no builder flags: a typed fp16 / bf16  (set_tensor_address)
             (always on)         ONNX export (``onnx_export``)
===========  ==================  =====================================  ======================

So fp16 goes through the builder flag where the installed TensorRT has it and through a strongly
typed network of a half-precision export where it does not; a precision neither way can build
(bf16 on 8.6) is one BackendError naming the precisions that can.

An engine is specific to the GPU model, its compute capability and the TensorRT version, so all
three are part of the cache key: a cache moved to another machine or a TensorRT upgrade builds
anew instead of loading a foreign engine. An engine file that still fails to load (e.g. passed by
hand) is one clear error asking to rebuild it. Building, loading and running happen under the
configured device's guard (``torch.cuda.device``), so ``cuda:1`` builds for and runs on GPU 1,
never on the current device. ``tensorrt`` is imported only when this backend is asked for.
"""
import torch

from midas_ros.backends.base import BackendError, ExportedRunner, import_backend_package
from midas_ros.backends.onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx

_FILE = 'model.engine'
_WORKSPACE_BYTES = 2 << 30
_DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}
SUPPORTED_VERSIONS = '8.6 to 11.x'


def trt_major(trt):
    """The major version of the ``tensorrt`` module (8, 10, 11, ...)."""
    return int(str(trt.__version__).split('.')[0])


def build_plan(trt, precision):
    """How to build ``precision`` with this TensorRT: ``(network_flags, builder_flag, typed)``.

    ``builder_flag`` is the BuilderFlag to set (None for fp32 or a strongly typed build);
    ``typed`` says the ONNX export must itself be in ``precision`` (strongly typed network).
    Raises BackendError when this TensorRT cannot build ``precision`` at all.
    """
    creation = trt.NetworkDefinitionCreationFlag
    flags = 0
    if trt_major(trt) < 10:   # 10 dropped implicit batch; 8.x must be asked for explicit batch
        flags |= 1 << int(creation.EXPLICIT_BATCH)
    if precision == 'fp32':
        return flags, None, False
    builder_flag = getattr(trt.BuilderFlag, precision.upper(), None)
    if builder_flag is not None:
        return flags, builder_flag, False
    strongly_typed = getattr(creation, 'STRONGLY_TYPED', None)
    if strongly_typed is None:
        raise BackendError(f'TensorRT {trt.__version__} can build neither {precision} (no '
                           f'BuilderFlag.{precision.upper()}) nor strongly typed networks: use '
                           "precision 'fp16' or 'fp32' (bf16 needs TensorRT 10 or later)")
    return flags | 1 << int(strongly_typed), None, True


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
        try:
            if trt_major(self.trt) < 8:
                raise BackendError(f'TensorRT {self.trt.__version__} is too old: midas_ros '
                                   f'supports TensorRT {SUPPORTED_VERSIONS}')
            build_plan(self.trt, precision)   # an impossible precision fails now, not per frame
            self.logger = self.trt.Logger(self.trt.Logger.WARNING)
        except BackendError:
            raise
        except Exception as error:   # e.g. an API this TensorRT lacks: AttributeError
            raise BackendError(f'TensorRT {self.trt.__version__} is not usable here: '
                               f'{type(error).__name__}: {error}') from error

    def version(self):
        return self.trt.__version__

    def target(self):
        major, minor = torch.cuda.get_device_capability(self.device)
        return f'{torch.cuda.get_device_name(self.device)}-sm{major}{minor}'

    def build(self, directory, net_w, net_h):
        trt = self.trt
        flags, builder_flag, typed = build_plan(trt, self.precision)
        onnx_path = export_onnx(self.model, self.cfg, net_w, net_h, directory / 'model.onnx',
                                dtype=_DTYPES[self.precision] if typed else torch.float32)
        with torch.cuda.device(self.device):   # the builder times kernels on the current GPU
            builder = trt.Builder(self.logger)
            network = builder.create_network(flags)
            parser = trt.OnnxParser(network, self.logger)
            if not parser.parse(onnx_path.read_bytes()):
                errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise BackendError(f'TensorRT {trt.__version__} cannot parse the ONNX export of '
                                   f"'{self.cfg.name}': {' '.join(errors.split())}")
            config = builder.create_builder_config()
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, _WORKSPACE_BYTES)
            if builder_flag is not None:
                config.set_flag(builder_flag)
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
                f'TensorRT {trt.__version__} cannot load the engine {path}: it was built for '
                'another GPU or TensorRT version. Delete it, or rebuild it on this machine with '
                '`python -m midas_ros export --format tensorrt`')
        expected = {INPUT_NAME: (1, 3, net_h, net_w), OUTPUT_NAME: (1, net_h, net_w)}
        actual = {name: tuple(engine.get_tensor_shape(name)) for name in expected}
        if actual != expected:
            raise BackendError(f'TensorRT engine {path} has shapes {actual}, this stream needs '
                               f'{expected}: rebuild it for this input size')
        return _ExecutionContext(engine, device, net_w, net_h)


class _ExecutionContext:
    """Enqueues the engine on the caller's current stream of ``device``, under its guard.

    ``DepthEstimator`` makes its own (non-default) stream current while it predicts, so the
    engine runs in order with the preprocessing before it and the upsampling after it, with no
    synchronization added. Called on the legacy default stream (which TensorRT warns about and
    which synchronizes with every other stream) it runs on a stream of its own instead, ordered
    with the caller's by events.
    """

    def __init__(self, engine, device, net_w, net_h):
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError('TensorRT could not create an execution context (out of device '
                               'memory?)')
        self.device = device
        self.shape = (1, net_h, net_w)
        self.output = None   # allocated once, where the first input lies (the estimator's GPU)
        self._own_stream = None

    def __call__(self, net_input):
        net_input = net_input.contiguous()
        if self.output is None:
            self.output = torch.empty(self.shape, dtype=torch.float32, device=net_input.device)
            self.context.set_tensor_address(OUTPUT_NAME, self.output.data_ptr())
        with torch.cuda.device(self.device):
            caller = torch.cuda.current_stream(self.device)
            stream = caller
            if caller.cuda_stream == 0:   # the legacy default stream: use one of our own
                if self._own_stream is None:
                    self._own_stream = torch.cuda.Stream(self.device)
                stream = self._own_stream
                stream.wait_stream(caller)
            self.context.set_tensor_address(INPUT_NAME, net_input.data_ptr())
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise BackendError('TensorRT failed to enqueue the engine (see its log)')
            if stream is not caller:   # (the input is the estimator's buffer: it stays alive)
                caller.wait_stream(stream)
        return self.output
