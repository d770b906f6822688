"""The node's tracking layer: after an OK answer, follow that object on every newer camera frame
with SAM2's video memory (`segzero_model.segmentation.tracks.TrackSession`; no reasoning), publish
the
union mask and a TrackingState per tracked frame, and stop tracks on request.

Frames: the tracking loop (one thread, running while the node is active) takes the NEWEST camera
message each time, never a queue of them; frames received while tracks exist but never tracked
are counted as skipped (TrackingState.frames_skipped, diagnostics).

Priority, "pause during reasoning": the models share one device, and a query's latency matters
more than one tracked frame. ONE lock (`device_lock`) is held by the worker while it serves a
query (the model call and the seeding of its track) and by the loop for each tracked frame, and
the loop takes no frame while a job runs or waits (`TrackingServices.busy`, the worker's
`pending`; the lock alone would not do: a waiting query holds no lock). So tracking pauses while
queries are served (those frames count as skipped) and a query waits at most for the one frame
being tracked. The stop service takes the lock too: it answers once the frame or query in
progress is done. `TrackSession` is not thread-safe; every use of it holds the lock.

3D (use_depth): each TRACKING object of a tracked frame is located in the depth frame matched
to that frame's stamp (`segzero_ros.spatial`; the depth image is converted once per frame, ~1-2
ms per object), its TrackedObject carries the position, and one box and label per located
track go out on the markers topic.

A frame the loop cannot track (bad encoding or data, a size other than the tracks' frames, a
model failure) ends every track: each is published LOST once with the reason, one warning is
logged, and the loop goes on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage

from segzero_model.result import SegmentationResult, Status
from segzero_model.segmentation.tracks import (
    LOST,
    TrackSession,
    TrackSettings,
    TrackStatus,
    union_mask,
)
from segzero_ros.action import Segment
from segzero_ros.convert import (
    ImageConversionError,
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    mask_to_image_msg,
    result_objects,
    track_state_code,
)
from segzero_ros.detections import Detected, Detections
from segzero_ros.diagnostics import RateMeter, TrackingSnapshot
from segzero_ros.inputs import Frame, Request
from segzero_ros.msg import TrackedObject, TrackingState
from segzero_ros.spatial import OFF, Spatial, fill_tracked, object_label
from segzero_ros.srv import StopTracking

# A stream: late subscribers get nothing stale; reliable so that rviz's default reader matches
# and no LOST state is lost on the wire.
TRACKING_MASK_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=2,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
TRACKING_STATE_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
IDLE_WAIT = 0.05  # seconds the loop sleeps when no new frame woke it (a paused worker's end)
STOP_TIMEOUT = 10.0  # seconds deactivate waits for the frame being tracked


@dataclass(frozen=True)
class TrackingServices:
    """What the tracking layer uses of the node: no node object, so it is built and tested
    alone (with a real worker's `pending` as `busy`)."""

    params: Callable[[], Any]  # the current PerceptionParams (they change at runtime)
    logger: Any  # the node's logger
    spatial: Spatial  # the 3D stage: tracked objects are located in depth
    detections: Detections  # the vision_msgs outputs: every tracked frame's objects
    frame: Callable[[], Frame | None]  # the newest camera frame
    busy: Callable[[], bool]  # a query runs or waits: the loop takes no frame
    publisher: Callable[[str], Any]  # "tracking_mask" / "tracking_state"; None unconfigured
    submit: Callable[[Request], None]  # ask a lost track's query again
    next_query_id: Callable[[], str]  # the id of that query
    new_tracker: Callable[[], Any]  # a streaming tracker on the loaded segmenter
    create_service: Callable[..., Any]  # (type, name, callback, callback_group=): the node's
    destroy_service: Callable[[Any], Any]


def streaming_tracker(pipeline):
    """A streaming tracker on `pipeline`'s segmenter, of its family (its weights, its device)."""
    return pipeline.segmenter.new_tracker()


class Tracking:
    """Tracks seeded by the worker (`seed`), stepped by the loop thread (`start`/`stop` at
    activate/deactivate), stopped by the service."""

    def __init__(self, services: TrackingServices):
        self._services = services
        self._params = services.params
        self._logger = services.logger
        self._spatial = services.spatial
        self._frame = services.frame
        self._busy = services.busy
        self._publisher = services.publisher
        self.device_lock = threading.Lock()
        self._session: TrackSession | None = None  # made at the first seed, dropped at stop
        self._size: tuple[int, int] | None = None  # (h, w) of the frames the tracks follow
        self._tracks_active = 0  # len(session.queries), readable without the lock
        self._last_seq = 0  # camera frame number last tracked (or current at the first seed)
        self._skipped_since_state = 0
        self._frames_tracked = 0
        self._frames_skipped = 0
        self._rate = RateMeter()
        # Query ids of lost queries asked again, until answered (a DROPPED one stays until
        # deactivate: a few ids at most, one per loss).
        self._requeries: set[str] = set()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._service = None
        self._service_group = MutuallyExclusiveCallbackGroup()

    # ------------------------------------------------------------------ life cycle

    def start(self, service_name: str) -> None:
        """At activate: the stop service and the loop thread."""
        self._service = self._services.create_service(
            StopTracking, service_name, self._stop_cb, callback_group=self._service_group
        )
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="segzero-tracking", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """At deactivate (and cleanup/shutdown): end the loop and every track, drop the tracker
        and its memory, remove the service. Nothing is published."""
        self._stopping.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(STOP_TIMEOUT)
        with self.device_lock:
            if self._session is not None:
                self._session.stop()
            self._session, self._size, self._tracks_active = None, None, 0
        self._requeries.clear()
        service, self._service = self._service, None
        if service is not None:
            self._services.destroy_service(service)

    def frame_arrived(self) -> None:
        """The camera callback's signal: a newer frame is there."""
        self._wake.set()

    def snapshot(self) -> TrackingSnapshot:
        return TrackingSnapshot(
            tracks_active=self._tracks_active,
            frames_tracked=self._frames_tracked,
            frames_skipped=self._frames_skipped,
            rate=self._rate.rate(time.monotonic()),
        )

    @property
    def paused(self) -> bool:
        """True while a query runs or waits: the loop then takes no frame (queries first)."""
        return self._busy()

    @property
    def track_ids(self) -> list[int]:
        with self.device_lock:
            return list(self._session.queries) if self._session is not None else []

    # ------------------------------------------------------------------ seeding (worker)

    def seed(self, request: Request, rgb: np.ndarray, result: SegmentationResult) -> int:
        """Start one track per object of an OK result, from its mask on the frame it was
        answered on, when the request wants tracks; the first object's track id, or 0. The
        first object's track is named by the query, object k (k >= 2) by "<query> #k", so they
        do not replace each other (a new answer to the same query replaces them); at most
        max_tracked_objects objects are seeded. Runs on the worker, which holds `device_lock`."""
        requeried = request.query_id in self._requeries
        self._requeries.discard(request.query_id)  # answered, OK or not
        if result.status is not Status.OK or result.mask is None:
            return 0
        if not (requeried or self._wants(request)):
            return 0
        objects = [o for o in result_objects(result) if o.mask is not None]
        objects = objects[: max(1, self._params().max_tracked_objects)]
        logger = self._logger
        first_id = 0
        try:
            session = self._session or self._new_session()
            size = tuple(rgb.shape[:2])
            if self._tracks_active and size != self._size:
                why = f"a new track started on a {_size_text(size)} image"
                lost = self._end_all(session, f"{why}, not {_size_text(self._size)}")
                self._publish(None, lost, None)
            session.settings = self._settings()
            for k, obj in enumerate(objects):
                status, ended = session.start(rgb, object_label(request.query, k), mask=obj.mask)
                first_id = first_id or status.track_id
                oldest = [i for i in ended if i != status.track_id]
                if oldest:
                    logger.info(f"track {oldest[0]} ended: max_tracked_objects reached")
        except Exception as error:  # noqa: BLE001 - the answer stands; only its track is missing
            logger.warning(f"cannot track {request.query[:60]!r}: {error}")
            if not first_id:
                return 0
        if not self._tracks_active:  # frames before this one were never meant to be tracked
            frame = self._frame()
            self._last_seq = frame.seq if frame is not None else 0
            self._skipped_since_state = 0
        self._size = size
        self._tracks_active = len(session.queries)
        self._wake.set()
        return first_id

    def _wants(self, request: Request) -> bool:
        goal = request.goal_handle.request if request.goal_handle is not None else None
        choice = goal.track if goal is not None else Segment.Goal.TRACK_DEFAULT
        if choice == Segment.Goal.TRACK:
            return True
        if choice == Segment.Goal.NO_TRACK:
            return False
        return self._params().track

    def _new_session(self) -> TrackSession:
        self._session = TrackSession(self._services.new_tracker(), self._settings())
        return self._session

    def _settings(self) -> TrackSettings:
        p = self._params()
        return TrackSettings(
            max_tracks=p.max_tracked_objects,
            lost_score=p.lost_score,
            lost_min_area=p.lost_min_area,
            lost_frames=p.lost_frames,
        )

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        next_start = 0.0
        while not self._stopping.is_set():
            self._wake.wait(IDLE_WAIT)
            self._wake.clear()
            if not self._tracks_active or self.paused or not self._has_new_frame():
                continue
            rate = self._params().max_tracking_rate
            delay = next_start - time.monotonic()
            if rate > 0 and delay > 0 and self._stopping.wait(delay):
                return
            next_start = time.monotonic() + (1.0 / rate if rate > 0 else 0.0)
            try:
                self._track_newest()
            except Exception as error:  # noqa: BLE001 - the loop must outlive any frame
                self._logger.error(f"tracking failed: {error!r}")

    def _has_new_frame(self) -> bool:
        frame = self._frame()
        return frame is not None and frame.seq > self._last_seq

    def _track_newest(self) -> None:
        with self.device_lock:
            session, frame = self._session, self._frame()
            if session is None or not self._tracks_active or frame is None:
                return
            if frame.seq <= self._last_seq or self.paused:  # a query came during the wait
                return
            skipped = frame.seq - self._last_seq - 1
            self._last_seq = frame.seq
            self._frames_skipped += skipped
            self._skipped_since_state += skipped
            rgb, statuses = self._step(session, frame)
            self._tracks_active = len(session.queries)
            if rgb is not None:
                self._frames_tracked += 1
                self._rate.tick(time.monotonic())
        self._publish(frame.msg.header, statuses, rgb)
        if self._params().requery_on_loss:  # once per query, however many objects it had
            lost = [base_query(status.query) for status in statuses if status.state == LOST]
            for query in dict.fromkeys(lost):
                self._requery(query)

    def _step(self, session: TrackSession, frame: Frame):
        """(rgb or None, statuses) of one frame; a frame that cannot be tracked ends every
        track (their LOST statuses, rgb None)."""
        msg = frame.msg
        try:
            if isinstance(msg, CompressedImage):
                rgb = compressed_msg_to_rgb(msg)
            else:
                rgb = image_msg_to_rgb(msg)
        except ImageConversionError as error:
            return None, self._end_all(session, f"bad camera frame: {error}")
        size = tuple(rgb.shape[:2])
        if size != self._size:
            why = f"the camera frame size changed from {_size_text(self._size)} to"
            return None, self._end_all(session, f"{why} {_size_text(size)}")
        session.settings = self._settings()
        try:
            return rgb, session.step(rgb)
        except Exception as error:  # noqa: BLE001 - e.g. out of memory: end the tracks, go on
            return None, self._end_all(session, f"tracking failed: {error}")

    def _end_all(self, session: TrackSession, reason: str) -> list[TrackStatus]:
        """End every track (caller holds the lock); their LOST statuses; one warning."""
        queries = session.queries
        session.stop()
        self._tracks_active = 0
        self._logger.warning(f"{len(queries)} track(s) ended: {reason}")
        empty = np.zeros((0, 0), bool)
        return [
            TrackStatus(track_id, query, LOST, empty, None, 0.0, reason)
            for track_id, query in queries.items()
        ]

    def _requery(self, query: str) -> None:
        query_id = self._services.next_query_id()
        self._requeries.add(query_id)
        self._logger.info(f"track of {query[:60]!r} lost: asking again ({query_id})")
        self._services.submit(Request(query=query, query_id=query_id))

    # ------------------------------------------------------------------ publishing

    def _publish(self, header, statuses: list[TrackStatus], rgb: np.ndarray | None) -> None:
        """The union mask (when the frame was tracked) and the state; a state without a tracked
        frame (tracks ended) carries `header` if given, else the last tracked frame's."""
        frame = self._frame()
        if header is None:
            header = frame.msg.header if frame is not None else None
        mask_pub, state_pub = self._publisher("tracking_mask"), self._publisher("tracking_state")
        if rgb is not None and mask_pub is not None:
            mask_pub.publish(mask_to_image_msg(union_mask(statuses, rgb.shape[:2]), header))
        geometries = [OFF] * len(statuses)
        if rgb is not None:  # a tracked frame: locate its TRACKING objects in 3D
            tracking = [i for i, status in enumerate(statuses) if status.state != LOST]
            located = self._spatial.locate_tracks(header, [statuses[i].mask for i in tracking])
            for i, geometry in zip(tracking, located, strict=True):
                geometries[i] = geometry
            self._spatial.publish_tracks(
                header,
                [(s.track_id, s.query, g) for s, g in zip(statuses, geometries, strict=True)],
            )
            self._services.detections.publish(header, tracked_detections(statuses, geometries))
        if state_pub is None:
            return
        state = TrackingState(
            objects=[tracked_object(s, g) for s, g in zip(statuses, geometries, strict=True)],
            frames_skipped=self._skipped_since_state,
        )
        if header is not None:
            state.header = header
        self._skipped_since_state = 0
        state_pub.publish(state)

    # ------------------------------------------------------------------ the stop service

    def stop_tracks(self, track_id: int = 0) -> list[int] | None:
        """End one track (every track with 0) and free its memory: the ids ended, None when
        `track_id` names no current track."""
        with self.device_lock:
            session = self._session
            known = list(session.queries) if session is not None else []
            if track_id != 0 and track_id not in known:
                return None
            stopped = session.stop(track_id or None) if session is not None else []
            self._tracks_active = len(session.queries) if session is not None else 0
        if stopped:
            self._logger.info(f"stopped track(s) {stopped}")
        return stopped

    def _stop_cb(self, request, response):
        stopped = self.stop_tracks(request.track_id)
        response.success = stopped is not None
        if stopped is None:
            current = ", ".join(map(str, self.track_ids)) or "none"
            response.message = f"no track {request.track_id} (current tracks: {current})"
        else:
            response.stopped_ids = stopped
            response.message = f"stopped {len(stopped)} track(s)"
        return response


def tracked_object(status: TrackStatus, geometry=OFF) -> TrackedObject:
    """One TrackStatus (and its 3D geometry) as a TrackedObject message."""
    msg = TrackedObject(
        track_id=status.track_id,
        query=status.query,
        state=track_state_code(status.state),
        state_name=status.state,
        score=float(status.score),
        area=status.area,
        reason=status.reason,
    )
    if status.box is not None:
        msg.has_bbox = True
        msg.bbox = [float(v) for v in status.box]
    fill_tracked(msg, geometry)
    return msg


def tracked_detections(statuses: list[TrackStatus], geometries) -> list[Detected]:
    """The TRACKING objects of a tracked frame as detections: id = track id, class_id = the
    query the track was seeded from."""
    return [
        Detected(str(s.track_id), base_query(s.query), float(s.score), s.box, geometry)
        for s, geometry in zip(statuses, geometries, strict=True)
        if s.state != LOST and s.box is not None
    ]


def base_query(track_query: str) -> str:
    """The query a track was seeded from: "<query> #k" (object k of a multi-object answer)
    → "<query>"."""
    head, sep, tail = track_query.rpartition(" #")
    return head if sep and tail.isdigit() and int(tail) >= 2 else track_query


def _size_text(size: tuple[int, int] | None) -> str:
    return "?" if size is None else f"{size[1]}x{size[0]}"
