"""One worker thread serving jobs in order from a bounded queue (no rclpy here).

The node puts every request (topic query or action goal) into one `Worker`. The worker thread
takes the oldest job, runs the handler on it and hands the outcome to the job's `respond`
callback. Every job gets exactly one outcome, whatever happens:

- handled: whatever the handler returned;
- the queue is full when it is submitted: `fail(job, Status.DROPPED, ...)`, at once;
- cancelled while queued: `fail(job, Status.CANCELLED, ...)`, at once, without running;
- the handler raises: `fail(job, Status.ERROR, ...)` and one log line; the loop goes on;
- the worker stops (node deactivated) with jobs still queued: `fail(job, Status.CANCELLED, ...)`.

A running job is cancelled through its `cancel` event, which the handler passes on (to the
pipeline's generation loop); it then ends with whatever the handler returns.

`pending` (a job runs or waits) is what the tracking loop yields to: queries have priority.
The node's outcome is an `Answer`, a frozen value, since it crosses from the worker thread to
whichever thread publishes it.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from segzero_model.result import SegmentationResult, Status

if TYPE_CHECKING:
    import numpy as np

    from segzero_model.spatial.depth import ObjectGeometry

logger = logging.getLogger(__name__)

R = TypeVar("R")


@dataclass(frozen=True)
class Answer:
    """The outcome of one node job: the result message and, for a query the model answered,
    what the image outputs after it are drawn from (None for a failure before the model)."""

    msg: Any  # segzero_ros/SegmentationResult
    result: SegmentationResult | None = None
    rgb: np.ndarray | None = None  # the image it was answered on
    geometries: tuple[ObjectGeometry, ...] | None = None  # one per object (3D stage), when OK


class Job(Generic[R]):
    """One request: an id, what the handler needs (`payload`), a cancel event and the callback
    that receives its one outcome."""

    def __init__(self, job_id: str, payload: Any, respond: Callable[[Job[R], R], None]):
        self.id = job_id
        self.payload = payload
        self.cancel = threading.Event()
        self.submitted = time.monotonic()
        self.started: float | None = None  # monotonic time the handler began
        self._respond = respond
        self._lock = threading.Lock()
        self._outcome: R | None = None
        self._resolved = threading.Event()

    @property
    def done(self) -> bool:
        return self._resolved.is_set()

    @property
    def outcome(self) -> R | None:
        return self._outcome

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the job has its outcome; False on timeout."""
        return self._resolved.wait(timeout)

    def resolve(self, outcome: R) -> bool:
        """Deliver `outcome` unless the job already has one; True when this call delivered.
        A `respond` callback that raises is logged, never propagated."""
        with self._lock:
            if self._resolved.is_set():
                return False
            self._outcome = outcome
            self._resolved.set()
        try:
            self._respond(self, outcome)
        except Exception as error:  # noqa: BLE001 - a broken callback must not stop the worker
            logger.error("delivering the outcome of job %s failed: %r", self.id, error)
        return True

    def __repr__(self) -> str:
        return f"Job({self.id!r}, done={self.done})"


class Worker(Generic[R]):
    """Serves jobs one at a time, oldest first, on its own thread.

    `handler(job)` computes the outcome of a job; `fail(job, status, reason)` builds the outcome
    for a job that was dropped, cancelled while queued or whose handler raised (status is
    Status.DROPPED, Status.CANCELLED or Status.ERROR). At most `maxsize` jobs wait; the running
    one is not counted.
    """

    def __init__(
        self,
        handler: Callable[[Job[R]], R],
        fail: Callable[[Job[R], Status, str], R],
        maxsize: int,
        *,
        name: str = "segzero-worker",
    ):
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._handler = handler
        self._fail = fail
        self.maxsize = maxsize
        self._name = name
        self._queue: collections.deque[Job[R]] = collections.deque()
        self._running: Job[R] | None = None
        self._condition = threading.Condition()
        self._accepting = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ life cycle

    def start(self, accept: bool = True) -> None:
        """Start the thread (again, after `stop`); with `accept` False, jobs are DROPPED until
        `resume`."""
        with self._condition:
            self._accepting = accept
            if self._thread is not None and self._thread.is_alive():
                return
            self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
            self._thread.start()

    def drain(self, reason: str = "the worker stopped", timeout: float | None = None) -> bool:
        """Refuse new jobs (DROPPED), answer queued ones CANCELLED, cancel the running one and
        wait up to `timeout` for it to end. The thread stays up: `resume` accepts jobs again.
        Returns True when the worker is idle."""
        with self._condition:
            self._accepting = False
            queued = list(self._queue)
            self._queue.clear()
            running = self._running
            if running is not None:
                running.cancel.set()
            self._condition.notify_all()
        for job in queued:
            self._resolve_failed(job, Status.CANCELLED, reason)
        return self.wait_idle(timeout)

    def resume(self) -> None:
        """Accept jobs again after `drain`."""
        with self._condition:
            self._accepting = True

    def stop(self, reason: str = "the worker stopped", timeout: float | None = None) -> bool:
        """`drain`, then end and join the thread; True when it ended within `timeout`."""
        self.drain(reason, timeout)
        with self._condition:
            thread, self._thread = self._thread, None
            self._condition.notify_all()
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    @property
    def alive(self) -> bool:
        thread = self._thread
        return thread is not None and thread.is_alive()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued or running; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._condition:
            while self._queue or self._running is not None:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._condition.wait(remaining)
        return True

    # ------------------------------------------------------------------ jobs

    def submit(self, job: Job[R]) -> bool:
        """Queue `job`; when it does not fit (or the worker is not accepting), answer it
        DROPPED at once and return False."""
        with self._condition:
            accepted = self._accepting and len(self._queue) < self.maxsize
            if accepted:
                self._queue.append(job)
                self._condition.notify_all()
            depth = len(self._queue)
        if not accepted:
            why = (
                f"the queue is full ({depth} of {self.maxsize} waiting)"
                if self._accepting
                else "the node is not active"
            )
            self._resolve_failed(job, Status.DROPPED, why)
        return accepted

    def cancel(self, job_id: str) -> bool:
        """Cancel a queued job (answered CANCELLED at once, never run) or signal the running
        one through its cancel event. False when no such job is queued or running."""
        with self._condition:
            queued = next((job for job in self._queue if job.id == job_id), None)
            if queued is not None:
                self._queue.remove(queued)
                self._condition.notify_all()
            elif self._running is not None and self._running.id == job_id:
                self._running.cancel.set()
                return True
            else:
                return False
        queued.cancel.set()
        self._resolve_failed(queued, Status.CANCELLED, "cancelled while queued")
        return True

    def position(self, job_id: str) -> int | None:
        """Jobs ahead of `job_id` (the running one included); 0 while it runs, None if unknown."""
        with self._condition:
            if self._running is not None and self._running.id == job_id:
                return 0
            ahead = 1 if self._running is not None else 0
            for index, job in enumerate(self._queue):
                if job.id == job_id:
                    return ahead + index
        return None

    def find(self, job_id: str) -> Job[R] | None:
        """The queued or running job with this id, if any."""
        with self._condition:
            if self._running is not None and self._running.id == job_id:
                return self._running
            return next((job for job in self._queue if job.id == job_id), None)

    @property
    def running(self) -> Job[R] | None:
        with self._condition:
            return self._running

    def queued(self) -> list[Job[R]]:
        """A snapshot of the waiting jobs, oldest first."""
        with self._condition:
            return list(self._queue)

    @property
    def depth(self) -> int:
        """Jobs waiting (the running one not counted)."""
        with self._condition:
            return len(self._queue)

    @property
    def busy(self) -> bool:
        with self._condition:
            return self._running is not None

    @property
    def pending(self) -> bool:
        """A job runs or waits (read under one lock: a job moving from the queue to running is
        never missed). While it is true the tracking loop takes no frame."""
        with self._condition:
            return self._running is not None or len(self._queue) > 0

    # ------------------------------------------------------------------ the thread

    def _loop(self) -> None:
        me = threading.current_thread()
        while True:
            with self._condition:
                while not self._queue and self._thread is me:
                    self._condition.wait()
                if self._thread is not me:
                    return
                job = self._queue.popleft()
                self._running = job
            try:
                self._serve(job)
            finally:
                with self._condition:
                    self._running = None
                    self._condition.notify_all()

    def _serve(self, job: Job[R]) -> None:
        if job.cancel.is_set():
            self._resolve_failed(job, Status.CANCELLED, "cancelled while queued")
            return
        job.started = time.monotonic()
        try:
            outcome = self._handler(job)
        except Exception as error:  # noqa: BLE001 - one bad job must not stop the worker
            reason = f"{type(error).__name__}: {error}"
            logger.error("job %s failed: %s", job.id, reason)
            logger.debug("job %s traceback", job.id, exc_info=True)
            self._resolve_failed(job, Status.ERROR, reason)
            return
        job.resolve(outcome)

    def _resolve_failed(self, job: Job[R], status: Status, reason: str) -> None:
        try:
            outcome = self._fail(job, status, reason)
        except Exception as error:  # noqa: BLE001 - never leave a job without an outcome
            logger.error("building the %s outcome of job %s failed: %r", status.name, job.id, error)
            outcome = None
        job.resolve(outcome)
