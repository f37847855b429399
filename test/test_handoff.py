"""The two-stage handoff: one job at a time in the worker, submit waits, errors contained."""
import threading
import time

from midas_ros.handoff import Handoff


def test_jobs_run_in_order_one_at_a_time_in_the_worker():
    ran, threads, running = [], set(), []
    lock = threading.Lock()

    def job(index):
        with lock:
            running.append(index)
            assert len(running) == 1          # never two at once
        threads.add(threading.current_thread().name)
        time.sleep(0.01)
        ran.append(index)
        with lock:
            running.remove(index)
    stage = Handoff('test_stage')
    try:
        for index in range(5):
            assert stage.submit(job, index)
        assert stage.wait_idle(timeout=10)
    finally:
        stage.close()
    assert ran == [0, 1, 2, 3, 4] and threads == {'test_stage'}
    assert not stage.submit(job, 5)           # closed


def test_submit_waits_for_the_previous_job():
    release = threading.Event()
    stage = Handoff('test_wait')
    try:
        stage.submit(release.wait, 10)
        submitted = threading.Event()
        waiter = threading.Thread(target=lambda: (stage.submit(lambda: None), submitted.set()))
        waiter.start()
        assert not submitted.wait(0.1)        # blocked behind the running job
        release.set()
        assert submitted.wait(10)
        waiter.join()
    finally:
        stage.close()


def test_an_escaping_error_is_reported_and_the_worker_goes_on():
    errors, ran = [], []
    stage = Handoff('test_errors', on_error=errors.append)
    try:
        stage.submit(lambda: 1 / 0)
        stage.submit(ran.append, 'after')
        assert stage.wait_idle(timeout=10)
    finally:
        stage.close()
    assert isinstance(errors[0], ZeroDivisionError) and ran == ['after']
