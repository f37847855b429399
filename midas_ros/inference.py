"""``DepthEstimator``: one MiDaS variant on one device, image in, relative inverse depth out.

ROS-free. ``predict`` has the official ``run.py`` semantics (relative inverse depth, upsampled to
the input size) and the lean path a robot needs: preprocessing on the model's device
(``models.transforms.DevicePreprocessor``), buffers reused across frames of one size, inference
mode, and on CUDA pinned host buffers, non-blocking copies, channels_last, cudnn autotuning, fp16 /
bf16 autocast where the variant tolerates it and optionally ``torch.compile``.

The network itself sits behind a small seam, a *runner*: a callable that maps the normalized
1x3xHxW float32 input to an NxHxW prediction. ``midas_ros.backends`` provides one per backend
(PyTorch, ONNX Runtime, OpenVINO, TensorRT); everything around it is the same for all.
"""
import contextlib
import logging
import time
import warnings

import numpy as np
import torch

from midas_ros.backends import BACKENDS, BackendError, create_runner
from midas_ros.backends.base import run_batch
from midas_ros.backends.choice import BackendChoice, ParityCheckedRunner, choose_backend
from midas_ros.backends.quantize import INT8_BACKENDS
from midas_ros.backends.torch_backend import TorchRunner
from midas_ros.cpu_budget import CpuBudget, ThreadPlan, configure_pools
from midas_ros.cpu_budget import parallel_frames as parallel_frames_for
from midas_ros.models.registry import resolve_config
from midas_ros.models.transforms import DevicePreprocessor, check_image, upsample_prediction
from midas_ros.quantization import Int8Calibrator

__all__ = ['BACKENDS', 'PRECISIONS', 'STAGES', 'BackendError', 'DepthEstimator', 'TorchRunner',
           'choose_precision', 'resolve_device', 'resolve_precision', 'usable_cpu_count']

PRECISIONS = ('auto', 'fp32', 'fp16', 'bf16', 'int8')
STAGES = ('upload', 'preprocess', 'inference', 'postprocess', 'download')
_log = logging.getLogger(__name__)

# Camera images arrive as read-only views of the message's memory; torch warns that it cannot
# guard such an array against writes, but nothing here writes to the input (preprocessing makes
# new tensors), so the warning is only noise in every node log.
warnings.filterwarnings('ignore', message='The given NumPy array is not writable',
                        category=UserWarning)


def resolve_device(device='auto'):
    """``'auto'`` -> the current CUDA device if there is one, else the CPU; validates the rest."""
    text = str(device).strip().lower()
    if text == 'auto':
        text = 'cuda' if torch.cuda.is_available() else 'cpu'
    try:
        resolved = torch.device(text)
    except RuntimeError:
        resolved = None
    if resolved is None or resolved.type not in ('cpu', 'cuda'):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got '{device}'")
    if resolved.type == 'cuda':
        if not torch.cuda.is_available():
            why = ('this torch is a CPU-only build' if torch.version.cuda is None else
                   f'torch {torch.__version__} (CUDA {torch.version.cuda}) finds no CUDA '
                   'driver or GPU')
            raise ValueError(f"device '{device}' requested but CUDA is not available here "
                             f"({why}): use device 'cpu' or 'auto'")
        if resolved.index is None:
            resolved = torch.device('cuda', torch.cuda.current_device())
        elif resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device '{device}' requested but only "
                             f'{torch.cuda.device_count()} CUDA device(s) exist')
    return resolved


def resolve_precision(precision, device, cfg):
    """The precision to run at: 'fp32', 'fp16' or 'bf16' (see ``choose_precision``)."""
    return choose_precision(precision, device, cfg)[0]


def choose_precision(precision, device, cfg):
    """``(precision, reason)``: what ``precision`` ('auto' or explicit) resolves to, and why.

    ``'auto'`` follows the compute capability of ``device`` itself (not of the current device):
    on the CPU fp32 (the reference-exact path); on CUDA fp16 for variants safe in half precision
    (``cfg.half_precision_safe``; fp16 tensor cores exist on every supported GPU). For the others
    (Swin: attention overflows fp16's range) bf16 where the GPU runs it natively (sm_80, Ampere,
    and later), else fp32: below sm_80 bf16 is emulated (slow, and Triton rejects it under
    ``torch.compile``) even where ``torch.cuda.is_bf16_supported()`` says True. An explicit
    'fp32'/'fp16'/'bf16' is honoured on either device.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got '{precision}'")
    if precision == 'int8' and device.type != 'cpu':
        raise ValueError(f"precision int8 runs on the CPU (backends openvino, onnxruntime), not "
                         f"on {device}: use fp16/bf16 there")
    if precision != 'auto':
        return precision, 'requested'
    if device.type != 'cuda':
        return 'fp32', 'CPU: the reference-exact path'
    major, minor = torch.cuda.get_device_capability(device)
    capability = f'sm_{major}{minor}'
    if cfg.half_precision_safe:
        return 'fp16', f'{cfg.name} is safe in fp16, native on {capability}'
    if (major, minor) >= (8, 0):
        return 'bf16', f'{cfg.name} overflows fp16; bf16 is native on {capability}'
    return 'fp32', (f'{cfg.name} overflows fp16 and bf16 is only emulated on {capability} '
                    '(native from sm_80)')


def int8_backend(backend, device):
    """The backend that runs ``precision='int8'``: ``backend`` if it can ('openvino',
    'onnxruntime'), for 'auto' the first of them installed here; ValueError otherwise."""
    if backend == 'auto':
        choice = choose_backend(device, 'fp32')
        if choice.backend in INT8_BACKENDS:
            return choice.backend
        raise ValueError(f'precision int8 needs openvino or onnxruntime, and none can run here '
                         f'({choice.reason})')
    if backend not in INT8_BACKENDS:
        raise ValueError(f"precision int8 runs on backends {', '.join(INT8_BACKENDS)}, not "
                         f"'{backend}': torch has no int8 CPU path for these networks (its "
                         'post-training quantization does not cover the ViT and Swin blocks), '
                         'so the exported graph is quantized instead')
    return backend


def usable_cpu_count():
    """CPUs this process may use: its affinity mask, capped by its cgroup CPU quota."""
    return CpuBudget.detect().cores


class _StageClock:
    """Per-stage durations in seconds: CUDA events on a GPU (no extra syncs), wall clock on CPU.

    ``stream``: the CUDA stream the stages run on (the estimator's own).
    """

    def __init__(self, device, stream=None):
        self._cuda = device.type == 'cuda'
        count = len(STAGES) + 1
        if self._cuda:
            self._stream = stream if stream is not None else torch.cuda.current_stream(device)
            self._events = [torch.cuda.Event(enable_timing=True) for _ in range(count)]
        self._marks = [0.0] * count
        self._index = 0

    def start(self):
        self._index = 0
        self.mark()

    def mark(self):
        """End of the current stage (and start of the next)."""
        if self._cuda:
            self._events[self._index].record(self._stream)
        else:
            self._marks[self._index] = time.perf_counter()
        self._index += 1

    def durations(self):
        """{stage: seconds}, once every stage's work is done.

        The last mark is recorded after the download synchronized the stream, so its event may
        not have completed yet: ``elapsed_time`` on it would fail ("device not ready"). Waiting
        for it costs nothing (the stream is idle); the events before it completed already.
        """
        if self._cuda:
            self._events[-1].synchronize()
            spans = [self._events[i].elapsed_time(self._events[i + 1]) / 1e3
                     for i in range(len(STAGES))]
        else:
            spans = [self._marks[i + 1] - self._marks[i] for i in range(len(STAGES))]
        return dict(zip(STAGES, spans))


class DepthEstimator:
    """Model ``model_name`` on ``device``: ``predict(image)`` -> the network's depth (HxW):
    relative inverse depth, or metres for a metric model (``config.output``).

    ``config`` is the variant's ``ModelConfig`` with ``input_size`` (network input size of
    Depth Anything V2; 0: its own, 518) and ``max_depth`` (metric models; 0: the checkpoint's)
    applied (``registry.resolve_config``: ValueError when invalid).

    Weights come from ``midas_ros.models.create_model`` (``pretrained``, ``weights``,
    ``weights_dir``, ``allow_download`` are passed through); ``model`` may instead be an already
    built network of that variant (its weights are used as they are). ``precision``: see
    ``resolve_precision``. Threads (CPU): ``cpu_threads`` for the network (torch, ONNX Runtime
    and OpenVINO intra-op), ``interop_threads`` for torch's inter-op pool and ``opencv_threads``
    for OpenCV's; 0 = from the CPU budget (``midas_ros.cpu_budget``: affinity and cgroup quota).
    ``thread_plan`` is the ``ThreadPlan`` applied. ``parallel_frames`` (0: auto, see
    ``cpu_budget.parallel_frames``; the result and ``parallel_frames_reason`` are attributes)
    is how many frames' networks the caller may run at the same time, on ``cpu_threads``
    each: this estimator runs one of them, ``replica()`` makes one for each other.

    ``backend`` runs the network: 'torch' (default), 'onnxruntime', 'openvino' (CPU; with
    ``device='auto'`` it picks the CPU), 'tensorrt' (CUDA) or 'auto': the fastest runtime
    installed here that matches torch fp32 (``backends.choice``; checked on the first frame,
    torch after a warning if not), ``backend_choice`` says which and why. Backends other than
    torch run a graph exported for the network input size of the first frame, found in or
    added to the artefact cache in ``cache_dir`` (default ``$MIDAS_ROS_CACHE`` or
    ``~/.cache/midas_ros/engines``); a new image size exports once more. When the backend
    cannot run (package missing, export failed, engine for another GPU) a ``BackendError`` says
    what to install or rebuild -- or, with ``backend_fallback``, a warning is logged and the
    torch path runs instead. ``backend`` is the backend actually running (e.g. 'torch' after a
    fallback), ``requested_backend`` the one asked for. ``channels_last`` and ``compile``
    concern the torch path only.

    After each ``predict``, ``last_timings`` holds seconds per stage: ``upload`` (host image to
    the device), ``preprocess``, ``inference``, ``postprocess`` (upsampling), ``download``.
    ``precision_reason`` says why ``precision`` was chosen; ``backend_error`` is the one-line
    BackendError of the requested backend once it failed (None while it works). On CUDA all
    work runs under ``device``'s guard on ``stream``, a stream of the estimator's own.
    ``warmup`` builds, compiles and autotunes for an image size ahead of its first frame.
    Not thread-safe: one estimator serves one stream of frames.

    ``precision='int8'`` (CPU, backend 'openvino', 'onnxruntime' or 'auto', which then picks
    one of them): the backend's fp32 graph serves until ``int8`` (a
    ``quantization.Int8Calibrator``, shared with the replicas) has quantized the graph on
    ``calibration`` (''/folder/'recording.mcap:/topic'; ``calibration_frames`` inputs) and
    measured it against fp32 on held-out inputs; accepted when the 95th percentile of the
    relative error is at most ``int8_max_error``. ``precision`` is the one running ('fp32',
    then 'int8' once swapped in), ``requested_precision`` the one asked for. ``calibration``
    errors (empty folder, missing topic) raise ``CalibrationError`` here. ``int8_background``:
    quantize in a background thread while fp32 serves (False: inside the completing frame).
    ``logger``: where the int8 result is logged (default: this module's ``logging`` logger).
    """

    def __init__(self, model_name, device='auto', pretrained=True, weights=None, weights_dir=None,
                 allow_download=False, precision='auto', channels_last=True, compile=False,
                 cpu_threads=0, model=None, backend='torch', backend_fallback=False,
                 cache_dir=None, interop_threads=0, opencv_threads=0, parallel_frames=1,
                 calibration='', calibration_frames=32, int8_max_error=0.1,
                 int8_background=True, logger=None, int8_calibrator=None, input_size=0,
                 max_depth=0.0):
        self.config = resolve_config(model_name, input_size, max_depth)
        self._input_size, self._max_depth = input_size, max_depth   # for replicas
        # What a replica is built with, and the thread counts every (re-)plan starts from.
        self._options = dict(
            device=str(device), channels_last=channels_last, compile=compile,
            cpu_threads=cpu_threads, interop_threads=interop_threads,
            opencv_threads=opencv_threads, cache_dir=cache_dir)
        if backend not in BACKENDS + ('auto',):
            raise ValueError(f"backend must be one of auto, {', '.join(BACKENDS)}, got "
                             f"'{backend}'")
        if backend == 'openvino' and str(device).strip().lower() == 'auto':
            device = 'cpu'   # OpenVINO runs on the CPU even where a CUDA device exists
        if backend == 'onnxruntime' and precision == 'auto':
            precision = 'fp32'   # what ONNX Runtime runs here, on a GPU as well
        self.device = resolve_device(device)
        self.precision, self.precision_reason = choose_precision(precision, self.device,
                                                                 self.config)
        self.requested_precision = self.precision
        if self.precision == 'int8':   # fp32 serves until the int8 graph is measured
            int8_backend(backend, self.device)   # ValueError where int8 cannot run
            self.precision = 'fp32'
        _log.info('precision %s on %s: %s', self.precision, self.device, self.precision_reason)
        self.stream = None
        if self.device.type == 'cuda':
            torch.backends.cudnn.benchmark = True   # input sizes repeat frame after frame
            # Our own stream: TensorRT enqueued on the legacy default stream synchronizes with
            # every other stream (and warns each frame); see ``_on_device``.
            self.stream = torch.cuda.Stream(self.device)
        random_weights = model is None and not pretrained and weights is None
        if model is None:
            from midas_ros.models import create_model   # imports torch model code on demand
            with torch.random.fork_rng(devices=[]):
                # Random weights (tests, benchmarks) are the same in every process, so their
                # exported graphs are found in the artefact cache instead of exported anew.
                torch.manual_seed(0)
                model = create_model(model_name, pretrained=pretrained, weights=weights,
                                     weights_dir=weights_dir, allow_download=allow_download,
                                     max_depth=max_depth)
        # The checkpoint file loaded (None: random weights, or a network handed in).
        self.weights_path = getattr(model, 'weights_path', None)
        self.requested_backend = backend
        self.backend_choice = None
        if backend == 'auto':
            self.backend_choice = choose_backend(self.device, self.precision)
            backend = self.backend_choice.backend
            backend_fallback = True   # 'auto' promises a working path: torch is always one
        else:
            self.backend_choice = BackendChoice(backend, 'set explicitly (model.backend)')
        self.backend_fallback = backend_fallback
        self.backend_error = None
        # Every pool sized to the CPUs this process may use, on a GPU machine too (pre- and
        # post-processing of other processes, OpenCV): threads beyond them only contend.
        budget = CpuBudget.detect()
        self._parallel_frames_requested = parallel_frames
        frames, self.parallel_frames_reason = parallel_frames_for(
            parallel_frames, budget, self.device.type, backend,
            sum(p.numel() * p.element_size() for p in model.parameters()))
        self.thread_plan = self._configure_threads(budget, frames)
        self.warmed_up = {}   # (width, height) -> seconds its warm-up took
        self._model = model   # kept for a fallback to torch
        self._torch_options = (channels_last, compile)
        try:
            with self._on_device():
                self.runner = create_runner(backend, model, self.config, self.device,
                                            self.precision, cache_dir, channels_last, compile)
            if self.requested_backend == 'auto' and backend != 'torch':
                self.runner = ParityCheckedRunner(self.runner, model)
            self.backend = backend
        except BackendError as error:
            self._fall_back_to_torch(error)
        self.int8 = None
        if self.requested_precision == 'int8' and self.backend != 'torch':
            self.int8 = int8_calibrator or Int8Calibrator(
                backend, model, self.config, cache_dir, calibration, calibration_frames,
                int8_max_error, int8_background, logger,
                random_weights=random_weights)
            self.int8.register(self)
            self.precision_reason = self.int8.reason
        elif self.requested_precision == 'int8':
            self.precision_reason = (f'int8 needs the {backend} graph, which failed: torch '
                                     f'fp32 runs ({self.backend_error})')
        self._fp32_runner = self.runner
        self._warming_up = False
        # Exported graphs take contiguous NCHW; channels_last would cost them a copy per frame.
        self.preprocessor = DevicePreprocessor(self.config, self.device,
                                               channels_last and self.backend == 'torch')
        self.last_timings = dict.fromkeys(STAGES, 0.0)
        self._clock = _StageClock(self.device, self.stream)
        self._host_input = None     # pinned uint8 staging (CUDA only)
        self._device_input = None   # uint8 image on the device (CUDA only)
        self._device_output = None  # 1x1xHxW float32 upsampled prediction (CUDA only)
        self._host_output = None    # pinned float32 HxW (CUDA only)
        self._batch_tensors = {}    # float32 device tensors of ``predict_batch``
        self._batch_staging = None  # its pinned / device image and depth buffers (CUDA only)

    @property
    def parallel_frames(self):
        """Frames whose networks the caller may run at the same time (``thread_plan``)."""
        return self.thread_plan.frames

    def replica(self):
        """Another estimator of the same network and settings for a concurrent stream of
        frames (``parallel_frames``): it shares the torch weights; an exported runtime loads
        a session of its own from the artefact cache. After a fallback to torch, torch."""
        backend = 'torch' if self.backend_error else self.requested_backend
        int8 = self.int8 is not None
        return DepthEstimator(
            self.config.name, precision='int8' if int8 else self.precision, model=self._model,
            backend=backend, backend_fallback=self.backend_fallback,
            input_size=self._input_size, max_depth=self._max_depth,
            parallel_frames=self._parallel_frames_requested, int8_calibrator=self.int8,
            **self._options)

    def _configure_threads(self, budget, frames):
        """Apply (and return) the ``ThreadPlan`` for ``frames`` in parallel on ``budget``,
        from the thread counts this estimator was asked for."""
        options = self._options
        return configure_pools(ThreadPlan.for_budget(
            budget, options['cpu_threads'], options['interop_threads'],
            options['opencv_threads'], frames))

    def _on_device(self):
        """The CUDA device guard and the estimator's stream (nothing on the CPU).

        Everything a frame does -- copies, preprocessing, the network of every backend,
        upsampling -- is enqueued in order on ``self.stream`` of ``self.device``, whichever
        device is current in the calling thread.
        """
        if self.device.type != 'cuda':
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.cuda.device(self.device))
        stack.enter_context(torch.cuda.stream(self.stream))
        return stack

    def _fall_back_to_torch(self, error):
        """Run the torch path from now on if ``backend_fallback`` allows it; else re-raise.

        Called once at most: after it the torch runner runs, which raises no BackendError.
        """
        self.backend_error = str(error)
        if not self.backend_fallback or self.requested_backend == 'torch':
            raise error
        _log.warning("backend '%s' unavailable, falling back to torch: %s",
                     self.backend_choice.backend, error)
        self.backend_choice = BackendChoice('torch', f'{self.backend_choice.backend} failed: '
                                                     f'{error}')
        channels_last, compile = self._torch_options
        self.runner = create_runner('torch', self._model, self.config, self.device,
                                    self.precision, None, channels_last, compile)
        self.backend = 'torch'
        if not self._parallel_frames_requested and self.parallel_frames > 1:
            # 'auto' chose frames in parallel for the exported runtime; torch's OpenMP pool
            # belongs to the main thread (cpu_budget.parallel_frames): one frame at a time,
            # on every core again unless cpu_threads says otherwise.
            self.parallel_frames_reason = 'torch after a fallback runs one frame at a time'
            self.thread_plan = self._configure_threads(self.thread_plan.budget, 1)
        if hasattr(self, 'preprocessor'):   # at a frame: from the next one, the torch layout
            self.preprocessor = DevicePreprocessor(self.config, self.device, channels_last)

    def predict(self, image, channel_order='rgb', out=None):
        """The depth of ``image`` at its own size: a float32 HxW array; relative inverse depth,
        or metres for a metric model (``config.output == 'metric'``).

        ``image``: uint8 HxWx3 ('rgb'/'bgr'), HxWx4 ('rgba'/'bgra') or HxW ('mono'). Larger
        values are nearer; the scale is arbitrary per image, as in the official pipeline. The
        result is a new array, or ``out`` (float32 HxW) filled in place when given.
        """
        with self._on_device():
            return self._predict(image, channel_order, out)

    @torch.inference_mode()
    def _predict(self, image, channel_order, out):
        image = np.asarray(image)
        check_image(image, channel_order)
        self._check_out(out, image.shape[:2])
        height, width = image.shape[:2]
        self._input_buffers(image.shape)
        self._output_buffers(height, width)
        clock = self._clock
        clock.start()
        if self.device.type == 'cuda':
            np.copyto(self._host_input.numpy(), image)
            device_image = self._device_input.copy_(self._host_input, non_blocking=True)
        else:
            # A view, not a copy (negative strides, e.g. a flipped view, are made contiguous).
            device_image = torch.from_numpy(
                image if all(s >= 0 for s in image.strides) else np.ascontiguousarray(image))
        clock.mark()
        net_input = self.preprocessor(device_image, channel_order)
        clock.mark()
        result = self._infer_and_upsample(net_input, height, width, out)
        self.last_timings = clock.durations()
        return result

    def predict_batch(self, images, channel_order='rgb', outs=None):
        """``predict`` of several images of one size and channel order, with one network call
        for all of them: a list of float32 HxW arrays (those of ``outs``, filled in place,
        when given). Worth it on CUDA, where one launch of N frames costs far less than N
        (depth_node batches the cameras' frames waiting together); a runner that takes one
        frame at a time (an exported graph built for batch 1) runs them in turn on the same
        stream. ``last_timings`` are the whole batch's. ValueError for images of different
        sizes. int8 (CPU only) runs them one by one, as ``predict``."""
        with self._on_device():
            return self._predict_batch(images, channel_order, outs)

    @torch.inference_mode()
    def _predict_batch(self, images, channel_order, outs):
        if self.int8 is not None:   # int8 (CPU only): calibrated and swapped in frame by frame
            outs = list(outs) if outs is not None else [None] * len(images)
            return [self._predict(image, channel_order, out) for image, out in zip(images, outs)]
        images = [np.asarray(image) for image in images]
        shape = images[0].shape
        height, width = shape[:2]
        outs = list(outs) if outs is not None else [None] * len(images)
        for image, out in zip(images, outs):
            if image.shape != shape:
                raise ValueError(f'a batch takes images of one size, got {image.shape} and '
                                 f'{shape}')
            check_image(image, channel_order)
            self._check_out(out, (height, width))
        count = len(images)
        batch = self._batch_buffers(count, shape)
        clock = self._clock
        clock.start()
        if self.device.type == 'cuda':
            for index, image in enumerate(images):
                np.copyto(batch['host_input'][index].numpy(), image)
            device_images = batch['device_input'].copy_(batch['host_input'], non_blocking=True)
        else:
            device_images = [torch.from_numpy(np.ascontiguousarray(image)) for image in images]
        clock.mark()
        net_inputs = None
        for index in range(count):
            # The preprocessor's output is a buffer it reuses: copied into the batch at once.
            single = self.preprocessor(device_images[index], channel_order)
            if net_inputs is None:
                net_inputs = self._batch_tensor('net_input', (count,) + tuple(single.shape[1:]))
            net_inputs[index].copy_(single[0])
        clock.mark()
        try:
            prediction = run_batch(self.runner, net_inputs,
                                   self._batch_tensor('prediction', (count,) +
                                                      tuple(net_inputs.shape[2:])))
        except BackendError as error:   # e.g. the export for this input size failed
            self._fall_back_to_torch(error)
            prediction = run_batch(self.runner, net_inputs,
                                   self._batch_tensor('prediction', (count,) +
                                                      tuple(net_inputs.shape[2:])))
        clock.mark()
        upsampled = upsample_prediction(prediction, height, width,
                                        out=self._batch_tensor('upsampled',
                                                               (count, 1, height, width)))
        clock.mark()
        if self.device.type == 'cuda':
            batch['host_output'].copy_(upsampled[:, 0], non_blocking=True)
            self.stream.synchronize()
            host = batch['host_output'].numpy()
        else:
            host = upsampled[:, 0].numpy()
        results = []
        for index, out in enumerate(outs):
            if out is None:
                results.append(host[index].copy())
            else:
                np.copyto(out, host[index])
                results.append(out)
        clock.mark()
        self.last_timings = clock.durations()
        return results

    def _batch_tensor(self, name, shape):
        """A float32 tensor on the device for batches, reused while ``shape`` repeats."""
        tensors = self._batch_tensors
        tensor = tensors.get(name)
        if tensor is None or tuple(tensor.shape) != shape:
            tensor = tensors[name] = torch.empty(shape, dtype=torch.float32,
                                                 device=self.device)
        return tensor

    def _batch_buffers(self, count, shape):
        """Pinned host and device uint8 image / float32 depth buffers of a CUDA batch."""
        if self.device.type != 'cuda':
            return {}
        key = (count,) + tuple(shape)
        buffers = self._batch_staging
        if buffers is None or buffers['key'] != key:
            buffers = self._batch_staging = {
                'key': key,
                'host_input': torch.empty(key, dtype=torch.uint8, pin_memory=True),
                'device_input': torch.empty(key, dtype=torch.uint8, device=self.device),
                'host_output': torch.empty((count,) + tuple(shape[:2]), dtype=torch.float32,
                                           pin_memory=True)}
        return buffers

    def predict_preprocessed(self, net_input, height, width, out=None):
        """Like ``predict`` for an already preprocessed 1x3xHxW float32 network input.

        For inputs made elsewhere, e.g. by ``reference_preprocess`` when the official
        preprocessing op for op matters more than speed; ``height`` x ``width`` is the output size.
        """
        with self._on_device():
            return self._predict_preprocessed(net_input, height, width, out)

    @torch.inference_mode()
    def _predict_preprocessed(self, net_input, height, width, out):
        net_input = torch.as_tensor(net_input)
        if (net_input.dtype != torch.float32 or net_input.ndim != 4
                or net_input.shape[:2] != (1, 3)):
            raise ValueError(f'expected a 1x3xHxW float32 network input, got '
                             f'{net_input.dtype} {tuple(net_input.shape)}')
        self._check_out(out, (height, width))
        self._output_buffers(height, width)
        self._clock.start()
        net_input = net_input.to(self.device, non_blocking=True)
        self._clock.mark()
        self._clock.mark()
        result = self._infer_and_upsample(net_input, height, width, out)
        self.last_timings = self._clock.durations()
        return result

    def _infer_and_upsample(self, net_input, height, width, out):
        """Network, then bicubic upsampling to the image size, then the result on the host."""
        clock = self._clock
        runner = self._runner_for(net_input)
        try:
            prediction = runner(net_input)
        except BackendError as error:   # e.g. the export for this input size failed
            fp32_failed = runner is self._fp32_runner
            if self.precision == 'int8':
                self._int8_failed(error if not fp32_failed else
                                  f'the fp32 graph of another input size failed ({error})')
            if fp32_failed:
                self._fall_back_to_torch(error)
            prediction = self.runner(net_input)
        if self.int8 is not None and self.int8.state == 'collecting':
            self.int8.observe(self, net_input, self._preprocess_image, self._warming_up)
        clock.mark()
        if self.device.type == 'cuda':
            upsampled = upsample_prediction(prediction, height, width, out=self._device_output,
                                            mode=self.config.upsampling)
            clock.mark()
            result = self._download(upsampled[0, 0], out)
        else:
            # Upsample straight into the caller's array (or a new one the caller then owns).
            target = None if out is None else torch.from_numpy(out).view(1, 1, height, width)
            upsampled = upsample_prediction(prediction, height, width, out=target,
                                            mode=self.config.upsampling)
            result = upsampled[0, 0].numpy() if out is None else out
            clock.mark()
        clock.mark()
        return result

    def _runner_for(self, net_input):
        """The runner of ``net_input``: the int8 graph once accepted, for network inputs of
        the size it was calibrated at; the fp32 graph for other sizes (depth_node's cameras of
        another aspect ratio: an int8 graph is quantized and measured for one input size)."""
        if self.int8 is None:
            return self.runner
        if self.precision != 'int8':
            self._take_int8()
        size = (net_input.shape[3], net_input.shape[2])
        if self.precision == 'int8' and self.int8.size != size:
            return self._fp32_runner
        return self.runner

    def _take_int8(self):
        """Run the int8 graph from this frame on if the calibrator accepted it."""
        runner = self.int8.take(self)
        if runner is not None:
            self.runner, self.precision = runner, 'int8'
            self.precision_reason = self.int8.reason
        elif self.int8.state == 'fp32':
            self.precision_reason = self.int8.reason

    def _int8_failed(self, error):
        """The int8 graph (or, running int8, the fp32 graph of another input size) failed to
        run: back to the fp32 graph for good, with one warning."""
        self.runner, self.precision = self._fp32_runner, 'fp32'
        self.int8.state = 'fp32'
        self.int8.reason = self.precision_reason = f'int8 failed to run, running fp32: {error}'
        self.int8.log.warning(self.precision_reason)

    def _preprocess_image(self, image, channel_order):
        """The network input of a calibration image (uint8 array), as a frame's is made."""
        return self.preprocessor(torch.from_numpy(np.ascontiguousarray(image)), channel_order)

    @staticmethod
    def _check_out(out, shape):
        if out is not None and (out.dtype != np.float32 or out.shape != shape
                                or not out.flags.c_contiguous):
            raise ValueError(f'out must be a C-contiguous float32 array of shape {shape}, '
                             f'got {out.dtype} {out.shape}')

    def _download(self, depth, out):
        """Device -> pinned host buffer -> the caller's array (buffers serve the next frame)."""
        self._host_output.copy_(depth, non_blocking=True)
        self.stream.synchronize()
        if out is None:
            return self._host_output.numpy().copy()
        np.copyto(out, self._host_output.numpy())
        return out

    def _input_buffers(self, shape):
        """Pinned host and device uint8 image buffers (CUDA), reallocated on a shape change."""
        if self.device.type == 'cuda' and (self._host_input is None
                                           or tuple(self._host_input.shape) != shape):
            self._host_input = torch.empty(shape, dtype=torch.uint8, pin_memory=True)
            self._device_input = torch.empty(shape, dtype=torch.uint8, device=self.device)

    def _output_buffers(self, height, width):
        """Device and pinned host float32 depth buffers (CUDA), reallocated on a size change."""
        if self.device.type == 'cuda' and (self._host_output is None
                                           or tuple(self._host_output.shape) != (height, width)):
            self._device_output = torch.empty((1, 1, height, width), dtype=torch.float32,
                                              device=self.device)
            self._host_output = torch.empty((height, width), dtype=torch.float32,
                                            pin_memory=True)

    def warmup(self, width=640, height=480, channel_order='rgb', iterations=1):
        """Build, compile and autotune for ``width`` x ``height`` images before their first frame.

        The first ``predict`` at a size pays what is lazy: the exported backends' export / engine
        build or cache load, ``torch.compile``, cuDNN's autotuning. This runs ``iterations``
        frames of that size (a gradient) so a node pays it before it reports ready, logs how long
        it took and remembers the size in ``warmed_up``: calling it again for that size does
        nothing and returns 0. Returns the seconds it took.
        """
        if (width, height) in self.warmed_up:
            return 0.0
        channels = {'mono': ()}.get(channel_order, (len(channel_order),))
        # A gradient, not black: the first frame of an 'auto' backend is also its parity
        # check against torch, which needs an output with some range.
        rows, cols = np.indices((height, width))
        gradient = ((rows * 255 // max(height - 1, 1) + cols * 255 // max(width - 1, 1)) // 2)
        image = np.empty((height, width) + channels, dtype=np.uint8)
        image.reshape(height, width, -1)[...] = gradient.astype(np.uint8)[..., None]
        start = time.perf_counter()
        self._warming_up = True   # a gradient is no calibration frame
        try:
            for _ in range(iterations):
                self.predict(image, channel_order)
        finally:
            self._warming_up = False
        seconds = time.perf_counter() - start
        self.warmed_up[width, height] = seconds
        _log.info('warm-up for %dx%d images: %.2f s (%s, %s%s on %s)', width, height, seconds,
                  self.backend, self.precision,
                  ', torch.compile' if self._torch_options[1] and self.backend == 'torch' else '',
                  self.device)
        return seconds
