"""The Seg-Zero perception node: camera frames and text queries in, one SegmentationResult
(plus mask, reasoning and overlay images on standard types) out per query; an action server
for callers that want feedback and cancellation. See the README (The ROS 2 perception node).

    segzero-perception [--params-file config/perception.yaml] [--tiny] [--ros-args ...]

Threading: subscription and action callbacks only store the newest camera message or queue a
job; ONE worker thread (segzero_ros.worker) answers the jobs in order, each on the newest frame
at the time it is taken. Spin the node with a MultiThreadedExecutor (main() does): the running
action goal keeps one executor thread waiting for its result.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import itertools
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import rclpy
from action_msgs.msg import GoalStatus
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.exceptions import InvalidHandle, ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, String

from segzero_model.pipeline import validate_query
from segzero_model.result import SegmentationResult, Status
from segzero_ros.action import Segment
from segzero_ros.convert import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    result_to_msg,
    rgb_to_image_msg,
)
from segzero_ros.matching import UnmatchedPublishers
from segzero_ros.msg import SegmentationResult as ResultMsg
from segzero_ros.params import (
    NODE_NAME,
    PARAMS,
    ParamsError,
    PerceptionParams,
    check_value,
    load_params_file,
)
from segzero_ros.progress import QUEUED, REASONING, ReasoningStream
from segzero_ros.stats import Stats, health
from segzero_ros.worker import CANCELLED, DROPPED, ERROR, Job, Worker

EXIT_START_FAILED = 2

RESULT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
IMAGE_OUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# Keep all: a burst of queries waits in the reader until the callback takes it (strings are
# small, and the callback only queues or drops), so no query is overwritten unanswered.
QUERY_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_ALL,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
DIAGNOSTICS_QOS = QoSProfile(depth=10)
FEEDBACK_MIN_PERIOD = 0.05  # at most ~20 feedback messages per second per goal
DEACTIVATE_TIMEOUT = 30.0  # seconds to wait for the running query to stop at deactivate

_PARAMETER_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}
_FAILURE_CODES = {
    DROPPED: ResultMsg.DROPPED,
    CANCELLED: ResultMsg.CANCELLED,
    ERROR: ResultMsg.ERROR,
}


@dataclass(frozen=True)
class Frame:
    """The newest camera message, kept as received (converted only when a query uses it)."""

    msg: Image | CompressedImage
    seq: int
    received_ns: int  # node clock


@dataclass
class Request:
    """What a job carries: the query and, for action goals, the goal handle and its image."""

    query: str
    query_id: str
    image: Image | None = None  # the goal's own image; None: the newest camera frame
    goal_handle: Any = None
    executing: bool = False  # goal_handle.execute() was called
    client_cancelled: bool = False
    parts: tuple | None = None  # (SegmentationResult, RGB array) to publish after the result


def describe(param) -> ParameterDescriptor:
    """The ROS parameter descriptor of one row of the params table."""
    descriptor = ParameterDescriptor(
        name=param.name,
        type=_PARAMETER_TYPES[param.type],
        description=param.description,
        read_only=param.read_only,
        additional_constraints=f"one of: {param.choices}" if param.choices else "",
    )
    if param.minimum is not None and param.type is int:
        descriptor.integer_range = [
            IntegerRange(from_value=int(param.minimum), to_value=2**31 - 1, step=1)
        ]
    elif param.minimum is not None and param.type is float:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(param.minimum), to_value=1e9, step=0.0)
        ]
    return descriptor


class PerceptionNode(LifecycleNode):
    """Lifecycle: configure reads the parameters and makes the publishers and the worker;
    activate loads the models and subscribes (topics, action server); deactivate undoes
    activate and frees the models; cleanup undoes configure."""

    def __init__(
        self,
        node_name: str = NODE_NAME,
        *,
        parameter_overrides: dict[str, Any] | None = None,
        **kwargs,
    ):
        overrides = [
            Parameter(name, value=value) for name, value in (parameter_overrides or {}).items()
        ]
        super().__init__(node_name, parameter_overrides=overrides or None, **kwargs)
        for param in PARAMS:
            self.declare_parameter(param.name, param.default, describe(param))
        self.add_on_set_parameters_callback(self._validate_parameters_cb)
        self.add_post_set_parameters_callback(self._parameters_set_cb)

        self.params = self.read_params()
        self.pipeline = None  # SegZeroPipeline while active
        self.device = ""
        self.stats = Stats()
        self.worker: Worker[ResultMsg] | None = None
        self._frame: Frame | None = None
        self._frame_seq = itertools.count(1)
        self._query_seq = itertools.count(1)
        self._active = False
        self._loading = False
        self._pubs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._unmatched = UnmatchedPublishers()
        self._action_server: ActionServer | None = None
        self._open_goals: set[str] = set()  # goals whose execute callback has not returned
        self._diag_pub = None
        self._diag_timer = None
        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._query_group = MutuallyExclusiveCallbackGroup()
        self._action_group = ReentrantCallbackGroup()
        self._diag_group = MutuallyExclusiveCallbackGroup()

    # ------------------------------------------------------------------ parameters

    def read_params(self) -> PerceptionParams:
        """The current parameter values, checked (raises ParamsError)."""
        values = {param.name: self.get_parameter(param.name).value for param in PARAMS}
        return PerceptionParams.from_mapping(values, partial=False)

    def _validate_parameters_cb(self, parameters) -> SetParametersResult:
        for parameter in parameters:
            if parameter.name not in PerceptionParams.__dataclass_fields__:
                continue
            try:
                check_value(parameter.name, parameter.value)
            except ParamsError as error:
                return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _parameters_set_cb(self, parameters) -> None:
        changed = {
            p.name: p.value for p in parameters if p.name in PerceptionParams.__dataclass_fields__
        }
        if changed:
            self.params = dataclasses.replace(self.params, **changed)

    # ------------------------------------------------------------------ lifecycle

    # The node destroys its subscriptions at deactivate and its publishers at cleanup while the
    # executor spins. rclpy's default QoS-event handlers (incompatible-QoS warnings) race with
    # that: an executor thread building its wait set re-enters a handler whose destruction was
    # just requested and the whole spin dies with InvalidHandle (ros2/rclpy#1284; reproduced
    # here under load). So these entities are created without event handlers.

    def _publisher(self, msg_type, topic: str, qos: QoSProfile):
        return self.create_lifecycle_publisher(
            msg_type,
            topic,
            qos,
            event_callbacks=PublisherEventCallbacks(use_default_callbacks=False),
        )

    def _subscription(self, msg_type, topic: str, callback, qos, group):
        return self.create_subscription(
            msg_type,
            topic,
            callback,
            qos,
            callback_group=group,
            event_callbacks=SubscriptionEventCallbacks(use_default_callbacks=False),
        )

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.params = self.read_params()
        except ParamsError as error:
            self.get_logger().error(f"cannot configure: {error}")
            return TransitionCallbackReturn.FAILURE
        p = self.params
        self._pubs = {
            "result": self._publisher(ResultMsg, p.result_topic, RESULT_QOS),
            "mask": self._publisher(Image, p.mask_topic, IMAGE_OUT_QOS),
            "reasoning": self._publisher(String, p.reasoning_topic, RESULT_QOS),
            "overlay": self._publisher(Image, p.overlay_topic, IMAGE_OUT_QOS),
        }
        self.worker = Worker(self._serve, self._failure, p.queue_size)
        self.worker.start(accept=False)  # jobs are accepted once active
        self._diag_pub = self.create_publisher(
            DiagnosticArray,
            "/diagnostics",
            DIAGNOSTICS_QOS,
            event_callbacks=PublisherEventCallbacks(use_default_callbacks=False),
        )
        self._diag_timer = self.create_timer(
            p.diagnostics_period, self._diagnostics_cb, callback_group=self._diag_group
        )
        self.get_logger().info(f"configured: queue_size {p.queue_size}, camera {self._camera()}")
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self.params = self.read_params()
        except ParamsError as error:
            self.get_logger().error(f"cannot activate: {error}")
            return TransitionCallbackReturn.FAILURE
        if not self._load_models():
            return TransitionCallbackReturn.FAILURE
        # Publishers first, then the worker, then the inputs: no result is ever published
        # through a disabled lifecycle publisher.
        result = super().on_activate(state)
        self.worker.resume()
        self._active = True
        p = self.params
        camera_type = CompressedImage if p.compressed else Image
        camera = self._subscription(
            camera_type, self._camera(), self._image_cb, qos_profile_sensor_data, self._camera_group
        )
        query = self._subscription(
            String, p.query_topic, self._query_cb, QUERY_QOS, self._query_group
        )
        self._subs = [camera, query]
        self._action_server = ActionServer(
            self,
            Segment,
            p.action_name,
            execute_callback=self._execute_goal,
            goal_callback=self._goal_cb,
            handle_accepted_callback=self._goal_accepted_cb,
            cancel_callback=self._cancel_cb,
            callback_group=self._action_group,
        )
        self.get_logger().info(
            f"active: {p.reasoning_model} + {p.segmentation_model} on {self.device}; "
            f"queries on {p.query_topic}, action {p.action_name}"
        )
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate("the node was deactivated")  # inputs, then the worker, then models
        return super().on_deactivate(state)  # publishers last

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._cleanup()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate("the node is shutting down")
        self._cleanup()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._deactivate("the node failed")
        self._cleanup()
        return super().on_error(state)

    def release(self) -> None:
        """Stop everything without a transition (the context may already be shut down)."""
        try:
            self._deactivate("the node is shutting down")
            self._cleanup()
        except Exception as error:  # noqa: BLE001 - at exit; the worker is stopped regardless
            logging.getLogger(__name__).debug("release: %r", error)
            if self.worker is not None:
                self.worker.stop("the node is shutting down", DEACTIVATE_TIMEOUT)

    def _load_models(self) -> bool:
        from segzero_model.pipeline import SegZeroPipeline

        p = self.params
        self._loading = True
        try:
            started = time.monotonic()
            self.pipeline = SegZeroPipeline.from_pretrained(
                p.reasoning_model,
                p.segmentation_model,
                device=p.device,
                dtype=p.dtype or None,
                max_new_tokens=p.max_new_tokens,
            )
            self.device = _resolved_device(p.device)
        except Exception as error:  # noqa: BLE001 - reported in one line, the node stays up
            self.get_logger().error(f"cannot load the models: {_one_line(error)}")
            return False
        finally:
            self._loading = False
        self.get_logger().info(f"models loaded in {time.monotonic() - started:.1f} s")
        return True

    def _deactivate(self, reason: str) -> None:
        """Undo activate: stop taking requests, end the queued and running ones, free models."""
        was_active, self._active = self._active, False
        for subscription in self._subs:
            self.destroy_subscription(subscription)
        self._subs = []
        if self.worker is not None and not self.worker.drain(reason, DEACTIVATE_TIMEOUT):
            self.get_logger().warning("the running query did not stop in time")
        if self._action_server is not None:
            self._wait_goals_sent()
            self._action_server.destroy()
            self._action_server = None
        self._frame = None  # frames from before deactivation are stale by the time we resume
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            pipeline.close()
            del pipeline
            gc.collect()
            _empty_cuda_cache()
            if was_active:
                self.get_logger().info("models released")

    def _wait_goals_sent(self, timeout: float = 2.0) -> None:
        """Give the goals that just ended a moment to reach their terminal state and send
        their results (executor tasks) before the action server goes."""
        if not self._open_goals or not self.context.ok():
            return
        deadline = time.monotonic() + timeout
        while self._open_goals and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)

    def _cleanup(self) -> None:
        if self.worker is not None:
            self.worker.stop("the node was cleaned up", DEACTIVATE_TIMEOUT)
            self.worker = None
        for publisher in self._pubs.values():
            self.destroy_lifecycle_publisher(publisher)
        self._pubs = {}
        if self._diag_timer is not None:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = None
        if self._diag_pub is not None:
            self.destroy_publisher(self._diag_pub)
            self._diag_pub = None

    @property
    def latest_frame(self) -> Frame | None:
        """The newest camera message (None before the first one, and after deactivate)."""
        return self._frame

    @property
    def active(self) -> bool:
        return self._active

    def _camera(self) -> str:
        topic = self.params.image_topic
        return f"{topic.rstrip('/')}/compressed" if self.params.compressed else topic

    # ------------------------------------------------------------------ callbacks

    def _image_cb(self, msg) -> None:
        """Keep the newest frame; everything else happens when a query takes it."""
        self._frame = Frame(msg, next(self._frame_seq), self.get_clock().now().nanoseconds)

    def _query_cb(self, msg: String) -> None:
        request = Request(query=msg.data, query_id=f"q{next(self._query_seq)}")
        self._submit(request)

    def _goal_cb(self, goal) -> GoalResponse:
        # Accepted even when the queue is full: the client then gets a DROPPED result (with the
        # reason) rather than a bare rejection.
        return GoalResponse.ACCEPT if self._active else GoalResponse.REJECT

    def _goal_accepted_cb(self, goal_handle) -> None:
        goal = goal_handle.request
        request = Request(
            query=goal.query,
            query_id=bytes(goal_handle.goal_id.uuid).hex(),
            image=goal.image if goal.image.height > 0 else None,
            goal_handle=goal_handle,
        )
        self._open_goals.add(request.query_id)
        worker = self.worker
        ahead = (worker.depth + int(worker.busy)) if worker is not None else 0
        self._feedback(request, QUEUED, "", ahead)
        self._submit(request)

    def _cancel_cb(self, goal_handle) -> CancelResponse:
        job_id = bytes(goal_handle.goal_id.uuid).hex()
        worker = self.worker
        job = worker.find(job_id) if worker is not None else None
        if job is None:  # finished meanwhile (or never queued)
            return CancelResponse.REJECT
        job.payload.client_cancelled = True
        worker.cancel(job_id)
        return CancelResponse.ACCEPT

    def _submit(self, request: Request) -> None:
        job = Job(request.query_id, request, self._respond)
        if self.worker is None:  # not configured: answer at once
            job.resolve(self._failure(job, DROPPED, "the node is not configured"))
            return
        self.worker.submit(job)

    # ------------------------------------------------------------------ the worker's side

    def _serve(self, job: Job[ResultMsg]) -> ResultMsg:
        """Answer one request (runs on the worker thread)."""
        request: Request = job.payload
        if request.goal_handle is not None:
            request.executing = True
            request.goal_handle.execute(functools.partial(self._execute_goal, job=job))
            self._feedback(request, REASONING, "", 0)
        self._update_queued_feedback()

        problem = validate_query(request.query)
        if problem is not None:
            return self._error(request, ResultMsg.INVALID_QUERY, problem)
        pipeline = self.pipeline
        if pipeline is None:
            return self._error(request, ResultMsg.ERROR, "the models are not loaded")

        if request.image is not None:
            message, key = request.image, None  # None: SAM2 caches by content
        else:
            frame = self._frame
            if frame is None:
                return self._error(
                    request, ResultMsg.NO_IMAGE, f"no camera frame received on {self._camera()}"
                )
            message, key = frame.msg, _frame_key(frame)
            age = self._frame_age(frame)
            max_age = self.params.max_image_age
            if max_age > 0 and age > max_age:
                return self._error(
                    request,
                    ResultMsg.STALE_IMAGE,
                    f"the newest frame on {self._camera()} is {age:.2f} s old "
                    f"(max_image_age {max_age:g} s)",
                    message.header,
                )
        header = message.header
        try:
            if isinstance(message, CompressedImage):
                rgb = compressed_msg_to_rgb(message)
            else:
                rgb = image_msg_to_rgb(message)
        except ImageConversionError as error:
            return self._error(request, ResultMsg.INVALID_IMAGE, str(error), header)

        on_text = self._streamer(request) if request.goal_handle is not None else None
        result = pipeline.segment(
            rgb, request.query, image_key=key, on_text=on_text, cancel=job.cancel
        )
        msg = result_to_msg(result, header, request.query_id)
        request.parts = (result, rgb)
        if request.goal_handle is not None:
            self._feedback(request, "segmenting", msg.reasoning, 0)
        return msg

    def _frame_age(self, frame: Frame) -> float:
        """Seconds since the frame's stamp (since its arrival when it has no stamp)."""
        stamp = frame.msg.header.stamp
        stamp_ns = stamp.sec * 1_000_000_000 + stamp.nanosec
        now_ns = self.get_clock().now().nanoseconds
        return (now_ns - (stamp_ns or frame.received_ns)) / 1e9

    def _publish_parts(self, msg: ResultMsg, parts: tuple | None) -> None:
        """Reasoning, mask and overlay on standard types (after the result, off its latency).
        The overlay is drawn only while someone subscribes to it: drawing and sending it costs
        ~3 ms for 640x480 and ~25 ms for 1920x1080."""
        if not self._pubs:
            return
        if msg.reasoning:
            self._pubs["reasoning"].publish(String(data=msg.reasoning))
        if msg.status != ResultMsg.OK or parts is None:
            return
        self._pubs["mask"].publish(msg.mask)
        overlay = self._pubs["overlay"]
        if self.params.publish_overlay and overlay.get_subscription_count() > 0:
            from segzero_model.overlay import draw_overlay

            result, rgb = parts
            overlay.publish(rgb_to_image_msg(draw_overlay(rgb, result), msg.header))

    def _error(self, request: Request, code: int, reason: str, header=None) -> ResultMsg:
        failed = SegmentationResult(status=Status.ERROR, query=request.query, image_size=(0, 0))
        failed.reason = reason
        return result_to_msg(failed, header or Header(), request.query_id, status_code=code)

    def _failure(self, job: Job[ResultMsg], kind: str, reason: str) -> ResultMsg:
        return self._error(job.payload, _FAILURE_CODES[kind], reason)

    def _respond(self, job: Job[ResultMsg], msg: ResultMsg | None) -> None:
        """Every request ends here exactly once (any thread): stats, log, publish, goal."""
        request: Request = job.payload
        if msg is None:
            msg = self._error(request, ResultMsg.ERROR, "internal error building the result")
        latency = time.monotonic() - job.started if job.started is not None else None
        self.stats.record(msg.status_name, latency)
        if msg.status == ResultMsg.DROPPED:  # a flood would log a line per query: throttle
            self.get_logger().warning(
                f"query {request.query_id} DROPPED: {msg.error} "
                f"({self.stats.snapshot().dropped} dropped so far)",
                throttle_duration_sec=1.0,
            )
        elif msg.status != ResultMsg.OK:
            self.get_logger().warning(
                f"query {request.query_id} {msg.query[:60]!r}: {msg.status_name}: {msg.error}"
            )
        publisher = self._pubs.get("result")
        if publisher is not None:
            publisher.publish(msg)
        if request.goal_handle is not None and not request.executing:
            request.executing = True
            request.goal_handle.execute(functools.partial(self._execute_goal, job=job))
        parts, request.parts = request.parts, None
        self._publish_parts(msg, parts)

    # ------------------------------------------------------------------ action goals

    def _execute_goal(self, goal_handle, job: Job[ResultMsg]) -> Segment.Result:
        """Runs on an executor thread from the moment the worker takes the goal (or at once,
        for a goal that ended without running) until its result is there."""
        try:
            return self._finish_goal(goal_handle, job)
        finally:
            self._open_goals.discard(job.id)

    def _finish_goal(self, goal_handle, job: Job[ResultMsg]) -> Segment.Result:
        while not job.wait(0.5):
            if not self.context.ok():
                break
        msg = job.outcome or self._error(job.payload, ResultMsg.ERROR, "no result")
        if msg.status == ResultMsg.CANCELLED and job.payload.client_cancelled:
            # The cancel request becomes CANCELING just after our cancel callback returns.
            deadline = time.monotonic() + 1.0
            while not goal_handle.is_cancel_requested and time.monotonic() < deadline:
                time.sleep(0.005)
        if goal_handle.is_active:
            if msg.status == ResultMsg.OK:
                goal_handle.succeed()
            elif goal_handle.status == GoalStatus.STATUS_CANCELING:
                goal_handle.canceled()
            else:
                goal_handle.abort()
        return Segment.Result(result=msg)

    def _feedback(self, request: Request, stage: str, reasoning: str, position: int) -> None:
        if request.goal_handle is None:
            return
        feedback = Segment.Feedback(stage=stage, reasoning=reasoning, queue_position=position)
        request.goal_handle.publish_feedback(feedback)

    def _streamer(self, request: Request):
        stream = ReasoningStream(FEEDBACK_MIN_PERIOD)

        def on_text(chunk: str) -> None:
            progress = stream.add(chunk)
            if progress is not None:
                self._feedback(request, progress.stage, progress.reasoning, 0)

        return on_text

    def _update_queued_feedback(self) -> None:
        worker = self.worker
        if worker is None:
            return
        for position, job in enumerate(worker.queued(), start=1):
            self._feedback(job.payload, QUEUED, "", position)

    # ------------------------------------------------------------------ diagnostics

    def _diagnostics_cb(self) -> None:
        if self._diag_pub is None:
            return
        snapshot = self.stats.snapshot()
        worker = self.worker
        level, message = health(
            snapshot,
            loaded=self.pipeline is not None,
            worker_alive=worker is not None and worker.alive,
        )
        if self._loading:
            message = "loading the models"
        unmatched = self._unmatched_publishers()
        if unmatched:
            said = "; ".join(
                f"{n} publisher(s) on {topic} do not match this node's QoS"
                for topic, n in unmatched
            )
            level, message = ("WARN", said) if level == "OK" else (level, f"{message}; {said}")
        frame = self._frame
        p = self.params
        values = {
            "state": "active" if self._active else "inactive",
            "models_loaded": self.pipeline is not None,
            "reasoning_model": p.reasoning_model,
            "segmentation_model": p.segmentation_model,
            "device": self.device,
            "queue_depth": worker.depth if worker is not None else 0,
            "queue_size": p.queue_size,
            "busy": worker.busy if worker is not None else False,
            "answered": snapshot.answered,
            "failed": snapshot.failed,
            "dropped": snapshot.dropped,
            "last_latency_s": _fmt(snapshot.last_latency),
            "median_latency_s": _fmt(snapshot.median_latency),
            "latency_window": snapshot.window,
            "frames_received": frame.seq if frame is not None else 0,
            "frame_age_s": _fmt(self._frame_age(frame)) if frame is not None else "",
            "unmatched_publishers": ", ".join(f"{topic}: {n}" for topic, n in unmatched),
        }
        status = DiagnosticStatus(
            level=getattr(DiagnosticStatus, level),
            name=f"{self.get_name()}: Seg-Zero perception",
            message=message,
            hardware_id=self.device,
            values=[KeyValue(key=k, value=_str(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(array)

    def _unmatched_publishers(self) -> list[tuple[str, int]]:
        """(topic, n) for input topics with publishers the node's reader does not match; logs
        each new one once. rclpy's own warning for this is off on these readers (see
        `_subscription`)."""
        unmatched = []
        for reader in list(self._subs):
            topic = reader.topic_name
            try:
                in_graph, matched = self.count_publishers(topic), reader.get_publisher_count()
            except InvalidHandle:  # destroyed by a deactivate meanwhile
                continue
            confirmed, worth_saying = self._unmatched.update(topic, in_graph, matched)
            if worth_saying:
                self.get_logger().warning(
                    f"{confirmed} publisher(s) on {topic} do not match this node's reader, so "
                    "nothing they send arrives: check their QoS (queries must be reliable)"
                )
            if confirmed:
                unmatched.append((topic, confirmed))
        return unmatched


def _frame_key(frame: Frame):
    """SAM2 embedding-cache key: the frame's stamp and frame_id (a stampless camera gets its
    frame number, so two different frames never share a key)."""
    header = frame.msg.header
    if header.stamp.sec == 0 and header.stamp.nanosec == 0:
        return ("camera-seq", frame.seq)
    return ("camera", header.frame_id, header.stamp.sec, header.stamp.nanosec)


def _fmt(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.4f}"


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if text else type(error).__name__


def _resolved_device(device: str) -> str:
    try:
        from segzero_model.device import resolve_device

        return resolve_device(device)
    except Exception:  # noqa: BLE001 - only for display
        return device


def _empty_cuda_cache() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


# --------------------------------------------------------------------------- console script


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segzero-perception",
        description="Run the Seg-Zero perception node (ROS 2). Arguments after --ros-args go "
        "to ROS (remaps, -p name:=value, --params-file, --log-level).",
    )
    parser.add_argument(
        "--params-file",
        help="ROS 2 parameter file (e.g. config/perception.yaml); checked before start-up",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="use the built-in tiny random models (plumbing tests; output is MEANINGLESS)",
    )
    return parser


def _ros_params_files(ros_args: list[str]) -> list[str]:
    return [ros_args[i + 1] for i, arg in enumerate(ros_args[:-1]) if arg == "--params-file"]


def main(argv: list[str] | None = None) -> int:
    """Console script `segzero-perception` (also `ros2 run segzero_ros segzero_perception`).
    Exit status 0 after a normal shutdown, 2 when the node could not start."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    ours, ros_args = argv[:split], argv[split:]
    args = _parser().parse_args(ours)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    # The node logs one line per failed query itself; the pipeline's own warnings would repeat it.
    logging.getLogger("segzero_model.pipeline").setLevel(logging.ERROR)

    extra: list[str] = []
    try:
        if args.params_file is not None:
            load_params_file(args.params_file)
            extra += ["--params-file", os.path.abspath(args.params_file)]
    except ParamsError as error:
        print(f"segzero-perception: error: {error}", file=sys.stderr)
        return EXIT_START_FAILED
    overrides: dict[str, Any] = {}
    if args.tiny:
        from segzero_model.tiny import TINY_WARNING, ensure_tiny_models

        print(TINY_WARNING, file=sys.stderr)
        reasoner_dir, segmenter_dir = ensure_tiny_models()
        overrides = {"reasoning_model": str(reasoner_dir), "segmentation_model": str(segmenter_dir)}

    rclpy_args = [sys.argv[0]]
    if extra:
        rclpy_args += ["--ros-args", *extra]
    rclpy_args += ros_args
    rclpy.init(args=rclpy_args)
    node = None
    try:
        try:
            node = PerceptionNode(parameter_overrides=overrides)
            namespace = node.get_namespace()
            for path in _ros_params_files(ros_args):
                _check_ros_params_file(path, node.get_name(), namespace)
        except (ParamsError, ParameterException) as error:
            print(f"segzero-perception: error: {_one_line(error)}", file=sys.stderr)
            return EXIT_START_FAILED
        if args.tiny:
            node.get_logger().warning(TINY_WARNING)
        executor = MultiThreadedExecutor(num_threads=max(4, os.cpu_count() or 1))
        executor.add_node(node)
        if node.params.autostart and not _start(node):
            return EXIT_START_FAILED
        try:
            spin(executor, node.get_logger())
        except (KeyboardInterrupt, ExternalShutdownException):
            pass
        finally:
            executor.shutdown(timeout_sec=1.0)
        return 0
    except KeyboardInterrupt:
        return 130
    finally:
        if node is not None:
            node.release()
            node.destroy_node()
        rclpy.try_shutdown()


def spin(executor, logger) -> None:
    """`executor.spin()` that survives rclpy's wait-set race with entity destruction
    (ros2/rclpy#1284): the InvalidHandle it raises costs one wait, not the node."""
    while True:
        try:
            executor.spin()
            return
        except InvalidHandle as error:
            logger.warning(f"executor: {error}; spinning on", throttle_duration_sec=10.0)


def _check_ros_params_file(path: str, node_name: str, namespace: str) -> None:
    """Unknown names in this node's sections of a --ros-args parameter file are errors; a file
    without a section for this node is fine (one file may serve several nodes)."""
    load_params_file(path, node_name=node_name, namespace=namespace, require_section=False)


def _start(node: PerceptionNode) -> bool:
    """Configure and activate (autostart); False, after one logged line, when either fails."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        return False
    return node.trigger_activate() == TransitionCallbackReturn.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
