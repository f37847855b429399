"""Frame intake: the newest serialized frame waits, older ones are dropped and counted."""
import threading

from midas_ros.intake import LatestFrame


def test_newest_frame_wins_and_drops_are_counted():
    mailbox = LatestFrame()
    for payload in (b'a', b'b', b'c'):
        mailbox.put(payload)
    assert mailbox.take(timeout=0.0) == b'c'
    assert (mailbox.received, mailbox.dropped) == (3, 2)
    assert mailbox.take(timeout=0.01) is None      # taken: the slot is empty
    mailbox.put(b'd')
    assert mailbox.take(timeout=0.0) == b'd' and mailbox.dropped == 2
    assert mailbox.put_seconds >= 0.0


def test_take_wakes_when_a_frame_arrives():
    mailbox = LatestFrame()
    timer = threading.Timer(0.05, mailbox.put, args=(b'frame',))
    timer.start()
    try:
        assert mailbox.take(timeout=10.0) == b'frame'
    finally:
        timer.cancel()
