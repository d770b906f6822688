"""The bounded worker that serves the node's jobs: real threads, plain Python handlers, no ROS."""

from __future__ import annotations

import threading
import time

import pytest

from segzero_model.result import Status
from segzero_ros.worker import Job, Worker

TIMEOUT = 5.0


class Recorder:
    """Outcomes in the order they were delivered, and a way to wait for them."""

    def __init__(self):
        self.outcomes: list[tuple[str, object]] = []
        self._condition = threading.Condition()

    def __call__(self, job, outcome):
        with self._condition:
            self.outcomes.append((job.id, outcome))
            self._condition.notify_all()

    def wait_for(self, count: int, timeout: float = TIMEOUT) -> list[tuple[str, object]]:
        with self._condition:
            assert self._condition.wait_for(lambda: len(self.outcomes) >= count, timeout), (
                f"got {len(self.outcomes)} of {count} outcomes: {self.outcomes}"
            )
            return list(self.outcomes)


def failure(job, kind, reason):
    return (kind, reason)


class Gate:
    """A handler that blocks on a named job until released, so tests control timing."""

    def __init__(self):
        self.started: list[str] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, job):
        self.started.append(job.id)
        if job.payload == "block":
            self.entered.set()
            while not self.release.wait(0.01):
                if job.cancel.is_set():
                    return ("handled-cancelled", job.id)
        if job.payload == "raise":
            raise RuntimeError(f"handler failed on {job.id}")
        return ("done", job.payload)


@pytest.fixture()
def gate():
    return Gate()


@pytest.fixture()
def worker(gate):
    w = Worker(gate, failure, maxsize=3)
    w.start()
    yield w
    gate.release.set()
    assert w.stop(timeout=TIMEOUT)
    assert not w.alive


def test_jobs_are_served_in_order(worker, gate):
    recorder = Recorder()
    for i in range(3):
        assert worker.submit(Job(f"j{i}", i, recorder))
    outcomes = recorder.wait_for(3)
    assert outcomes == [("j0", ("done", 0)), ("j1", ("done", 1)), ("j2", ("done", 2))]
    assert gate.started == ["j0", "j1", "j2"]
    assert worker.wait_idle(TIMEOUT) and worker.depth == 0 and not worker.busy


def test_full_queue_drops_at_once_with_an_outcome(worker, gate):
    recorder = Recorder()
    worker.submit(Job("running", "block", recorder))
    assert gate.entered.wait(TIMEOUT)
    for i in range(3):
        assert worker.submit(Job(f"q{i}", i, recorder))
    assert not worker.submit(Job("extra", 99, recorder))
    kind, reason = recorder.wait_for(1)[0][1]
    assert recorder.outcomes[0][0] == "extra" and kind is Status.DROPPED
    assert "queue is full (3 of 3 waiting)" in reason
    assert worker.depth == 3
    assert [worker.position(f"q{i}") for i in range(3)] == [1, 2, 3]
    assert worker.position("running") == 0 and worker.position("nope") is None

    gate.release.set()
    outcomes = dict(recorder.wait_for(5))
    assert outcomes["running"] == ("done", "block")
    assert [outcomes[f"q{i}"] for i in range(3)] == [("done", i) for i in range(3)]
    assert "extra" not in gate.started


def test_cancel_a_queued_job_answers_it_without_running(worker, gate):
    recorder = Recorder()
    worker.submit(Job("running", "block", recorder))
    assert gate.entered.wait(TIMEOUT)
    worker.submit(Job("a", 1, recorder))
    worker.submit(Job("b", 2, recorder))
    assert worker.cancel("a")
    assert recorder.wait_for(1)[0] == ("a", (Status.CANCELLED, "cancelled while queued"))
    assert worker.position("b") == 1
    assert not worker.cancel("unknown")
    gate.release.set()
    outcomes = recorder.wait_for(3)
    assert [job_id for job_id, _ in outcomes] == ["a", "running", "b"]
    assert "a" not in gate.started


def test_cancel_the_running_job_sets_its_event(worker, gate):
    recorder = Recorder()
    job = Job("running", "block", recorder)
    worker.submit(job)
    assert gate.entered.wait(TIMEOUT)
    assert worker.find("running") is job and worker.running is job
    assert worker.cancel("running")
    assert recorder.wait_for(1) == [("running", ("handled-cancelled", "running"))]
    assert job.cancel.is_set() and job.done and job.outcome == ("handled-cancelled", "running")


def test_handler_exception_becomes_an_error_outcome_and_the_loop_goes_on(worker, gate):
    recorder = Recorder()
    worker.submit(Job("bad", "raise", recorder))
    worker.submit(Job("good", 5, recorder))
    outcomes = recorder.wait_for(2)
    assert outcomes[0] == ("bad", (Status.ERROR, "RuntimeError: handler failed on bad"))
    assert outcomes[1] == ("good", ("done", 5))
    assert worker.alive


def test_each_job_gets_exactly_one_outcome():
    calls = []
    job = Job("x", None, lambda j, outcome: calls.append(outcome))
    assert job.resolve("first")
    assert not job.resolve("second")
    assert calls == ["first"] and job.outcome == "first" and job.wait(0)


def test_a_failing_respond_callback_does_not_stop_the_worker(gate):
    def broken(job, outcome):
        raise ValueError("subscriber gone")

    worker = Worker(gate, failure, maxsize=2)
    worker.start()
    try:
        worker.submit(Job("a", 1, broken))
        recorder = Recorder()
        worker.submit(Job("b", 2, recorder))
        assert recorder.wait_for(1) == [("b", ("done", 2))]
    finally:
        assert worker.stop(timeout=TIMEOUT)


def test_a_failing_fail_callback_still_resolves_the_job(gate):
    def broken_fail(job, kind, reason):
        raise KeyError(kind)

    worker = Worker(gate, broken_fail, maxsize=1)
    worker.start()
    try:
        recorder = Recorder()
        worker.submit(Job("bad", "raise", recorder))
        assert recorder.wait_for(1) == [("bad", None)]
    finally:
        assert worker.stop(timeout=TIMEOUT)


def test_drain_cancels_everything_and_resume_accepts_again(worker, gate):
    recorder = Recorder()
    worker.submit(Job("running", "block", recorder))
    assert gate.entered.wait(TIMEOUT)
    worker.submit(Job("queued", 1, recorder))
    assert worker.drain("deactivated", timeout=TIMEOUT)
    outcomes = dict(recorder.wait_for(2))
    assert outcomes["queued"] == (Status.CANCELLED, "deactivated")
    assert outcomes["running"] == ("handled-cancelled", "running")
    assert not worker.submit(Job("late", 2, recorder))
    assert dict(recorder.wait_for(3))["late"] == (Status.DROPPED, "the node is not active")
    worker.resume()
    worker.submit(Job("again", 3, recorder))
    assert dict(recorder.wait_for(4))["again"] == ("done", 3)


def test_start_without_accepting_and_stop_joins_the_thread(gate):
    worker = Worker(gate, failure, maxsize=1)
    worker.start(accept=False)
    recorder = Recorder()
    assert not worker.submit(Job("early", 1, recorder))
    assert recorder.wait_for(1)[0][1][0] is Status.DROPPED
    assert worker.alive
    assert worker.stop(timeout=TIMEOUT) and not worker.alive
    worker.start()  # restartable
    worker.submit(Job("after", 2, recorder))
    assert dict(recorder.wait_for(2))["after"] == ("done", 2)
    assert worker.stop(timeout=TIMEOUT)


def test_a_flood_stays_bounded():
    served = []

    def slow(job):
        time.sleep(0.002)
        served.append(job.id)
        return "ok"

    worker = Worker(slow, failure, maxsize=4)
    worker.start()
    recorder = Recorder()
    try:
        max_depth = 0
        for i in range(300):
            worker.submit(Job(str(i), i, recorder))
            max_depth = max(max_depth, worker.depth)
        outcomes = recorder.wait_for(300)
    finally:
        assert worker.stop(timeout=TIMEOUT)
    assert max_depth <= 4
    dropped = [o for _, o in outcomes if o != "ok"]
    # the first 4 always fit; how many more are served depends on thread scheduling
    assert len(served) + len(dropped) == 300 and len(served) >= 4
    assert all(kind is Status.DROPPED for kind, _ in dropped)
    assert len({job_id for job_id, _ in outcomes}) == 300


def test_worker_rejects_a_zero_size_queue():
    with pytest.raises(ValueError, match="maxsize must be at least 1, got 0"):
        Worker(lambda job: None, failure, maxsize=0)


def test_pending_while_a_job_runs_or_waits(gate):
    """What the tracking loop yields to: a job running, or waiting that the thread has not
    taken yet (here the worker accepts but is not started, so the job waits until it is)."""
    recorder = Recorder()
    w = Worker(gate, failure, maxsize=3)
    assert not w.pending
    w.resume()
    assert w.submit(Job("a", "block", recorder))
    assert w.pending and (w.busy, w.depth) == (False, 1)  # waits
    w.start()
    assert gate.entered.wait(TIMEOUT)
    assert w.pending and (w.busy, w.depth) == (True, 0)  # runs
    gate.release.set()
    recorder.wait_for(1)
    assert w.wait_idle(TIMEOUT) and not w.pending
    assert w.stop(timeout=TIMEOUT)
