"""Public report b: with ``image.transport:=compressed`` depth_node subscribes
``<the resolved image topic>/compressed`` (as image_transport since image_common#326), so one
remap of ``image`` moves both transports; the node, in a namespace, gets depth from it."""
import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

from midas_ros.ros.qos import qos_profile
from ros_process import NodeProcess, RosTestNode, unique_namespace
from test_depth_node import textured_image


def test_compressed_follows_the_remapped_image_topic(tmp_path):
    namespace = unique_namespace('robot')
    camera = f'{unique_namespace("cam")}/color/image_raw'
    process = NodeProcess('depth_node', [
        '-r', f'__ns:={namespace}', '-r', f'image:={camera}', '-p', 'image.transport:=compressed',
        '-p', 'model.pretrained:=false', '-p', 'device:=cpu',
        '-p', 'inference.warmup_size:=[0, 0]'], tmp_path=tmp_path)
    probe = RosTestNode('compressed_probe')
    try:
        depth = probe.collect(Image, f'{namespace}/depth/image', qos_profile('sensor_data'))
        publisher = probe.node.create_publisher(CompressedImage, f'{camera}/compressed',
                                                qos_profile('sensor_data'))
        assert probe.spin_until(lambda: publisher.get_subscription_count() > 0, 120), \
            process.output()[-3000:]
        # Nothing listens on the name the node used to build from its own namespace.
        assert probe.node.count_subscribers(f'{namespace}/image/compressed') == 0
        ok, jpeg = cv2.imencode('.jpg', textured_image(320, 240)[..., ::-1])
        message = CompressedImage(format='rgb8; jpeg compressed bgr8', data=jpeg.tobytes())
        message.header.frame_id = 'camera_color_optical_frame'
        assert probe.spin_until(lambda: len(depth) > 0, 120, step=lambda: publisher.publish(
            message)), process.output()[-3000:]
        assert (depth[0].width, depth[0].height) == (320, 240)
        assert np.isfinite(np.frombuffer(depth[0].data, np.float32)).any()
    finally:
        probe.close()
        assert process.stop() == 0
