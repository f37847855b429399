"""FairScheduler (ROS-free): newest frame per camera, cameras in turn, caps, batches."""
import threading
import time

import pytest

from midas_ros.frame_scheduler import FairScheduler


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def shares(scheduler, cameras, takes):
    """Every camera puts a frame before each take (all faster than the network)."""
    counts = dict.fromkeys(cameras, 0)
    for step in range(takes):
        for camera in cameras:
            scheduler.put(camera, step)
        for waiting in scheduler.take(0.0):
            counts[waiting.camera] += 1
    return counts


def test_each_camera_keeps_only_its_newest_frame():
    scheduler = FairScheduler(['front', 'rear'])
    for payload in range(5):
        scheduler.put('front', payload)
    taken = scheduler.take(0.0)
    assert [(w.camera, w.payload, w.number) for w in taken] == [('front', 4, 5)]
    assert scheduler.counts('front')[:3] == (5, 4, 1)
    assert scheduler.take(0.0) == []


def test_cameras_faster_than_the_network_share_it_equally():
    cameras = ['front', 'rear', 'left']
    counts = shares(FairScheduler(cameras), cameras, 300)
    assert counts == dict.fromkeys(cameras, 100)


def test_a_stopped_camera_frees_its_share_at_once():
    scheduler = FairScheduler(['front', 'rear'])
    shares(scheduler, ['front', 'rear'], 10)
    # rear stops: every take goes to front from the very next one.
    assert shares(scheduler, ['front'], 10) == {'front': 10}


def test_max_rate_caps_one_camera_and_gives_the_rest_to_the_others():
    clock = Clock()
    scheduler = FairScheduler(['front', 'rear'], clock=clock)
    scheduler.set_max_rate('rear', 2.0)
    counts = {'front': 0, 'rear': 0}
    for _ in range(200):            # 10 s of a 20 Hz network, both cameras at 30 Hz
        scheduler.put('front', 0)
        scheduler.put('rear', 0)
        for waiting in scheduler.take(0.0):
            counts[waiting.camera] += 1
        clock.now += 0.05
    assert counts['rear'] == 20     # 2 Hz for 10 s
    assert counts['front'] == 180
    with pytest.raises(ValueError, match='max_rate'):
        scheduler.set_max_rate('rear', -1.0)


def test_frames_of_one_group_waiting_together_are_one_batch_and_no_camera_starves():
    scheduler = FairScheduler(['a', 'b', 'c'])
    scheduler.set_group('a', (64, 48))
    scheduler.set_group('b', (32, 24))
    scheduler.set_group('c', (64, 48))
    taken_by = []
    for _ in range(6):
        for camera in 'abc':
            scheduler.put(camera, camera)
        taken_by.append(sorted(w.camera for w in scheduler.take(0.0, max_batch=4)))
    assert taken_by[0] == ['a', 'c']            # the two 64x48 cameras together
    assert ['b'] in taken_by[:2]                # b, passed over, is served next
    assert sum(len(batch) for batch in taken_by) >= 9


def test_take_waits_for_a_put_from_another_thread():
    scheduler = FairScheduler(['front'])
    timer = threading.Timer(0.05, scheduler.put, ('front', 'frame'))
    timer.start()
    start = time.monotonic()
    taken = scheduler.take(2.0)
    assert [w.payload for w in taken] == ['frame']
    assert time.monotonic() - start < 1.0
    assert scheduler.take(0.01) == []


def test_clear_drops_waiting_frames_and_names_must_be_distinct():
    scheduler = FairScheduler(['front', 'rear'])
    scheduler.put('front', 1)
    scheduler.clear()
    assert scheduler.take(0.0) == [] and scheduler.counts('front')[1] == 1
    with pytest.raises(ValueError, match='distinct'):
        FairScheduler(['front', 'front'])
