"""Pairing two streams by stamp, ROS-free: each query (a detection message) with the reference
(a depth frame) nearest in stamp, as message_filters' ApproximateTime policy pairs.

Why not message_filters itself: its policies pair messages of *equal rate* one-to-one and drop
the rest; obstacle_node needs many-to-one pairing (a 10 Hz detector against 2-5 Hz depth, every
detection measured in the depth frame nearest to it), published in detection order, and a wait
bounded by what the depth stream is observed to do. The policy is the same idea (nearest stamp,
wait only while a nearer message may still come) in a class with no ROS in it, fed stamps and a
clock by the node and unit-tested on synthetic stamps.

Times are integer nanoseconds: ``stamp_ns`` from headers, ``now_ns`` from the node's clock (ROS
time, so simulated time works). Only differences of ``now - stamp`` within one stream are used,
so stamps need not share the clock's base (a bag replayed without ``--clock``).

Waiting: a query stamped ``t`` whose best buffered reference is ``d`` away can only get a
nearer one stamped in ``(newest, t + min(d, tolerance)]``. It is decided at once when no such
frame can come, by the stamps alone: the reference stream has already reached ``t``, or its
steady stamp period puts the next frame beyond that window. Otherwise it waits, as
ApproximateTime does, until a frame that settles it arrives, and never longer than
``max_wait_s``. How late frames used to arrive is not a reason to stop waiting: a stream whose
delay has grown (inference slowed down by load) would otherwise pair a detection with an older
frame while its own frame is still on the way.
"""
import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

NS = 1_000_000_000
_WINDOW = 20                # references remembered for the delay and period estimates
_JUMP_BACK_NS = NS          # a stream going back further than this is a time reset
_REBASE_NS = NS             # a delay this far from the usual one: stamps in another time base


@dataclass
class Decision:
    """What became of one query: its reference (None when unpaired) and why."""

    query: Any
    reference: Any = None
    reason: str = ''            # why it is unpaired ('' when paired or not needing one)
    waited_s: float = 0.0       # time from arrival to decision (clock seconds)
    offset_s: float = math.nan  # reference stamp - query stamp (s), when paired


@dataclass
class _Pending:
    stamp: int
    item: Any
    received: int
    needs_reference: bool
    decision: Optional[Decision] = None


class NearestStampPolicy:
    """Each query paired with the reference nearest in stamp within ``tolerance_s``.

    ``add_reference`` / ``add_query`` feed it; ``poll(now_ns)`` returns the decisions that are
    ready, in query arrival order (a decided query waits behind an undecided older one, so
    outputs never go back in time). ``buffer_length`` references are kept; at most
    ``max_pending`` queries wait (the oldest is dropped beyond that, counted). Not thread-safe:
    call from one thread (a node's callbacks).
    """

    def __init__(self, tolerance_s=0.2, buffer_length=10, max_pending=256, max_wait_s=2.0):
        self.max_pending = int(max_pending)
        self.max_wait_ns = int(max_wait_s * NS)
        self.paired = self.unpaired = self.dropped = self.resets = 0
        self.last_reason = ''
        self._waits = deque(maxlen=_WINDOW)
        self.configure(tolerance_s, buffer_length)
        self.reset()

    def configure(self, tolerance_s, buffer_length):
        """New tolerance and reference buffer length (ValueError if unusable); what is
        buffered is kept, trimmed to the new length."""
        if not (math.isfinite(tolerance_s) and tolerance_s >= 0):
            raise ValueError(f'tolerance must be finite and >= 0, got {tolerance_s}')
        if int(buffer_length) < 1:
            raise ValueError(f'buffer_length must be >= 1, got {buffer_length}')
        self.tolerance_ns = int(round(tolerance_s * NS))
        self.buffer_length = int(buffer_length)
        if hasattr(self, '_references'):
            del self._references[:-self.buffer_length]

    def reset(self):
        """Forget every time-indexed state: buffered references, waiting queries (dropped
        without a decision), delay and period estimates, wait statistics. For a clock or a
        stream that jumped back (a bag looping, a simulator reset)."""
        self._references = []           # [(stamp, item)] in stamp order
        self._pending = deque()
        self._delays = deque(maxlen=_WINDOW)
        self._periods = deque(maxlen=_WINDOW)
        self._waits.clear()
        self._newest_query = 0
        self.last_paired_ns = None      # clock time of the latest pairing
        self.last_query_ns = None       # clock time of the latest query
        self._stalled_since = None      # clock time since which nothing has paired

    # -- input ------------------------------------------------------------------------------

    def add_reference(self, stamp_ns, item, now_ns):
        """Buffer a reference (depth frame). Returns True when its stamp went back by more
        than a second: the policy was reset first (time jumped back)."""
        references = self._references
        jumped = bool(stamp_ns and references and stamp_ns < references[-1][0] - _JUMP_BACK_NS)
        if jumped:
            self._jump_back()
            references = self._references
        if stamp_ns:
            delay = now_ns - stamp_ns
            if self._delays and abs(delay - float(np.median(self._delays))) > _REBASE_NS:
                # The stream's stamps moved to another time base (a bag started, a source
                # switched): what was learnt about its delay and period no longer applies.
                self._delays.clear()
                self._periods.clear()
            elif references and stamp_ns > references[-1][0] > 0:
                self._periods.append(stamp_ns - references[-1][0])
            self._delays.append(delay)
        # Kept in stamp order, also for a frame arriving out of order.
        index = len(references)
        while index and references[index - 1][0] > stamp_ns:
            index -= 1
        references.insert(index, (stamp_ns, item))
        del references[:-self.buffer_length]
        return jumped

    def add_query(self, stamp_ns, item, now_ns, needs_reference=True):
        """Queue a query (detection message). ``needs_reference`` False: it is released in
        turn without one (e.g. no detection passed the filters). Returns True when its stamp
        went back by more than a second: the policy was reset first."""
        jumped = bool(stamp_ns and stamp_ns < self._newest_query - _JUMP_BACK_NS)
        if jumped:
            self._jump_back()
        self._newest_query = max(self._newest_query, stamp_ns)
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self.dropped += 1
            self.last_reason = f'more than {self.max_pending} detections waiting for depth'
        self._pending.append(_Pending(stamp_ns, item, now_ns, needs_reference))
        self.last_query_ns = now_ns
        if needs_reference and self._stalled_since is None:
            self._stalled_since = now_ns
        return jumped

    def _jump_back(self):
        self.resets += 1
        self.reset()

    # -- decisions --------------------------------------------------------------------------

    def poll(self, now_ns):
        """The decisions ready now, in query order."""
        for pending in self._pending:
            if pending.decision is None:
                pending.decision = self._decide(pending, now_ns)
        ready = []
        while self._pending and self._pending[0].decision is not None:
            ready.append(self._pending.popleft().decision)
        return ready

    def _decide(self, pending, now_ns):
        waited = (now_ns - pending.received) / NS
        if not pending.needs_reference:
            return Decision(pending.item, waited_s=waited)
        references = self._references
        if not pending.stamp or (references and not references[-1][0]):
            # A zero stamp was never set: no time to pair by; the newest frame it is.
            if references:
                return self._paired(pending, references[-1], now_ns)
            if now_ns - pending.received < self.max_wait_ns:
                return None
            return self._unpaired(pending, 'no depth frame received', now_ns)
        best = self._nearest(pending.stamp)
        distance = abs(best[0] - pending.stamp) if best else math.inf
        if distance == 0:
            return self._paired(pending, best, now_ns)
        if not self._may_get_nearer(pending, distance, now_ns):
            if best is not None and distance <= self.tolerance_ns:
                return self._paired(pending, best, now_ns)
            if best is None:
                return self._unpaired(pending, 'no depth frame received', now_ns)
            return self._unpaired(
                pending, f'the nearest depth frame is {(best[0] - pending.stamp) / NS:+.3f} s '
                f'away (sync_tolerance {self.tolerance_ns / NS:g} s)', now_ns)
        return None

    def _nearest(self, stamp):
        """The buffered reference nearest to ``stamp`` (ties: the newer one)."""
        if not self._references:
            return None
        return min(reversed(self._references), key=lambda item: abs(item[0] - stamp))

    def _may_get_nearer(self, pending, distance, now_ns):
        """Whether a reference nearer than ``distance`` (and within tolerance) may still come
        for ``pending``, so that it should wait."""
        horizon = pending.stamp + min(distance, self.tolerance_ns)
        if self._references:
            newest = self._references[-1][0]
            if newest >= pending.stamp:
                return False            # later frames can only be farther
            period = self._steady_period()
            if period and newest + period > horizon:
                return False            # the next frame is not expected that early
        return now_ns < pending.received + self.max_wait_ns

    def _delay(self):
        """The reference stream's delay (arrival clock - stamp) that most frames keep to."""
        return float(np.percentile(self._delays, 90))

    def _steady_period(self):
        """The reference stream's stamp period when the last few agree (within 50%), else
        None: an irregular stream (frames dropped at random) gives no basis for not waiting."""
        recent = list(self._periods)[-5:]
        if len(recent) < 3 or max(recent) > 1.5 * min(recent):
            return None
        return min(recent)

    def _paired(self, pending, reference, now_ns):
        self.paired += 1
        self.last_paired_ns = now_ns
        self._stalled_since = None
        decision = Decision(pending.item, reference[1], '', (now_ns - pending.received) / NS,
                            (reference[0] - pending.stamp) / NS)
        self._waits.append(decision.waited_s)
        return decision

    def _unpaired(self, pending, reason, now_ns):
        self.unpaired += 1
        self.last_reason = reason
        decision = Decision(pending.item, None, reason, (now_ns - pending.received) / NS)
        self._waits.append(decision.waited_s)
        return decision

    # -- state ------------------------------------------------------------------------------

    def newest_reference(self):
        """The newest buffered reference item, or None."""
        return self._references[-1][1] if self._references else None

    @property
    def waiting(self):
        """Queries not released yet."""
        return len(self._pending)

    def statistics(self):
        """Counters and estimates for diagnostics (seconds)."""
        waits = list(self._waits)
        return {
            'paired': self.paired, 'unpaired': self.unpaired, 'dropped': self.dropped,
            'waiting': self.waiting, 'depth frames buffered': len(self._references),
            'wait mean (s)': float(np.mean(waits)) if waits else 0.0,
            'wait max (s)': max(waits) if waits else 0.0,
            'depth delay (s)': self._delay() / NS if self._delays else math.nan,
            'depth period (s)': (self._steady_period() or math.nan) / NS,
            'time resets': self.resets,
        }

    def stalled(self, now_ns, after_s):
        """Why nothing has paired for ``after_s`` seconds while detections kept arriving, or
        None when pairing works (or there is nothing to pair)."""
        if self.last_query_ns is None or now_ns - self.last_query_ns > after_s * NS:
            return None
        if self._stalled_since is None or now_ns - self._stalled_since < after_s * NS:
            return None
        return self.last_reason or 'detections are still waiting for depth frames'
