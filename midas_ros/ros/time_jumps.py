"""Noticing that ROS time went backwards (a bag replayed in a loop with ``--clock``, a simulator
reset under ``use_sim_time``): the one place nodes register for it.

Time-indexed state (buffers keyed by stamp, smoothing filters, rate windows, freshness checks)
means nothing across such a jump: a frame stamped 100.0 before a reset is not the scene at
100.0 after it. rcl reports the jump through the clock's jump callbacks; this turns it into a
plain call with a sentence for the log.
"""
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration


def on_time_jump_back(node, callback):
    """Call ``callback(text)`` from the node's executor whenever its clock (ROS time, including
    simulated time from /clock) jumps backwards; ``text`` says by how much. Returns the handle,
    which must be kept (the registration ends when it is garbage-collected)."""
    def after_jump(jump):
        if jump.delta.nanoseconds < 0:
            callback(f'ROS time jumped back {-jump.delta.nanoseconds * 1e-9:.3f} s')

    threshold = JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1),
                              on_clock_change=False)
    return node.get_clock().create_jump_callback(threshold, post_callback=after_jump)
