"""The Seg-Zero perception node: camera frames and text queries in, one SegmentationResult
(plus mask, reasoning and overlay images on standard types) out per query; an action server
for callers that want feedback and cancellation. See docs/ros.md for the interface.

This module is the lifecycle and the wiring. The rooms around it: `main` (the console script),
`goals` (the Segment action's goal flow), `diagnostics` (counters, health, /diagnostics),
`inputs` (frames and requests), `worker` (one thread serving jobs in order), `tracking` (the
answered objects followed on later frames, and its device lock), `spatial` and `depth_sync`
(the 3D position from a depth camera), `detections` (the vision_msgs outputs), `convert`
(messages <-> numpy), `params` (the one parameter table). A room gets a small frozen services
object (`GoalServices`, `SpatialServices`, `DetectionServices`, `TrackingServices`: the node's
callables it uses), never the node, so each is built and tested alone.

Threading: subscription and action callbacks only store the newest camera message or queue a
job; ONE worker thread answers the jobs in order, each on the newest frame at the time it is
taken. Spin the node with a MultiThreadedExecutor (main does): a running action goal keeps one
executor thread waiting for its result.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import itertools
import logging
import sys
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PointStamped
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.action import ActionServer
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.exceptions import InvalidHandle
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image, PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from segzero_model.pipeline import validate_query
from segzero_model.result import SegmentationResult, Status
from segzero_ros import detections
from segzero_ros.convert import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    instance_image_msg,
    result_objects,
    result_to_msg,
    rgb_to_image_msg,
    status_from_code,
)
from segzero_ros.detections import Detections, DetectionServices
from segzero_ros.diagnostics import NodeState, Stats, UnmatchedPublishers, diagnostic_array
from segzero_ros.goals import GoalServices, SegmentGoals
from segzero_ros.inputs import Frame, Request, frame_age, frame_key
from segzero_ros.msg import SegmentationResult as ResultMsg
from segzero_ros.msg import TrackingState
from segzero_ros.params import (
    NODE_NAME,
    PARAMS,
    ParamsError,
    PerceptionParams,
    check_value,
)
from segzero_ros.spatial import SPATIAL_QOS, Spatial, SpatialServices, transform_buffer
from segzero_ros.tracking import (
    TRACKING_MASK_QOS,
    TRACKING_STATE_QOS,
    Tracking,
    TrackingServices,
    streaming_tracker,
)
from segzero_ros.worker import Answer, Job, Worker

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
DIAGNOSTICS_TOPIC = "/diagnostics"  # absolute: one aggregator reads every node's status
DEACTIVATE_TIMEOUT = 30.0  # seconds to wait for the running query to stop at deactivate
DROPPED_LOG_PERIOD = 1.0  # seconds: a flood of DROPPED answers logs at most one line per period

_PARAMETER_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}


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
        self.worker: Worker[Answer] | None = None
        self.goals = SegmentGoals(
            GoalServices(
                action_server=functools.partial(ActionServer, self),
                context_ok=self.context.ok,
                submit=self._submit,
                worker=lambda: self.worker,
                accepting=lambda: self._active,
                error_result=lambda request, reason: self._error(request, Status.ERROR, reason),
            )
        )
        self.spatial = Spatial(
            SpatialServices(
                params=lambda: self.params,
                logger=self.get_logger(),
                publisher=self._pub,
                subscribe=self._subscription,
                unsubscribe=self.destroy_subscription,
                resolve_topic=self.resolve_topic_name,
                tf_buffer=functools.partial(transform_buffer, self),
            )
        )
        self.detections = Detections(
            DetectionServices(
                params=lambda: self.params,
                publisher=self._pub,
                target_transform=self.spatial.target_transform,
            )
        )
        self.tracking = Tracking(
            TrackingServices(
                params=lambda: self.params,
                logger=self.get_logger(),
                spatial=self.spatial,
                detections=self.detections,
                frame=lambda: self._frame,
                busy=lambda: (worker := self.worker) is not None and worker.pending,
                publisher=self._pub,
                submit=self._submit,
                next_query_id=lambda: f"q{next(self._query_seq)}",
                new_tracker=lambda: streaming_tracker(self.pipeline),
                create_service=self.create_service,
                destroy_service=self.destroy_service,
            )
        )
        self._frame: Frame | None = None
        self._frame_seq = itertools.count(1)
        self._query_seq = itertools.count(1)
        self._active = False
        self._loading = False
        self._pubs: dict[str, Any] = {}
        self._subs: list[Any] = []
        self._unmatched = UnmatchedPublishers()
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
        if "use_depth" in changed and self._active:  # subscribe or unsubscribe at once
            if self.params.use_depth:
                self.spatial.start()
            else:
                self.spatial.stop()

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
            "instances": self._publisher(Image, p.instances_topic, IMAGE_OUT_QOS),
            "reasoning": self._publisher(String, p.reasoning_topic, RESULT_QOS),
            "overlay": self._publisher(Image, p.overlay_topic, IMAGE_OUT_QOS),
            "tracking_mask": self._publisher(Image, p.tracking_mask_topic, TRACKING_MASK_QOS),
            "tracking_state": self._publisher(
                TrackingState, p.tracking_state_topic, TRACKING_STATE_QOS
            ),
            "position": self._publisher(PointStamped, p.position_topic, SPATIAL_QOS),
            "markers": self._publisher(MarkerArray, p.markers_topic, SPATIAL_QOS),
            "cloud": self._publisher(PointCloud2, p.cloud_topic, SPATIAL_QOS),
        }
        if detections.available():  # vision_msgs: a ROS install, or ../shared/ros2-cli
            for name, msg_type in detections.message_types().items():
                topic = getattr(p, detections.TOPIC_PARAMS[name])
                self._pubs[name] = self._publisher(msg_type, topic, detections.DETECTIONS_QOS)
        self.worker = Worker(self._serve, self._failure, p.queue_size)
        self.worker.start(accept=False)  # jobs are accepted once active
        self._diag_pub = self.create_publisher(
            DiagnosticArray,
            DIAGNOSTICS_TOPIC,
            DIAGNOSTICS_QOS,
            event_callbacks=PublisherEventCallbacks(use_default_callbacks=False),
        )
        self._diag_timer = self.create_timer(
            p.diagnostics_period, self._diagnostics_cb, callback_group=self._diag_group
        )
        camera = self.resolve_topic_name(self._camera())
        self.get_logger().info(f"configured: queue_size {p.queue_size}, camera {camera}")
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
        self.spatial.start()  # when use_depth
        self.goals.start(p.action_name, self._action_group)
        self.tracking.start(p.stop_tracking_service)
        self._say_detection_outputs()
        remote = f" at {p.reasoning_url.strip()}" if p.reasoning_url.strip() else ""
        self.get_logger().info(
            f"active: {p.reasoning_model}{remote} + {p.segmentation_model} on {self.device}; "
            f"queries on {self.resolve_topic_name(p.query_topic)}, "
            f"action {self.resolve_topic_name(p.action_name)}"
        )
        return result

    def _say_detection_outputs(self) -> None:
        """Once per activate: which vision_msgs outputs this node has, or why it has none."""
        p, logger = self.params, self.get_logger()
        if not detections.available():
            logger.info(
                f"no vision_msgs detections: {detections.vision_msgs()}; {detections.MISSING_HINT}"
            )
        elif not p.publish_detections:
            logger.info("vision_msgs detections off (publish_detections false)")
        else:
            names = [p.detections_topic] + (
                [p.detections_3d_topic, p.detections_3d_target_topic] if p.use_depth else []
            )
            topics = ", ".join(self.resolve_topic_name(name) for name in names)
            logger.info(f"vision_msgs detections on {topics}")

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
            self.pipeline = SegZeroPipeline.from_options(p.pipeline_options())
            self.device = _resolved_device(p.device)
        except Exception as error:  # noqa: BLE001 - reported in one line, the node stays up
            self.get_logger().error(f"cannot load the models: {load_error_message(error)}")
            return False
        finally:
            self._loading = False
        self.get_logger().info(f"models loaded in {time.monotonic() - started:.1f} s")
        check = getattr(self.pipeline.reasoner, "check", None)
        problem = check() if check is not None else None  # a remote reasoner: ask its server
        if problem is not None:
            self.get_logger().warning(
                f"{problem}; queries are answered ERROR until it answers (the node stays active)"
            )
        return True

    def _deactivate(self, reason: str) -> None:
        """Undo activate: stop taking requests, end the queued and running ones, free models."""
        was_active, self._active = self._active, False
        for subscription in self._subs:
            self.destroy_subscription(subscription)
        self._subs = []
        self.spatial.stop()
        if self.worker is not None and not self.worker.drain(reason, DEACTIVATE_TIMEOUT):
            self.get_logger().warning("the running query did not stop in time")
        self.tracking.stop()  # every track ends, the tracker's memory is freed
        self.goals.stop()
        self._frame = None  # frames from before deactivation are stale by the time we resume
        pipeline, self.pipeline = self.pipeline, None
        if pipeline is not None:
            pipeline.close()
            del pipeline
            gc.collect()
            _empty_cuda_cache()
            if was_active:
                self.get_logger().info("models released")

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

    def _pub(self, name: str):
        """An output publisher by name (None while unconfigured)."""
        return self._pubs.get(name)

    def _camera(self) -> str:
        topic = self.params.image_topic
        return f"{topic.rstrip('/')}/compressed" if self.params.compressed else topic

    # ------------------------------------------------------------------ callbacks

    def _image_cb(self, msg) -> None:
        """Keep the newest frame; everything else happens when a query takes it."""
        self._frame = Frame(msg, next(self._frame_seq), self.get_clock().now().nanoseconds)
        self.tracking.frame_arrived()

    def _query_cb(self, msg: String) -> None:
        self._submit(Request(query=msg.data, query_id=f"q{next(self._query_seq)}"))

    def _submit(self, request: Request) -> None:
        job = Job(request.query_id, request, self._respond)
        if self.worker is None:  # not configured: answer at once
            job.resolve(self._failure(job, Status.DROPPED, "the node is not configured"))
            return
        self.worker.submit(job)

    # ------------------------------------------------------------------ the worker's side

    def _serve(self, job: Job[Answer]) -> Answer:
        """Answer one request (runs on the worker thread)."""
        request: Request = job.payload
        self.goals.started(job)

        problem = validate_query(request.query)
        if problem is not None:
            return Answer(self._error(request, Status.INVALID_QUERY, problem))
        pipeline = self.pipeline
        if pipeline is None:
            return Answer(self._error(request, Status.ERROR, "the models are not loaded"))

        if request.image is not None:
            message, key = request.image, None  # None: SAM2 caches by content
        else:
            frame = self._frame
            if frame is None:
                camera = self.resolve_topic_name(self._camera())
                return Answer(
                    self._error(request, Status.NO_IMAGE, f"no camera frame received on {camera}")
                )
            message, key = frame.msg, frame_key(frame)
            age = frame_age(frame, self.get_clock().now().nanoseconds)
            max_age = self.params.max_image_age
            if max_age > 0 and age > max_age:
                reason = (
                    f"the newest frame on {self.resolve_topic_name(self._camera())} is "
                    f"{age:.2f} s old (max_image_age {max_age:g} s)"
                )
                return Answer(self._error(request, Status.STALE_IMAGE, reason, message.header))
        header = message.header
        depth_match = self.spatial.match(header)  # now: the buffer keeps only recent depth
        try:
            if isinstance(message, CompressedImage):
                rgb = compressed_msg_to_rgb(message)
            else:
                rgb = image_msg_to_rgb(message)
        except ImageConversionError as error:
            return Answer(self._error(request, Status.INVALID_IMAGE, str(error), header))

        with self.tracking.device_lock:  # tracking pauses while a query is served
            result = pipeline.segment(
                rgb,
                request.query,
                image_key=key,
                on_text=self.goals.streamer(request),
                cancel=job.cancel,
            )
            track_id = self.tracking.seed(request, rgb, result)
        msg = result_to_msg(result, header, request.query_id)
        msg.track_id = track_id
        geometries = None
        if result.status is Status.OK:
            masks = [o.mask for o in result_objects(result)]
            geometries = tuple(self.spatial.locate_result(msg, masks, depth_match))
        if request.goal_handle is not None:
            self.goals.segmenting(request, msg.reasoning)
        return Answer(msg, result, rgb, geometries)

    def _publish_parts(self, answer: Answer) -> None:
        """Reasoning, mask (the union), instance labels, 3D outputs and overlay on standard types
        (after the result, off its latency); a result that is not OK (NOT_FOUND included) sends
        only its reasoning.
        The overlay is drawn only while someone subscribes to it: drawing and sending it costs
        ~3 ms for 640x480 and ~25 ms for 1920x1080."""
        msg, result, rgb = answer.msg, answer.result, answer.rgb
        if not self._pubs:
            return
        if msg.reasoning:
            self._pubs["reasoning"].publish(String(data=msg.reasoning))
        self.detections.publish_answer(msg, answer.geometries)  # NOT_FOUND: empty arrays
        if msg.status != ResultMsg.OK or result is None:
            return
        instances = instance_image_msg(result, msg.header)
        if instances is not None:
            self._pubs["instances"].publish(instances)
        self._pubs["mask"].publish(msg.mask)  # the union of the objects' masks
        self.spatial.publish_result(msg, answer.geometries)
        overlay = self._pubs["overlay"]
        if self.params.publish_overlay and overlay.get_subscription_count() > 0:
            from segzero_model.overlay import draw_overlay

            overlay.publish(rgb_to_image_msg(draw_overlay(rgb, result), msg.header))

    def _error(self, request: Request, status: Status, reason: str, header=None) -> ResultMsg:
        failed = SegmentationResult(status=status, query=request.query, image_size=(0, 0))
        failed.reason = reason
        return result_to_msg(failed, header or Header(), request.query_id)

    def _failure(self, job: Job[Answer], status: Status, reason: str) -> Answer:
        return Answer(self._error(job.payload, status, reason))

    def _respond(self, job: Job[Answer], answer: Answer | None) -> None:
        """Every request ends here exactly once (any thread): stats, log, publish, goal."""
        request: Request = job.payload
        if answer is None:
            answer = Answer(
                self._error(request, Status.ERROR, "internal error building the result")
            )
        msg, status = answer.msg, status_from_code(answer.msg.status)
        latency = time.monotonic() - job.started if job.started is not None else None
        self.stats.record(status, latency)
        if status is Status.DROPPED:  # a flood would log a line per query: throttle
            self.get_logger().warning(
                f"query {request.query_id} DROPPED: {msg.error} "
                f"({self.stats.snapshot().dropped} dropped so far)",
                throttle_duration_sec=DROPPED_LOG_PERIOD,
            )
        elif status is not Status.OK:
            self.get_logger().warning(
                f"query {request.query_id} {msg.query[:60]!r}: {msg.status_name}: {msg.error}"
            )
        publisher = self._pubs.get("result")
        if publisher is not None:
            publisher.publish(msg)
        self.goals.resolved(job)
        self._publish_parts(answer)

    # ------------------------------------------------------------------ diagnostics

    def _diagnostics_cb(self) -> None:
        if self._diag_pub is None:
            return
        worker, frame, p = self.worker, self._frame, self.params
        now = self.get_clock().now()
        state = NodeState(
            active=self._active,
            loading=self._loading,
            models_loaded=self.pipeline is not None,
            worker_alive=worker is not None and worker.alive,
            reasoning_model=p.reasoning_model,
            segmentation_model=p.segmentation_model,
            device=self.device,
            queue_depth=worker.depth if worker is not None else 0,
            queue_size=p.queue_size,
            busy=worker.busy if worker is not None else False,
            frames_received=frame.seq if frame is not None else 0,
            frame_age=frame_age(frame, now.nanoseconds) if frame is not None else None,
            tracking=self.tracking.snapshot(),
            reasoning_url=p.reasoning_url.strip(),
            reasoning_server_error=_server_error(self.pipeline),
        )
        array = diagnostic_array(
            f"{self.get_name()}: Seg-Zero perception",
            state,
            self.stats.snapshot(),
            self._unmatched_publishers(),
            now.to_msg(),
        )
        self._diag_pub.publish(array)

    def _unmatched_publishers(self) -> list[tuple[str, int]]:
        """(topic, n) for input topics with publishers the node's reader does not match; logs
        each new one once. rclpy's own warning for this is off on these readers (see
        `_subscription`)."""
        unmatched = []
        for reader in list(self._subs) + list(self.spatial.subscriptions):
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


def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text if text else type(error).__name__


def load_error_message(error: BaseException) -> str:
    """One line for a model that did not load, in the node's own spelling (parameters, not the
    CLI's flags)."""
    from segzero_model.device import DeviceUnavailableError

    if isinstance(error, DeviceUnavailableError):
        return one_line(error.advice("the parameter device:=cpu (or device:=auto)"))
    return one_line(error)


def _server_error(pipeline) -> str | None:
    """Why the remote reasoner's last request failed (None: it answered, or the reasoner is
    local, or no models are loaded)."""
    reasoner = getattr(pipeline, "reasoner", None)
    return getattr(reasoner, "last_error", None)


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
