"""Rate-limited warnings that still say every distinct problem.

rclpy's ``throttle_duration_sec`` throttles per call site, so after a bad encoding a
different problem (a truncated image, say) arriving within the period would go unreported.
Here the throttle key is the message with its numbers removed: each kind of problem is logged
at most once per period, and the next report says how many were suppressed meanwhile.
"""
import re
import time

_NUMBERS = re.compile(r'[-+]?\d[\d.e+-]*')


class ThrottledLog:
    """``warning(text)`` / ``error(text)`` at most once per ``period_s`` for each kind of text."""

    def __init__(self, logger, period_s=5.0, clock=time.monotonic):
        self._logger = logger
        self._period_s = period_s
        self._clock = clock
        self._last = {}        # key -> time of the last report
        self._suppressed = {}  # key -> count since then

    def _emit(self, log, text):
        key = (log.__name__, _NUMBERS.sub('#', text))
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._period_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        suppressed = self._suppressed.pop(key, 0)
        self._last[key] = now
        log(text + (f' ({suppressed} similar suppressed)' if suppressed else ''))
        return True

    def warning(self, text):
        return self._emit(self._logger.warning, text)

    def error(self, text):
        return self._emit(self._logger.error, text)
