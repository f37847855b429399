"""synthetic_detector: a stand-in 2D object detector for the synthetic scene.

It turns camera_source's ``ground_truth/detections`` into ``detections`` the way a real detector
would publish them, so depth -> obstacles runs end to end with no detection model.

Why it relays the truth rather than re-rendering it from ``image``: camera_source publishes the
truth of each frame with exactly the image's header (stamp and frame_id), so the relay gets the
right boxes for every image by construction. Re-rendering would cost a second full render per
frame on the CPU, would need the scene parameters kept in step in two places, and would have to
guess the frame index from a stamp, which breaks as soon as a frame is dropped or the clock is
not the source's.

Subscribed: ground_truth/detections (vision_msgs/Detection2DArray)
Published:  detections (vision_msgs/Detection2DArray): the same header (the image's), optionally
            filtered by class, with objects missed at ``drop_rate``, jittered boxes, lower scores
            and a delay of ``latency_ms``. ``results[].pose`` is cleared: a 2D detector does not
            know where an object is in 3D.
"""
import collections
import sys

import numpy as np
from geometry_msgs.msg import PoseWithCovariance
from rclpy.node import Node
from vision_msgs.msg import Detection2DArray

from midas_ros.ros.node_main import run_node
from midas_ros.ros.parameters import Param, declare_parameters
from midas_ros.ros.qos import QOS_NAMES, qos_profile

NODE_NAME = 'synthetic_detector'
_LATENCY_POLL_SEC = 0.002

SYNTHETIC_DETECTOR_PARAMS = (
    Param('classes', '', 'comma-separated class names to report (empty: all)',
          read_only=True),
    Param('latency_ms', 0.0, 'delay between receiving a frame and publishing its detections',
          min=0.0, max=10000.0, read_only=True),
    Param('drop_rate', 0.0, 'probability of missing an object', min=0.0, max=1.0,
          read_only=True),
    Param('score_noise', 0.0, 'scores are 1 - |N(0, score_noise)|, clipped to [0, 1]',
          min=0.0, max=10.0, read_only=True),
    Param('box_noise_px', 0.0, 'standard deviation of the jitter of box centre and size (px)',
          min=0.0, max=1000.0, read_only=True),
    Param('seed', 0, 'seed of the simulated errors', min=0, max=2 ** 31 - 1, read_only=True),
    Param('input_qos', 'sensor_data', 'QoS of the ground_truth/detections subscription',
          choices=QOS_NAMES, read_only=True),
    Param('output_qos', 'reliable', 'QoS of the detections publisher', choices=QOS_NAMES,
          read_only=True),
)


class SyntheticDetectorNode(Node):

    def __init__(self, **kwargs):
        super().__init__(NODE_NAME, **kwargs)
        self.params = params = declare_parameters(self, SYNTHETIC_DETECTOR_PARAMS)
        self._classes = {name.strip() for name in params['classes'].split(',') if name.strip()}
        self._rng = np.random.default_rng(params['seed'])
        self._publisher = self.create_publisher(
            Detection2DArray, 'detections', qos_profile(params['output_qos'], depth=10))
        self._subscription = self.create_subscription(
            Detection2DArray, 'ground_truth/detections', self._on_truth,
            qos_profile(params['input_qos'], depth=10))
        self._delayed = collections.deque()   # (publish time in ns, message), in time order
        if params['latency_ms'] > 0:
            self._latency_timer = self.create_timer(_LATENCY_POLL_SEC, self._publish_due)

    def _on_truth(self, truth):
        detections = self._detect(truth)
        if self.params['latency_ms'] <= 0:
            self._publisher.publish(detections)
            return
        due = self.get_clock().now().nanoseconds + int(self.params['latency_ms'] * 1e6)
        self._delayed.append((due, detections))

    def _publish_due(self):
        now = self.get_clock().now().nanoseconds
        while self._delayed and self._delayed[0][0] <= now:
            self._publisher.publish(self._delayed.popleft()[1])

    def _detect(self, truth):
        """What a detector would report for the frame whose truth this is."""
        params, rng = self.params, self._rng
        kept = [d for d in truth.detections
                if (not self._classes or d.results[0].hypothesis.class_id in self._classes)
                and rng.random() >= params['drop_rate']]
        for detection in kept:
            for result in detection.results:
                result.pose = PoseWithCovariance()
                noise = rng.normal(0.0, params['score_noise']) if params['score_noise'] else 0.0
                result.hypothesis.score = float(np.clip(1.0 - abs(noise), 0.0, 1.0))
            sigma = params['box_noise_px']
            if sigma > 0:
                box = detection.bbox
                du, dv, dw, dh = rng.normal(0.0, sigma, 4)
                box.center.position.x += du
                box.center.position.y += dv
                box.size_x = max(1.0, box.size_x + dw)
                box.size_y = max(1.0, box.size_y + dh)
        # The message is this callback's own (rclpy hands every callback a new one), so it is
        # edited in place and sent on with its header: the image's stamp and frame_id.
        truth.detections = kept
        return truth


def main(args=None):
    return run_node(SyntheticDetectorNode, NODE_NAME, startup_errors=(ValueError,), args=args)


if __name__ == '__main__':
    sys.exit(main())
