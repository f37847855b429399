"""Fakes of the GPU stack for tests on a machine without one: CUDA runtime, TensorRT, ONNX Runtime.

They model the behaviour the code depends on, as the vendors document it, and record what the
code did with them (flags, devices, streams, tensor addresses) for the tests to check:

- ``FakeCuda``: ``torch.cuda`` as seen with ``count`` GPUs of given compute capabilities:
  device guards, streams (a handle per stream, 0 = the legacy default one), timing events that
  complete only once synchronized. Tensors stay on the CPU (the runners allocate where their
  input lies), so the data paths really run.
- ``fake_tensorrt(version)``: the ``tensorrt`` module of TensorRT 8.6, 10.x or 11.x: 8.6 has
  EXPLICIT_BATCH, FP16 and no BF16 nor STRONGLY_TYPED; 10.x has both flag kinds; 11.x has no
  precision builder flags (weak typing removed). Its parser reads the real ONNX export (element
  types of the weights, I/O shapes); its engine "runs" by reading the input through the address
  set with ``set_tensor_address`` and writing the channel mean to the output's address.
- ``fake_onnxruntime(session_providers)``: onnxruntime-gpu whose CUDA libraries may fail to load:
  ``get_available_providers`` lists CUDA, the session reports ``session_providers``.
"""
import contextlib
import ctypes
import itertools
import json
import types

import numpy as np
import torch

# ------------------------------------------------------------------------------- CUDA runtime


class FakeStream:
    _handles = itertools.count(0x1000)

    def __init__(self, device=None, handle=None):
        self.device = device
        self.cuda_stream = next(self._handles) if handle is None else handle
        self.waited_on = []
        self.synchronized = 0

    def wait_stream(self, other):
        self.waited_on.append(other)

    def synchronize(self):
        self.synchronized += 1


class FakeEvent:
    """A timing event: ``elapsed_time`` fails unless both events completed, like CUDA's."""

    def __init__(self, enable_timing=False):
        self.completed = False
        self.time_ms = 0.0
        self.stream = None

    def record(self, stream=None):
        self.completed = False   # the GPU reaches it later
        self.stream = stream
        self.time_ms = FakeCuda.clock_ms = FakeCuda.clock_ms + 1.0

    def query(self):
        return self.completed

    def synchronize(self):
        self.completed = True

    def elapsed_time(self, end):
        if not (self.completed and end.completed):
            raise RuntimeError('CUDA error: device not ready')
        return end.time_ms - self.time_ms


class FakeCuda:
    """Patches ``torch.cuda`` (through ``monkeypatch``) to look like ``capabilities`` GPUs."""

    clock_ms = 0.0

    def __init__(self, monkeypatch, capabilities=((7, 5), (8, 6))):
        self.capabilities = capabilities
        self.current = 0                  # the thread's current device index
        self.default_stream = FakeStream(handle=0)
        self.current_stream_ = self.default_stream
        self.guards = []                  # device indices entered with torch.cuda.device
        cuda = torch.cuda
        for name, value in {
                'is_available': lambda: True,
                'device_count': lambda: len(capabilities),
                'current_device': lambda: self.current,
                'get_device_capability': lambda device=None: capabilities[self._index(device)],
                'get_device_name': lambda device=None: f'Fake GPU {self._index(device)}',
                'is_bf16_supported': lambda *a, **k: True,   # as torch says even on sm_75
                'device': self._device,
                'stream': self._stream,
                'current_stream': lambda device=None: self.current_stream_,
                'Stream': lambda device=None, **kwargs: FakeStream(device),
                'Event': FakeEvent}.items():
            monkeypatch.setattr(cuda, name, value)

    def _index(self, device):
        if device is None:
            return self.current
        if isinstance(device, int):
            return device
        device = torch.device(device)
        return self.current if device.index is None else device.index

    @contextlib.contextmanager
    def _device(self, device):
        previous, self.current = self.current, self._index(device)
        self.guards.append(self.current)
        try:
            yield
        finally:
            self.current = previous

    @contextlib.contextmanager
    def _stream(self, stream):
        previous, self.current_stream_ = self.current_stream_, stream
        try:
            yield
        finally:
            self.current_stream_ = previous


# ------------------------------------------------------------------------------------ TensorRT

def _float_view(address, shape):
    """A numpy float32 array over ``shape`` floats at ``address`` (a CPU tensor's data_ptr)."""
    count = int(np.prod(shape))
    buffer = (ctypes.c_float * count).from_address(address)
    return np.frombuffer(buffer, dtype=np.float32).reshape(shape)


def fake_tensorrt(version, cuda, build_error=None):
    """A ``tensorrt`` module of ``version`` ('8.6.1', '10.3.0', '11.1.0'); see the docstring.

    ``cuda``: the FakeCuda, whose current device and stream the fake records.
    ``build_error``: an exception ``build_serialized_network`` raises (to test failures).
    """
    major = int(version.split('.')[0])
    trt = types.ModuleType('tensorrt')
    trt.__version__ = version
    trt.log = {'networks': [], 'flags': [], 'builds': [], 'parsed': [], 'runs': [],
               'contexts': []}

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity
    trt.Logger = Logger
    creation = {'EXPLICIT_BATCH': 0}
    if major >= 10:
        creation['STRONGLY_TYPED'] = 1
    if major >= 11:
        creation.pop('EXPLICIT_BATCH')   # gone with implicit batch
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(**creation)
    flags = {'TF32': 0, 'FP16': 1, 'BF16': 2}
    if major < 10:
        flags.pop('BF16')
    if major >= 11:
        flags = {'TF32': 0}   # weak typing removed: no FP16 / BF16
    trt.BuilderFlag = types.SimpleNamespace(**flags)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.io = {}
            self.weight_types = set()

    class Parser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 0

        def parse(self, data):
            import onnx
            graph = onnx.load_from_string(data).graph
            self.network.weight_types = {onnx.TensorProto.DataType.Name(init.data_type)
                                         for init in graph.initializer}
            for value in list(graph.input) + list(graph.output):
                dims = value.type.tensor_type.shape.dim
                self.network.io[value.name] = [d.dim_value for d in dims]
            trt.log['parsed'].append(sorted(self.network.weight_types))
            return True
    trt.OnnxParser = Parser

    class Config:
        def __init__(self):
            self.flags = []

        def set_memory_pool_limit(self, pool, size):
            pass

        def set_flag(self, flag):
            self.flags.append(flag)

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags=0):
            trt.log['networks'].append(flags)
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def build_serialized_network(self, network, config):
            trt.log['builds'].append({'device': cuda.current, 'flags': list(config.flags),
                                      'network_flags': network.flags})
            if build_error is not None:
                raise build_error
            return json.dumps({'io': network.io}).encode()
    trt.Builder = Builder

    class Context:
        def __init__(self, engine):
            self.engine = engine
            self.addresses = {}

        def set_tensor_address(self, name, address):
            self.addresses[name] = address

        def execute_async_v3(self, stream_handle):
            trt.log['runs'].append({'device': cuda.current, 'stream': stream_handle})
            io = self.engine.io
            image = _float_view(self.addresses['image'], io['image'])
            _float_view(self.addresses['depth'], io['depth'])[:] = image.mean(axis=1)
            return True

    class Engine:
        def __init__(self, io):
            self.io = io

        def get_tensor_shape(self, name):
            return self.io[name]

        def create_execution_context(self):
            context = Context(self)
            trt.log['contexts'].append(cuda.current)
            return context

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            try:
                return Engine(json.loads(data)['io'])
            except ValueError:
                return None
    trt.Runtime = Runtime
    return trt


# -------------------------------------------------------------------------------- ONNX Runtime

def fake_onnxruntime(session_providers, run_error=None, bind_error=None):
    """onnxruntime(-gpu) 1.32 whose sessions report ``session_providers`` as active.

    ``run_error`` / ``bind_error``: raised by ``run_with_iobinding`` / ``bind_input``, as ORT
    raises a plain RuntimeError when CUDA buffers are bound to a session that runs on the CPU.
    Otherwise the session runs the real exported graph with the real onnxruntime on the CPU.
    """
    import onnxruntime as real
    ort = types.ModuleType('onnxruntime')
    ort.__version__ = real.__version__
    ort.SessionOptions = real.SessionOptions
    ort.GraphOptimizationLevel = real.GraphOptimizationLevel
    ort.get_available_providers = lambda: ['CUDAExecutionProvider', 'CPUExecutionProvider']
    ort.sessions = []

    class Binding:
        def __init__(self, session):
            self.session = session
            self.inputs, self.outputs = {}, {}

        def bind_input(self, name, device_type, device_id, dtype, shape, address):
            if bind_error is not None:
                raise bind_error
            self.inputs[name] = (device_type, device_id, tuple(shape), address)

        def bind_output(self, name, device_type, device_id, dtype, shape, address):
            self.outputs[name] = (device_type, device_id, tuple(shape), address)

        def synchronize_outputs(self):
            pass

    class Session:
        def __init__(self, path, sess_options=None, providers=(), provider_options=()):
            self.requested = list(providers)
            self.provider_options = provider_options
            self.real = real.InferenceSession(path, providers=['CPUExecutionProvider'])
            self.runs = 0
            ort.sessions.append(self)

        def get_providers(self):
            return list(session_providers)

        def io_binding(self):
            return Binding(self)

        def run_with_iobinding(self, binding):
            self.runs += 1
            if run_error is not None:
                raise run_error
            _, _, shape, address = binding.inputs['image']
            result = self.real.run(None, {'image': _float_view(address, shape).copy()})[0]
            _, _, out_shape, out_address = binding.outputs['depth']
            _float_view(out_address, out_shape)[:] = result
    ort.InferenceSession = Session
    return ort
