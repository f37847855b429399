"""recorder: chosen topics -> one MCAP file that Foxglove Studio and ``ros2 bag play`` open.

    python -m midas_ros recorder --ros-args -p topics:='[image, depth/image]' -p output:=run.mcap

The stand-in for ``ros2 bag record`` where rosbag2 cannot be installed. Types are discovered from
the graph: a topic is subscribed as soon as any node publishes or subscribes it, so a recorder
started first still gets the first messages. Messages are recorded as DDS delivered them
(serialized CDR, no decode), ``log_time`` = receive time, ``publish_time`` = the publisher's send
time (rosbag2's ``recv_timestamp`` and ``send_timestamp``). The subscription QoS adapts to the
publishers as rosbag2's does: reliable only if every publisher is, transient-local only if every
publisher is, so it matches all of them. The file is flushed and closed on Ctrl-C / SIGTERM.
The file format is :mod:`midas_ros.recording`; :func:`read_messages` reads a recording back.

Parameters: see RECORDER_PARAMS.
"""
import importlib
import sys
import time

import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message

from midas_ros.recording import COMPRESSIONS, McapRecording, RecordingError, qos_profiles_yaml
from midas_ros.ros.node_main import run_node
from midas_ros.ros.parameters import Param, declare_parameters
from midas_ros.ros.qos import matching_qos
from midas_ros.ros.steady_timer import create_steady_timer
from midas_ros.ros.throttled_log import ThrottledLog

NODE_NAME = 'recorder'

RECORDER_PARAMS = (
    Param('output', 'recording.mcap', 'MCAP file to write (replaced if it exists)',
          read_only=True),
    Param('compression', 'zstd', 'chunk compression', choices=tuple(COMPRESSIONS),
          read_only=True),
    Param('queue_depth', 100, 'messages a subscription may hold while the recorder is busy',
          min=1, max=100000, read_only=True),
    Param('discovery_period', 0.1, 'seconds between looks at the graph for the topics',
          min=0.01, max=60.0, read_only=True),
    # Declared as a string array by the node itself: from the default [] rclpy would infer a
    # byte array.
    Param('topics', [], 'topics to record (relative names resolve in the node namespace); '
          'empty: all', read_only=True),
)


def message_class(type_name):
    """The Python class of ``pkg/msg/Type``; ImportError/AttributeError if not installed."""
    package, _, name = type_name.split('/')
    return getattr(importlib.import_module(f'{package}.msg'), name)


def _duration(duration):
    nanoseconds = duration.nanoseconds
    return {'sec': nanoseconds // 1_000_000_000, 'nsec': nanoseconds % 1_000_000_000}


def offered_qos(profile):
    """An rclpy QoSProfile as one entry of rosbag2's ``offered_qos_profiles``."""
    return {
        'history': profile.history.name.lower(), 'depth': profile.depth,
        'reliability': profile.reliability.name.lower(),
        'durability': profile.durability.name.lower(),
        'deadline': _duration(profile.deadline), 'lifespan': _duration(profile.lifespan),
        'liveliness': profile.liveliness.name.lower(),
        'liveliness_lease_duration': _duration(profile.liveliness_lease_duration),
        'avoid_ros_namespace_conventions': profile.avoid_ros_namespace_conventions,
    }


class RecorderNode(Node):
    """Subscribes the wanted topics as they appear and appends every message to the file."""

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.params = declare_parameters(
            self, [param for param in RECORDER_PARAMS if param.name != 'topics'])
        topics_param, = (param for param in RECORDER_PARAMS if param.name == 'topics')
        topics = self.declare_parameter(topics_param.name, Parameter.Type.STRING_ARRAY,
                                        topics_param.descriptor()).value or []
        self.wanted = sorted({self.resolve_topic_name(t) for t in topics if t.strip()})
        self.recording = McapRecording(self.params['output'], self.params['compression'],
                                       library='midas_ros recorder')
        self.throttled = ThrottledLog(self.get_logger(), 5.0)
        self._recorded = {}
        self._discover()
        create_steady_timer(self, self.params['discovery_period'], self._discover)
        what = ', '.join(self.wanted) if self.wanted else 'all topics'
        self.get_logger().info(f"recording {what} to {self.params['output']}")

    def _discover(self):
        for topic, types in self.get_topic_names_and_types():
            if topic in self._recorded or (self.wanted and topic not in self.wanted):
                continue
            if len(types) != 1:
                self.throttled.warning(f'not recording {topic}: it has several types '
                                       f"({', '.join(types)})")
                continue
            self._subscribe(topic, types[0])

    def _subscribe(self, topic, type_name):
        try:
            msg_type = message_class(type_name)
            offered = [info.qos_profile for info in self.get_publishers_info_by_topic(topic)]
            self.recording.add_topic(topic, type_name,
                                     qos_profiles_yaml(map(offered_qos, offered)))
        except (ImportError, AttributeError, ValueError) as error:
            self._recorded[topic] = None     # do not retry every period
            self.get_logger().error(f'cannot record {topic} ({type_name}): {error}')
            return
        qos = matching_qos(offered, self.params['queue_depth'])

        def on_message(data, info):   # data: the CDR bytes (raw subscription)
            received = info['received_timestamp'] or time.time_ns()
            self.recording.write(topic, data, received, info['source_timestamp'] or received)

        self._recorded[topic] = self.create_subscription(msg_type, topic, on_message, qos,
                                                         raw=True)
        self.get_logger().info(f'subscribed {topic} ({type_name}, '
                               f'{qos.reliability.name.lower()})')

    def destroy_node(self):
        self.close()
        return super().destroy_node()

    def close(self):
        """Finish the file and say what it holds."""
        if self.recording.closed:
            return
        self.recording.close()
        # Not the node's logger (nor its name): after Ctrl-C its /rosout publisher is gone.
        log = rclpy.logging.get_logger(f'midas_ros.{NODE_NAME}')
        counts = self.recording.message_counts
        missing = [t for t in self.wanted if t not in counts]
        size_mb = self.recording.path.stat().st_size / 1e6
        log.info(f'wrote {sum(counts.values())} messages of {len(counts)} topics '
                 f'({size_mb:.1f} MB) to {self.recording.path}')
        if missing:
            log.warning(f"never appeared, not recorded: {', '.join(missing)}")


def read_messages(path, topics=None):
    """Deserialized messages of an MCAP recording: ``(topic, message, log_time_ns)`` in log
    time order, for ``topics`` (all if None). Types come from the channels' schema names."""
    from mcap.reader import make_reader
    with open(path, 'rb') as stream:
        reader = make_reader(stream)
        classes = {}
        for schema, channel, message in reader.iter_messages(topics=topics, log_time_order=True):
            msg_type = classes.get(schema.name)
            if msg_type is None:
                msg_type = classes[schema.name] = message_class(schema.name)
            yield channel.topic, deserialize_message(message.data, msg_type), message.log_time


def main(args=None):
    return run_node(RecorderNode, NODE_NAME, startup_errors=(RecordingError, OSError),
                    args=args)


if __name__ == '__main__':
    sys.exit(main())
