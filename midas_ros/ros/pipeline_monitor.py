"""What the pipeline runner sees of the graph it started: readiness and live progress.

A small node of the runner's own process, spun on a background thread in a context of its
own. It only subscribes to small topics (``depth/camera_info`` and ``obstacles/nearest``, one
message per frame, and depth_node's ``/diagnostics``), never the images or clouds, so watching
costs the pipeline nothing measurable. Frames received and dropped come from the diagnostics:
the monitor's own view of the source would miss frames while discovery is still matching it.
"""
import math
import threading
import time
from dataclasses import dataclass
from typing import Optional

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import CameraInfo, Range

from midas_ros.ros.qos import qos_profile

RATE_WINDOW_S = 5.0
DEPTH_STATUS_SUFFIX = ': depth'     # depth_node's DiagnosticStatus is '<node name>: depth'


@dataclass(frozen=True)
class Progress:
    """A snapshot: frames depth_node received (as of its last diagnostics), dropped and
    processed, output rate, latest end-to-end latency (image stamp to depth output received)
    and nearest obstacle."""

    frames_in: int
    frames_dropped: int
    frames_out: int
    fps: float
    latency_ms: float
    nearest_m: Optional[float]
    seconds_since_output: float


class PipelineMonitor:
    """Counts frames through the graph and answers 'is node X subscribed to topic Y yet'."""

    def __init__(self, name='pipeline_monitor'):
        self._context = rclpy.Context()
        rclpy.init(context=self._context, args=[])
        self.node = rclpy.create_node(name, context=self._context)
        self._lock = threading.Lock()
        self._frames_in = self._frames_dropped = self._frames_out = 0
        self._output_times = []         # monotonic receive times within RATE_WINDOW_S
        self._latency_ms = math.nan
        self._nearest_m = None
        self._started = time.monotonic()
        qos = qos_profile('sensor_data', depth=10)
        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diagnostics, 10)
        self.node.create_subscription(CameraInfo, 'depth/camera_info', self._on_output, qos)
        self.node.create_subscription(Range, 'obstacles/nearest', self._on_nearest, qos)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, name='pipeline_monitor', daemon=True)
        self._thread.start()

    def _spin(self):
        try:
            self._executor.spin()
        except ExternalShutdownException:
            pass

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.endswith(DEPTH_STATUS_SUFFIX):
                values = {kv.key: kv.value for kv in status.values}
                with self._lock:
                    self._frames_in = int(values.get('frames received', self._frames_in))
                    self._frames_dropped = int(values.get('frames dropped',
                                                          self._frames_dropped))

    def _on_output(self, msg):
        now = time.monotonic()
        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        latency_ms = (self.node.get_clock().now().nanoseconds - stamp_ns) / 1e6
        with self._lock:
            self._frames_out += 1
            self._latency_ms = latency_ms
            times = self._output_times
            times.append(now)
            while now - times[0] > RATE_WINDOW_S:
                times.pop(0)

    def _on_nearest(self, msg):
        with self._lock:
            self._nearest_m = msg.range if math.isfinite(msg.range) else None

    def progress(self):
        now = time.monotonic()
        with self._lock:
            times = self._output_times
            fps = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 else 0.0
            last = times[-1] if times else self._started
            return Progress(self._frames_in, self._frames_dropped, self._frames_out, fps,
                            self._latency_ms, self._nearest_m, now - last)

    def subscribers(self, topic):
        """Names of the nodes subscribed to ``topic`` (resolved in this node's namespace)."""
        resolved = self.node.resolve_topic_name(topic)
        return [info.node_name for info in self.node.get_subscriptions_info_by_topic(resolved)]

    def close(self):
        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self._context)
        self._thread.join(timeout=2.0)
