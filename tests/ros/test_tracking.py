"""segzero_ros.tracking as a room of its own: built from its `TrackingServices` (a real worker,
a real TrackSession on the real StreamingTracker over the tiny SAM2, recording publishers), no
node, no spinning.

The README's "queries have priority: tracking takes no frame while a query runs or waits" is
pinned here: the node's device lock would hide a broken check while a query runs, and a
waiting query holds no lock at all.
"""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from conftest import ros_importorskip

ros_importorskip(
    "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
)

import rclpy.logging  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from segzero_model.result import ObjectResult, SegmentationResult, Status  # noqa: E402
from segzero_model.segmentation.segmenter import Segmenter  # noqa: E402
from segzero_model.segmentation.streaming_tracker import StreamingTracker  # noqa: E402
from segzero_ros.detections import Detections, DetectionServices  # noqa: E402
from segzero_ros.inputs import Frame, Request  # noqa: E402
from segzero_ros.msg import TrackedObject  # noqa: E402
from segzero_ros.params import PerceptionParams  # noqa: E402
from segzero_ros.spatial import Spatial, SpatialServices  # noqa: E402
from segzero_ros.tracking import Tracking, TrackingServices, base_query  # noqa: E402
from segzero_ros.worker import Job, Worker  # noqa: E402

W, H = 16, 12
PAUSE = 0.4  # seconds a paused loop is watched (it polls every IDLE_WAIT = 0.05 s)
TIMEOUT = 5.0


def wait_until(predicate, timeout: float = TIMEOUT, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


class Recorder:
    """A publisher that keeps what it was given."""

    def __init__(self):
        self.sent: list = []

    def publish(self, msg) -> None:
        self.sent.append(msg)


class Room:
    """A Tracking, its worker and its camera, wired as the node wires them."""

    def __init__(self, worker: Worker, segmenter: Segmenter, **settings):
        self.worker = worker
        self.asked: list[Request] = []  # the queries the room asked again
        self.publishers = {"tracking_mask": Recorder(), "tracking_state": Recorder()}
        self.frame: Frame | None = None
        self._seq = itertools.count(1)
        # track: true, use_depth: false; random weights: no score or area may lose the track
        params = PerceptionParams.from_mapping({"lost_score": 0.0, "lost_min_area": 0, **settings})
        logger = rclpy.logging.get_logger("test_tracking")
        spatial = Spatial(
            SpatialServices(
                params=lambda: params,
                logger=logger,
                publisher=self.publishers.get,
                subscribe=None,
                unsubscribe=None,
                resolve_topic=str,
                tf_buffer=None,
            )
        )
        self.tracking = Tracking(
            TrackingServices(
                params=lambda: params,
                logger=logger,
                spatial=spatial,
                detections=Detections(
                    DetectionServices(
                        params=lambda: params,
                        publisher=self.publishers.get,
                        target_transform=spatial.target_transform,
                    )
                ),
                frame=lambda: self.frame,
                busy=lambda: worker.pending,  # the node's wiring, on a real worker
                publisher=self.publishers.get,
                submit=self.asked.append,
                next_query_id=lambda: "q-again",
                new_tracker=lambda: StreamingTracker(segmenter.model, device="cpu"),
                create_service=lambda *args, **kwargs: object(),
                destroy_service=lambda service: None,
            )
        )

    def camera_frame(self) -> None:
        """A new camera frame arrives (as the node's image callback stores it)."""
        msg = Image(height=H, width=W, encoding="rgb8", step=3 * W)
        msg.data = np.full((H, W, 3), 90, np.uint8).tobytes()
        self.frame = Frame(msg, next(self._seq), time.monotonic_ns())
        self.tracking.frame_arrived()

    def start_a_track(self) -> int:
        self.camera_frame()
        mask = np.zeros((H, W), bool)
        mask[2:6, 3:9] = True
        result = SegmentationResult(Status.OK, "the cup", (W, H), mask=mask, bbox=(3, 2, 9, 6))
        rgb = np.zeros((H, W, 3), np.uint8)
        with self.tracking.device_lock:  # as the worker seeds
            track_id = self.tracking.seed(Request("the cup", "q1"), rgb, result)
        assert track_id == 1
        return track_id

    def frames_while(self, seconds: float = PAUSE) -> int:
        """Camera frames for `seconds`; how many of them the loop tracked."""
        with self.tracking.device_lock:  # a frame taken before the pause ends first
            before = self.tracked()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.camera_frame()
            time.sleep(0.02)
        return self.tracked() - before

    def tracked(self) -> int:
        return self.tracking.snapshot().frames_tracked

    def tracks_again(self) -> None:
        before = self.tracked()
        self.camera_frame()
        wait_until(lambda: self.tracked() > before, what="a frame tracked")


def failure(job, status, reason):
    return status


@pytest.fixture
def gate():
    """A handler that holds the job "block" until released."""
    entered, release = threading.Event(), threading.Event()

    def handler(job):
        if job.payload == "block":
            entered.set()
            assert release.wait(TIMEOUT), "the test never released the job"
        return Status.OK

    handler.entered, handler.release = entered, release
    yield handler
    release.set()


@pytest.fixture(scope="module")
def tiny_segmenter(tiny_model_dirs):
    segmenter = Segmenter.from_pretrained(tiny_model_dirs[1], device="cpu")
    yield segmenter
    segmenter.close()


@pytest.fixture
def room(gate, tiny_segmenter):
    worker = Worker(gate, failure, maxsize=4)
    room = Room(worker, tiny_segmenter)
    room.start_a_track()
    room.tracking.start("stop_tracking")
    try:
        room.tracks_again()  # the control: an idle worker, every new frame is tracked
        yield room
    finally:
        room.tracking.stop()
        worker.stop(timeout=TIMEOUT)


def test_tracking_takes_no_frame_while_a_query_runs(room, gate):
    room.worker.start()
    done = Job("q2", "block", lambda job, outcome: None)
    assert room.worker.submit(done)
    assert gate.entered.wait(TIMEOUT)
    assert room.tracking.paused
    skipped_before = room.tracking.snapshot().frames_skipped
    assert room.frames_while() == 0  # the query runs: not one frame tracked
    gate.release.set()
    assert done.wait(TIMEOUT) and room.worker.wait_idle(TIMEOUT)
    assert not room.tracking.paused
    room.tracks_again()
    assert room.tracking.snapshot().frames_skipped > skipped_before  # the paused frames


def test_tracking_takes_no_frame_while_a_query_waits(room):
    """A query queued that the worker thread has not taken yet (here: the worker is accepting
    but not started, so it never takes it until the test starts it)."""
    room.worker.resume()
    waiting = Job("q2", "quick", lambda job, outcome: None)
    assert room.worker.submit(waiting)
    assert (room.worker.busy, room.worker.depth) == (False, 1)
    assert room.tracking.paused
    assert room.frames_while() == 0  # the query waits: not one frame tracked
    room.worker.start()
    assert waiting.wait(TIMEOUT) and room.worker.wait_idle(TIMEOUT)
    room.tracks_again()


def test_a_tracked_frame_is_published_with_the_state_constants(room):
    states, masks = room.publishers["tracking_state"].sent, room.publishers["tracking_mask"].sent
    wait_until(lambda: states and masks, what="the tracked frame published")
    (obj,) = states[-1].objects
    assert (obj.track_id, obj.query) == (1, "the cup")
    assert (obj.state, obj.state_name) == (TrackedObject.TRACKING, "TRACKING")
    mask = masks[-1]
    assert (mask.encoding, mask.width, mask.height) == ("mono8", W, H)
    assert room.tracking.stop_tracks() == [1] and room.tracking.track_ids == []


def test_base_query_is_the_query_a_track_was_seeded_from():
    assert base_query("all the cups #2") == "all the cups"
    assert base_query("all the cups #13") == "all the cups"
    assert base_query("all the cups") == "all the cups"  # object 1 keeps the bare query
    assert base_query("room #1") == "room #1" and base_query("cup #b") == "cup #b"


def test_a_lost_multi_object_answer_is_asked_again_once_by_its_query(gate, tiny_segmenter):
    """Both tracks of "all the cups" (named "all the cups" and "all the cups #2") are lost on
    the first frame (lost_score 1: no score reaches it): one query, "all the cups", is asked
    again, not one per object nor "all the cups #2"."""
    worker = Worker(gate, failure, maxsize=4)
    room = Room(worker, tiny_segmenter, lost_score=1.0, lost_frames=1, requery_on_loss=True)
    room.camera_frame()
    masks = [np.zeros((H, W), bool) for _ in range(2)]
    masks[0][2:6, 1:6], masks[1][5:10, 9:15] = True, True
    objects = [ObjectResult(None, (), mask=m, score=1.0) for m in masks]
    result = SegmentationResult(
        Status.OK, "all the cups", (W, H), mask=masks[0] | masks[1], objects=objects
    )
    with room.tracking.device_lock:
        room.tracking.seed(Request("all the cups", "q1"), np.zeros((H, W, 3), np.uint8), result)
    assert len(room.tracking.track_ids) == 2
    room.tracking.start("stop_tracking")
    try:
        room.camera_frame()
        wait_until(lambda: room.asked, what="the query asked again")
        wait_until(lambda: not room.tracking.track_ids, what="both tracks ended")
        time.sleep(0.2)  # nothing more comes
        assert [request.query for request in room.asked] == ["all the cups"]
        assert room.asked[0].query_id == "q-again"
    finally:
        room.tracking.stop()
        worker.stop(timeout=TIMEOUT)
