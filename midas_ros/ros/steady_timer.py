"""Timers on the steady clock, for work about the process rather than the data.

``Node.create_timer`` runs on the node's clock, which is simulated time under ``use_sim_time``:
while /clock is absent or paused (a paused bag, a simulator at a breakpoint, a test holding
time still) such a timer never fires. Looking at the ROS graph for publishers and leaving after
a shutdown transition must go on regardless, so they run on ``ClockType.STEADY_TIME``.
"""
from rclpy.clock import Clock, ClockType


def create_steady_timer(node, period_s, callback):
    """``node.create_timer(period_s, callback)`` on the steady (monotonic wall) clock."""
    return node.create_timer(period_s, callback, clock=Clock(clock_type=ClockType.STEADY_TIME))
