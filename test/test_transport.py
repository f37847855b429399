"""Large messages between two processes over real DDS, with the shipped Fast DDS profile.

With stock Fast DDS transports, best-effort (sensor data QoS) readers lose most 640x480 images and
clouds to UDP fragmentation; config/fastdds_localhost.xml moves them to shared memory. This test
is what proves the profile is in effect and does its job.
"""
import os
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image, PointCloud2

from midas_ros.ros.conversions import cloud_field, image_to_array
from midas_ros.ros.qos import qos_profile
from midas_ros.ros_env import LOCALHOST_PROFILE, config_path, isolated_ros_environment

REPO = Path(__file__).resolve().parent.parent
FRAMES = 60
RATE_HZ = 30.0
MIN_DELIVERED = 0.9
WIDTH, HEIGHT = 640, 480
DEADLINE_S = 15.0

# The publisher process: waits for the test's subscriber, then sends FRAMES images and clouds at
# RATE_HZ with sensor data QoS. Frame i is stamped with its send time, carries i in frame_id and
# has pixel value / z equal to i, so the receiver can check content as well as count.
PUBLISHER = textwrap.dedent(f'''
    import time
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image, PointCloud2
    from midas_ros.ros.conversions import OrganizedCloudBuilder, array_to_image
    from midas_ros.ros.qos import qos_profile

    rclpy.init()
    node = rclpy.create_node('transport_test_publisher')
    qos = qos_profile('sensor_data', depth=5)
    image_pub = node.create_publisher(Image, 'transport_test/image', qos)
    cloud_pub = node.create_publisher(PointCloud2, 'transport_test/points', qos)
    deadline = time.monotonic() + 10.0
    while (image_pub.get_subscription_count() == 0 or cloud_pub.get_subscription_count() == 0):
        if time.monotonic() > deadline:
            raise SystemExit('no subscriber matched within 10 s')
        time.sleep(0.02)
    time.sleep(0.5)  # the reader side matches a moment after the writer side
    builder = OrganizedCloudBuilder()
    image = np.empty(({HEIGHT}, {WIDTH}, 3), np.uint8)
    xyz = np.empty(({HEIGHT}, {WIDTH}, 3), np.float32)
    start = time.monotonic()
    for i in range({FRAMES}):
        image.fill(i)
        xyz.fill(float(i))
        stamp = node.get_clock().now().to_msg()
        image_msg = array_to_image(image, 'rgb8')
        cloud_msg = builder.build(xyz)
        for msg in (image_msg, cloud_msg):
            msg.header.stamp, msg.header.frame_id = stamp, str(i)
        image_pub.publish(image_msg)
        cloud_pub.publish(cloud_msg)
        time.sleep(max(0.0, start + (i + 1) / {RATE_HZ} - time.monotonic()))
    time.sleep(0.5)  # let the last samples leave before the participant goes away
    node.destroy_node()
    rclpy.shutdown()
''')


def test_profile_is_the_one_environment_md_measured():
    root = ElementTree.parse(config_path(LOCALHOST_PROFILE)).getroot()
    ns = {'dds': root.tag.split('}')[0].strip('{')}
    descriptors = {d.findtext('dds:transport_id', namespaces=ns): d
                   for d in root.iterfind('.//dds:transport_descriptor', ns)}
    by_type = {d.findtext('dds:type', namespaces=ns): d for d in descriptors.values()}
    assert int(by_type['SHM'].findtext('dds:segment_size', namespaces=ns)) >= 32 * 1024 * 1024
    assert [a.text for a in by_type['UDPv4'].iterfind('.//dds:address', ns)] == ['127.0.0.1']
    participant = root.find('.//dds:participant', ns)
    assert participant.get('is_default_profile') == 'true'
    assert participant.findtext('.//dds:useBuiltinTransports', namespaces=ns) == 'false'
    used = [t.text for t in participant.iterfind('.//dds:userTransports/dds:transport_id', ns)]
    assert sorted(used) == sorted(descriptors)


def test_isolated_environment_applies_the_profile():
    env = isolated_ros_environment(base={})
    assert env['ROS_AUTOMATIC_DISCOVERY_RANGE'] == 'LOCALHOST'
    assert Path(env['FASTDDS_DEFAULT_PROFILES_FILE']) == config_path(LOCALHOST_PROFILE)


def publisher_environment():
    """Same isolated domain as this test process (conftest set it), repo importable."""
    env = isolated_ros_environment(domain_id=os.environ['ROS_DOMAIN_ID'])
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(REPO), env.get('PYTHONPATH')]))
    return env


class Received:
    """What the subscriber got on one topic: frame indices, content checks, latencies."""

    def __init__(self, clock, check):
        self.clock, self.check = clock, check
        self.frames, self.corrupt, self.latencies_ms = set(), [], []

    def __call__(self, msg):
        index = int(msg.header.frame_id)
        sent = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        self.latencies_ms.append((self.clock.now().nanoseconds * 1e-9 - sent) * 1e3)
        self.frames.add(index)
        if not self.check(msg, index):
            self.corrupt.append(index)


def image_is_frame(msg, index):
    image, encoding = image_to_array(msg)
    return encoding == 'rgb8' and image.shape == (HEIGHT, WIDTH, 3) and \
        image[0, 0, 0] == index and image[-1, -1, -1] == index


def cloud_is_frame(msg, index):
    z = cloud_field(msg, 'z')
    return z.shape == (HEIGHT, WIDTH) and msg.point_step == 16 and \
        z[0, 0] == index and z[-1, -1] == index


def finish(process, timeout_s=5.0):
    """Let a process end on its own (the publisher stops after its frames); kill it if it hangs."""
    if process is None:
        return ''
    try:
        return process.communicate(timeout=timeout_s)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        return process.communicate()[0]


def test_sensor_data_images_and_clouds_arrive_between_processes():
    context = rclpy.Context()
    rclpy.init(context=context)
    publisher = None
    try:
        node = rclpy.create_node('transport_test_subscriber', context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        images = Received(node.get_clock(), image_is_frame)
        clouds = Received(node.get_clock(), cloud_is_frame)
        qos = qos_profile('sensor_data', depth=5)
        node.create_subscription(Image, 'transport_test/image', images, qos)
        node.create_subscription(PointCloud2, 'transport_test/points', clouds, qos)
        publisher = subprocess.Popen([sys.executable, '-c', PUBLISHER],
                                     env=publisher_environment(), stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + DEADLINE_S
        drained_at = None
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            if len(images.frames) == len(clouds.frames) == FRAMES:
                break
            if publisher.poll() is not None:
                drained_at = drained_at or time.monotonic() + 1.0
                if time.monotonic() > drained_at:
                    break
        executor.shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
        output = finish(publisher)

    assert publisher.returncode == 0, f'publisher failed:\n{output}'
    for name, received in (('images', images), ('clouds', clouds)):
        delivered = len(received.frames) / FRAMES
        latency = (f'latency median {np.median(received.latencies_ms):.1f} ms, max '
                   f'{np.max(received.latencies_ms):.1f} ms' if received.latencies_ms else '')
        print(f'{name}: {len(received.frames)}/{FRAMES} delivered {latency}')
        assert delivered >= MIN_DELIVERED, f'only {delivered:.0%} of the {name} arrived'
        assert not received.corrupt, f'{name} with wrong content: frames {received.corrupt}'
