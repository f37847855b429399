"""The MCAP recorder: schema text, and a recording made by the recorder process decoded by an
independent decoder (``mcap``'s record reader + ``rosbags``' own msg parser and CDR codec, with
the types taken from the schemas embedded in the file)."""
import array

import numpy as np
import pytest
import yaml
from mcap.reader import make_reader
from rclpy.duration import Duration
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from sensor_msgs.msg import Image, PointCloud2
from std_msgs.msg import Header
from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

from midas_ros.recording import (DEFINITION_SEPARATOR, RecordingError, _used_types,
                                 message_definition)
from midas_ros.ros.conversions import OrganizedCloudBuilder
from midas_ros.ros.qos import qos_profile
from ros_process import NodeProcess, RosTestNode, unique_namespace


# -- schema text (ROS-free) --------------------------------------------------------------------

def test_field_types_of_a_msg_text():
    text = ('# comment with Foo bar\n'
            'int8 CONSTANT=3\n'
            'string<=8 short_name\n'
            'Header header\n'
            'geometry_msgs/Point[] points\n'
            'Detection2D[<=4] detections   # same package\n'
            'uint8[16] bytes\n'
            'float64 x 1.5\n')
    assert _used_types(text, 'vision_msgs') == [
        'std_msgs/msg/Header', 'geometry_msgs/msg/Point', 'vision_msgs/msg/Detection2D']


@pytest.mark.parametrize('type_name', ['sensor_msgs/msg/Image', 'sensor_msgs/msg/PointCloud2',
                                       'visualization_msgs/msg/MarkerArray'])
def test_definition_parses_to_the_reference_types(type_name):
    """rosbags' parser, reading our text, must give the field layout of its own Kilted store."""
    ours = get_types_from_msg(message_definition(type_name), type_name)
    reference = get_typestore(Stores.ROS2_KILTED).fielddefs
    for name, (_, fields) in ours.items():
        assert [f[0] for f in fields] == [f[0] for f in reference[name][1]], name


def test_definition_holds_each_dependency_once():
    text = message_definition('vision_msgs/msg/Detection3DArray')
    headers = [line for line in text.splitlines() if line.startswith('MSG: ')]
    assert len(headers) == len(set(headers))
    assert 'MSG: vision_msgs/msg/BoundingBox3D' in headers
    assert 'MSG: geometry_msgs/msg/Quaternion' in headers
    assert text.count(DEFINITION_SEPARATOR) == len(headers)


def test_unknown_type_names_the_missing_file():
    with pytest.raises(RecordingError, match='NoSuchType.msg'):
        message_definition('sensor_msgs/msg/NoSuchType')


# -- recording through DDS ---------------------------------------------------------------------

def _image(index, header):
    data = (np.arange(6 * 4 * 3, dtype=np.uint8) + index).reshape(6, 4, 3)
    msg = Image(header=header, height=6, width=4, encoding='rgb8', step=12)
    msg.data = array.array('B', data.tobytes())
    return msg


def _cloud(index, header):
    xyz = np.arange(3 * 5 * 3, dtype=np.float32).reshape(3, 5, 3) * 0.1 + index
    xyz[0, 0] = np.nan
    rgb = np.full((3, 5, 3), 40 * index, np.uint8)
    return OrganizedCloudBuilder(color=True).build(xyz, header, rgb)


def _detections(index, header):
    array_msg = Detection3DArray(header=header)
    for k in range(2):
        detection = Detection3D(header=header, id=f'object_{k}')
        detection.bbox.center.position.x = 1.0 + index + k
        detection.bbox.size.z = 0.5 * (k + 1)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id, hypothesis.hypothesis.score = 'person', 0.25 * (k + 1)
        detection.results.append(hypothesis)
        array_msg.detections.append(detection)
    return array_msg


def _decode(path):
    """{topic: [(log_time, publish_time, decoded)]}, the profile and the channels."""
    typestore = get_typestore(Stores.EMPTY)
    decoded, channels = {}, {}
    with open(path, 'rb') as stream:
        reader = make_reader(stream)
        profile = reader.get_header().profile
        for schema, channel, message in reader.iter_messages(log_time_order=True):
            assert (schema.encoding, channel.message_encoding) == ('ros2msg', 'cdr')
            if schema.name not in typestore.fielddefs:
                typestore.register(get_types_from_msg(schema.data.decode(), schema.name))
            channels[channel.topic] = channel
            decoded.setdefault(channel.topic, []).append(
                (message.log_time, message.publish_time,
                 typestore.deserialize_cdr(message.data, schema.name)))
    return profile, channels, decoded


def test_recorder_process_writes_decodable_mcap(tmp_path):
    namespace = unique_namespace('rec')
    topics = [f'{namespace}/image', f'{namespace}/points', f'{namespace}/obstacles']
    output = tmp_path / 'run.mcap'
    recorder = NodeProcess('recorder', ['-p', f"topics:=[{', '.join(topics)}]",
                                        '-p', f'output:={output}'], tmp_path=tmp_path)
    probe = RosTestNode()
    sent = {topic: [] for topic in topics}
    try:
        reliable = qos_profile('reliable', depth=10)
        publishers = {
            topics[0]: (probe.node.create_publisher(Image, topics[0], reliable), _image),
            topics[1]: (probe.node.create_publisher(PointCloud2, topics[1], reliable), _cloud),
            topics[2]: (probe.node.create_publisher(Detection3DArray, topics[2], reliable),
                        _detections),
        }
        assert probe.spin_until(
            lambda: all(p.get_subscription_count() >= 1 for p, _ in publishers.values()),
            timeout=30.0), 'recorder never subscribed:\n' + recorder.output()
        for index in range(3):
            header = Header(frame_id='camera_optical_frame')
            header.stamp.sec, header.stamp.nanosec = 100 + index, 250_000_000
            for topic, (publisher, make) in publishers.items():
                msg = make(index, header)
                publisher.publish(msg)
                sent[topic].append(msg)
        for publisher, _ in publishers.values():
            assert publisher.wait_for_all_acked(Duration(seconds=5.0))
    finally:
        probe.close()
        code = recorder.stop()
    assert code == 0, recorder.output()
    assert 'wrote 9 messages of 3 topics' in recorder.output()

    profile, channels, decoded = _decode(output)
    assert profile == 'ros2'
    assert sorted(decoded) == sorted(topics)
    qos = yaml.safe_load(channels[topics[0]].metadata['offered_qos_profiles'])
    assert qos[0]['reliability'] == 'reliable'

    for (log_time, publish_time, image), msg in zip(decoded[topics[0]], sent[topics[0]]):
        assert 0 < publish_time <= log_time
        assert (image.header.stamp.sec, image.header.stamp.nanosec) == (
            msg.header.stamp.sec, msg.header.stamp.nanosec)
        assert image.header.frame_id == 'camera_optical_frame'
        assert (image.height, image.width, image.encoding, image.step) == (6, 4, 'rgb8', 12)
        assert bytes(image.data) == bytes(msg.data)

    for (_, _, cloud), msg in zip(decoded[topics[1]], sent[topics[1]]):
        assert [(f.name, f.offset, f.datatype) for f in cloud.fields] == [
            (f.name, f.offset, f.datatype) for f in msg.fields]
        assert (cloud.height, cloud.width, cloud.point_step, cloud.is_dense) == (3, 5, 16, False)
        points = np.frombuffer(bytes(cloud.data), np.float32).reshape(3, 5, 4)
        expected = np.frombuffer(bytes(msg.data), np.float32).reshape(3, 5, 4)
        np.testing.assert_array_equal(points[..., :3], expected[..., :3])   # NaN included
        assert np.isnan(points[0, 0, 0])

    for index, (_, _, detections) in enumerate(decoded[topics[2]]):
        assert [d.id for d in detections.detections] == ['object_0', 'object_1']
        assert [d.bbox.center.position.x for d in detections.detections] == [
            1.0 + index, 2.0 + index]
        assert [d.bbox.size.z for d in detections.detections] == [0.5, 1.0]
        assert [(d.results[0].hypothesis.class_id, d.results[0].hypothesis.score)
                for d in detections.detections] == [('person', 0.25), ('person', 0.5)]
