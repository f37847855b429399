"""``python -m midas_ros benchmark``: what depth_node's work costs on this machine, stage by stage.

In-process (default), for each model: the node's per-frame work without DDS, timed per stage:
decode (a view of an rgb8 ``Image``), the estimator's stages (upload, preprocess, inference,
postprocess, download), metric scale, colour map, cloud, scan, building the output messages
(depth, relative, colour map, CameraInfo, PointCloud2, LaserScan) and serializing them (the
proxy for publishing); the network alone on a preprocessed input ("model only"); end-to-end
ms/frame and frames/s (median and 90th percentile); peak RSS and, on CUDA, peak device memory.
With several models each one runs in a child process, so its peak RSS is its own.

``--node``: depth_node as its own process in an isolated ROS domain, fed 640x480 rgb8 images +
CameraInfo over real DDS with every output subscribed. By default the next image is sent when
the previous one's outputs have all arrived (throughput without drops); ``--rate HZ`` streams
like a camera driver (30 Hz is the robot case) and ``--load N`` keeps N other processes busy
(a spinning loop each, stopped at the end) for the whole run. Reports frames/s with every
output, latency (median, p90, p99) from publishing an image to receiving its depth image and its
last output, dropped frames, the node process's CPU use and its RSS sampled every second (start,
end, max, slope), which shows whether memory stays flat over ``--duration``. In the same run,
under the same camera and load, the official ``run.py`` per-frame path (OpenCV resize and
normalize, forward, bicubic upsampling; torch's default threads) is timed in its own process
first (``--official-duration``), and the node's frames/s are given as a multiple of its.

Both modes configure the node the same way: metric scale from the floor (``ground_plane``, a
robust fit every frame), coloured organized cloud and scan on. Input frames come from the
built-in synthetic scene. Weights are random unless ``--weights`` is given: the compute, hence
the timing, is the same.

Examples::

    python -m midas_ros benchmark --models midas_v21_small_256 --frames 30
    python -m midas_ros benchmark --models all --frames 3 --warmup 1
    python -m midas_ros benchmark --node --duration 600
    python -m midas_ros benchmark --node --rate 30 --load 1
    python -m midas_ros benchmark --node --cameras 3 --rate 30
    python -m midas_ros benchmark --precisions fp32,int8 --models midas_v21_small_256
    python -m midas_ros benchmark --node --rate 30 --precision int8
    python -m midas_ros benchmark --filters --frames 50

``--node --cameras N --rate HZ``: N cameras (cam0..) streaming at HZ, served first by one
depth_node (``cameras: [cam0, ...]``, one network), then by N single-camera depth_node
processes, in the same run: frames/s and image -> depth/image latency (p50, p90, p99) per
camera, the total, each way's CPU use and RSS (the official path is not run then).

``--precisions fp32,int8``: fp32 against int8 forwards per backend and thread count, with int8's
accuracy against fp32 (``midas_ros.tools.int8_benchmark``). ``--node --precision int8``: the node
calibrated on the benchmark's frames (or ``--calibration``) at warm-up, so every measured frame
runs int8; the node's int8 result line is printed after the table.
"""
import argparse
import json
import os
import resource
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

import numpy as np

from midas_ros.cpu_budget import prefer_passive_waiting
from midas_ros.depth_outputs import CAMERA_INFO_TOPIC, IMAGE_TOPIC, OUTPUT_TOPICS, camera_topic
from midas_ros.tools.int8_benchmark import add_arguments as add_int8_arguments
from midas_ros.tools.int8_benchmark import (check_precisions, int8_log_lines, node_parameters,
                                            run_precisions)

# The user's own OpenMP wait policy, before this process sets its own: the official pipeline runs
# as run.py would, with OpenMP's defaults.
_USER_OMP_WAIT_POLICY = os.environ.get('OMP_WAIT_POLICY')
# Order of the per-stage rows; stages a run did not have (no rclpy, no CUDA copies) are left out.
STAGES = ('deserialize', 'decode', 'upload', 'preprocess', 'inference', 'postprocess',
          'download', 'scale', 'colormap', 'cloud', 'scan', 'messages', 'serialize')
RESULT_MARKER = 'MIDAS_BENCHMARK_RESULT '
NODE_OUTPUTS = OUTPUT_TOPICS
MIN_OFFICIAL_FRAMES = 5
DISTINCT_FRAMES = 8   # synthetic frames rendered and cycled (rendering is not what is measured)


class BenchmarkError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


# ------------------------------------------------------------------------------- common


def median_p90(values):
    """(median, 90th percentile) of a non-empty sequence."""
    values = np.asarray(values, dtype=np.float64)
    return float(np.median(values)), float(np.percentile(values, 90))


def percentiles(values, points=(50, 90, 99)):
    """The ``points`` percentiles of a non-empty sequence, as floats."""
    return [float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), points)]


def process_cpu_seconds(pid):
    """User + system CPU seconds process ``pid`` has used (its threads included); None if gone.
    """
    try:
        with open(f'/proc/{pid}/stat') as stat:
            fields = stat.read().rsplit(')', 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class BusyLoad:
    """``count`` other processes, each keeping one core busy for at most ``seconds``: what
    navigation, localization or a detector do to a robot's CPU. Stopped on ``stop`` (and exit
    by themselves at the time bound, whatever happens to this process)."""

    def __init__(self, count, seconds):
        self.processes = []
        loop = f'import time\nend = time.monotonic() + {seconds:.0f}\n' \
               'while time.monotonic() < end:\n    pass\n'
        for _ in range(count):
            self.processes.append(subprocess.Popen([sys.executable, '-c', loop]))

    def stop(self):
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
        self.processes = []


def hardware_description(device='cpu', threads=None):
    """One line: CPU model, usable cores, load, torch version and threads, GPU name.

    ``device``: 'cpu', 'cuda' or 'cuda:N' (names that GPU).
    """
    import torch

    from midas_ros.inference import usable_cpu_count
    cpu = 'unknown CPU'
    try:
        with open('/proc/cpuinfo') as cpuinfo:
            cpu = next((line.split(':', 1)[1].strip() for line in cpuinfo
                        if line.startswith('model name')), cpu)
    except OSError:
        pass
    load = ', '.join(f'{value:.1f}' for value in os.getloadavg())
    parts = [cpu, f'{usable_cpu_count()} usable cores (load average {load})',
             f'torch {torch.__version__}',
             f'{threads or torch.get_num_threads()} intra-op threads']
    if str(device).startswith('cuda') and torch.cuda.is_available():
        parts.append(f'GPU {torch.cuda.get_device_name(torch.device(device))}')
    return ' | '.join(parts)


def benchmark_settings(scene_config):
    """The depth_node configuration both modes measure: the floor gives the metric scale (a robust
    fit every frame, the costliest mode that needs no other sensor), coloured cloud and scan on.
    """
    from midas_ros.depth_pipeline import DepthSettings
    return DepthSettings(scale_mode='ground_plane', camera_height=scene_config.camera_height,
                         camera_pitch_deg=scene_config.camera_pitch_deg, cloud_color=True,
                         scan_enabled=True)


def synthetic_frames(width, height, count=DISTINCT_FRAMES):
    """(rgb frames, intrinsics, scene config): ``count`` views spread around the built-in scene."""
    from midas_ros.synthetic import SceneConfig, SyntheticScene
    scene = SyntheticScene(SceneConfig(width=width, height=height))
    step = max(1, scene.config.loop_frames // count)
    return [scene.render(i * step).rgb for i in range(count)], scene.intrinsics, scene.config


# ------------------------------------------------------------------------------- in-process


@dataclass
class ModelResult:
    """Timings of one model in milliseconds; JSON-able so a child process can hand it back."""

    model: str
    release: str
    net_input: str
    params_m: float
    device: str
    threads: int
    frames: int
    warmup: int
    stage_ms: Dict[str, List[float]] = field(default_factory=dict)
    end_to_end_ms: List[float] = field(default_factory=list)
    model_only_ms: List[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    cuda_peak_mb: Optional[float] = None
    notes: List[str] = field(default_factory=list)
    backend: str = ''


class MessageStage:
    """What depth_node does after the pipeline: its output messages (built by the node's own
    ``DepthMessageBuilder``), then their serialization, which rclpy's ``publish`` does before
    handing them to the middleware. depth/points and depth/scan are built here from the
    DepthFrame's own (unfiltered) products; the node makes them, edge-filtered, with the
    navigation outputs, whose extra cost ``--filters`` measures."""

    def __init__(self):
        from rclpy.serialization import serialize_message
        from std_msgs.msg import Header

        from midas_ros.ros import conversions
        from midas_ros.ros.depth_messages import DepthMessageBuilder
        self._conversions = conversions
        self._serialize = serialize_message
        self._builder = DepthMessageBuilder()
        self.header = Header(frame_id='camera_optical_frame')

    def image_message(self, rgb):
        """The rgb8 ``Image`` a camera driver would publish for ``rgb``, serialized as the
        node's raw subscription receives it."""
        return self._serialize(self._conversions.array_to_image(rgb, 'rgb8', self.header))

    def deserialize(self, data):
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image
        return deserialize_message(data, Image)

    def decode(self, msg):
        return self._conversions.image_to_array(msg)[0]

    def build(self, frame, intrinsics):
        return list(self._builder.build(frame, intrinsics, self.header,
                                        'camera_depth_frame').values())

    def serialize(self, messages):
        return sum(len(self._serialize(msg)) for msg in messages)


def create_estimator(model_name, args):
    """A ``DepthEstimator`` as the node would make it, random weights unless ``--weights``."""
    from midas_ros.inference import DepthEstimator
    return DepthEstimator(model_name, device=args.device, pretrained=args.weights is not None,
                          weights=args.weights, cpu_threads=args.threads, backend=args.backend,
                          input_size=input_size_for(model_name, args))


def input_size_for(model_name, args):
    """``--input-size`` for the models that take one (Depth Anything V2), 0 for the others,
    so one run can compare them with MiDaS models."""
    from midas_ros.models.registry import get_config
    return args.input_size if get_config(model_name).input_size_configurable else 0


def _time_model_only(estimator, rgb, count):
    """Milliseconds of the network alone on one preprocessed input, ``count`` times."""
    import torch
    cuda = estimator.device.type == 'cuda'
    with torch.inference_mode():
        image = torch.from_numpy(rgb).to(estimator.device)
        net_input = estimator.preprocessor(image, 'rgb').clone()
        times = []
        for _ in range(count):
            start = time.perf_counter()
            estimator.runner(net_input)
            if cuda:
                torch.cuda.synchronize(estimator.device)
            times.append((time.perf_counter() - start) * 1e3)
    return times


def measure_model(model_name, args):
    """Run ``model_name`` through the node's per-frame work; a ``ModelResult``."""
    import torch

    from midas_ros.depth_pipeline import DepthPipeline
    from midas_ros.models.registry import resolve_config
    from midas_ros.models.transforms import network_input_size
    cfg = resolve_config(model_name, input_size_for(model_name, args))
    frames, intrinsics, scene_config = synthetic_frames(args.width, args.height)
    estimator = create_estimator(model_name, args)
    cuda = estimator.device.type == 'cuda'
    if cuda:
        torch.cuda.reset_peak_memory_stats(estimator.device)
    pipeline = DepthPipeline(estimator, benchmark_settings(scene_config))
    net_w, net_h = network_input_size(cfg, args.width, args.height)
    result = ModelResult(model_name, cfg.release, f'{net_w}x{net_h}', cfg.num_parameters / 1e6,
                         str(estimator.device), torch.get_num_threads(), 0, args.warmup,
                         backend=estimator.backend)
    try:
        messages = MessageStage()
        inputs = [messages.image_message(rgb) for rgb in frames]
    except ImportError as error:  # e.g. a GPU machine without the ROS wheels
        messages, inputs = None, frames
        result.notes.append(f'no rclpy ({error}): decode, messages and serialize not measured')
    budget_end = None
    for index in range(args.warmup + args.frames):
        if index == args.warmup:
            budget_end = time.perf_counter() + args.budget
        timings = _one_frame(pipeline, messages, inputs[index % len(inputs)], intrinsics, index)
        if index < args.warmup:
            continue
        result.frames += 1
        result.end_to_end_ms.append(timings.pop('end_to_end'))
        for stage, ms in timings.items():
            result.stage_ms.setdefault(stage, []).append(ms)
        if time.perf_counter() > budget_end:
            result.notes.append(f'stopped after {result.frames} of {args.frames} frames: '
                                f'--budget {args.budget:g} s spent')
            break
    result.model_only_ms = _time_model_only(estimator, frames[0], result.frames)
    if messages:
        result.notes.append(dropped_frame_note(inputs[0], result.stage_ms['deserialize']))
    result.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if cuda:
        result.cuda_peak_mb = torch.cuda.max_memory_allocated(estimator.device) / 2**20
    return result


def _one_frame(pipeline, messages, source, intrinsics, index):
    """Milliseconds per stage of one frame, plus ``end_to_end``."""
    start = time.perf_counter()
    msg = messages.deserialize(source) if messages else None
    deserialized = time.perf_counter()
    pixels = messages.decode(msg) if messages else source
    decoded = time.perf_counter()
    frame = pipeline.process(pixels, 'rgb', intrinsics, stamp_s=index / 30.0)
    processed = time.perf_counter()
    timings = {stage: seconds * 1e3 for stage, seconds in frame.timings.items()
               if stage in STAGES}
    if messages:
        built = messages.build(frame, intrinsics)
        tick = time.perf_counter()
        messages.serialize(built)
        end = time.perf_counter()
        timings.update(deserialize=(deserialized - start) * 1e3,
                       decode=(decoded - deserialized) * 1e3, messages=(tick - processed) * 1e3,
                       serialize=(end - tick) * 1e3)
    else:
        end = processed
    timings['end_to_end'] = (end - start) * 1e3
    return timings


def dropped_frame_note(serialized, deserialize_ms, count=1000):
    """What a frame the node drops costs it (the raw subscription's serialized frame replacing
    the waiting one in the mailbox) against deserializing a kept one."""
    from midas_ros.frame_scheduler import FairScheduler
    mailbox = FairScheduler(['camera'])
    start = time.perf_counter()
    for _ in range(count):
        mailbox.put('camera', serialized)
    put_us = (time.perf_counter() - start) / count * 1e6
    return (f'intake: a dropped {len(serialized) / 1e6:.2f} MB frame costs the node {put_us:.1f} '
            f'us after the middleware\'s take (never deserialized); deserializing a kept one '
            f'{np.median(deserialize_ms):.2f} ms')


def measure_in_child(model_name, argv):
    """``measure_model`` in a fresh interpreter (its own peak RSS); the ``ModelResult``."""
    command = [sys.executable, '-m', 'midas_ros', 'benchmark', *argv, '--models', model_name,
               '--json']
    completed = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            return ModelResult(**json.loads(line[len(RESULT_MARKER):]))
    raise BenchmarkError(f'{model_name}: benchmark child exited with status '
                         f'{completed.returncode} and no result (see its output above)')


def format_summary(results):
    """The table of docs/performance.md: one row per model."""
    lines = ['| variant | release | net input | params (M) | model-only ms | end-to-end ms '
             '(median / p90) | FPS (median / p90) | peak RSS MB | frames |',
             '|---|---|---|---|---|---|---|---|---|']
    for r in results:
        forward, _ = median_p90(r.model_only_ms)
        median, p90 = median_p90(r.end_to_end_ms)
        memory = f'{r.peak_rss_mb:.0f}' + (f' (CUDA {r.cuda_peak_mb:.0f})'
                                           if r.cuda_peak_mb is not None else '')
        lines.append(f'| {r.model} | {r.release} | {r.net_input} | {r.params_m:.1f} | '
                     f'{forward:.1f} | {median:.1f} / {p90:.1f} | '
                     f'{1e3 / median:.1f} / {1e3 / p90:.1f} | {memory} | {r.frames} |')
    return '\n'.join(lines)


def format_stages(results):
    """Per-stage table: median (p90) milliseconds, one column per model."""
    lines = ['| stage | ' + ' | '.join(f'{r.model} ms median (p90)' for r in results) + ' |',
             '|---|' + '---|' * len(results)]
    rows = [stage for stage in STAGES if any(stage in r.stage_ms for r in results)]
    for stage in rows + ['end_to_end', 'model_only']:
        cells = []
        for r in results:
            values = {'end_to_end': r.end_to_end_ms, 'model_only': r.model_only_ms}.get(
                stage, r.stage_ms.get(stage))
            cells.append('-' if not values else '{:.2f} ({:.2f})'.format(*median_p90(values)))
        lines.append(f'| {stage.replace("_", " ")} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def run_in_process(args, argv):
    from midas_ros.models.registry import list_models
    models = list_models() if args.models == 'all' else args.models.split(',')
    if len(models) == 1:
        results = [measure_model(models[0], args)]
    else:
        child_argv = _strip_models(argv)
        results = []
        for name in models:
            print(f'# {name} ...', file=sys.stderr, flush=True)
            results.append(measure_in_child(name, child_argv))
    if args.json:
        print(RESULT_MARKER + json.dumps(asdict(results[0])), flush=True)
        return
    print(f'## midas_ros benchmark, in-process, {args.width}x{args.height} rgb8, '
          f'{time.strftime("%Y-%m-%d")}')
    print(f'Hardware: {hardware_description(args.device, results[0].threads)}')
    backends = ', '.join(sorted({r.backend for r in results}))
    print(f'Device {results[0].device}, backend {backends} (--backend {args.backend}), '
          f'{"weights " + args.weights if args.weights else "random weights (same compute)"}; '
          f'scale ground_plane, coloured cloud and scan on; median of the frames after '
          f'{args.warmup} warm-up frame(s).\n')
    print(format_summary(results) + '\n')
    print(format_stages(results))
    for r in results:
        for note in r.notes:
            print(f'\nNote ({r.model}): {note}')


def _strip_models(argv):
    """``argv`` without ``--models X`` / ``--models=X`` (the child gets one model)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == '--models':
            skip = True
        elif not arg.startswith('--models='):
            out.append(arg)
    return out


# ------------------------------------------------------------------------------- node


@dataclass
class NodeResult:
    model: str
    mode: str
    published: int = 0
    completed: int = 0
    elapsed_s: float = 0.0
    image_latency_ms: List[float] = field(default_factory=list)
    all_outputs_latency_ms: List[float] = field(default_factory=list)
    node_processing_ms: List[float] = field(default_factory=list)
    node_dropped: int = 0
    node_stages: dict = field(default_factory=dict)  # stage -> ms (node's smoothed times)
    rss: List[tuple] = field(default_factory=list)   # (seconds since start, MB)
    node_cpu_s: float = 0.0          # CPU seconds of the node process over elapsed_s
    node_backend: str = ''           # the backend the node runs, from /diagnostics
    official: Optional[dict] = None  # the official pipeline in the same conditions


class RssSampler(threading.Thread):
    """Reads a process's VmRSS every ``period`` seconds into ``samples`` [(t, MB)]."""

    def __init__(self, pid, period=1.0):
        super().__init__(name='rss_sampler', daemon=True)
        self.path = f'/proc/{pid}/status'
        self.period = period
        self.samples = []
        self._stop_event = threading.Event()
        self._start = time.monotonic()

    def rss_mb(self):
        try:
            with open(self.path) as status:
                for line in status:
                    if line.startswith('VmRSS:'):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            return None
        return None

    def restart(self):
        """Forget the samples so far (start-up, warm-up): what follows is the steady state."""
        self._start = time.monotonic()
        self.samples = []

    def run(self):
        while not self._stop_event.wait(self.period):
            rss = self.rss_mb()
            if rss is not None:
                self.samples.append((time.monotonic() - self._start, rss))

    def stop(self):
        self._stop_event.set()
        self.join()


class NodeProbe:
    """The cameras and the consumers around depth_node: publishes each camera's image +
    camera_info, records when each output of each frame (keyed by camera and image stamp)
    arrives. ``cameras``: depth_node's camera names ('' : its single unnamed camera)."""

    def __init__(self, namespace, outputs, cameras=('',)):
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image

        from midas_ros.ros.depth_messages import MESSAGE_TYPES
        from midas_ros.ros.qos import qos_profile
        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node('midas_benchmark_probe', namespace=namespace,
                                      context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.outputs = tuple(outputs)
        self.cameras = tuple(cameras)
        self.publishers = {
            camera: (self.node.create_publisher(Image, camera_topic(camera, IMAGE_TOPIC),
                                                qos_profile('sensor_data')),
                     self.node.create_publisher(CameraInfo,
                                                camera_topic(camera, CAMERA_INFO_TOPIC),
                                                qos_profile('sensor_data')))
            for camera in self.cameras}
        self.sent = {}       # (camera, stamp) key -> perf_counter at publish
        self.arrivals = {}   # (camera, stamp) key -> {output: perf_counter}
        self.complete_cameras = set()   # cameras with a frame whose every output arrived
        self.node_processing_ms = []
        self.dropped_by_status = {}   # the nodes' own counts (diagnostics), since they started
        self.node_backend = ''
        self.node_stages = {}   # stage -> ms, the node's latest smoothed per-stage times
        for camera in self.cameras:
            for topic in self.outputs:
                self.node.create_subscription(
                    MESSAGE_TYPES[topic], camera_topic(camera, topic),
                    lambda msg, camera=camera, topic=topic: self._arrived(camera, topic, msg),
                    qos_profile('reliable', depth=5), raw=True)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._diagnostics, 10)

    @property
    def node_dropped(self):
        return sum(self.dropped_by_status.values())

    def _arrived(self, camera, topic, data):
        key = (camera,) + struct.unpack_from('<iI' if data[1] & 1 else '>iI', data, 4)
        arrived = self.arrivals.setdefault(key, {})
        arrived[topic] = time.perf_counter()
        if len(arrived) == len(self.outputs):
            self.complete_cameras.add(camera)

    def _diagnostics(self, msg):
        for status in msg.status:
            for item in status.values:
                if item.key == 'latency (ms)':
                    self.node_processing_ms.append(float(item.value))
                elif item.key == 'frames dropped':
                    self.dropped_by_status[status.name] = int(item.value)
                elif item.key == 'backend':
                    self.node_backend = item.value
                elif item.key.startswith('time '):   # 'time <stage> (ms)', smoothed
                    self.node_stages[item.key[5:-5]] = float(item.value)

    def publish(self, image_msg, info_msg, camera=''):
        """Send one frame of ``camera`` (CameraInfo first, as drivers do); returns its key."""
        stamp = self.node.get_clock().now().to_msg()
        image_msg.header.stamp = info_msg.header.stamp = stamp
        image_pub, info_pub = self.publishers[camera]
        info_pub.publish(info_msg)
        key = (camera, stamp.sec, stamp.nanosec)
        self.sent[key] = time.perf_counter()
        image_pub.publish(image_msg)
        return key

    def complete(self, key):
        return len(self.arrivals.get(key, ())) == len(self.outputs)

    def spin_until(self, condition, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.01)
            if condition():
                return True
        return False

    def spin_for(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=max(0.0, min(0.01, deadline - time.monotonic())))

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self._rclpy.shutdown(context=self.context)


def node_command(namespace, args, settings, cameras=(), extra=None):
    """The depth_node command line, configured like the in-process benchmark; ``cameras``:
    its ``cameras`` parameter (none: one unnamed camera); ``extra``: more parameters (int8:
    ``int8_benchmark.node_parameters``)."""
    params = {'model.name': args.models, 'device': args.device,
              'model.input_size': input_size_for(args.models, args),
              'model.pretrained': 'false' if args.weights is None else 'true',
              'inference.cpu_threads': args.threads,
              'scale.mode': settings.scale_mode, 'scale.camera_height': settings.camera_height,
              'scale.camera_pitch_deg': settings.camera_pitch_deg,
              'cloud.color': 'true' if settings.cloud_color else 'false',
              'scan.enabled': 'true' if settings.scan_enabled else 'false'}
    if args.weights:
        params['model.weights'] = args.weights
    if args.backend != 'auto':   # else the node's default
        params['model.backend'] = args.backend
    if cameras:
        params['cameras'] = '[' + ','.join(cameras) + ']'
    params.update(extra or {})
    command = [sys.executable, '-m', 'midas_ros', 'depth_node', '--ros-args',
               '-r', f'__ns:={namespace}']
    for name, value in params.items():
        command += ['-p', f'{name}:={value}']
    return command


def stop_process(process, timeout=10.0):
    """SIGINT (like Ctrl-C), then SIGKILL if it does not exit."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_node(args):
    if ',' in args.models or args.models == 'all':
        raise BenchmarkError('--node measures one model at a time: --models NAME')
    from midas_ros.ros_env import isolated_ros_environment
    # Before rclpy creates a participant: loopback only, a domain of our own, the SHM profile.
    os.environ.update(isolated_ros_environment())
    frames, intrinsics, scene_config = synthetic_frames(args.width, args.height)
    settings = benchmark_settings(scene_config)
    namespace = f'/midas_benchmark_{os.getpid()}'
    outputs = [topic for topic in args.outputs.split(',')
               if topic != 'depth/scan' or settings.scan_enabled]
    log = tempfile.NamedTemporaryFile(prefix='midas_benchmark_node_', suffix='.log',
                                      delete=False)
    bound = (args.startup_timeout + args.official_duration + args.duration
             + args.warmup * args.frame_timeout + 60.0)
    if args.cameras > 1:
        bound = args.startup_timeout * 2 + 2 * (args.duration + 30.0) + 60.0
    load = BusyLoad(args.load, bound)
    # --precision int8: every node calibrated on the same images (written here).
    calibration = tempfile.TemporaryDirectory(prefix='midas_benchmark_int8_')
    if args.cameras > 1:
        try:
            results = run_cameras(args, namespace, frames, intrinsics, settings, outputs,
                                  log.name, node_parameters(args, calibration.name))
        finally:
            load.stop()
            log.close()
            calibration.cleanup()
        print_cameras_result(results, args, log.name, os.environ['ROS_DOMAIN_ID'])
        for line in int8_log_lines(log.name):
            print(f'Node: {line}')
        return
    probe = sampler = process = None
    try:
        probe = NodeProbe(namespace, outputs)
        camera = CameraFeed(probe, frames, intrinsics, args.rate)
        official = None
        if args.official_duration > 0:
            official = measure_official(args, camera)
        extra = node_parameters(args, calibration.name)
        process = subprocess.Popen(node_command(namespace, args, settings, extra=extra),
                                   stdout=log,
                                   stderr=subprocess.STDOUT, env=dict(os.environ))
        sampler = RssSampler(process.pid)
        sampler.start()
        result = _drive_node(probe, camera, process, args, log.name, sampler)
        result.rss = list(sampler.samples)
        result.official = official
    finally:
        load.stop()
        if sampler is not None:
            sampler.stop()
        if probe is not None:
            probe.close()
        if process is not None:
            stop_process(process)
        log.close()
        calibration.cleanup()
    print_node_result(result, args, log.name, os.environ['ROS_DOMAIN_ID'])
    for line in int8_log_lines(log.name):
        print(f'Node: {line}')


class CameraFeed:
    """A camera of the benchmark: the synthetic frames as rgb8 ``Image`` + ``CameraInfo``,
    published by the probe for ``camera`` at ``rate`` (0: one at a time, when asked)."""

    def __init__(self, probe, frames, intrinsics, rate, camera=''):
        from midas_ros.ros.conversions import array_to_image, intrinsics_to_camera_info
        self.probe, self.rate, self.camera = probe, rate, camera
        self.images = [array_to_image(rgb, 'rgb8') for rgb in frames]
        self.info = intrinsics_to_camera_info(intrinsics)
        for msg in self.images:
            msg.header.frame_id = self.info.header.frame_id = 'camera_optical_frame'
        self.index = 0
        self._next_send = None

    def publish(self):
        """Publish the next frame now; its stamp key."""
        image = self.images[self.index % len(self.images)]
        self.index += 1
        return self.probe.publish(image, self.info, self.camera)

    def stream_until(self, done, timeout):
        """Publish at ``rate`` (spinning the probe in between) until ``done()`` or ``timeout``
        seconds; with rate 0 only spin. True when ``done()``."""
        deadline = time.perf_counter() + timeout
        if self._next_send is None:
            self._next_send = time.perf_counter()
        while time.perf_counter() < deadline:
            if done():
                return True
            if self.rate > 0 and time.perf_counter() >= self._next_send:
                self.publish()
                self._next_send = max(self._next_send + 1.0 / self.rate,
                                      time.perf_counter() - 1.0 / self.rate)
            wait = self._next_send - time.perf_counter() if self.rate > 0 else 0.01
            left = max(0.0, deadline - time.perf_counter())
            self.probe.spin_for(min(max(wait, 0.0), 0.01, left))
        return done()


def official_environment():
    """The environment run.py would see: ours, but with OpenMP's own wait policy."""
    env = dict(os.environ)
    if _USER_OMP_WAIT_POLICY is None:
        env.pop('OMP_WAIT_POLICY', None)
    else:
        env['OMP_WAIT_POLICY'] = _USER_OMP_WAIT_POLICY
    return env


def measure_official(args, camera):
    """The official pipeline's per-frame times in its own process, for ``--official-duration``
    seconds, while the camera streams (and the load runs): {'fps', 'ms': [...], 'threads'}."""
    command = [sys.executable, '-m', 'midas_ros.tools.benchmark', '--official-child',
               '--models', args.models, '--width', str(args.width), '--height',
               str(args.height), '--duration', str(args.official_duration),
               '--warmup', str(args.warmup), '--input-size', str(args.input_size)]
    if args.weights:
        command += ['--weights', args.weights]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True,
                             env=official_environment())
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(child.stdout), daemon=True)
    reader.start()
    camera.stream_until(lambda: child.poll() is not None,
                        args.startup_timeout + args.official_duration)
    stop_process(child)
    reader.join(5.0)
    for line in lines:
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER):])
    raise BenchmarkError(f'the official pipeline exited with status {child.returncode} and no '
                         'result')


def official_child(args):
    """run.py's per-frame path on the synthetic frames for ``--duration`` s; prints the result.

    Exactly what the official ``run.py`` does per frame on the CPU: the RGB frame to float /255,
    OpenCV resize to the network size (keep aspect, multiple of 32, bicubic) and normalization
    (``reference_preprocess``, op for op), the forward pass under ``no_grad``, bicubic upsampling
    to the frame size and the result to numpy. Threads and wait policy are torch's defaults.
    """
    import torch

    from midas_ros.models import create_model
    from midas_ros.models.registry import resolve_config
    from midas_ros.models.transforms import OFFICIAL_UPSAMPLING, reference_preprocess
    cfg = resolve_config(args.models, input_size_for(args.models, args))
    frames = synthetic_frames(args.width, args.height)[0]
    torch.manual_seed(0)
    model = create_model(args.models, pretrained=args.weights is not None, weights=args.weights)
    model.eval()
    times = []
    end = None
    index = 0
    with torch.no_grad():
        # At least MIN_OFFICIAL_FRAMES timed frames, however slow, so the figure is a median.
        while end is None or time.perf_counter() < end or len(times) < MIN_OFFICIAL_FRAMES:
            if index == args.warmup:
                end = time.perf_counter() + args.duration
            rgb = frames[index % len(frames)]
            start = time.perf_counter()
            sample = torch.from_numpy(reference_preprocess(rgb, cfg))
            prediction = model.forward(sample)
            prediction = torch.nn.functional.interpolate(
                prediction.unsqueeze(1), size=rgb.shape[:2],
                **OFFICIAL_UPSAMPLING[cfg.upsampling]).squeeze().cpu().numpy()
            if index >= args.warmup:
                times.append((time.perf_counter() - start) * 1e3)
            index += 1
    fps = len(times) / (sum(times) / 1e3)
    print(RESULT_MARKER + json.dumps({'fps': fps, 'ms': times,
                                      'threads': torch.get_num_threads()}), flush=True)


def _drive_node(probe, camera, process, args, log_path, sampler):
    # Start-up: the model loads while we keep offering frames; the first complete frame ends it.
    deadline = time.monotonic() + args.startup_timeout
    while True:
        if process.poll() is not None:
            raise BenchmarkError(f'depth_node exited with status {process.returncode}; '
                                 f'its log: {log_path}')
        if time.monotonic() > deadline:
            raise BenchmarkError(f'no output from depth_node within {args.startup_timeout:g} s; '
                                 f'its log: {log_path}')
        key = camera.publish()
        if probe.spin_until(lambda: probe.complete(key), 1.0):
            break
    for _ in range(args.warmup):
        key = camera.publish()
        probe.spin_until(lambda: probe.complete(key), args.frame_timeout)
    probe.sent.clear()
    probe.arrivals.clear()
    probe.node_processing_ms.clear()
    dropped_before = probe.node_dropped
    sampler.restart()
    mode = 'lockstep (next image when all outputs arrived)' if args.rate <= 0 else \
        f'camera streaming at {args.rate:g} Hz'
    result = NodeResult(args.models, mode)
    cpu_start = process_cpu_seconds(process.pid)
    start = time.perf_counter()
    end = start + args.duration
    if args.rate <= 0:
        while time.perf_counter() < end and process.poll() is None:
            key = camera.publish()
            probe.spin_until(lambda: probe.complete(key), args.frame_timeout)
    else:
        camera.stream_until(lambda: process.poll() is not None, args.duration)
    cpu_end = process_cpu_seconds(process.pid)
    wall_end = time.perf_counter()
    probe.spin_for(min(args.frame_timeout, 2.0))   # outputs of the last frames still in flight
    result.published = len(probe.sent)
    last_arrival = start
    for key, sent in probe.sent.items():
        arrived = probe.arrivals.get(key, {})
        if 'depth/image' in arrived:
            result.image_latency_ms.append((arrived['depth/image'] - sent) * 1e3)
        if len(arrived) == len(probe.outputs):
            result.completed += 1
            result.all_outputs_latency_ms.append((max(arrived.values()) - sent) * 1e3)
            last_arrival = max(last_arrival, max(arrived.values()))
    result.elapsed_s = last_arrival - start
    if cpu_start is not None and cpu_end is not None:
        result.node_cpu_s = (cpu_end - cpu_start) * result.elapsed_s / (wall_end - start)
    result.node_processing_ms = list(probe.node_processing_ms)
    result.node_dropped = probe.node_dropped - dropped_before
    result.node_stages = dict(probe.node_stages)
    result.node_backend = probe.node_backend
    return result


def run_camera_source(args):
    """``--camera-source``: the CPU camera_source's synthetic scene takes at ``--rate`` (10 Hz
    by default), its image and ground truth subscribed, over ``--duration`` seconds."""
    import rclpy
    import rclpy.executors
    from sensor_msgs.msg import Image

    from midas_ros.ros.qos import qos_profile
    from midas_ros.ros_env import isolated_ros_environment
    os.environ.update(isolated_ros_environment())
    rate = args.rate or 10.0
    namespace = f'/midas_benchmark_camera_{os.getpid()}'
    command = [sys.executable, '-m', 'midas_ros', 'camera_source', '--ros-args', '-r',
               f'__ns:={namespace}', '-p', f'rate:={rate}', '-p', f'width:={args.width}',
               '-p', f'height:={args.height}', '-p',
               f'synthetic_replay_frames:={args.replay_frames}']
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node('midas_benchmark_camera_probe', namespace=namespace,
                             context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received = [0]
    for topic in ('image', 'ground_truth/depth'):
        node.create_subscription(Image, topic, lambda _, topic=topic: received.__setitem__(
            0, received[0] + (topic == 'image')), qos_profile('sensor_data'), raw=True)
    try:
        deadline = time.monotonic() + args.startup_timeout
        while received[0] < 3:   # started, rendered, streaming
            if process.poll() is not None or time.monotonic() > deadline:
                raise BenchmarkError('camera_source did not start streaming')
            executor.spin_once(timeout_sec=0.1)
        cpu_start, start, count = process_cpu_seconds(process.pid), time.monotonic(), received[0]
        while time.monotonic() < start + args.duration:
            executor.spin_once(timeout_sec=0.1)
        cpu, elapsed = process_cpu_seconds(process.pid) - cpu_start, time.monotonic() - start
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
        stop_process(process)
    print(f'camera_source, synthetic scene {args.width}x{args.height} at {rate:g} Hz, '
          f'synthetic_replay_frames {args.replay_frames}: {100.0 * cpu / elapsed:.1f} % of one '
          f'core over {elapsed:.0f} s, {(received[0] - count) / elapsed:.1f} images/s received '
          f'({time.strftime("%Y-%m-%d")}; {hardware_description()})')


def rss_summary(samples):
    """(start, end, max, slope MB/min) of [(t, MB)] samples; slope by least squares."""
    times = np.array([t for t, _ in samples])
    rss = np.array([mb for _, mb in samples])
    slope = float(np.polyfit(times / 60.0, rss, 1)[0]) if len(samples) >= 2 else float('nan')
    return float(rss[0]), float(rss[-1]), float(rss.max()), slope


def print_node_result(result, args, log_path, domain_id):
    print(f'## midas_ros benchmark, depth_node process over DDS, {args.width}x{args.height} rgb8, '
          f'{time.strftime("%Y-%m-%d")}')
    print(f'Hardware: {hardware_description(args.device, args.threads or None)}')
    weights = f'weights {args.weights}' if args.weights else 'random weights'
    load = f'{args.load} other process(es) keeping a core busy each' if args.load else 'no load'
    print(f'Model {result.model} ({weights}), device {args.device}, backend '
          f'{result.node_backend or "?"} (model.backend {args.backend}); {result.mode}; {load}; '
          f'outputs: {", ".join(args.outputs.split(","))} (scale ground_plane); ROS_DOMAIN_ID '
          f'{domain_id}, loopback only; node log {log_path}\n')
    lines = ['| measure | p50 | p90 | p99 |', '|---|---|---|---|']
    for name, values in (('image -> depth/image latency ms', result.image_latency_ms),
                         ('image -> last output latency ms', result.all_outputs_latency_ms),
                         ('node processing ms (diagnostics)', result.node_processing_ms)):
        if values:
            lines.append('| {} | {:.1f} | {:.1f} | {:.1f} |'.format(name, *percentiles(values)))
    print('\n'.join(lines) + '\n')
    if result.node_stages:
        print('Node stages (ms, smoothed, from /diagnostics): ' + ', '.join(
            f'{stage} {ms:.1f}' for stage, ms in result.node_stages.items()) + '\n')
    fps = result.completed / result.elapsed_s if result.elapsed_s > 0 else 0.0
    lost = result.published - result.completed
    cpu = 100.0 * result.node_cpu_s / result.elapsed_s if result.elapsed_s > 0 else 0.0
    print(f'Throughput: {fps:.2f} frames/s with every output subscribed ({result.completed} '
          f'complete frames in {result.elapsed_s:.1f} s); published {result.published}, without '
          'all outputs '
          f'{lost} ({100.0 * lost / max(result.published, 1):.1f} %); node-reported drops '
          f'{result.node_dropped}. Node CPU: {cpu:.0f} % of one core.')
    if result.official:
        official = result.official
        median = float(np.median(official['ms']))
        print(f"Official run.py path, same camera and load, {len(official['ms'])} frames, "
              f"{official['threads']} torch threads: {official['fps']:.2f} frames/s ({median:.0f} "
              f'ms median). depth_node / official: {fps / official["fps"]:.2f}x.')
    if result.rss:
        start, end, peak, slope = rss_summary(result.rss)
        print(f'Node RSS over {result.rss[-1][0]:.0f} s ({len(result.rss)} samples): start '
              f'{start:.0f} MB, end {end:.0f} MB, max {peak:.0f} MB, slope {slope:+.2f} MB/min.')


# ------------------------------------------------------------------------------- cameras


@dataclass
class CamerasResult:
    """One way of serving N cameras (one node, or N single-camera nodes), measured."""

    label: str
    processes: int
    elapsed_s: float = 0.0
    published: Dict[str, int] = field(default_factory=dict)     # camera -> frames sent
    completed: Dict[str, int] = field(default_factory=dict)     # camera -> with every output
    latency_ms: Dict[str, List[float]] = field(default_factory=dict)  # image -> depth/image
    cpu_s: float = 0.0              # CPU seconds of the node process(es) over elapsed_s
    rss_mb: List[float] = field(default_factory=list)   # each process's mean steady RSS
    node_dropped: int = 0
    error: str = ''                 # why it could not be measured


def stream_cameras(feeds, done, seconds):
    """Every feed publishes at its rate, the cameras' phases spread over one period, spinning
    the probe in between, for ``seconds`` or until ``done()``."""
    probe = feeds[0].probe
    period = 1.0 / feeds[0].rate
    now = time.perf_counter()
    due = [now + period * index / len(feeds) for index in range(len(feeds))]
    end = now + seconds
    while time.perf_counter() < end and not done():
        now = time.perf_counter()
        for index, feed in enumerate(feeds):
            if now >= due[index]:
                feed.publish()
                due[index] = max(due[index] + period, now - period)
        probe.spin_for(max(0.0, min(min(due) - time.perf_counter(), 0.01,
                                    end - time.perf_counter())))


def run_cameras(args, namespace, frames, intrinsics, settings, outputs, log_path, extra=None):
    """``--cameras N``: the same N cameras at ``--rate`` served by one depth_node with
    ``cameras: [cam0, ...]``, then by N single-camera depth_node processes (each in the
    namespace of its camera, so the topics are the same); a CamerasResult for each.
    ``extra``: more parameters of every node (``--precision``)."""
    names = [f'cam{index}' for index in range(args.cameras)]
    probe = NodeProbe(namespace, outputs, names)
    feeds = [CameraFeed(probe, frames, intrinsics, args.rate, name) for name in names]
    ways = ((f'one depth_node, {len(names)} cameras',
             [node_command(namespace, args, settings, names, extra)]),
            (f'{len(names)} single-camera depth_node processes',
             [node_command(f'{namespace}/{name}', args, settings, extra=extra)
              for name in names]))
    results = []
    try:
        with open(log_path, 'ab') as log:
            for label, commands in ways:
                processes = [subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                              env=dict(os.environ)) for command in commands]
                samplers = [RssSampler(process.pid) for process in processes]
                for sampler in samplers:
                    sampler.start()
                try:
                    results.append(_drive_cameras(probe, feeds, processes, samplers, args,
                                                  label, log_path))
                except BenchmarkError as error:   # the other way's numbers still count
                    results.append(CamerasResult(label, len(processes), error=str(error)))
                finally:
                    for sampler in samplers:
                        sampler.stop()
                    for process in processes:
                        stop_process(process)
    finally:
        probe.close()
    return results


def _drive_cameras(probe, feeds, processes, samplers, args, label, log_path):
    def exited():
        return any(process.poll() is not None for process in processes)

    def every_camera_complete():
        return probe.complete_cameras >= {feed.camera for feed in feeds}
    probe.sent.clear()
    probe.arrivals.clear()
    probe.complete_cameras.clear()
    # Start-up: models load while the cameras stream; a complete frame of each ends it.
    stream_cameras(feeds, lambda: exited() or every_camera_complete(), args.startup_timeout)
    if exited() or not every_camera_complete():
        raise BenchmarkError(f'{label}: not every camera got its outputs within '
                             f'{args.startup_timeout:g} s; the node log: {log_path}')
    stream_cameras(feeds, exited, max(2.0, args.warmup / args.rate))   # steady state
    probe.sent.clear()
    probe.arrivals.clear()
    dropped_before = probe.node_dropped
    for sampler in samplers:
        sampler.restart()
    cpu_start = [process_cpu_seconds(process.pid) for process in processes]
    start = time.perf_counter()
    stream_cameras(feeds, exited, args.duration)
    cpu_end = [process_cpu_seconds(process.pid) for process in processes]
    elapsed = time.perf_counter() - start
    probe.spin_for(min(args.frame_timeout, 2.0))   # outputs of the last frames in flight
    result = CamerasResult(label, len(processes), elapsed_s=elapsed)
    for feed in feeds:
        keys = [key for key in probe.sent if key[0] == feed.camera]
        result.published[feed.camera] = len(keys)
        result.completed[feed.camera] = sum(probe.complete(key) for key in keys)
        result.latency_ms[feed.camera] = [
            (probe.arrivals[key]['depth/image'] - probe.sent[key]) * 1e3 for key in keys
            if 'depth/image' in probe.arrivals.get(key, {})]
    if None not in cpu_start + cpu_end:
        result.cpu_s = sum(cpu_end) - sum(cpu_start)
    result.rss_mb = [float(np.mean([mb for _, mb in sampler.samples]))
                     for sampler in samplers if sampler.samples]
    result.node_dropped = probe.node_dropped - dropped_before
    return result


def print_cameras_result(results, args, log_path, domain_id):
    print(f'## midas_ros benchmark, {args.cameras} cameras at {args.rate:g} Hz, '
          f'{args.width}x{args.height} rgb8, {time.strftime("%Y-%m-%d %H:%M")}')
    print(f'Hardware: {hardware_description(args.device, args.threads or None)}')
    weights = f'weights {args.weights}' if args.weights else 'random weights'
    load = f'{args.load} other process(es) keeping a core busy each' if args.load else 'no load'
    print(f'Model {args.models} ({weights}), device {args.device}, model.backend {args.backend};'
          f' {load}; outputs: {", ".join(args.outputs.split(","))} (scale ground_plane); '
          f'ROS_DOMAIN_ID {domain_id}, loopback only; node logs {log_path}\n')
    for result in results:
        if result.error:
            print(f'Not measured: {result.error}\n')
    results = [result for result in results if not result.error]
    print('| served by | camera | frames/s | p50 ms | p90 ms | p99 ms | frames sent |')
    print('|---|---|---|---|---|---|---|')
    for result in results:
        for camera, completed in result.completed.items():
            latency = result.latency_ms[camera]
            p50, p90, p99 = percentiles(latency) if latency else (float('nan'),) * 3
            print(f'| {result.label} | {camera} | {completed / result.elapsed_s:.2f} | '
                  f'{p50:.0f} | {p90:.0f} | {p99:.0f} | {result.published[camera]} |')
    print()
    print('| served by | total frames/s | share min / max | node CPU % of one core | RSS MB '
          '(total) | RSS MB per process |')
    print('|---|---|---|---|---|---|')
    for result in results:
        total = sum(result.completed.values())
        shares = [count / total for count in result.completed.values()] if total else [0.0]
        print(f'| {result.label} | {total / result.elapsed_s:.2f} | {min(shares):.2f} / '
              f'{max(shares):.2f} | {100.0 * result.cpu_s / result.elapsed_s:.0f} | '
              f'{sum(result.rss_mb):.0f} | '
              f"{', '.join(f'{mb:.0f}' for mb in result.rss_mb)} |")
    if len(results) == 2 and results[0].rss_mb and results[1].rss_mb:
        one, separate = results
        single = float(np.mean(separate.rss_mb))
        ratio = sum(one.rss_mb) / single
        fps = [sum(r.completed.values()) / r.elapsed_s for r in results]
        print(f'\nOne node for {args.cameras} cameras: {fps[0]:.2f} frames/s in all vs '
              f'{fps[1]:.2f} with {args.cameras} processes ({fps[0] / max(fps[1], 1e-9):.2f}x); '
              f'RSS {sum(one.rss_mb):.0f} MB = {ratio:.2f}x one single-camera node '
              f'({single:.0f} MB), {sum(one.rss_mb) / sum(separate.rss_mb):.2f}x the '
              f'{args.cameras} processes ({sum(separate.rss_mb):.0f} MB).')


# ------------------------------------------------------------------------------- CLI


def build_parser():
    parser = argparse.ArgumentParser(
        prog='python -m midas_ros benchmark',
        description="Per-stage and end-to-end speed of depth_node's work on this machine.")
    parser.add_argument('--models', default='midas_v21_small_256',
                        help="comma-separated variants, or 'all' (default: %(default)s)")
    parser.add_argument('--device', default='cpu', help='cpu | cuda | cuda:N (default: cpu)')
    parser.add_argument('--backend', default='auto',
                        help="inference backend (default: auto, as depth_node's default)")
    parser.add_argument('--weights', help='checkpoint file (default: random weights)')
    parser.add_argument('--threads', type=int, default=0,
                        help='CPU intra-op threads; 0: every usable core (default)')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--input-size', type=int, default=0,
                        help='network input size of the Depth Anything V2 models (a multiple '
                             'of 14; the other models keep theirs); 0 (default): 518')
    parser.add_argument('--frames', type=int, default=30, help='timed frames per model')
    parser.add_argument('--warmup', type=int, default=3, help='untimed frames first')
    parser.add_argument('--budget', type=float, default=120.0,
                        help='seconds of timed frames per model before stopping early '
                             '(keeps --models all feasible on a CPU; default %(default)s)')
    parser.add_argument('--node', action='store_true',
                        help='measure depth_node as its own process over DDS')
    parser.add_argument('--filters', action='store_true',
                        help='measure the navigation outputs (edge filter, obstacle cloud, '
                        'scans, confidence) per frame on one core, without a network')
    parser.add_argument('--duration', type=float, default=30.0,
                        help='--node: seconds of measurement after warm-up')
    parser.add_argument('--rate', type=float, default=0.0,
                        help='--node: the camera publishes at this rate (Hz; 30 is the robot '
                             'case); 0: next image when the previous outputs arrived (default)')
    parser.add_argument('--cameras', type=int, default=1,
                        help='--node: N cameras at --rate served by one depth_node (cameras '
                             'cam0..camN-1), then by N single-camera depth_node processes in '
                             'the same run: per-camera frames/s and latency, total, CPU, RSS')
    parser.add_argument('--outputs', default=','.join(NODE_OUTPUTS),
                        help='--node: comma-separated outputs the probe subscribes (the node '
                             'computes only those); default: every output')
    parser.add_argument('--load', type=int, default=0,
                        help='--node: keep N other processes busy (one core each) for the run')
    parser.add_argument('--official-duration', type=float, default=20.0,
                        help='--node: seconds of the official run.py path, timed first under '
                             'the same camera and load (0: skip; default %(default)s)')
    parser.add_argument('--official-child', action='store_true', help=argparse.SUPPRESS)
    parser.add_argument('--camera-source', action='store_true',
                        help="measure camera_source's CPU use instead (synthetic scene at "
                             '--rate, default 10 Hz, for --duration seconds)')
    parser.add_argument('--replay-frames', type=int, default=60,
                        help='--camera-source: its synthetic_replay_frames (default %(default)s;'
                             ' 0: render live)')
    parser.add_argument('--frame-timeout', type=float, default=10.0,
                        help='--node: seconds to wait for one frame\'s outputs')
    parser.add_argument('--startup-timeout', type=float, default=180.0,
                        help='--node: seconds to wait for the first output')
    parser.add_argument('--json', action='store_true', help=argparse.SUPPRESS)
    add_int8_arguments(parser)
    return parser


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.frames < 1 or args.warmup < 0 or args.width < 2 or args.height < 2:
        parser.error('need --frames >= 1, --warmup >= 0 and an image of at least 2x2')
    if args.load < 0 or args.official_duration < 0:
        parser.error('need --load >= 0 and --official-duration >= 0')
    if args.cameras < 1 or (args.cameras > 1 and (not args.node or args.rate <= 0)):
        parser.error('--cameras N (>= 1) above 1 needs --node and --rate HZ (cameras stream)')
    unknown = set(args.outputs.split(',')) - set(NODE_OUTPUTS)
    if unknown or not args.outputs:
        parser.error(f"--outputs: {', '.join(sorted(unknown)) or 'none given'}; choose from "
                     f"{', '.join(NODE_OUTPUTS)}")
    int8_error = check_precisions(args)
    if int8_error:
        parser.error(int8_error)
    if args.official_child:
        official_child(args)
        return 0
    prefer_passive_waiting()   # as depth_node does, before torch is imported
    try:
        if args.filters:
            from midas_ros.tools.filters_benchmark import run_filters
            run_filters(args)
        elif args.camera_source:
            run_camera_source(args)
        elif args.node:
            run_node(args)
        elif args.precisions:
            run_precisions(args)
        else:
            run_in_process(args, argv)
    except (BenchmarkError, ValueError) as error:
        print(f'benchmark: error: {error}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
