"""The Segment action's goal flow, beside the topic queries that share the node's one worker.

A goal is accepted whenever the node is active (a full queue answers it DROPPED, with the
reason, rather than a bare rejection) and queued as a job like a topic query. Its execute
callback runs on an executor thread from the moment the worker takes the job (or at once, for a
goal that ended without running: dropped, cancelled while queued) until the job's outcome is
there; the terminal state follows the result: OK and NOT_FOUND (the request was served, the
answer is "no such object in view") succeed, a client's cancel is CANCELED, every other status
(a failure) ABORTED. Feedback: the queue position while waiting (updated whenever a job
starts), the reasoning streamed while the model thinks (at most every FEEDBACK_MIN_PERIOD s),
then "segmenting".
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from action_msgs.msg import GoalStatus
from rclpy.action import CancelResponse, GoalResponse

from segzero_ros.action import Segment
from segzero_ros.inputs import Request
from segzero_ros.progress import QUEUED, REASONING, SEGMENTING, ReasoningStream
from segzero_ros.worker import Job, Worker

FEEDBACK_MIN_PERIOD = 0.05  # at most ~20 feedback messages per second per goal
RESULT_WAIT_TIMEOUT = 2.0  # seconds deactivate waits for ended goals to send their results


@dataclass(frozen=True)
class GoalServices:
    """What the goal flow uses of the node: no node object, so it is built and tested alone."""

    action_server: Callable[..., Any]  # rclpy.action.ActionServer with the node bound
    context_ok: Callable[[], bool]  # False once the ROS context shuts down
    submit: Callable[[Request], None]  # queue a request as a job
    worker: Callable[[], Worker | None]  # the node's worker (None while unconfigured)
    accepting: Callable[[], bool]  # the node is active
    error_result: Callable[[Request, str], Any]  # an ERROR result message for a request


class SegmentGoals:
    """The action server and its goals' bookkeeping; the node calls `start`/`stop` at
    activate/deactivate and `started`/`resolved` from the worker's side."""

    def __init__(self, services: GoalServices):
        self._services = services
        self._submit = services.submit
        self._worker = services.worker
        self._server = None  # the ActionServer while active
        self._open: set[str] = set()  # goals whose execute callback has not returned

    def start(self, name: str, callback_group) -> None:
        self._server = self._services.action_server(
            Segment,
            name,
            execute_callback=self._execute,
            goal_callback=self._goal_cb,
            handle_accepted_callback=self._accepted_cb,
            cancel_callback=self._cancel_cb,
            callback_group=callback_group,
        )

    def stop(self) -> None:
        """Destroy the server, once the goals that just ended have sent their results."""
        if self._server is None:
            return
        self._wait_results_sent()
        self._server.destroy()
        self._server = None

    # -- callbacks (executor threads)

    def _goal_cb(self, goal) -> GoalResponse:
        return GoalResponse.ACCEPT if self._services.accepting() else GoalResponse.REJECT

    def _accepted_cb(self, goal_handle) -> None:
        goal = goal_handle.request
        request = Request(
            query=goal.query,
            query_id=bytes(goal_handle.goal_id.uuid).hex(),
            image=goal.image if goal.image.height > 0 else None,
            goal_handle=goal_handle,
        )
        self._open.add(request.query_id)
        worker = self._worker()
        ahead = (worker.depth + int(worker.busy)) if worker is not None else 0
        self.feedback(request, QUEUED, "", ahead)
        self._submit(request)

    def _cancel_cb(self, goal_handle) -> CancelResponse:
        job_id = bytes(goal_handle.goal_id.uuid).hex()
        worker = self._worker()
        job = worker.find(job_id) if worker is not None else None
        if job is None:  # finished meanwhile (or never queued)
            return CancelResponse.REJECT
        job.payload.client_cancelled = True
        worker.cancel(job_id)
        return CancelResponse.ACCEPT

    def _execute(self, goal_handle, job: Job | None = None) -> Segment.Result:
        """Runs on an executor thread until the job's outcome is there."""
        try:
            return self._finish(goal_handle, job)
        finally:
            if job is not None:
                self._open.discard(job.id)

    def _finish(self, goal_handle, job: Job | None) -> Segment.Result:
        if job is None:  # the server's default callback: never used, every goal gets its job
            goal_handle.abort()
            return Segment.Result()
        while not job.wait(0.5):
            if not self._services.context_ok():
                break
        answer = job.outcome  # a worker.Answer
        msg = (
            answer.msg
            if answer is not None
            else self._services.error_result(job.payload, "no result")
        )
        if msg.status == msg.CANCELLED and job.payload.client_cancelled:
            # The cancel request becomes CANCELING just after our cancel callback returns.
            deadline = time.monotonic() + 1.0
            while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
                time.sleep(0.005)
        if goal_handle.is_active:
            if msg.status in (msg.OK, msg.NOT_FOUND):  # served; NOT_FOUND: "not in view"
                goal_handle.succeed()
            elif goal_handle.status == GoalStatus.STATUS_CANCELING:
                goal_handle.canceled()
            else:
                goal_handle.abort()
        return Segment.Result(result=msg)

    # -- the worker's side

    def started(self, job: Job) -> None:
        """The worker took `job`: a goal starts executing; every waiting goal learns its new
        queue position."""
        request: Request = job.payload
        if request.goal_handle is not None:
            self._begin_execute(job)
            self.feedback(request, REASONING, "", 0)
        worker = self._worker()
        if worker is not None:
            for position, queued in enumerate(worker.queued(), start=1):
                self.feedback(queued.payload, QUEUED, "", position)

    def resolved(self, job: Job) -> None:
        """`job` has its outcome: a goal that never ran gets its execute callback now."""
        if job.payload.goal_handle is not None and not job.payload.executing:
            self._begin_execute(job)

    def streamer(self, request: Request) -> Callable[[str], None] | None:
        """The pipeline's `on_text` for a goal: throttled reasoning feedback (None for topic
        queries, which have no feedback)."""
        if request.goal_handle is None:
            return None
        stream = ReasoningStream(FEEDBACK_MIN_PERIOD)

        def on_text(chunk: str) -> None:
            progress = stream.add(chunk)
            if progress is not None:
                self.feedback(request, progress.stage, progress.reasoning, 0)

        return on_text

    def segmenting(self, request: Request, reasoning: str) -> None:
        self.feedback(request, SEGMENTING, reasoning, 0)

    def feedback(self, request: Request, stage: str, reasoning: str, position: int) -> None:
        if request.goal_handle is None:
            return
        feedback = Segment.Feedback(stage=stage, reasoning=reasoning, queue_position=position)
        request.goal_handle.publish_feedback(feedback)

    def _begin_execute(self, job: Job) -> None:
        job.payload.executing = True
        job.payload.goal_handle.execute(functools.partial(self._execute, job=job))

    def _wait_results_sent(self) -> None:
        """Give the goals that just ended a moment to reach their terminal state and send
        their results (executor tasks) before the action server goes."""
        if not self._open or not self._services.context_ok():
            return
        deadline = time.monotonic() + RESULT_WAIT_TIMEOUT
        while self._open and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
