"""The GPU path on a machine without a GPU: TensorRT 8.6/10/11, ONNX Runtime CUDA, streams, timing,
precision by compute capability, half weights, failures remembered once.

Everything CUDA-, TensorRT- and ONNX-Runtime-specific runs against the fakes of ``fake_gpu``
(which model what the vendors document); the exports, ONNX graphs and data paths are real.
"""
import logging
import sys

import numpy as np
import pytest
import torch

from fake_gpu import FakeCuda, FakeEvent, FakeStream, fake_onnxruntime, fake_tensorrt
from midas_ros.backends import BackendError, create_runner
from midas_ros.backends import onnx_export
from midas_ros.backends.torch_backend import TorchRunner
from midas_ros.inference import DepthEstimator, STAGES, _StageClock, choose_precision
from midas_ros.models.registry import get_config
from test_backends import TinyDepthNet, relative_deviation, textured_image

SMALL = get_config('midas_v21_small_256')
SWIN = get_config('dpt_swin2_tiny_256')
GPU1 = torch.device('cuda', 1)


@pytest.fixture
def cuda(monkeypatch):
    """Two fake GPUs: cuda:0 sm_75 (Turing: bf16 emulated), cuda:1 sm_86 (Ampere)."""
    return FakeCuda(monkeypatch)


@pytest.fixture
def exports(monkeypatch):
    """Counts ONNX exports by the dtype they were asked for."""
    calls = []
    real = onnx_export.export_onnx

    def counting(model, cfg, net_w, net_h, path, dtype=torch.float32):
        calls.append(dtype)
        return real(model, cfg, net_w, net_h, path, dtype=dtype)
    for module in ('tensorrt_backend', 'onnxruntime_backend'):
        monkeypatch.setattr(f'midas_ros.backends.{module}.export_onnx', counting)
    return calls


def install(monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, name, module)
    return module


def net_input(width=64, height=48, seed=0):
    return torch.randn((1, 3, height, width), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------ TensorRT

@pytest.mark.parametrize('version, network_flags, builder_flags, weights', [
    ('8.6.1', 1 << 0, [1], ['FLOAT']),               # EXPLICIT_BATCH, BuilderFlag.FP16
    ('10.3.0', 0, [1], ['FLOAT']),                   # always explicit batch, BuilderFlag.FP16
    ('11.1.0', 1 << 1, [], ['FLOAT16']),             # STRONGLY_TYPED, an fp16 export
])
def test_tensorrt_fp16_builds_on_every_supported_version(
        monkeypatch, cuda, exports, tmp_path, version, network_flags, builder_flags, weights):
    trt = install(monkeypatch, 'tensorrt', fake_tensorrt(version, cuda))
    runner = create_runner('tensorrt', TinyDepthNet(), SMALL, GPU1, 'fp16', tmp_path)
    estimator_stream = FakeStream(GPU1)
    image = net_input()
    with torch.cuda.stream(estimator_stream):   # as DepthEstimator runs every frame
        for _ in range(3):
            output = runner(image)
    assert trt.log['networks'] == [network_flags]
    assert [build['flags'] for build in trt.log['builds']] == [builder_flags]
    assert trt.log['parsed'] == [weights]
    assert len(exports) == 1   # built once, run three times
    # Built, loaded and run on the configured GPU 1 (the current device stays 0), on the
    # estimator's own stream, never the legacy default one.
    assert trt.log['builds'][0]['device'] == 1 and trt.log['contexts'] == [1]
    assert [run['device'] for run in trt.log['runs']] == [1, 1, 1]
    assert {run['stream'] for run in trt.log['runs']} == {estimator_stream.cuda_stream}
    assert cuda.current == 0
    # The engine read the input and wrote the output where the runner said (channel mean).
    np.testing.assert_allclose(output.numpy(), image.mean(dim=1).numpy(), rtol=1e-6)
    # The cache key names the TensorRT version: an upgrade builds anew.
    assert f'-tensorrt-{version}-Fake_GPU_1-sm86-' in runner.artefact.name


def test_tensorrt_strongly_typed_export_keeps_float32_io(monkeypatch, cuda, tmp_path):
    trt = install(monkeypatch, 'tensorrt', fake_tensorrt('11.1.0', cuda))
    runner = create_runner('tensorrt', TinyDepthNet(), SWIN, GPU1, 'bf16', tmp_path)
    image = net_input()
    output = runner(image)
    assert trt.log['parsed'] == [['BFLOAT16']] and trt.log['networks'] == [1 << 1]
    import onnx
    assert not list(runner.artefact.glob('*.onnx'))   # the engine is the artefact
    graph = onnx.load(str(onnx_export.export_onnx(TinyDepthNet(), SMALL, 64, 48,
                                                  tmp_path / 'typed.onnx',
                                                  dtype=torch.float16))).graph
    assert [i.type.tensor_type.elem_type for i in graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in graph.output] == [onnx.TensorProto.FLOAT]
    assert output.dtype == torch.float32


def test_tensorrt_fp16_export_matches_fp32(tmp_path):
    """The typed fp16 graph TensorRT 11 builds from computes what the fp32 one does."""
    ort = pytest.importorskip('onnxruntime')
    model = TinyDepthNet()
    image = net_input(64, 48, seed=3)
    path = onnx_export.export_onnx(model, SMALL, 64, 48, tmp_path / 'fp16.onnx',
                                   dtype=torch.float16)
    session = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    output = session.run(None, {'image': image.numpy()})[0]
    with torch.inference_mode():
        expected = model(image).numpy()
    assert output.dtype == np.float32
    assert relative_deviation(output, expected) < 5e-3


def test_tensorrt_8_6_refuses_bf16_at_once(monkeypatch, cuda, tmp_path):
    install(monkeypatch, 'tensorrt', fake_tensorrt('8.6.1', cuda))
    with pytest.raises(BackendError, match=r"TensorRT 8\.6\.1 can build neither bf16 .* "
                                           r"TensorRT 10 or later"):
        create_runner('tensorrt', TinyDepthNet(), SWIN, GPU1, 'bf16', tmp_path)


def test_tensorrt_on_the_legacy_default_stream_runs_on_its_own(monkeypatch, cuda, tmp_path):
    trt = install(monkeypatch, 'tensorrt', fake_tensorrt('10.3.0', cuda))
    runner = create_runner('tensorrt', TinyDepthNet(), SMALL, GPU1, 'fp32', tmp_path)
    runner(net_input())   # no stream made current: the default one (handle 0)
    stream = trt.log['runs'][0]['stream']
    assert stream != 0
    assert [s.cuda_stream for s in cuda.default_stream.waited_on] == [stream]


def test_tensorrt_build_failure_is_remembered_not_retried(monkeypatch, cuda, exports, tmp_path):
    """The issue's reproduction: an API error at build time, frame after frame."""
    trt = install(monkeypatch, 'tensorrt', fake_tensorrt(
        '10.3.0', cuda, build_error=AttributeError("'IBuilder' has no attribute 'x'")))
    runner = create_runner('tensorrt', TinyDepthNet(), SMALL, GPU1, 'fp16', tmp_path)
    errors = []
    for _ in range(3):
        with pytest.raises(BackendError) as caught:
            runner(net_input())
        errors.append(caught.value)
    assert len(exports) == 1 and len(trt.log['builds']) == 1
    assert errors[0] is errors[1] is errors[2]
    message = str(errors[0])
    assert '\n' not in message
    assert message.startswith('tensorrt 10.3.0 fp16 at 64x48 failed to build or load: '
                              "AttributeError: 'IBuilder' has no attribute 'x'")


def test_tensorrt_run_failure_is_a_backend_error_remembered(monkeypatch, cuda, tmp_path):
    trt = install(monkeypatch, 'tensorrt', fake_tensorrt('11.1.0', cuda))
    runner = create_runner('tensorrt', TinyDepthNet(), SMALL, GPU1, 'fp32', tmp_path)
    runner(net_input())

    def broken(self, stream):
        raise RuntimeError('CUDA error: an illegal memory access was encountered\nmore')
    monkeypatch.setattr(trt.Runtime(None).deserialize_cuda_engine(
        (runner.artefact / 'model.engine').read_bytes()).create_execution_context().__class__,
        'execute_async_v3', broken)
    for _ in range(2):
        with pytest.raises(BackendError, match=r'failed to run: RuntimeError: CUDA error: an '
                                               r'illegal memory access was encountered$'):
            runner(net_input())
    assert len(trt.log['builds']) == 1


# -------------------------------------------------------------------------------- ONNX Runtime

def test_onnxruntime_cuda_session_that_fell_back_to_cpu_is_refused(monkeypatch, cuda, exports,
                                                                   tmp_path):
    pytest.importorskip('onnxruntime')
    ort = install(monkeypatch, 'onnxruntime', fake_onnxruntime(['CPUExecutionProvider']))
    runner = create_runner('onnxruntime', TinyDepthNet(), SMALL, GPU1, 'fp32', tmp_path)
    for _ in range(3):
        with pytest.raises(BackendError, match='created the session without '
                                               r'CUDAExecutionProvider \(active: '
                                               'CPUExecutionProvider\\)'):
            runner(net_input())
    assert len(exports) == 1 and len(ort.sessions) == 1
    assert ort.sessions[0].requested == ['CUDAExecutionProvider']
    assert ort.sessions[0].provider_options == [{'device_id': '1'}]


def test_onnxruntime_cuda_binding_error_is_a_backend_error(monkeypatch, cuda, tmp_path):
    pytest.importorskip('onnxruntime')
    install(monkeypatch, 'onnxruntime', fake_onnxruntime(
        ['CUDAExecutionProvider', 'CPUExecutionProvider'],
        bind_error=RuntimeError('Failed to bind: CUDA pointer on a CPU session')))
    runner = create_runner('onnxruntime', TinyDepthNet(), SMALL, GPU1, 'fp32', tmp_path)
    with pytest.raises(BackendError, match=r'onnxruntime failed to bind the input \(cuda:1\): '
                                           'RuntimeError: Failed to bind'):
        runner(net_input())


def test_onnxruntime_cuda_session_runs_bound_buffers(monkeypatch, cuda, tmp_path):
    pytest.importorskip('onnxruntime')
    install(monkeypatch, 'onnxruntime', fake_onnxruntime(
        ['CUDAExecutionProvider', 'CPUExecutionProvider']))
    model = TinyDepthNet()
    runner = create_runner('onnxruntime', model, SMALL, GPU1, 'fp32', tmp_path)
    image = net_input(seed=4)
    output = runner(image)
    with torch.inference_mode():
        assert relative_deviation(output.numpy(), model(image).numpy()) < 1e-4


@pytest.mark.parametrize('fallback', [True, False])
def test_failure_at_first_use_falls_back_exactly_once(monkeypatch, tmp_path, caplog, fallback):
    """An ORT run failing on every call: one export, one fallback warning, torch afterwards."""
    pytest.importorskip('onnxruntime')
    ort = install(monkeypatch, 'onnxruntime', fake_onnxruntime(
        ['CPUExecutionProvider'], run_error=RuntimeError('CUDA failure 100: no device')))
    exported = []
    real = onnx_export.export_onnx
    monkeypatch.setattr('midas_ros.backends.onnxruntime_backend.export_onnx',
                        lambda *a, **k: exported.append(1) or real(*a, **k))
    estimator = DepthEstimator(SMALL.name, device='cpu', model=TinyDepthNet(),
                               backend='onnxruntime', cache_dir=tmp_path,
                               backend_fallback=fallback)
    image = textured_image(30, 40)
    with caplog.at_level(logging.WARNING, logger='midas_ros.inference'):
        for _ in range(3):
            if fallback:
                depth = estimator.predict(image)
            else:
                with pytest.raises(BackendError, match=r'onnxruntime failed to run \(cpu:0\): '
                                                       'RuntimeError: CUDA failure 100'):
                    estimator.predict(image)
    assert len(exported) == 1 and ort.sessions[0].runs == 1
    assert estimator.backend_error.startswith('onnxruntime ') and '\n' not in \
        estimator.backend_error
    warnings = [r for r in caplog.records if 'falling back' in r.getMessage()]
    if not fallback:
        assert estimator.backend == 'onnxruntime' and not warnings
        return
    assert estimator.backend == 'torch' and len(warnings) == 1
    expected = DepthEstimator(SMALL.name, device='cpu', model=TinyDepthNet()).predict(image)
    np.testing.assert_allclose(depth, expected, rtol=1e-5)


# ---------------------------------------------------------------------------- timing, streams

def test_stage_clock_waits_for_its_last_event(cuda):
    stream = FakeStream(GPU1)
    clock = _StageClock(GPU1, stream)
    clock.start()
    for _ in STAGES:
        clock.mark()
    # The download synchronized the stream before the last mark: all but the last completed.
    for event in clock._events[:-1]:
        event.completed = True
    durations = clock.durations()   # would raise 'device not ready' without waiting
    assert list(durations) == list(STAGES)
    assert all(seconds == pytest.approx(1e-3) for seconds in durations.values())
    assert {event.stream for event in clock._events} == {stream}


def test_fake_event_reproduces_the_unfinished_event_error():
    start, end = FakeEvent(), FakeEvent()
    start.record(), end.record()
    start.synchronize()
    with pytest.raises(RuntimeError, match='device not ready'):
        start.elapsed_time(end)


# ---------------------------------------------------------------------------------- precision

@pytest.mark.parametrize('device, cfg, expected, reason', [
    ('cuda:1', SWIN, 'bf16', 'bf16 is native on sm_86'),
    ('cuda:0', SWIN, 'fp32', 'bf16 is only emulated on sm_75'),
    ('cuda:0', SMALL, 'fp16', 'safe in fp16'),
    ('cuda:1', SMALL, 'fp16', 'safe in fp16'),
    ('cpu', SWIN, 'fp32', 'CPU'),
])
def test_auto_precision_follows_the_configured_device(cuda, device, cfg, expected, reason):
    # The current device is 0 (sm_75) and torch says bf16 is supported there (emulated):
    # neither may decide for cuda:1, nor may the emulation count as support.
    assert torch.cuda.current_device() == 0 and torch.cuda.is_bf16_supported()
    precision, why = choose_precision('auto', torch.device(device), cfg)
    assert precision == expected and reason in why


def test_precision_choice_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger='midas_ros.inference'):
        estimator = DepthEstimator(SMALL.name, device='cpu', model=TinyDepthNet())
    assert estimator.precision_reason == 'CPU: the reference-exact path'
    assert 'precision fp32 on cpu: CPU: the reference-exact path' in caplog.text


# ------------------------------------------------------------------------------- half weights

def test_half_safe_variant_stores_half_weights():
    model = TinyDepthNet()
    image = net_input(seed=5)
    with torch.inference_mode():
        expected = model(image).numpy()
        fp32_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        runner = TorchRunner(TinyDepthNet(), torch.device('cpu'), 'bf16', channels_last=False,
                             half_weights=True)
        output = runner(image)
    assert {p.dtype for p in runner.eager.parameters()} == {torch.bfloat16}
    assert sum(p.numel() * p.element_size() for p in runner.eager.parameters()) == \
        fp32_bytes // 2
    assert relative_deviation(output.float().numpy(), expected) < 3e-2


def test_unsafe_variant_keeps_fp32_weights_under_autocast():
    runner = create_runner('torch', TinyDepthNet(), SWIN, torch.device('cpu'), 'bf16')
    assert {p.dtype for p in runner.eager.parameters()} == {torch.float32}
    half = create_runner('torch', TinyDepthNet(), SMALL, torch.device('cpu'), 'bf16')
    assert {p.dtype for p in half.eager.parameters()} == {torch.bfloat16}


def test_estimator_half_weights_output_matches_fp32():
    image = textured_image(48, 64)
    expected = DepthEstimator(SMALL.name, device='cpu', model=TinyDepthNet()).predict(image)
    estimator = DepthEstimator(SMALL.name, device='cpu', model=TinyDepthNet(), precision='bf16')
    depth = estimator.predict(image)
    assert depth.dtype == np.float32
    assert relative_deviation(depth, expected) < 3e-2


# ------------------------------------------------------------------------------------ warm-up

def test_warmup_runs_once_per_size_and_logs_its_duration(caplog):
    estimator = DepthEstimator(SMALL.name, device='cpu', model=TinyDepthNet())
    calls = []
    runner = estimator.runner
    estimator.runner = lambda x: calls.append(tuple(x.shape)) or runner(x)
    with caplog.at_level(logging.INFO, logger='midas_ros.inference'):
        seconds = estimator.warmup(64, 48)
        assert estimator.warmup(64, 48) == 0.0   # already warm
        estimator.warmup(48, 64)
    assert seconds > 0 and estimator.warmed_up[64, 48] == seconds
    assert calls == [(1, 3, 192, 256), (1, 3, 256, 192)]
    assert 'warm-up for 64x48 images:' in caplog.text and '(torch, fp32 on cpu)' in caplog.text


def test_compiled_levit_does_not_recompile_on_frame_two(monkeypatch):
    """LeViT fills its attention-bias cache on its first call: compiling before it has run
    would guard on the empty cache and compile again on frame 2 (reproduced without the eager
    pass: 1 graph after frame 1, 2 after frame 2)."""
    from midas_ros.backends import torch_backend
    from midas_ros.models import create_model
    graphs = []

    def counting_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward
    real_compile = torch.compile
    monkeypatch.setattr(torch_backend.torch, 'compile',
                        lambda model: real_compile(model, backend=counting_backend))
    torch._dynamo.reset()
    runner = TorchRunner(create_model('dpt_levit_224', pretrained=False), torch.device('cpu'),
                         channels_last=False, compile=True)
    image = net_input(224, 224)
    counts = []
    with torch.inference_mode():
        for _ in range(3):
            runner(image)
            counts.append(len(graphs))
    assert counts[0] >= 1 and counts == [counts[0]] * 3


# ----------------------------------------------------------------------- device and export

def test_device_parameter_accepts_cuda_n_and_nothing_else():
    from midas_ros.ros.depth_node_params import DEPTH_NODE_PARAMS
    device = next(param for param in DEPTH_NODE_PARAMS if param.name == 'device')
    for good in ('auto', 'cpu', 'cuda', 'cuda:0', 'cuda:12'):
        assert device.check(good) is None
    for bad in ('gpu', 'cuda:', 'cuda:x', 'CUDA', 'cpu:0', 'cuda:1 '):
        assert 'does not match' in device.check(bad)
    assert device.descriptor().additional_constraints == 'matches auto|cpu|cuda(:[0-9]+)?'


def test_node_asked_for_cuda_1_without_cuda_refuses_to_start_naming_cuda(tmp_path):
    from ros_process import NodeProcess
    process = NodeProcess('depth_node', ['-p', 'device:=cuda:1', '-p', 'model.pretrained:=false'],
                          tmp_path=tmp_path)
    try:
        process.process.wait(120)
    finally:
        process.stop()
    output = process.output()
    assert process.process.returncode == 1, output
    assert "cannot start: device 'cuda:1' requested but CUDA is not available here" in output
    assert 'is not one of' not in output and 'does not match' not in output


@pytest.mark.parametrize('fmt, device, cfg, expected', [
    ('tensorrt', 'cuda:0', SMALL, 'fp16'),
    ('tensorrt', 'cuda:0', SWIN, 'fp32'),   # sm_75: bf16 emulated
    ('tensorrt', 'cuda:1', SWIN, 'bf16'),   # sm_86
    ('onnx', 'cuda:1', SMALL, 'fp32'),
    ('openvino', 'cpu', SMALL, 'fp32'),
])
def test_export_precision_defaults_to_what_the_node_runs(cuda, fmt, device, cfg, expected):
    from midas_ros.tools import export as export_tool
    args = export_tool.build_parser().parse_args(['--model', cfg.name, '--format', fmt])
    assert args.precision == 'auto'
    assert export_tool.export_precision(fmt, 'auto', torch.device(device), cfg)[0] == expected
    assert choose_precision('auto', torch.device(device), cfg)[0] == expected or fmt == 'onnx'


def test_node_reports_the_backend_failure_and_its_warm_up_over_dds(tmp_path):
    """depth_node asked for TensorRT on the CPU with fallback: the one-line reason is in
    /diagnostics, torch runs, and the first image's size is warmed up once, logged."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import Image

    from midas_ros.ros.conversions import array_to_image
    from midas_ros.ros.qos import qos_profile
    from ros_process import NodeProcess, RosTestNode, unique_namespace
    namespace = unique_namespace('gpu')
    process = NodeProcess('depth_node', [
        '-r', f'__ns:={namespace}', '-p', 'model.pretrained:=false', '-p', 'device:=cpu',
        '-p', 'model.backend:=tensorrt', '-p', 'model.backend_fallback:=true',
        '-p', 'diagnostics.period:=0.3'], tmp_path=tmp_path)
    probe = RosTestNode('gpu_probe')
    try:
        diagnostics = probe.collect(DiagnosticArray, '/diagnostics')
        publisher = probe.node.create_publisher(Image, f'{namespace}/image',
                                                qos_profile('sensor_data'))
        image = array_to_image(textured_image(48, 64), 'rgb8')
        name = f'{namespace}/depth_node: depth'

        def status():
            for msg in reversed(diagnostics):
                for item in msg.status:
                    if item.name == name:
                        return item, {kv.key: kv.value for kv in item.values}
            return None, {}

        def warmed():
            publisher.publish(image)
            return '64x48' in status()[1].get('warm-up (s)', '')
        assert probe.spin_until(warmed, 180, step=None), process.output()
        item, values = status()
        assert values['backend'] == 'torch' and values['backend requested'] == 'tensorrt'
        assert values['backend error'].startswith("backend 'tensorrt' needs a CUDA device")
        assert values['precision'] == 'fp32 (CPU: the reference-exact path)'
        output = process.output()
        assert output.count('warming up for 64x48 images') == 1
        assert 'ready for 64x48 images: warm-up took' in output
        assert output.count('falling back to torch') == 1
    finally:
        probe.close()
        process.stop()
