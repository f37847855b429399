"""Frame intake: the newest serialized frame waits, older ones are dropped and counted."""
import threading

from midas_ros.intake import LatestFrame


def test_newest_frame_wins_and_drops_are_counted():
    mailbox = LatestFrame()
    for payload in (b'a', b'b', b'c'):
        mailbox.put(payload)
    assert mailbox.take(timeout=0.0) == (b'c', 3)    # payload, arrival number
    assert (mailbox.received, mailbox.dropped) == (3, 2)
    assert mailbox.take(timeout=0.01) is None      # taken: the slot is empty
    mailbox.put(b'd')
    assert mailbox.take(timeout=0.0) == (b'd', 4) and mailbox.dropped == 2
    assert mailbox.put_seconds >= 0.0


def test_take_wakes_when_a_frame_arrives():
    mailbox = LatestFrame()
    timer = threading.Timer(0.05, mailbox.put, args=(b'frame',))
    timer.start()
    try:
        assert mailbox.take(timeout=10.0).payload == b'frame'
    finally:
        timer.cancel()


def test_frames_taken_by_several_threads_keep_their_arrival_order():
    mailbox = LatestFrame()
    taken = []
    takers = [threading.Thread(target=lambda: taken.append(mailbox.take(timeout=10.0)))
              for _ in range(2)]
    for taker in takers:
        taker.start()
    for payload in (b'first', b'second'):
        mailbox.put(payload)
        while mailbox._payload is not None:      # let a taker have it before the next one
            threading.Event().wait(0.001)
    for taker in takers:
        taker.join(10.0)
    assert sorted(taken, key=lambda frame: frame.number) == [(b'first', 1), (b'second', 2)]
