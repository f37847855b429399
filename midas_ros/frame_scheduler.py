"""Fair intake for several cameras sharing one network: newest frame per camera, cameras in turn.

One network serves every camera of depth_node. Each camera keeps only its newest frame (a
slower network drops frames, never builds a backlog). depth_node subscribes *raw*: a dropped
640x480 frame then costs the middleware's take and one reference swap here, never a
deserialization (which would copy 0.9 MB and hold the interpreter lock in the callback thread);
the network takes the cameras that have a frame waiting in turn (round robin), so N
cameras all faster than the network each get 1/N of the frames processed, and a camera that
stops publishing simply has nothing waiting: its share goes to the others at once. A camera may
be capped (``max_rate``, Hz): while its next frame is not due, it is passed over.

Frames that wait at the same time and belong to the same group (the caller's key, e.g. the
camera's last image size: raw payloads are not decoded here) can be taken together as a batch.

ROS-free; payloads are opaque (serialized messages in depth_node).
"""
import threading
import time
from typing import Hashable, NamedTuple, Optional, Sequence

_SMOOTHING = 0.05   # of the mean put time: about the last twenty frames


class Waiting(NamedTuple):
    """A frame out of the scheduler: its camera, payload, and the camera's arrival number
    (1, 2, ...), which orders that camera's frames that several threads finish in any order."""

    camera: str
    payload: object
    number: int


class _Camera:
    """One camera's slot and counters."""

    def __init__(self):
        self.payload = None
        self.number = 0
        self.received = 0       # frames put
        self.dropped = 0        # frames replaced before anyone took them
        self.taken = 0
        self.put_seconds = 0.0  # smoothed time one put takes (what a dropped frame costs)
        self.interval = 0.0     # 1 / max_rate; 0: no cap
        self.due = 0.0          # monotonic time from which its next frame may be taken
        self.group = None       # frames of one group may share a batch


class FairScheduler:
    """Newest-frame slots for ``cameras``, taken in round robin.

    Thread-safe: any number of threads ``put`` (one per camera in practice) and ``take``.
    """

    def __init__(self, cameras: Sequence[str], clock=time.monotonic):
        if len(set(cameras)) != len(cameras) or not cameras:
            raise ValueError(f'cameras must be distinct and at least one, got {list(cameras)}')
        self._condition = threading.Condition()
        self._order = list(cameras)
        self._cameras = {name: _Camera() for name in cameras}
        self._turn = 0          # index in _order of the camera served next
        self._clock = clock

    @property
    def cameras(self):
        return list(self._order)

    def set_max_rate(self, camera, hz):
        """Cap ``camera`` at ``hz`` frames per second (0: as fast as the network goes)."""
        if not hz >= 0:
            raise ValueError(f'max_rate must be >= 0 Hz, got {hz}')
        with self._condition:
            self._cameras[camera].interval = 1.0 / hz if hz > 0 else 0.0
            self._condition.notify_all()

    def set_group(self, camera, group: Optional[Hashable]):
        """Frames of cameras in the same (non-None) group may be taken as one batch."""
        with self._condition:
            self._cameras[camera].group = group

    def put(self, camera, payload):
        """``camera``'s newest frame; replaces (drops) the one it had waiting."""
        start = time.perf_counter()
        slot = self._cameras[camera]
        with self._condition:
            if slot.payload is not None:
                slot.dropped += 1
            slot.payload = payload
            slot.received += 1
            slot.number = slot.received
            self._condition.notify()
        elapsed = time.perf_counter() - start
        slot.put_seconds += _SMOOTHING * (elapsed - slot.put_seconds) if slot.received > 1 \
            else elapsed

    def take(self, timeout, max_batch=1):
        """The next frames: a list of ``Waiting``, empty after ``timeout`` seconds.

        The first is the frame of the next camera in turn that has one due; up to
        ``max_batch`` - 1 more come from the cameras after it (in turn) whose frames are due
        and in the same group. The cameras served move to the back of the turn.
        """
        deadline = self._clock() + timeout
        with self._condition:
            while True:
                now = self._clock()
                taken = self._take_due(now, max_batch)
                if taken:
                    return taken
                # Nothing due: wait for a put, a camera's cap to expire, or the timeout.
                wait = deadline - now
                for slot in self._cameras.values():
                    if slot.payload is not None:
                        wait = min(wait, slot.due - now)
                if wait <= 0 and now >= deadline:
                    return []
                self._condition.wait(max(wait, 1e-3))

    def _take_due(self, now, max_batch):
        count = len(self._order)
        taken, group, passed_over = [], None, None
        for step in range(count):
            index = (self._turn + step) % count
            name = self._order[index]
            slot = self._cameras[name]
            if slot.payload is None or now < slot.due:
                continue
            if taken and (group is None or slot.group != group):
                if passed_over is None:
                    passed_over = index     # due but not in this batch: served next
                continue
            if not taken:
                group = slot.group
            taken.append(Waiting(name, slot.payload, slot.number))
            slot.payload = None
            slot.taken += 1
            if slot.interval:
                # Due again one interval after it was last due (not after it was taken), so
                # the cap is kept on average though frames arrive at discrete times; after a
                # pause, one interval after now (no burst).
                late = now - slot.due
                slot.due = (slot.due if late < slot.interval else now) + slot.interval
            last = index
            if len(taken) >= max_batch:
                break
        if taken:
            self._turn = passed_over if passed_over is not None else (last + 1) % count
        return taken

    def clear(self):
        """Drop every waiting frame (counted as dropped): they are stale once work resumes."""
        with self._condition:
            for slot in self._cameras.values():
                if slot.payload is not None:
                    slot.payload = None
                    slot.dropped += 1

    def counts(self, camera):
        """``(received, dropped, taken, put_seconds)`` of ``camera``."""
        slot = self._cameras[camera]
        return slot.received, slot.dropped, slot.taken, slot.put_seconds
