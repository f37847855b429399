"""inference.warmup_size: configure warms up exactly that image size before subscribing, none
for [0, 0], and a size that is not [width, height] stops configure with the reason."""
import pytest
import rclpy
from lifecycle_msgs.msg import State
from rclpy.parameter import Parameter

from midas_ros.ros.depth_node import warmup_size
from midas_ros.ros.lifecycle import StartupError
from exact_depth import ExactDepthNode
from ros_process import unique_namespace


def _state(node):
    return node._state_machine.current_state[0]


def test_warmup_size_is_a_size_or_none():
    assert warmup_size({'inference.warmup_size': [640, 480]}) == (640, 480)
    assert warmup_size({'inference.warmup_size': [0, 0]}) is None
    for bad in ([640], [640, 480, 3], [0, 480], [-640, 480], [640, 100000]):
        with pytest.raises(ValueError, match='inference.warmup_size'):
            warmup_size({'inference.warmup_size': bad})


@pytest.mark.parametrize('size, warmed', [([320, 240], {(320, 240)}), ([0, 0], set())])
def test_configure_warms_up_the_configured_size_only(size, warmed):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = ExactDepthNode(context=context, namespace=unique_namespace('warm'),
                              parameter_overrides=[Parameter('autostart', value=False),
                                                   Parameter('inference.warmup_size',
                                                             value=size)])
        assert node.network is None            # nothing built before configure
        assert node.trigger_configure() is not None
        assert _state(node) == State.PRIMARY_STATE_INACTIVE
        assert set(node.network.estimator.warmed_up) == warmed
        node.trigger_shutdown()
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_a_bad_warmup_size_stops_the_start_with_the_reason():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = ExactDepthNode(context=context, namespace=unique_namespace('warm'),
                              parameter_overrides=[Parameter('inference.warmup_size',
                                                             value=[640])])
        with pytest.raises(StartupError, match=r'inference.warmup_size must be \[width'):
            node.start()
        assert _state(node) == State.PRIMARY_STATE_UNCONFIGURED
        assert node.network is None            # nothing half-built is left
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
