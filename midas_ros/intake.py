"""Frame intake for a node slower than its camera: keep the newest frame, drop the rest cheaply.

A 30 Hz camera feeding a 10-15 Hz network means most frames are dropped. Deserializing each one
(a 640x480 rgb8 ``Image`` copies its 0.9 MB into a Python message) would spend CPU and hold
Python's interpreter lock in the callback thread while the processing thread needs both. So
depth_node subscribes *raw* (rclpy hands the serialized bytes over) and ``LatestFrame`` keeps
only the newest of them; the processing thread deserializes the one it takes. A dropped frame
then costs the middleware's take and one reference swap here.

ROS-free: the payload is opaque (bytes, or a message for callers that do not subscribe raw).
"""
import threading
import time
from typing import NamedTuple

_SMOOTHING = 0.05   # of the mean put time: about the last twenty frames


class Taken(NamedTuple):
    """A frame out of the mailbox: its payload and its arrival number (1, 2, ...), which
    orders frames that several threads took and finish in any order."""

    payload: object
    number: int


class LatestFrame:
    """A one-slot mailbox: ``put`` replaces what is waiting (counted in ``dropped``).

    ``received``: frames put; ``dropped``: frames replaced before anyone took them;
    ``put_seconds``: smoothed time one ``put`` takes (what a dropped frame costs here).
    Thread-safe: one thread puts, one or more take.
    """

    def __init__(self):
        self._condition = threading.Condition()
        self._payload = None
        self.dropped = 0
        self.received = 0
        self.put_seconds = 0.0

    def put(self, payload):
        start = time.perf_counter()
        with self._condition:
            if self._payload is not None:
                self.dropped += 1
            self._payload = payload
            self.received += 1
            self._number = self.received
            self._condition.notify()
        elapsed = time.perf_counter() - start
        self.put_seconds += _SMOOTHING * (elapsed - self.put_seconds) if self.received > 1 \
            else elapsed

    def take(self, timeout):
        """The newest frame as ``Taken`` (then the slot is empty), or None after ``timeout``
        seconds."""
        with self._condition:
            if self._payload is None:
                self._condition.wait(timeout)
            if self._payload is None:
                return None
            taken, self._payload = Taken(self._payload, self._number), None
            return taken
