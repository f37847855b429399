"""NearestStampPolicy on synthetic stamps: nearest-in-stamp pairing with a bounded wait, as
message_filters' ApproximateTime pairs; the issue's example (b); time going back."""
import heapq
import math

import numpy as np
import pytest

from midas_ros.time_sync import NS, NearestStampPolicy


def ns(seconds):
    return int(round(seconds * NS))


def simulate(policy, detections, depth, duration, tick=0.01):
    """Replay ``detections`` and ``depth`` ([(stamp s, arrival s)]) through ``policy``, polling
    after every arrival and every ``tick``; returns {detection stamp: Decision}."""
    events = [(arrival, 1, 'depth', stamp) for stamp, arrival in depth]
    events += [(arrival, 2, 'detection', stamp) for stamp, arrival in detections]
    events += [(k * tick, 3, 'tick', None) for k in range(int(duration / tick))]
    heapq.heapify(events)
    decisions = {}
    while events:
        now, _, kind, stamp = heapq.heappop(events)
        if kind == 'depth':
            policy.add_reference(ns(stamp), stamp, ns(now))
        elif kind == 'detection':
            policy.add_query(ns(stamp), stamp, ns(now))
        for decision in policy.poll(ns(now)):
            decisions[decision.query] = decision
    return decisions


def test_issue_example_b_every_detection_gets_the_nearest_frame():
    """Detections at 10 Hz (arriving 50 ms after their frame), depth for every third frame
    arriving 0.35 s after it: each detection is measured in the depth frame nearest in stamp,
    also when that frame arrives after the detection (a third of them)."""
    stamps = [round(10.0 + 0.1 * k, 3) for k in range(60)]     # (a zero stamp is "unset")
    detections = [(t, t + 0.05) for t in stamps]
    depth = [(t, t + 0.35) for t in stamps[::3]]
    policy = NearestStampPolicy(tolerance_s=0.2, buffer_length=10)
    decisions = simulate(policy, detections, depth, duration=17.0)
    depth_stamps = [t for t, _ in depth]
    for t in stamps[:-3]:        # the last ones have no later frame to wait for in the replay
        decision = decisions[t]
        nearest = min(depth_stamps, key=lambda s: (abs(s - t), -s))
        assert decision.reference == nearest, (t, decision)
        # Bounded wait: at most the depth delay and a stamp offset (plus margins).
        assert decision.waited_s <= 0.35 + 0.1 + 0.1
    assert policy.unpaired == 0 and policy.dropped == 0
    assert policy.stalled(ns(16.0), 5.0) is None
    # The first detections wait for the first depth frame (0.35 s late); once the stream is
    # known, no detection waits longer than its nearer frame takes to come.
    stats = policy.statistics()
    assert stats['depth delay (s)'] == pytest.approx(0.35)
    assert stats['depth period (s)'] == pytest.approx(0.3)


def test_no_wait_when_no_nearer_frame_can_come():
    policy = NearestStampPolicy(tolerance_s=0.2)
    for k in range(5):       # depth every 0.3 s, delay 0.35 s
        policy.add_reference(ns(0.3 * k), 0.3 * k, ns(0.3 * k + 0.35))
    # Stamp 1.3: best 1.2 (0.1 away); the next frame (1.5) would be 0.2 away: decide now.
    policy.add_query(ns(1.3), 'a', ns(1.56))
    assert [d.reference for d in policy.poll(ns(1.56))] == [1.2]
    # Stamp 1.0: the stream has passed it: the nearest buffered frame, at once.
    policy.add_query(ns(1.0), 'b', ns(1.57))
    decision, = policy.poll(ns(1.57))
    assert decision.reference == pytest.approx(0.9) and decision.waited_s == 0.0


def test_a_detection_waits_for_a_nearer_frame_then_takes_it():
    policy = NearestStampPolicy(tolerance_s=0.2)
    for k in range(4):
        policy.add_reference(ns(0.3 * k), round(0.3 * k, 1), ns(0.3 * k + 0.35))
    policy.add_query(ns(1.1), 'q', ns(1.15))     # best 0.9 (0.2 away); 1.2 would be 0.1
    assert policy.poll(ns(1.2)) == []
    policy.add_reference(ns(1.2), 1.2, ns(1.55))
    decision, = policy.poll(ns(1.55))
    assert decision.reference == 1.2 and decision.offset_s == pytest.approx(0.1)
    assert decision.waited_s == pytest.approx(0.4)


def test_the_wait_is_bounded_by_max_wait_when_no_frame_settles_it():
    policy = NearestStampPolicy(tolerance_s=0.2, max_wait_s=1.0)
    for k in range(4):
        policy.add_reference(ns(0.3 * k), round(0.3 * k, 1), ns(0.3 * k + 0.35))
    policy.add_query(ns(1.1), 'q', ns(1.15))
    # The frame stamped 1.2 may still come (a slower depth stream): no decision on the delay
    # seen so far; the depth stream never sends it: the older frame after max_wait_s.
    assert policy.poll(ns(2.1)) == []
    decision, = policy.poll(ns(2.15))
    assert decision.reference == pytest.approx(0.9) and decision.waited_s == pytest.approx(1.0)


def test_report_e_a_detection_newer_than_every_frame_waits_although_depth_slowed_down():
    """Public report e: depth frames 10.0, 10.1, 10.2 arrive together (the delay seen: 0.02 to
    0.22 s), detections 10.0 and 10.1 later; the detection stamped 10.3 arrives 0.1 s before
    its own frame, whose delay has grown to 0.4 s (inference slowed down). It is measured in
    frame 10.3 (the nearest), not 10.2, as ApproximateTime pairs."""
    policy = NearestStampPolicy(tolerance_s=0.2, max_wait_s=2.0)
    for stamp in (10.0, 10.1, 10.2):
        policy.add_reference(ns(stamp), stamp, ns(10.22))
    decisions = []
    for stamp, arrival in ((10.0, 10.3), (10.1, 10.3), (10.3, 10.6)):
        policy.add_query(ns(stamp), stamp, ns(arrival))
        decisions += policy.poll(ns(arrival))
    for now in np.arange(10.61, 10.70, 0.01):
        decisions += policy.poll(ns(now))
    assert [(d.query, d.reference) for d in decisions] == [(10.0, 10.0), (10.1, 10.1)]
    policy.add_reference(ns(10.3), 10.3, ns(10.7))
    decision, = policy.poll(ns(10.7))
    assert decision.reference == 10.3 and decision.waited_s == pytest.approx(0.1)


def test_unpaired_beyond_tolerance_are_counted_with_the_reason():
    policy = NearestStampPolicy(tolerance_s=0.2)
    policy.add_reference(ns(41.0), 'frame', ns(41.1))
    policy.add_query(ns(40.0), 'q', ns(41.2))
    decision, = policy.poll(ns(41.2))
    assert decision.reference is None and '+1.000 s away' in decision.reason
    assert (policy.paired, policy.unpaired) == (0, 1)


def test_without_depth_detections_are_released_unpaired_and_a_stall_is_reported():
    policy = NearestStampPolicy(tolerance_s=0.2, max_wait_s=2.0)
    released = []
    for k in range(70):          # 7 s of detections at 10 Hz, no depth at all
        now = ns(0.1 * k)
        policy.add_query(now, k, now)
        released += policy.poll(now)
        if k * 0.1 < 5.0:
            assert policy.stalled(now, 5.0) is None
    assert released and all(d.reference is None for d in released)
    assert all(d.waited_s <= 2.0 for d in released)
    assert released[0].reason == 'no depth frame received'
    assert policy.stalled(ns(6.9), 5.0) == 'no depth frame received'
    # Detections stop: nothing to report.
    assert policy.stalled(ns(20.0), 5.0) is None


def test_time_going_back_forgets_every_frame_before_the_reset():
    """The issue's example: after a reset, a detection stamped 100.0 must not be measured in
    the pre-reset depth frame stamped 100.0 (2 m) but in the new one (3 m)."""
    policy = NearestStampPolicy(tolerance_s=0.2)
    for k in range(11):
        policy.add_reference(ns(100.0 + k), ('before', 100.0 + k), ns(100.0 + k + 0.1))
    policy.add_query(ns(110.0), 'q110', ns(110.2))
    assert policy.poll(ns(110.2))[0].reference == ('before', 110.0)
    # The simulator restarts at 100: the detection stream goes back first.
    assert policy.add_query(ns(100.0), 'q100', ns(110.3)) is True
    assert policy.resets == 1 and policy.statistics()['depth frames buffered'] == 0
    assert policy.poll(ns(110.35)) == []
    assert policy.add_reference(ns(100.0), ('after', 100.0), ns(110.4)) is False
    assert policy.poll(ns(110.4))[0].reference == ('after', 100.0)
    # Or the depth stream goes back first.
    policy.add_reference(ns(101.0), ('after', 101.0), ns(111.0))
    assert policy.add_reference(ns(50.0), ('again', 50.0), ns(111.1)) is True
    policy.add_query(ns(50.0), 'q50', ns(111.2))
    assert policy.poll(ns(111.2))[0].reference == ('again', 50.0)


def test_reset_clears_every_time_indexed_state():
    policy = NearestStampPolicy()
    policy.add_reference(ns(1.0), 'f', ns(1.1))
    policy.add_reference(ns(1.1), 'g', ns(1.2))
    policy.add_query(ns(2.0), 'q', ns(2.1))
    policy.reset()
    stats = policy.statistics()
    assert stats['waiting'] == 0 and stats['depth frames buffered'] == 0
    assert math.isnan(stats['depth delay (s)']) and math.isnan(stats['depth period (s)'])
    assert policy.newest_reference() is None


def test_decisions_come_out_in_query_order_and_unstamped_use_the_newest():
    policy = NearestStampPolicy(tolerance_s=0.2)
    policy.add_reference(ns(5.0), 'f5', ns(5.1))
    policy.add_query(ns(5.3), 'waits', ns(5.35))          # a nearer frame may come
    policy.add_query(0, 'unstamped', ns(5.36))              # ready, but behind 'waits'
    policy.add_query(ns(5.3), 'empty', ns(5.37), needs_reference=False)
    assert policy.poll(ns(5.37)) == []
    policy.add_reference(ns(5.3), 'f53', ns(5.6))
    decisions = policy.poll(ns(5.6))
    assert [(d.query, d.reference) for d in decisions] == [
        ('waits', 'f53'), ('unstamped', 'f5'), ('empty', None)]


def test_overflowing_queries_are_dropped_and_counted():
    policy = NearestStampPolicy(max_pending=3)
    for k in range(5):
        policy.add_query(ns(1.0 + 0.1 * k), k, ns(1.0 + 0.1 * k))
    assert policy.dropped == 2 and policy.waiting == 3


def test_stamps_moving_to_another_time_base_restart_the_delay_estimate():
    policy = NearestStampPolicy()
    for k in range(10):          # a synthetic source: stamps far from the clock
        policy.add_reference(ns(30.0 + k), k, ns(5000.0 + k))
    for k in range(3):           # then a live one: 0.35 s late
        policy.add_reference(ns(6000.0 + 0.3 * k), k, ns(6000.35 + 0.3 * k))
    stats = policy.statistics()
    assert stats['depth delay (s)'] == pytest.approx(0.35)
    assert math.isnan(stats['depth period (s)'])      # two periods: not steady yet
