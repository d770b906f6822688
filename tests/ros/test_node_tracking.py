"""The node's tracking, end to end on the shared tiny node (tests/ros_harness.py): an answered
object followed on a moving-square camera stream (mask and TrackingState per tracked frame, with
those frames' headers), the stop service, LOST once, the ask-again on loss, skipped frames,
bad frames and size changes mid-track, deactivate, and goals that ask for no track.

The tiny SAM2's masks are noise: these tests check the plumbing (headers, ids, states, counts),
not what the masks cover. The shared node starts no track unless a test asks (its `track`
parameter is false); every test here stops its tracks and restores what it changed.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from conftest import ros_importorskip

ros_importorskip(
    "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
)

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from ros_harness import WAIT, R, held_worker, kept_tracks, wait_until  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from segzero_ros.action import Segment  # noqa: E402
from segzero_ros.msg import TrackedObject, TrackingState  # noqa: E402
from segzero_ros.srv import StopTracking  # noqa: E402

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 160, 120


def moving_square(index: int, width: int = WIDTH, height: int = HEIGHT) -> np.ndarray:
    rgb = np.full((height, width, 3), 90, np.uint8)
    x = 10 + (3 * index) % (width - 50)
    rgb[40:80, x : x + 40] = (220, 30, 30)
    return rgb


class CameraStream:
    """Frames of a moving square published at `rate` Hz from a thread; `headers` are the
    headers sent, in order."""

    def __init__(self, harness, rate: float = 20.0, width: int = WIDTH, height: int = HEIGHT):
        self.harness, self.period, self.size = harness, 1.0 / rate, (width, height)
        self.headers: list[Header] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        index = 0
        while not self._stop.is_set():
            msg = self.harness.image_msg(*self.size)
            msg.data = moving_square(index, *self.size).tobytes()
            self.headers.append(msg.header)
            self.harness.probe.image_pub.publish(msg)
            index += 1
            self._stop.wait(self.period)

    def __enter__(self) -> CameraStream:
        self._thread.start()
        node = self.harness.node
        wait_until(
            lambda: (frame := node.latest_frame) is not None and frame.msg.header in self.headers,
            20,
            "the node receiving the stream",
        )
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __exit__(self, *exc) -> None:
        self.stop()


@pytest.fixture(scope="module")
def tracking_probe(node_harness):
    """The probe's subscribers on the tracking topics and its stop-service client."""
    probe = node_harness.probe
    subscriptions = []
    for key, kind, topic in [
        ("tracking_mask", Image, "/segzero/tracking/mask"),
        ("tracking_state", TrackingState, "/segzero/tracking/state"),
    ]:
        probe.received.setdefault(key, [])
        subscriptions.append(probe.node.create_subscription(kind, topic, probe._keeper(key), 50))
    client = probe.node.create_client(StopTracking, "/segzero/stop_tracking")
    yield client
    probe.node.destroy_client(client)
    for subscription in subscriptions:
        probe.node.destroy_subscription(subscription)


@pytest.fixture
def tracking(harness, tracking_probe):
    """The harness with the tracking topics matched; ends every track and puts the changed
    parameters back afterwards."""
    node = harness.node
    wait_until(
        lambda: (
            node._pubs["tracking_state"].get_subscription_count() > 0
            and node._pubs["tracking_mask"].get_subscription_count() > 0
        ),
        20,
        "the tracking subscribers matched",
    )
    assert tracking_probe.wait_for_service(timeout_sec=20), "no stop service"
    with kept_tracks(harness) as set_params:  # only the LOST test loses tracks
        harness.set_params = set_params
        harness.stop_client = tracking_probe
        try:
            yield harness
        finally:
            del harness.set_params, harness.stop_client


def track_goal(harness, query: str, track: int = Segment.Goal.TRACK):
    """Send an action goal on the newest camera frame; its result message."""
    assert harness.probe.action.wait_for_server(timeout_sec=20), "no action server"
    future = harness.probe.action.send_goal_async(Segment.Goal(query=query, track=track))
    wait_until(future.done, 20, "goal response")
    _, result = harness.goal_result(future.result())
    assert result.status == R.OK, (result.status_name, result.error)
    return result


def stop(harness, track_id: int):
    future = harness.stop_client.call_async(StopTracking.Request(track_id=track_id))
    wait_until(future.done, 20, "the stop service's answer")
    return future.result()


def states(harness, after: int) -> list:
    return harness.probe.messages("tracking_state", after)


def stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def lost_state(harness, track_id: int, after: int):
    return harness.probe.wait_for(
        "tracking_state",
        lambda m: any(o.track_id == track_id and o.state == TrackedObject.LOST for o in m.objects),
        WAIT,
        f"track {track_id} LOST",
        after=after,
    )


def test_an_answer_is_tracked_on_newer_frames_until_stopped(tracking):
    probe, node = tracking.probe, tracking.node
    with CameraStream(tracking) as camera:
        after_state, after_mask = probe.mark("tracking_state"), probe.mark("tracking_mask")
        result = track_goal(tracking, "the red square")
        track_id = result.track_id
        assert track_id > 0 and node.tracking.track_ids == [track_id]

        def tracked(m) -> bool:
            return stamp_ns(m.header) > stamp_ns(result.header) and any(
                o.track_id == track_id for o in m.objects
            )

        wait_until(lambda: len([m for m in states(tracking, after_state) if tracked(m)]) >= 3)
        seen = [m for m in states(tracking, after_state) if tracked(m)]
        stamps = [stamp_ns(m.header) for m in seen]
        assert stamps == sorted(set(stamps))  # each frame once, newer and newer
        for state in seen:
            assert state.header in camera.headers  # the tracked camera frame's own header
            (obj,) = state.objects
            assert (obj.track_id, obj.query) == (track_id, "the red square")
            assert (obj.state, obj.state_name) == (TrackedObject.TRACKING, "TRACKING")
            assert obj.reason == ""
            assert 0.0 <= obj.score <= 1.0 and obj.area <= WIDTH * HEIGHT
            assert obj.has_bbox == (obj.area > 0)
        masks = probe.wait_for(
            "tracking_mask", lambda m: m.header == seen[-1].header, 10, after=after_mask
        )
        assert (masks.encoding, masks.width, masks.height) == ("mono8", WIDTH, HEIGHT)
        assert set(np.unique(np.frombuffer(bytes(masks.data), np.uint8))) <= {0, 255}

        response = stop(tracking, track_id)
        assert (response.success, list(response.stopped_ids)) == (True, [track_id])
        assert node.tracking.track_ids == []
        time.sleep(0.2)  # a frame being tracked while the service waited may still come
        quiet = probe.mark("tracking_state")
        time.sleep(0.5)
        assert states(tracking, quiet) == []  # no tracks: nothing published


def test_the_track_parameter_goal_field_and_the_stop_service(tracking):
    node = tracking.node
    tracking.set_params(track=True)
    with CameraStream(tracking):
        first = tracking.probe.ask("the red square")  # a topic query follows the parameter
        assert first.status == R.OK and first.track_id > 0
        skipped = track_goal(tracking, "the grey floor", Segment.Goal.NO_TRACK)
        assert skipped.track_id == 0
        second = track_goal(tracking, "the grey floor", Segment.Goal.TRACK_DEFAULT)
        assert second.track_id not in (0, first.track_id)
        assert node.tracking.track_ids == [first.track_id, second.track_id]
        again = track_goal(tracking, "the red square")  # the same query replaces its track
        assert again.track_id == first.track_id
        assert sorted(node.tracking.track_ids) == sorted([first.track_id, second.track_id])

        unknown = stop(tracking, 999)
        assert not unknown.success and list(unknown.stopped_ids) == []
        assert "no track 999" in unknown.message and str(first.track_id) in unknown.message
        everything = stop(tracking, 0)
        assert everything.success
        assert sorted(everything.stopped_ids) == sorted([first.track_id, second.track_id])
        assert node.tracking.track_ids == []
        assert list(stop(tracking, 0).stopped_ids) == []  # nothing left: still a success
    tracking.set_params(track=False)
    tracking.fresh_frame()
    assert tracking.probe.ask("the red square").track_id == 0


def test_a_lost_track_is_reported_once_and_asked_again(tracking):
    node, probe = tracking.node, tracking.probe
    tracking.set_params(lost_score=1.0, lost_frames=2, requery_on_loss=True)  # every frame misses
    with CameraStream(tracking) as camera:
        after = probe.mark("tracking_state")
        after_results = probe.mark("result")
        track_id = track_goal(tracking, "the red square").track_id
        lost = lost_state(tracking, track_id, after)
        camera.stop()  # the new track (from the ask-again) then sees no frame to miss
    (obj,) = [o for o in lost.objects if o.track_id == track_id]
    assert obj.state_name == "LOST" and "object score below 1" in obj.reason
    assert "for 2 frames" in obj.reason
    assert track_id not in node.tracking.track_ids
    # Asked again as a normal query: its OK answer starts a new track.
    asked = probe.wait_for(
        "result",
        lambda m: m.query == "the red square" and m.query_id.startswith("q"),
        what="the query asked again",
        after=after_results,
    )
    assert asked.status == R.OK and asked.track_id not in (0, track_id)
    tracking.set_params(requery_on_loss=False)
    wait_until(lambda: node.tracking.track_ids == [asked.track_id], 10, "the new track")
    lost_reports = [
        o
        for m in states(tracking, after)
        for o in m.objects
        if o.track_id == track_id and o.state == TrackedObject.LOST
    ]
    assert len(lost_reports) == 1
    later = states(tracking, after)
    later = later[[id(m) for m in later].index(id(lost)) + 1 :]
    assert not any(o.track_id == track_id for m in later for o in m.objects)  # ended


def test_skipped_frames_are_counted(tracking):
    node, probe = tracking.node, tracking.probe
    tracking.set_params(max_tracking_rate=4.0)
    with CameraStream(tracking, rate=30.0):
        after = probe.mark("tracking_state")
        track_goal(tracking, "the red square")
        state = probe.wait_for(
            "tracking_state", lambda m: m.frames_skipped > 0, what="skipped frames", after=after
        )
        assert state.objects
        before = node.tracking.snapshot().frames_tracked
        diagnostics = probe.wait_for(
            "diagnostics", lambda m: True, what="diagnostics", after=probe.mark("diagnostics")
        )
        values = {kv.key: kv.value for kv in diagnostics.status[0].values}
        assert values["tracks_active"] == "1" and int(values["frames_tracked"]) >= 1
        assert int(values["frames_skipped"]) >= state.frames_skipped
        wait_until(lambda: node.tracking.snapshot().frames_tracked >= before + 3, 10)
        rate = node.tracking.snapshot().rate
        assert 0.0 < rate <= 4.0 * 1.25  # capped at max_tracking_rate


@pytest.mark.parametrize("change", ["bad encoding", "size change"])
def test_a_bad_frame_mid_track_ends_the_tracks_and_the_node_goes_on(tracking, change):
    node, probe = tracking.node, tracking.probe
    with CameraStream(tracking):
        track_id = track_goal(tracking, "the red square").track_id
    after = probe.mark("tracking_state")
    if change == "bad encoding":
        frame = tracking.image_msg(WIDTH, HEIGHT)
        frame.encoding = "yuv422"
        expected = "bad camera frame"
    else:
        frame = tracking.image_msg(64, 48)
        expected = "the camera frame size changed from 160x120 to 64x48"
    tracking.publish_frame(frame)
    lost = lost_state(tracking, track_id, after)
    assert lost.header == frame.header
    (obj,) = lost.objects
    assert expected in obj.reason and (obj.has_bbox, obj.area) == (False, 0)
    wait_until(lambda: node.tracking.track_ids == [], 10, "the tracks ended")
    tracking.fresh_frame()
    assert probe.ask(f"the red square after a {change}").status == R.OK


def test_deactivate_ends_every_track_and_frees_the_tracker(tracking):
    node = tracking.node
    with CameraStream(tracking):
        track_goal(tracking, "the red square")
        assert node.tracking.track_ids and node.tracking._session is not None
        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.tracking.track_ids == [] and node.tracking._session is None
    assert node.tracking.snapshot().tracks_active == 0
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    tracking.wait_ready()


def test_tracking_is_paused_while_the_node_serves_a_query(harness):
    """The node's wiring of "queries have priority" (tests/ros/test_tracking.py pins the loop
    itself): its tracking layer is paused exactly while its worker has a job."""
    node = harness.node
    harness.fresh_frame()
    harness.wait_idle()
    assert not node.tracking.paused
    with held_worker(harness, lambda: harness.send_goal("the red cup, held")):
        assert node.tracking.paused
    harness.wait_idle()
    assert not node.tracking.paused
