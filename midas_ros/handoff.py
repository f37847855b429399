"""One background worker taking jobs one at a time: the second stage of a two-stage pipeline.

depth_node infers frame N+1 in its main thread while this worker turns frame N into metric
depth, colour map, cloud and messages and publishes them. On 2 cores the network (ONNX Runtime,
torch) leaves part of the CPU idle at its synchronization points and the outputs (numpy,
message building, serialization) are mostly single-threaded: overlapping them raises the frame
rate without adding latency to a frame. ``submit`` blocks while the previous job still runs, so
at most one frame is in each stage and the newest camera frame is the next one taken.

ROS-free; the standard library's executors queue jobs without bound, which is the backlog
this must not build, hence this small class.
"""
import threading


class Handoff:
    """Runs ``submit``ted callables one at a time in thread ``name``.

    Exceptions are the job's business: wrap them (depth_node counts and logs them); one that
    escapes is passed to ``on_error`` and the worker keeps going.
    """

    def __init__(self, name, on_error=None):
        self._condition = threading.Condition()
        self._job = None
        self._busy = False
        self._closed = False
        self._on_error = on_error
        self._thread = threading.Thread(target=self._work, name=name, daemon=True)
        self._thread.start()

    def submit(self, function, *args):
        """Run ``function(*args)`` in the worker once the previous job has finished.

        Returns False (nothing submitted) after ``close``.
        """
        with self._condition:
            self._condition.wait_for(lambda: not self._busy or self._closed)
            if self._closed:
                return False
            self._job, self._busy = (function, args), True
            self._condition.notify_all()
            return True

    def wait_idle(self, timeout=None):
        """True once no job runs or waits (False after ``timeout`` seconds)."""
        with self._condition:
            return self._condition.wait_for(lambda: not self._busy, timeout)

    def close(self, timeout=5.0):
        """Let the running job finish (up to ``timeout`` s), then stop the worker."""
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join(timeout)

    def _work(self):
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._job is not None or self._closed)
                if self._job is None:
                    return
                function, args = self._job
            try:
                function(*args)
            except Exception as error:   # the worker must outlive any one job
                if self._on_error is not None:
                    self._on_error(error)
            finally:
                with self._condition:
                    self._job, self._busy = None, False
                    self._condition.notify_all()
