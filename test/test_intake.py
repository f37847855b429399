"""Frame intake of one camera: the newest serialized frame waits, older ones are dropped and
counted (FairScheduler with one camera, as depth_node runs a single camera)."""
import threading

from midas_ros.frame_scheduler import FairScheduler, Waiting


def test_newest_frame_wins_and_drops_are_counted():
    mailbox = FairScheduler(['camera'])
    for payload in (b'a', b'b', b'c'):
        mailbox.put('camera', payload)
    assert mailbox.take(timeout=0.0) == [Waiting('camera', b'c', 3)]   # payload, arrival number
    received, dropped, _, put_seconds = mailbox.counts('camera')
    assert (received, dropped) == (3, 2)
    assert mailbox.take(timeout=0.01) == []      # taken: the slot is empty
    mailbox.put('camera', b'd')
    assert mailbox.take(timeout=0.0) == [Waiting('camera', b'd', 4)]
    assert mailbox.counts('camera')[1] == 2
    assert put_seconds >= 0.0


def test_take_wakes_when_a_frame_arrives():
    mailbox = FairScheduler(['camera'])
    timer = threading.Timer(0.05, mailbox.put, args=('camera', b'frame'))
    timer.start()
    try:
        assert mailbox.take(timeout=10.0)[0].payload == b'frame'
    finally:
        timer.cancel()


def test_frames_taken_by_several_threads_keep_their_arrival_order():
    mailbox = FairScheduler(['camera'])
    taken = []
    takers = [threading.Thread(target=lambda: taken.extend(mailbox.take(timeout=10.0)))
              for _ in range(2)]
    for taker in takers:
        taker.start()
    for number, payload in enumerate((b'first', b'second'), start=1):
        mailbox.put('camera', payload)
        while mailbox.counts('camera')[2] < number:   # let a taker have it before the next one
            threading.Event().wait(0.001)
    for taker in takers:
        taker.join(10.0)
    assert sorted(taken, key=lambda frame: frame.number) == [
        Waiting('camera', b'first', 1), Waiting('camera', b'second', 2)]
