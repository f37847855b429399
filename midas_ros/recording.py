"""ROS 2 MCAP recordings without rosbag2: message definitions, QoS metadata and the file writer.

What rosbag2's MCAP storage plugin writes, so that Foxglove Studio, ``ros2 bag play`` and
independent decoders (``rosbags``, ``mcap-ros2-support``) open the file:

* profile ``ros2``; one schema per message type, named ``pkg/msg/Type``, encoding ``ros2msg``,
  whose data is the *complete* definition: the type's ``.msg`` text, then every type it uses
  (recursively, each once) after a line of 80 ``=`` and a ``MSG: pkg/msg/Type`` line
  (rosbag2's docs/message_definition_encoding.md);
* one channel per topic, message encoding ``cdr``, metadata ``offered_qos_profiles`` (YAML);
* messages as the CDR bytes DDS delivered, ``log_time`` = receive time and ``publish_time`` =
  send time (ns since the epoch).

ROS-free: the ``.msg`` files are read from the ``share/<pkg>/msg`` folders of the ament prefixes
(``$AMENT_PREFIX_PATH``, then this Python's prefix, where the ros-* wheels install them).
"""
import os
import re
import sys
from pathlib import Path

import yaml

DEFINITION_SEPARATOR = '=' * 80
PROFILE = 'ros2'
SCHEMA_ENCODING = 'ros2msg'
MESSAGE_ENCODING = 'cdr'
COMPRESSIONS = ('none', 'lz4', 'zstd')     # mcap.writer.CompressionType names, lower case
# Recording is the one feature that needs the mcap package, which has no rosdep key on Ubuntu:
# package.xml leaves it out and only recording asks for it, in one line.
MCAP_MISSING = ("MCAP recording needs the Python package 'mcap' (PyPI: pip install mcap); it "
                'has no rosdep key, so rosdep does not install it')
# Field types that are not messages (rosidl's primitive types).
PRIMITIVE_TYPES = frozenset({
    'bool', 'byte', 'char', 'float32', 'float64', 'int8', 'uint8', 'int16', 'uint16', 'int32',
    'uint32', 'int64', 'uint64', 'string', 'wstring'})
# 'string<=10', 'Type[]', 'Type[3]', 'Type[<=3]' -> the element type.
_TYPE_DECORATIONS = re.compile(r'(<=\d+)?(\[<?=?\d*\])?$')


class RecordingError(ValueError):
    """A recording cannot be written as asked; the text says why."""


def interface_prefixes():
    """Install prefixes whose ``share/<pkg>/msg`` folders hold the message definitions."""
    prefixes = [Path(p) for p in os.environ.get('AMENT_PREFIX_PATH', '').split(os.pathsep) if p]
    return prefixes + [Path(sys.prefix)]


def split_type_name(type_name):
    """``'pkg/msg/Type'`` or ``'pkg/Type'`` -> ``('pkg', 'Type')``."""
    parts = type_name.split('/')
    if len(parts) == 3 and parts[1] == 'msg':
        return parts[0], parts[2]
    if len(parts) == 2:
        return parts[0], parts[1]
    raise RecordingError(f"'{type_name}' is not a message type name (pkg/msg/Type)")


def _definition_file(package, name, prefixes):
    for prefix in prefixes:
        path = prefix / 'share' / package / 'msg' / f'{name}.msg'
        if path.is_file():
            return path
    raise RecordingError(f"no definition of {package}/msg/{name}: {name}.msg is in none of "
                         f"{', '.join(str(p / 'share' / package / 'msg') for p in prefixes)}")


def _used_types(text, package):
    """Message types of the fields of a ``.msg`` text, as ``pkg/msg/Type``, in field order."""
    used = []
    for line in text.splitlines():
        tokens = line.split('#', 1)[0].split()
        if len(tokens) < 2 or '=' in tokens[1]:   # blank, comment or constant (int8 A=1)
            continue
        field_type = _TYPE_DECORATIONS.sub('', tokens[0])
        if field_type in PRIMITIVE_TYPES:
            continue
        if field_type == 'Header':                # the one implicit package (ROS 1 habit)
            field_type = 'std_msgs/Header'
        field_package, name = (split_type_name(field_type) if '/' in field_type
                               else (package, field_type))
        used.append(f'{field_package}/msg/{name}')
    return used


def message_definition(type_name, prefixes=None):
    """The complete ``ros2msg`` definition of ``type_name``, as rosbag2 stores it in a schema.

    The type's own ``.msg`` text comes first; each type used by a field, directly or not,
    follows once, depth-first, after the two-line delimiter. Raises RecordingError naming the
    missing ``.msg`` file.
    """
    prefixes = interface_prefixes() if prefixes is None else [Path(p) for p in prefixes]
    package, name = split_type_name(type_name)
    sections, seen = [], set()

    def visit(package, name, top):
        seen.add((package, name))
        text = _definition_file(package, name, prefixes).read_text().rstrip('\n')
        sections.append(text if top else
                        f'{DEFINITION_SEPARATOR}\nMSG: {package}/msg/{name}\n{text}')
        for used in _used_types(text, package):
            used_package, used_name = split_type_name(used)
            if (used_package, used_name) not in seen:
                visit(used_package, used_name, False)

    visit(package, name, True)
    return '\n'.join(sections) + '\n'


def qos_profiles_yaml(profiles):
    """``offered_qos_profiles`` channel metadata: a YAML list of QoS mappings (rosbag2's keys:
    history, depth, reliability, durability, deadline, lifespan, liveliness,
    liveliness_lease_duration, avoid_ros_namespace_conventions; durations as {sec, nsec})."""
    return yaml.safe_dump(list(profiles), sort_keys=False, default_flow_style=False)


class McapRecording:
    """An MCAP file being written with the ``ros2`` profile; one channel per topic.

    ``add_topic`` once per topic (its schema is written the first time its type is seen), then
    ``write`` serialized CDR messages; ``close`` writes the summary and index that make the
    file seekable. Usable as a context manager.
    """

    def __init__(self, path, compression='zstd', library='midas_ros'):
        if compression not in COMPRESSIONS:
            raise RecordingError(f"unknown compression '{compression}' "
                                 f"(one of: {', '.join(COMPRESSIONS)})")
        try:
            from mcap.writer import CompressionType, Writer
        except ImportError:
            raise RecordingError(MCAP_MISSING) from None
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, 'wb')
        self._writer = Writer(self._file, compression=CompressionType[compression.upper()])
        self._writer.start(profile=PROFILE, library=library)
        self._schemas = {}      # type name -> schema id
        self._channels = {}     # topic -> channel id
        self.message_counts = {}
        self.closed = False

    def add_topic(self, topic, type_name, offered_qos_yaml='', definition=None):
        """Register ``topic`` of ``type_name`` (``pkg/msg/Type``); returns its channel id.

        ``definition`` overrides the looked-up ``.msg`` text (for types defined elsewhere).
        """
        if topic in self._channels:
            raise RecordingError(f'topic {topic} is already being recorded')
        schema_id = self._schemas.get(type_name)
        if schema_id is None:
            text = definition if definition is not None else message_definition(type_name)
            schema_id = self._writer.register_schema(type_name, SCHEMA_ENCODING,
                                                     text.encode())
            self._schemas[type_name] = schema_id
        metadata = {'offered_qos_profiles': offered_qos_yaml} if offered_qos_yaml else {}
        channel_id = self._writer.register_channel(topic, MESSAGE_ENCODING, schema_id, metadata)
        self._channels[topic] = channel_id
        self.message_counts[topic] = 0
        return channel_id

    def write(self, topic, data, log_time_ns, publish_time_ns=None):
        """Append one serialized message of a topic added before."""
        channel_id = self._channels.get(topic)
        if channel_id is None:
            raise RecordingError(f'topic {topic} was not added to the recording')
        sequence = self.message_counts[topic]
        self._writer.add_message(channel_id, log_time=int(log_time_ns), data=bytes(data),
                                 publish_time=int(publish_time_ns if publish_time_ns
                                                  else log_time_ns),
                                 sequence=sequence)
        self.message_counts[topic] = sequence + 1

    def close(self):
        """Write the summary section and close the file (idempotent)."""
        if not self.closed:
            self.closed = True
            self._writer.finish()
            self._file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
