"""pipeline: run source -> depth_node -> obstacle_node as separate processes, like ``ros2 launch``.

    python -m midas_ros pipeline [--source synthetic|VIDEO|FOLDER|v4l2:N] [--frames N]
                                 [--params FILE ...] [--record out.mcap] [--output DIR]

Each node is ``python -m midas_ros <executable> --ros-args --params-file ...`` with the YAML
files the launch files use (``config/<node>.yaml``; ``config/synthetic_scene.yaml`` for the
built-in scene), then every ``--params`` file (later files win). The synthetic source also gets
``synthetic_detector``, so detections exist without a detection model. With ``--record`` (or
``--output``) the ``recorder`` writes the pipeline's topics to MCAP.

The runner keeps the graph on this machine: unless the environment already limits discovery to
localhost, all processes get an isolated environment (loopback-only discovery, a random
``ROS_DOMAIN_ID``, printed so RViz can join). Their logs are forwarded line by line behind the
node's name; progress (frames, FPS, latency) is printed once a second. The source is started
once depth_node (model loaded), obstacle_node and the recorder are up, and holds its first frame
until depth_node (and the recorder) are matched, so no frame is lost to start-up.

The run ends at the end of the input (camera_source exits 0, e.g. at ``--frames``; the rest is
given a moment to finish the last frames) or on Ctrl-C; every node then gets SIGINT, SIGTERM
after a timeout, SIGKILL after another. Exit status: 0, 130 on Ctrl-C, 1 if any node died (the
runner names it) or the nodes did not come up.
"""
import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Tuple

from midas_ros.depth_outputs import CAMERA_INFO_TOPIC, IMAGE_TOPIC, OUTPUT_TOPICS
from midas_ros.ros_env import config_path, isolated_ros_environment

SYNTHETIC = 'synthetic'
# What --record writes: everything a person replays in Foxglove or RViz, and what the artefacts
# are computed from. depth/relative is left out (as large as depth/image, rarely wanted).
RECORDED_TOPICS = (
    (IMAGE_TOPIC, CAMERA_INFO_TOPIC)
    + tuple(topic for topic in OUTPUT_TOPICS if topic != 'depth/relative')
    + ('detections', 'obstacles', 'obstacles/markers', 'obstacles/nearest', '/diagnostics',
       '/rosout'))
TRUTH_TOPICS = ('ground_truth/depth', 'ground_truth/detections')
CAMERA_TOPICS = ('image', 'camera_info')   # what --camera-only records (+ the true depth)
READY_TIMEOUT_S = 180.0     # model loading on a busy CPU can take a while
DRAIN_IDLE_S = 2.0          # after the input ends: no new depth output for this long -> done
DRAIN_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0       # per escalation step: SIGINT, then SIGTERM, then SIGKILL
PROGRESS_PERIOD_S = 1.0
EXIT_INTERRUPTED = 130


def ros_value(value):
    """A parameter value as ``-p name:=value`` needs it (YAML; strings always quoted, so a
    camera index '0' stays a string)."""
    if isinstance(value, (list, tuple)):
        return '[' + ', '.join(ros_value(item) for item in value) + ']'
    if isinstance(value, bool):
        return 'true' if value else 'false'
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return str(value)


@dataclass
class NodeSpec:
    """One process of the pipeline and how to tell it is ready."""

    name: str
    executable: str
    params_files: List[Path] = field(default_factory=list)
    overrides: dict = field(default_factory=dict)
    # The node is up once it subscribes every one of these inputs: a lifecycle node creates
    # its publishers at configure, then warms up, and subscribes only at activate, so a
    # publisher says nothing about whether the camera's first frames would reach it.
    ready_when: Tuple[str, ...] = ()

    def command(self):
        ros_args = []
        for path in self.params_files:
            ros_args += ['--params-file', str(path)]
        for name, value in self.overrides.items():
            ros_args += ['-p', f'{name}:={ros_value(value)}']
        return [sys.executable, '-m', 'midas_ros', self.executable] + (
            ['--ros-args'] + ros_args if ros_args else [])


def source_parameter(source):
    """camera_source's ``source`` from the command line's --source."""
    if source == SYNTHETIC:
        return SYNTHETIC
    if source.startswith('v4l2:'):
        return source[len('v4l2:'):]
    return str(Path(source).expanduser().resolve())


def plan(source=SYNTHETIC, params_files=(), frames=0, record=None, topics=None,
         camera_only=False):
    """The nodes of a run: (source node, other nodes in start order).

    ``camera_only``: the camera and the recorder alone (recording camera, CameraInfo and, for
    the synthetic scene, its true depth: the data ``finetune`` trains on)."""
    extra = [Path(p).resolve() for p in params_files]
    synthetic = source == SYNTHETIC
    source_overrides = {'source': source_parameter(source)}
    if frames:
        source_overrides['max_frames'] = int(frames)
    source_files = [config_path('camera_source.yaml')]
    if synthetic:
        source_files.append(config_path('synthetic_scene.yaml'))
    if camera_only:
        if not record:
            raise ValueError('--camera-only needs --record (it runs the camera and recorder)')
        # No other node subscribes the image before the camera starts: it waits for the one
        # subscriber the recorder will be, so the first frame is recorded.
        source_overrides['wait_for_subscribers'] = 1
        wanted = list(topics or CAMERA_TOPICS + (('ground_truth/depth',) if synthetic else ()))
        return (NodeSpec('camera_source', 'camera_source', source_files + extra,
                         source_overrides),
                [NodeSpec('recorder', 'recorder', extra,
                          {'output': str(Path(record).resolve()), 'topics': wanted})])
    camera = NodeSpec('camera_source', 'camera_source', source_files + extra, source_overrides)
    nodes = []
    if synthetic:
        nodes.append(NodeSpec('synthetic_detector', 'synthetic_detector',
                              [config_path('synthetic_scene.yaml')] + extra,
                              ready_when=('ground_truth/detections',)))
    nodes += [
        NodeSpec('depth_node', 'depth_node', [config_path('depth_node.yaml')] + extra,
                 ready_when=('image',)),
        NodeSpec('obstacle_node', 'obstacle_node', [config_path('obstacle_node.yaml')] + extra,
                 ready_when=('depth/image',)),
    ]
    if record:
        wanted = list(topics or RECORDED_TOPICS + (TRUTH_TOPICS if synthetic else ()))
        # The recorder subscribes a topic once it is in the graph; these are, before the
        # camera starts (the other nodes' inputs and depth_node's output), and the camera
        # waits for every subscriber of its topics that is up then: the first frame is recorded.
        before_camera = ('depth/image', 'image') + (
            ('ground_truth/detections',) if synthetic else ())
        nodes.append(NodeSpec(
            'recorder', 'recorder', extra,
            {'output': str(Path(record).resolve()), 'topics': wanted},
            ready_when=tuple(t for t in before_camera if t in wanted)))
    return camera, nodes


class Console:
    """Lines from several threads, each whole, behind a node-name prefix."""

    COLORS = ('36', '33', '35', '32', '34', '31')

    def __init__(self, stream=sys.stdout, width=18):
        self._stream = stream
        self._lock = threading.Lock()
        self._width = width
        self._color = stream.isatty()
        self._colors = {}

    def line(self, name, text):
        prefix = f'[{name}]'.ljust(self._width)
        if self._color:
            code = self._colors.setdefault(name, self.COLORS[len(self._colors) % 6])
            prefix = f'\033[{code}m{prefix}\033[0m'
        with self._lock:
            self._stream.write(f'{prefix} {text}\n')
            self._stream.flush()


class ChildProcess:
    """A node process whose output is forwarded to the console line by line."""

    def __init__(self, spec, env, console):
        self.spec, self.name = spec, spec.name
        self._console = console
        # A session of its own: a Ctrl-C in the terminal reaches only the runner, which then
        # stops the nodes in order (the recorder last, so it keeps the final messages).
        self.process = subprocess.Popen(spec.command(), stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True)
        self._reader = threading.Thread(target=self._forward, name=f'log-{self.name}',
                                        daemon=True)
        self._reader.start()

    def _forward(self):
        for raw in iter(self.process.stdout.readline, b''):
            self._console.line(self.name, raw.decode(errors='replace').rstrip())

    def poll(self):
        return self.process.poll()

    def signal(self, number):
        if self.process.poll() is None:
            self.process.send_signal(number)

    def wait(self, timeout):
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout=STOP_TIMEOUT_S):
        """SIGINT, then SIGTERM, then SIGKILL; returns the exit code."""
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            if self.process.poll() is not None:
                break
            if number != signal.SIGINT:
                self._console.line('pipeline', f'{self.name} did not stop: '
                                   f'{signal.Signals(number).name}')
            self.signal(number)
            self.wait(timeout)
        self._reader.join(timeout=2.0)
        return self.process.wait()


def ros_environment(base=None):
    """The environment of a run: the caller's if it already keeps discovery on localhost,
    otherwise an isolated one (loopback only, a random domain)."""
    base = dict(os.environ if base is None else base)
    if base.get('ROS_AUTOMATIC_DISCOVERY_RANGE', '').upper() == 'LOCALHOST':
        return isolated_ros_environment(base.get('ROS_DOMAIN_ID') or None, base)
    return isolated_ros_environment(base=base)


class PipelineRunner:
    """Starts the nodes, supervises them and stops them; ``run()`` returns the exit status."""

    def __init__(self, source_node, nodes, console=None, env=None):
        self.source_node, self.nodes = source_node, nodes
        self.console = console or Console()
        self.env = ros_environment(env)
        # Children log '[SEVERITY] message': the runner's prefix already names the node.
        self.env.update({'PYTHONUNBUFFERED': '1', 'RCUTILS_LOGGING_BUFFERED_STREAM': '1',
                         'RCUTILS_CONSOLE_OUTPUT_FORMAT': '[{severity}] {message}',
                         'RCUTILS_COLORIZED_OUTPUT': '0'})
        self.children = []
        self.interrupted = False
        self.failed = None          # name of a node that died

    def say(self, text):
        self.console.line('pipeline', text)

    def _on_signal(self, number, _frame):
        if self.interrupted:        # a second Ctrl-C: no more patience
            for child in self.children:
                child.signal(signal.SIGKILL)
        self.interrupted = True

    def run(self):
        # rclpy reads the environment when the monitor's context is created.
        os.environ.update({k: self.env[k] for k in (
            'ROS_AUTOMATIC_DISCOVERY_RANGE', 'ROS_DOMAIN_ID', 'FASTDDS_DEFAULT_PROFILES_FILE')
            if k in self.env})
        from midas_ros.ros.pipeline_monitor import PipelineMonitor
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT,
                                                                   signal.SIGTERM)}
        self.say(f"ROS_DOMAIN_ID={self.env['ROS_DOMAIN_ID']}, discovery on localhost only "
                 '(to watch: export both variables, then rviz2 -d config/midas.rviz)')
        monitor = PipelineMonitor()
        try:
            return self._supervise(monitor)
        finally:
            self._stop_all()
            monitor.close()
            for number, handler in previous.items():
                signal.signal(number, handler)

    def _start(self, spec):
        self.children.append(ChildProcess(spec, self.env, self.console))

    def _died(self, ended_ok=()):
        """The first child that exited (not counting those in ``ended_ok`` with status 0)."""
        for child in self.children:
            code = child.poll()
            if code is not None and not (child.name in ended_ok and code == 0):
                return child, code
        return None

    def _fail(self, child, code):
        self.failed = child.name
        self.say(f'{child.name} exited unexpectedly (status {code}): stopping the pipeline')
        return 1

    def _supervise(self, monitor):
        for spec in self.nodes:
            self._start(spec)
        status = self._wait_ready(monitor)
        if status is not None:
            return status
        # camera_source holds its first frame until it has matched, itself, every subscriber
        # that is up now, so neither depth_node, nor the recorder, nor the synthetic detector
        # (which reads the truth, not the image) misses the start of a short run.
        self.source_node.overrides['wait_for_subscribers'] = max(
            len(monitor.subscribers('image')),
            self.source_node.overrides.get('wait_for_subscribers', 0))
        self.source_node.overrides['wait_for_truth_subscribers'] = len(
            monitor.subscribers('ground_truth/detections'))
        self._start(self.source_node)
        source = self.source_node.name
        next_report = time.monotonic() + PROGRESS_PERIOD_S
        while not self.interrupted:
            dead = self._died(ended_ok=(source,))
            if dead:
                return self._fail(*dead)
            if self.children[-1].poll() == 0:
                self.say('end of input')
                return self._drain(monitor)
            if time.monotonic() >= next_report:
                next_report += PROGRESS_PERIOD_S
                self._report(monitor.progress())
            time.sleep(0.05)
        self.say('interrupted: stopping')
        return EXIT_INTERRUPTED

    def _wait_ready(self, monitor):
        """None once every node is up; an exit status if one died or time ran out."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        waiting_since = time.monotonic()
        pending = [spec for spec in self.nodes if spec.ready_when]
        while pending:
            if self.interrupted:
                return EXIT_INTERRUPTED
            dead = self._died()
            if dead:
                return self._fail(*dead)
            if time.monotonic() > deadline:
                self.say(f"{', '.join(s.name for s in pending)} not ready after "
                         f'{READY_TIMEOUT_S:.0f} s: giving up')
                return 1
            pending = [spec for spec in pending if not self._is_ready(monitor, spec)]
            if pending and time.monotonic() - waiting_since > 10.0:
                waiting_since = time.monotonic()
                self.say(f"waiting for {', '.join(s.name for s in pending)}")
            time.sleep(0.05)
        return None

    @staticmethod
    def _is_ready(monitor, spec):
        return all(spec.name in monitor.subscribers(topic) for topic in spec.ready_when)

    def _drain(self, monitor):
        """Let depth_node and obstacle_node finish the frames still in flight."""
        start = time.monotonic()
        deadline = start + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline and not self.interrupted:
            dead = self._died(ended_ok=(self.source_node.name,))
            if dead:
                return self._fail(*dead)
            # Idle counts from the end of the input at the earliest: a short run can end before
            # the first depth output, which is then still on its way.
            idle = min(monitor.progress().seconds_since_output, time.monotonic() - start)
            if idle > DRAIN_IDLE_S:
                break
            time.sleep(0.05)
        self._report(monitor.progress())
        return EXIT_INTERRUPTED if self.interrupted else 0

    def _report(self, progress):
        latency = (f'{progress.latency_ms:.0f} ms' if progress.latency_ms == progress.latency_ms
                   else '-')
        nearest = f'{progress.nearest_m:.2f} m' if progress.nearest_m is not None else '-'
        self.say(f'frames {progress.frames_out} out, {progress.frames_in} in, '
                 f'{progress.frames_dropped} dropped | '
                 f'{progress.fps:.1f} FPS | latency {latency} | nearest obstacle {nearest}')

    def _stop_all(self):
        """SIGINT to every node at once, the recorder after the others are gone."""
        recorders = [c for c in self.children if c.spec.executable == 'recorder']
        for group in ([c for c in self.children if c not in recorders], recorders):
            for child in group:
                child.signal(signal.SIGINT)
            for child in group:
                code = child.stop()
                if code not in (0, -signal.SIGINT) and self.failed is None \
                        and child.name != self.source_node.name:
                    self.say(f'{child.name} stopped with status {code}')


def add_arguments(parser):
    parser.add_argument('--source', default=SYNTHETIC,
                        help="'synthetic' (built-in scene), a video file, an image folder or "
                        "v4l2:N (camera N) (default: %(default)s)")
    parser.add_argument('--frames', type=int, default=0,
                        help='stop after this many frames (default: 0, no limit)')
    parser.add_argument('--params', nargs='+', default=[], metavar='FILE',
                        help='ROS parameter files applied after config/<node>.yaml')
    parser.add_argument('--record', metavar='FILE.mcap', help='record the topics to MCAP')
    parser.add_argument('--topics', nargs='+', metavar='TOPIC',
                        help='topics to record (default: the pipeline outputs)')
    parser.add_argument('--camera-only', action='store_true',
                        help='run only the camera and the recorder (needs --record): image, '
                        'camera_info and, for the synthetic scene, ground_truth/depth')
    parser.add_argument('--output', metavar='DIR',
                        help='record to DIR/recording.mcap and write the montage, video, '
                        'point cloud and summary there at the end')


def run_and_report(args, console=None):
    """Run the pipeline the parsed ``args`` describe; with ``--output``, write the artefacts.
    Returns the exit status."""
    record = args.record
    if args.output and not record:
        record = str(Path(args.output) / 'recording.mcap')
    for path in args.params:
        if not Path(path).is_file():
            sys.stderr.write(f'pipeline: parameter file not found: {path}\n')
            return 2
    try:
        source_node, nodes = plan(args.source, args.params, args.frames, record, args.topics,
                                  getattr(args, 'camera_only', False))
    except ValueError as error:
        sys.stderr.write(f'pipeline: {error}\n')
        return 2
    runner = PipelineRunner(source_node, nodes, console)
    started = time.monotonic()
    status = runner.run()
    runner.say(f'finished in {time.monotonic() - started:.1f} s with status {status}')
    if args.output and status in (0, EXIT_INTERRUPTED) and Path(record).is_file():
        from midas_ros.tools.demo import write_artefacts
        write_artefacts(record, args.output, console=runner.console)
    return status


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m midas_ros pipeline', description=(
        'Run camera_source -> depth_node -> obstacle_node (+ recorder) as separate processes.'))
    add_arguments(parser)
    return run_and_report(parser.parse_args(argv))


if __name__ == '__main__':
    sys.exit(main())
