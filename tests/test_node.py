"""The perception node end to end: real rclpy over real DDS, the real tiny models.

The node and a probe node (publishers, subscribers, action client) spin in one
MultiThreadedExecutor on a background thread of this process, in a DDS domain of their own
(from the pid) on localhost; start-up failures are checked in child processes. Needs the
generated messages (`source install/setup.bash`, as scripts/test.sh does).
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import cv2
import numpy as np
import pytest

msgs = pytest.importorskip(
    "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
)

import rclpy  # noqa: E402
from action_msgs.msg import GoalStatus  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.event_handler import PublisherEventCallbacks  # noqa: E402
from rclpy.exceptions import InvalidHandle  # noqa: E402
from rclpy.executors import MultiThreadedExecutor, SingleThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402

from segzero_ros.action import Segment  # noqa: E402
from segzero_ros.main import spin  # noqa: E402
from segzero_ros.node import PerceptionNode  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
R = msgs.SegmentationResult
DOMAIN_ID = str(1 + os.getpid() % 50)  # the --tiny child uses DOMAIN_ID + 50
CAMERA = "/test_camera/image_raw"
QUEUE_SIZE = 3
WAIT = 90.0  # seconds; a tiny query takes 1-8 s on a busy 2-core CPU
LATCHED = QoSProfile(
    depth=300,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)


def ros_env() -> dict[str, str]:
    return dict(os.environ, ROS_DOMAIN_ID=DOMAIN_ID, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST")


def wait_until(predicate, timeout: float = WAIT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def scene(width: int, height: int) -> np.ndarray:
    rgb = np.full((height, width, 3), 90, np.uint8)
    rgb[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = (220, 30, 30)
    return rgb


def wait_matched(publisher, node: PerceptionNode, topic: str) -> None:
    """Wait until a publisher and the node's reader have matched each other: a reader drops
    what comes from a writer it has not matched yet, and the node makes new readers at each
    activate."""

    def matched() -> bool:
        readers = [s for s in node._subs if s.topic_name == topic]
        return (
            publisher.get_subscription_count() > 0
            and bool(readers)
            and all(reader.get_publisher_count() > 0 for reader in readers)
        )

    wait_until(matched, 20, f"{topic} matched")


class Probe:
    """The test's side of the wire: camera and query publishers, result/part subscribers and
    an action client, each message kept in arrival order."""

    def __init__(self, context):
        self.node = rclpy.create_node("segzero_test_probe", context=context)
        n = self.node
        self.condition = threading.Condition()
        self.received: dict[str, list] = {
            "result": [],
            "mask": [],
            "reasoning": [],
            "overlay": [],
            "diagnostics": [],
        }
        self.image_pub = n.create_publisher(Image, CAMERA, 5)
        self.query_pub = n.create_publisher(String, "/segzero/query", LATCHED)
        for key, kind, topic in [
            ("result", R, "/segzero/result"),
            ("mask", Image, "/segzero/mask"),
            ("reasoning", String, "/segzero/reasoning"),
            ("overlay", Image, "/segzero/overlay"),
            ("diagnostics", DiagnosticArray, "/diagnostics"),
        ]:
            qos = LATCHED if key != "diagnostics" else 10
            n.create_subscription(kind, topic, self._keeper(key), qos)
        self.action = ActionClient(n, Segment, "/segzero/segment")

    def _keeper(self, key):
        def keep(msg):
            with self.condition:
                self.received[key].append(msg)
                self.condition.notify_all()

        return keep

    def messages(self, key: str) -> list:
        with self.condition:
            return list(self.received[key])

    def wait_for(self, key: str, predicate, timeout: float = WAIT, what: str = ""):
        with self.condition:
            found = self.condition.wait_for(
                lambda: next((m for m in self.received[key] if predicate(m)), None), timeout
            )
        assert found is not None, f"timed out waiting for {what or key}"
        return found

    def result(self, query: str, timeout: float = WAIT):
        return self.wait_for("result", lambda m: m.query == query, timeout, f"result of {query!r}")

    def query(self, text: str) -> None:
        self.query_pub.publish(String(data=text))

    def ask(self, text: str, timeout: float = WAIT):
        self.query(text)
        return self.result(text, timeout)


class Harness:
    def __init__(self, context, executor, node: PerceptionNode, probe: Probe):
        self.context, self.executor, self.node, self.probe = context, executor, node, probe

    def image_msg(self, width=64, height=48, *, stamp=None, frame_id="camera_optical"):
        header = Header(frame_id=frame_id)
        header.stamp = stamp if stamp is not None else self.node.get_clock().now().to_msg()
        rgb = scene(width, height)
        return Image(
            header=header,
            height=height,
            width=width,
            encoding="rgb8",
            step=width * 3,
            data=rgb.tobytes(),
        )

    def publish_frame(self, msg: Image) -> Header:
        """Publish a camera frame and wait until the node holds it as its newest."""
        wait_until(lambda: self.probe.image_pub.get_subscription_count() > 0, what="camera match")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # best effort: publish again until it is there
            self.probe.image_pub.publish(msg)
            try:
                wait_until(
                    lambda: (
                        (frame := self.node.latest_frame) is not None
                        and frame.msg.header == msg.header
                    ),
                    timeout=1.0,
                )
                return msg.header
            except AssertionError:
                continue
        raise AssertionError("the node never received the camera frame")

    def wait_query_matched(self) -> None:
        wait_matched(self.probe.query_pub, self.node, "/segzero/query")

    def fresh_frame(self, **kwargs) -> Header:
        return self.publish_frame(self.image_msg(**kwargs))

    def send_goal(self, query: str, image: Image | None = None, feedback: list | None = None):
        assert self.probe.action.wait_for_server(timeout_sec=20), "no action server"
        goal = Segment.Goal(query=query)
        if image is not None:
            goal.image = image
        future = self.probe.action.send_goal_async(
            goal,
            feedback_callback=None if feedback is None else lambda f: feedback.append(f.feedback),
        )
        wait_until(future.done, 20, "goal response")
        handle = future.result()
        assert handle.accepted
        return handle

    def goal_result(self, handle, timeout: float = WAIT):
        future = handle.get_result_async()
        wait_until(future.done, timeout, "goal result")
        response = future.result()
        return response.status, response.result.result


@pytest.fixture(scope="module")
def harness(tiny_qwen_dir, tiny_sam2_dir):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ROS_DOMAIN_ID", DOMAIN_ID)
        patch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        context = rclpy.Context()
        rclpy.init(context=context)
        yield from _spin_harness(context, tiny_qwen_dir, tiny_sam2_dir)


def _spin_harness(context, tiny_qwen_dir, tiny_sam2_dir):
    node = PerceptionNode(
        context=context,
        parameter_overrides={
            "reasoning_model": str(tiny_qwen_dir),
            "segmentation_model": str(tiny_sam2_dir),
            "device": "cpu",
            "max_new_tokens": 96,
            "image_topic": CAMERA,
            "max_image_age": 0.0,  # frames are published once; the stale test turns it on
            "queue_size": QUEUE_SIZE,
            "diagnostics_period": 0.2,
        },
    )
    probe = Probe(context)
    executor = MultiThreadedExecutor(num_threads=6, context=context)
    executor.add_node(node)
    executor.add_node(probe.node)
    # The node's own spin(), as the console script runs it: rclpy can still raise InvalidHandle
    # from the wait set when the action server is destroyed at deactivate (ros2/rclpy#1284).
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(executor, node.get_logger(), stop), daemon=True)
    spinner.start()
    assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    harness = Harness(context, executor, node, probe)
    harness.wait_query_matched()
    yield harness
    node.trigger_shutdown()
    assert node.worker is None and node.pipeline is None
    stop.set()
    executor.shutdown(timeout_sec=5)
    node.destroy_node()
    probe.node.destroy_node()
    rclpy.shutdown(context=context)
    spinner.join(timeout=10)


def test_topic_query_gets_result_mask_reasoning_and_overlay(harness):
    probe = harness.probe
    header = harness.fresh_frame(width=160, height=120)
    result = probe.ask("the red cup")
    assert result.status == R.OK, result.error
    assert (result.status_name, result.error) == ("OK", "")
    assert result.header == header  # the stamp and frame_id of the image segmented
    assert result.query_id.startswith("q") and result.query_id[1:].isdigit()
    assert (result.mask.height, result.mask.width, result.mask.encoding) == (120, 160, "mono8")
    mask = np.frombuffer(bytes(result.mask.data), np.uint8).reshape(120, 160)
    assert set(np.unique(mask)) <= {0, 255}
    assert result.has_bbox and len(result.points) == 2
    x1, y1, x2, y2 = result.bbox
    assert 0 <= x1 < x2 <= 160 and 0 <= y1 < y2 <= 120
    assert result.reasoning and "<think>" in result.raw_output
    timings = {t.stage: t.seconds for t in result.timings}
    assert timings["total"] > 0 and result.generated_tokens > 0

    stamped = lambda m: m.header == header  # noqa: E731
    mask_msg = probe.wait_for("mask", stamped, what="mask")
    assert (mask_msg.encoding, mask_msg.height, mask_msg.width) == ("mono8", 120, 160)
    assert bytes(mask_msg.data) == bytes(result.mask.data)
    overlay = probe.wait_for("overlay", stamped, what="overlay")
    assert (overlay.encoding, overlay.height, overlay.width, overlay.step) == (
        "rgb8",
        120,
        160,
        480,
    )
    pixels = np.frombuffer(bytes(overlay.data), np.uint8).reshape(120, 160, 3)
    assert not np.array_equal(pixels, scene(160, 120))  # mask tinted, box drawn
    probe.wait_for("reasoning", lambda m: m.data == result.reasoning, what="reasoning")

    # Transient local: a subscriber that comes later still gets the last mask and result.
    late: list = []
    sub = probe.node.create_subscription(Image, "/segzero/mask", late.append, LATCHED)
    late_results: list = []
    sub2 = probe.node.create_subscription(R, "/segzero/result", late_results.append, LATCHED)
    wait_until(lambda: late and late_results, 10, "latched mask and result")
    assert late[-1].header == header and late_results[-1].query == "the red cup"
    probe.node.destroy_subscription(sub)
    probe.node.destroy_subscription(sub2)


def test_action_goal_streams_feedback_and_uses_its_own_image(harness):
    image = harness.image_msg(width=96, height=72, frame_id="goal_frame")
    feedback: list = []
    handle = harness.send_goal("the thing I can drink from", image, feedback)
    status, result = harness.goal_result(handle)
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert result.status == R.OK, result.error
    assert result.header == image.header
    assert (result.mask.height, result.mask.width) == (72, 96)
    assert result.query_id == bytes(handle.goal_id.uuid).hex()
    wait_until(lambda: feedback and feedback[-1].reasoning == result.reasoning, 5, "last feedback")

    assert feedback[0].stage == "queued"
    stages = [f.stage for f in feedback]
    assert "reasoning" in stages and stages[-1] == "segmenting"
    texts = [f.reasoning for f in feedback if f.stage != "queued"]
    assert len(texts) >= 3, stages  # streamed, not one message at the end
    for before, after in zip(texts, texts[1:], strict=False):
        assert result.reasoning.startswith(after) and len(after) >= len(before)
    assert texts[-1] == result.reasoning
    decode = next(t.seconds for t in result.timings if t.stage == "total")
    assert len(feedback) <= 20 * decode + 4  # throttled to ~20 per second
    assert all(f.queue_position == 0 for f in feedback[1:])
    # Goal results are published on the result topic too.
    harness.probe.wait_for("result", lambda m: m.query_id == result.query_id)


def test_cancel_running_and_queued_goals(harness):
    harness.fresh_frame()
    running_feedback: list = []
    queued_feedback: list = []
    # A long query (a longer prefill) keeps the generation going well past the cancel.
    running = harness.send_goal(
        "the running one " + "and the red cup " * 100, feedback=running_feedback
    )
    queued = harness.send_goal("the queued one", feedback=queued_feedback)
    wait_until(lambda: any(f.stage == "reasoning" for f in running_feedback), what="reasoning")
    queued_cancel = queued.cancel_goal_async()
    wait_until(queued_cancel.done, 20, "cancel response")
    assert len(queued_cancel.result().goals_canceling) == 1
    status, result = harness.goal_result(queued, timeout=20)
    assert status == GoalStatus.STATUS_CANCELED
    assert (result.status, result.error) == (R.CANCELLED, "cancelled while queued")
    assert queued_feedback and all(f.stage == "queued" for f in queued_feedback)

    started = time.monotonic()
    running_cancel = running.cancel_goal_async()
    wait_until(running_cancel.done, 20, "cancel response")
    status, result = harness.goal_result(running, timeout=30)
    assert status == GoalStatus.STATUS_CANCELED
    assert result.status == R.CANCELLED and result.mask.height == 0
    assert time.monotonic() - started < 15  # generation stopped, not run to the end


def test_bad_inputs_each_followed_by_a_good_query(harness):
    node, probe = harness.node, harness.probe
    harness.fresh_frame()

    def good(tag: str):
        result = probe.ask(f"the red cup after {tag}")
        assert result.status == R.OK, (tag, result.status_name, result.error)

    for text in ["", " . "]:
        result = probe.ask(text)
        assert (result.status_name, result.error) == ("INVALID_QUERY", "query is empty")
    good("an empty query")

    bad = harness.image_msg()
    bad.encoding = "yuv422"
    harness.publish_frame(bad)
    result = probe.ask("a cup in yuv")
    assert result.status == R.INVALID_IMAGE and "'yuv422'" in result.error
    assert result.header == bad.header
    harness.fresh_frame()
    good("an unsupported encoding")

    short = harness.image_msg()
    short.data = bytes(short.data)[:-5]
    harness.publish_frame(short)
    result = probe.ask("a cup, short data")
    assert result.status == R.INVALID_IMAGE and "height x step" in result.error
    goal_image = harness.image_msg()
    goal_image.step = 10  # shorter than a row
    status, result = harness.goal_result(harness.send_goal("a cup, bad goal", goal_image))
    assert status == GoalStatus.STATUS_ABORTED
    assert result.status == R.INVALID_IMAGE and "step 10 is shorter" in result.error
    harness.fresh_frame()
    good("a wrong data size")

    node.set_parameters([Parameter("max_image_age", value=1.0)])
    old = node.get_clock().now() - Duration(seconds=10)
    harness.publish_frame(harness.image_msg(stamp=old.to_msg()))
    result = probe.ask("a cup, long ago")
    assert result.status == R.STALE_IMAGE and "max_image_age 1 s" in result.error
    harness.fresh_frame()
    good("a stale frame")
    node.set_parameters([Parameter("max_image_age", value=0.0)])
    rejected = node.set_parameters([Parameter("queue_size", value=50)])[0]
    assert not rejected.successful  # read-only
    rejected = node.set_parameters([Parameter("max_image_age", value=-1.0)])[0]
    assert not rejected.successful


def test_lifecycle_frees_and_reloads_models(harness):
    node, probe = harness.node, harness.probe
    pipeline = weakref.ref(node.pipeline)
    reasoner = weakref.ref(node.pipeline.reasoner)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    gc.collect()
    assert node.pipeline is None and pipeline() is None and reasoner() is None
    assert not node.active and node.latest_frame is None
    wait_until(lambda: probe.query_pub.get_subscription_count() == 0, 10, "query unsubscribed")
    wait_until(lambda: not probe.action.server_is_ready(), 10, "action server gone")

    # Model parameters apply at the next activate: 8 tokens cannot hold the answer.
    node.set_parameters([Parameter("max_new_tokens", value=8)])
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    harness.wait_query_matched()
    result = probe.ask("a cup before any frame")
    assert result.status == R.NO_IMAGE and CAMERA in result.error
    harness.fresh_frame()
    result = probe.ask("a cup, 8 tokens")
    assert result.status == R.UNPARSEABLE_ANSWER and result.generated_tokens <= 8
    assert result.error and not result.has_bbox and result.mask.height == 0

    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    node.set_parameters([Parameter("max_new_tokens", value=96)])
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    harness.wait_query_matched()
    harness.fresh_frame()
    assert probe.ask("the red cup after reactivation").status == R.OK


def test_flood_of_queries_is_bounded_and_every_query_answered(harness):
    node, probe = harness.node, harness.probe
    harness.fresh_frame()
    wait_until(lambda: node.worker.depth == 0, (QUEUE_SIZE + 1) * WAIT, "an empty queue")
    before = node.stats.snapshot()
    texts = [f"flood {i}" for i in range(200)]
    goal_results = []  # asked for at once, as clients do: a server keeps a result ~10 s
    depths = []
    for i, text in enumerate(texts):
        probe.query(text)
        if i in (100, 120, 140):  # goals share the queue: sent while it is full
            goal_results.append(harness.send_goal(f"flood goal {i}").get_result_async())
        depths.append(node.worker.depth)
        time.sleep(0.003)
    expected = len(texts) + len(goal_results)

    def answered_at_node() -> int:
        depths.append(node.worker.depth)
        return node.stats.snapshot().total - before.total

    # The node answers every query and goal exactly once, by its own count (so a query lost
    # on its way in would show here) ...
    try:
        wait_until(lambda: answered_at_node() >= expected, (QUEUE_SIZE + 1) * WAIT, "answers")
    except AssertionError as error:
        counted = answered_at_node()
        raise AssertionError(f"{error}: the node answered {counted} of {expected}") from None
    after = node.stats.snapshot()
    assert after.total - before.total == expected
    served = after.total - before.total - (after.dropped - before.dropped)
    assert after.dropped - before.dropped >= 1  # a query takes far longer than sending 200
    assert max(depths) == QUEUE_SIZE  # full, never more

    # ... and every served result reaches the subscriber. DROPPED answers go out in a burst as
    # fast as queries arrive, and the result topic keeps the last 10 (KEEP_LAST, RELIABLE), so
    # a subscriber slower than the burst may miss some of those; the action never misses.
    def flood_results() -> list:
        return [m for m in probe.messages("result") if m.query.startswith("flood ")]

    def served_received() -> bool:
        return sum(m.status_name != "DROPPED" for m in flood_results()) >= served

    wait_until(served_received, WAIT, "the served results")
    results = {m.query: m for m in flood_results()}
    assert sum(m.status_name != "DROPPED" for m in results.values()) == served  # no duplicates
    # Served ones are OK, or UNPARSEABLE_ANSWER: the tiny reasoner's canned answer comes out
    # garbled for some query texts.
    assert {m.status_name for m in results.values()} <= {"OK", "UNPARSEABLE_ANSWER", "DROPPED"}
    assert results[texts[0]].status_name != "DROPPED"  # the queue was empty
    dropped = [m for m in results.values() if m.status_name == "DROPPED"]
    assert dropped and all("queue is full" in m.error for m in dropped)
    for future in goal_results:  # each one consistent; almost surely all DROPPED
        wait_until(future.done, WAIT, "a goal result")
        response = future.result()
        assert (response.status, response.result.result.status_name) in [
            (GoalStatus.STATUS_ABORTED, "DROPPED"),
            (GoalStatus.STATUS_ABORTED, "UNPARSEABLE_ANSWER"),
            (GoalStatus.STATUS_SUCCEEDED, "OK"),
        ]
    wait_until(lambda: node.worker.depth == 0, (QUEUE_SIZE + 1) * WAIT, "the queue to drain")
    # Alive afterwards (an empty query is answered without the model, so this is quick).
    assert probe.ask("").status == R.INVALID_QUERY


def diagnostics_of(probe: Probe, node_name: str):
    statuses = [a.status[0] for a in probe.messages("diagnostics")]
    return [s for s in statuses if s.name.startswith(f"{node_name}:")]


def latest_values(probe: Probe) -> dict[str, str]:
    return {kv.key: kv.value for kv in diagnostics_of(probe, "segzero_perception")[-1].values}


def test_diagnostics_report_state_and_counters(harness, capfd):
    probe = harness.probe
    wait_until(lambda: harness.node.worker.depth == 0, (QUEUE_SIZE + 1) * WAIT, "an empty queue")
    snapshot = harness.node.stats.snapshot()
    time.sleep(0.5)
    status = diagnostics_of(probe, "segzero_perception")[-1]
    values = {kv.key: kv.value for kv in status.values}
    assert "segzero_perception" in status.name and "Seg-Zero" in status.name
    assert values["state"] == "active" and values["models_loaded"] == "true"
    assert values["device"] == "cpu" and status.hardware_id == "cpu"
    assert values["queue_size"] == str(QUEUE_SIZE) and int(values["queue_depth"]) == 0
    assert int(values["answered"]) >= snapshot.answered >= 8
    assert int(values["dropped"]) >= 1 and int(values["failed"]) >= 8
    assert float(values["median_latency_s"]) > 0 and float(values["last_latency_s"]) >= 0
    assert 1 <= int(values["latency_window"]) <= 100
    assert status.level in (b"\x00", b"\x01")  # OK or WARN (recent drops)
    assert values["unmatched_publishers"] == ""

    # A best-effort query publisher cannot match the node's reliable reader: said, not silent.
    best_effort = probe.node.create_publisher(
        String,
        "/segzero/query",
        QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT),
        event_callbacks=PublisherEventCallbacks(use_default_callbacks=False),
    )
    try:

        def unmatched_reported():
            last = diagnostics_of(probe, "segzero_perception")[-1]
            return latest_values(probe)["unmatched_publishers"] == "/segzero/query: 1" and last

        last = wait_until(unmatched_reported, 20, "the unmatched publisher in diagnostics")
        assert last.level == b"\x01" and "/segzero/query do not match" in last.message
    finally:
        probe.node.destroy_publisher(best_effort)
    wait_until(
        lambda: latest_values(probe)["unmatched_publishers"] == "",
        20,
        "the unmatched publisher gone from diagnostics",
    )
    assert "publisher(s) on /segzero/query do not match" in capfd.readouterr().err

    # While inactive the node says so (WARN).
    assert harness.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    try:
        time.sleep(0.5)
        last = diagnostics_of(probe, "segzero_perception")[-1]
        assert last.level == b"\x01" and "not loaded" in last.message
        assert {kv.key: kv.value for kv in last.values}["models_loaded"] == "false"
    finally:
        assert harness.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        harness.wait_query_matched()


def test_compressed_camera(harness, tiny_qwen_dir, tiny_sam2_dir):
    topics = {
        "query_topic": "/c/query",
        "result_topic": "/c/result",
        "mask_topic": "/c/mask",
        "reasoning_topic": "/c/reasoning",
        "overlay_topic": "/c/overlay",
        "action_name": "/c/segment",
    }
    node = PerceptionNode(
        "segzero_compressed",
        context=harness.context,
        parameter_overrides={
            "reasoning_model": str(tiny_qwen_dir),
            "segmentation_model": str(tiny_sam2_dir),
            "device": "cpu",
            "max_new_tokens": 96,
            "image_topic": "/test_camera2/image_raw",
            "compressed": True,
            **topics,
        },
    )
    harness.executor.add_node(node)
    probe = harness.probe.node
    results: list = []
    probe.create_subscription(R, "/c/result", results.append, LATCHED)
    camera = probe.create_publisher(CompressedImage, "/test_camera2/image_raw/compressed", 5)
    queries = probe.create_publisher(String, "/c/query", LATCHED)
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        wait_until(lambda: camera.get_subscription_count())
        wait_matched(queries, node, "/c/query")

        def send(frame: CompressedImage) -> None:
            def held():
                latest = node.latest_frame
                return latest is not None and latest.msg.header == frame.header

            while not held():
                camera.publish(frame)
                time.sleep(0.05)

        def ask(text: str):
            queries.publish(String(data=text))
            return wait_until(lambda: next((r for r in results if r.query == text), None))

        ok, png = cv2.imencode(".png", cv2.cvtColor(scene(80, 60), cv2.COLOR_RGB2BGR))
        assert ok
        frame = CompressedImage(format="png", data=png.tobytes())
        frame.header.stamp = node.get_clock().now().to_msg()
        frame.header.frame_id = "compressed_cam"
        send(frame)
        result = ask("the red cup, compressed")
        assert result.status == R.OK, result.error
        assert result.header == frame.header
        assert (result.mask.height, result.mask.width) == (60, 80)
        # Nobody subscribed to this node's overlay, so none was drawn: a late subscriber gets
        # the latched mask but no overlay.
        masks: list = []
        overlays: list = []
        probe.create_subscription(Image, "/c/mask", masks.append, LATCHED)
        probe.create_subscription(Image, "/c/overlay", overlays.append, LATCHED)
        wait_until(lambda: masks, 10, "latched mask")
        time.sleep(0.5)
        assert not overlays

        broken = CompressedImage(format="jpeg", data=b"\xff\xd8 broken")
        broken.header.stamp = node.get_clock().now().to_msg()
        send(broken)
        result = ask("a cup, broken jpeg")
        assert result.status == R.INVALID_IMAGE and "cannot decode" in result.error
    finally:
        node.trigger_shutdown()
        harness.executor.remove_node(node)
        node.destroy_node()


# --------------------------------------------------------------------------- start-up


def run_node(args: list[str], timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segzero_ros.main", *args],
        cwd=ROOT,
        env=env or ros_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_model_that_fails_to_load_stops_the_node_with_one_line():
    proc = run_node(
        ["--ros-args", "-p", "reasoning_model:=/nonexistent/seg-zero", "-p", "device:=cpu"]
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "cannot load the models" in line]
    assert len(lines) == 1 and "/nonexistent/seg-zero" in lines[0], output
    assert sum("ERROR" in line for line in output.splitlines()) == 1, output


def test_bad_parameter_file_and_bad_parameter_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("segzero_perception:\n  ros__parameters:\n    queue_sise: 3\n")
    proc = run_node(["--params-file", str(bad)])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown parameter 'queue_sise' (did you mean 'queue_size'?)" in proc.stderr

    proc = run_node(["--ros-args", "--params-file", str(bad)])
    assert proc.returncode == 2 and "unknown parameter 'queue_sise'" in proc.stderr

    proc = run_node(["--ros-args", "-p", "queue_size:=0"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "queue_size" in proc.stderr


def test_tiny_console_script_starts_serves_and_stops_on_sigint(tiny_cache):
    env = dict(ros_env(), SEGZERO_CACHE=str(tiny_cache), ROS_DOMAIN_ID=str(int(DOMAIN_ID) + 50))
    args = [
        "--tiny",
        "--params-file",
        str(ROOT / "config" / "perception.yaml"),
        "--ros-args",
        "-p",
        "device:=cpu",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "segzero_ros.main", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read():
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        try:
            wait_until(lambda: any("active:" in line for line in lines), WAIT, "node active")
        except AssertionError as error:
            raise AssertionError(f"{error}; output:\n{''.join(lines)}") from None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
        reader.join(timeout=5)
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "building the tiny checkpoints" not in output  # the session's copy was used
    assert "TINY RANDOM models" in output and "MEANINGLESS" in output
    assert "Traceback" not in output


def call(client, request, timeout: float = WAIT, retry_every: float = 15.0):
    """A service call, sent again while unanswered: with DDS a request sent just after
    discovery can lose its response (the server's reply writer has not matched the client
    yet). Only for requests that are safe to repeat."""
    assert client.wait_for_service(timeout_sec=timeout), f"no service {client.srv_name}"
    deadline = time.monotonic() + timeout
    while True:
        future = client.call_async(request)
        try:
            wait_until(future.done, min(retry_every, deadline - time.monotonic()))
            return future.result()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise AssertionError(f"no response from {client.srv_name}") from None


def change_lifecycle_state(change_state, get_state, transition: int, goal: int) -> None:
    """A transition, seen done by its response or, should that response be lost, by get_state
    (sending it again would be refused once it has happened)."""
    future = change_state.call_async(ChangeState.Request(transition=Transition(id=transition)))
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            wait_until(future.done, 10.0)
            assert future.result().success, f"transition {transition} failed"
            return
        except AssertionError:
            if future.done():
                raise
        if call(get_state, GetState.Request()).current_state.id == goal:
            return
    raise AssertionError(f"transition {transition} never finished")


def test_a_lifecycle_manager_drives_a_node_without_autostart(harness, tiny_qwen_dir, tiny_sam2_dir):
    """A separate process with autostart false waits unconfigured; the lifecycle services
    configure and activate it (as nav2's lifecycle manager or `ros2 lifecycle set` would)."""
    name = "managed_perception"
    overrides = {
        "autostart": "false",
        "reasoning_model": str(tiny_qwen_dir),
        "segmentation_model": str(tiny_sam2_dir),
        "device": "cpu",
        "max_new_tokens": "96",
        "max_image_age": "0.0",
        "image_topic": "/managed/image",
        "query_topic": "/managed/query",
        "result_topic": "/managed/result",
        "action_name": "/managed/segment",
    }
    args = ["--ros-args", "-r", f"__node:={name}"]
    for key, value in overrides.items():
        args += ["-p", f"{key}:={value}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "segzero_ros.main", *args],
        cwd=ROOT,
        env=ros_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    probe = harness.probe.node
    get_state = probe.create_client(GetState, f"/{name}/get_state")
    change_state = probe.create_client(ChangeState, f"/{name}/change_state")
    results: list = []
    probe.create_subscription(R, "/managed/result", results.append, LATCHED)
    queries = probe.create_publisher(String, "/managed/query", LATCHED)
    camera = probe.create_publisher(Image, "/managed/image", 5)
    try:
        state = call(get_state, GetState.Request()).current_state
        assert state.id == State.PRIMARY_STATE_UNCONFIGURED
        assert change_state.wait_for_service(timeout_sec=WAIT)
        for transition, goal in (
            (Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE),
            (Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE),
        ):
            change_lifecycle_state(change_state, get_state, transition, goal)
        state = call(get_state, GetState.Request()).current_state
        assert state.id == State.PRIMARY_STATE_ACTIVE

        wait_until(lambda: camera.get_subscription_count() and queries.get_subscription_count())
        frame = harness.image_msg()

        # Frame and query again until a result comes on a frame: the other process may not
        # have matched our writers yet (and the camera is best effort anyway).
        deadline = time.monotonic() + WAIT
        result = None
        while result is None and time.monotonic() < deadline:
            for _ in range(5):
                camera.publish(frame)
                time.sleep(0.05)
            queries.publish(String(data="the red cup, managed"))
            try:
                result = wait_until(
                    lambda: next((r for r in results if r.status != R.NO_IMAGE), None), 15.0
                )
            except AssertionError:
                continue
        assert result is not None, "no managed result"
        assert result.status == R.OK and result.header == frame.header, result.error
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
        probe.destroy_client(get_state)
        probe.destroy_client(change_state)
    assert proc.returncode == 0, output
    assert "Traceback" not in output


def test_spin_goes_on_after_the_wait_set_race(capfd):
    """rclpy can raise InvalidHandle from building a wait set while another thread destroys an
    entity (ros2/rclpy#1284); the node's spin logs it and keeps serving."""

    class RacingExecutor(SingleThreadedExecutor):
        raced = False

        def spin_once(self, timeout_sec=None):
            if not self.raced:
                self.raced = True
                raise InvalidHandle("cannot use Destroyable because destruction was requested")
            super().spin_once(timeout_sec)

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(DOMAIN_ID))
    node = rclpy.create_node("segzero_spin_race", context=context)
    ticks = threading.Event()
    node.create_timer(0.01, ticks.set)
    executor = RacingExecutor(context=context)
    executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(executor, node.get_logger(), stop), daemon=True)
    try:
        spinner.start()
        assert ticks.wait(10), "the timer never ran after the race"
        assert executor.raced
    finally:
        stop.set()
        executor.shutdown(timeout_sec=5)
        spinner.join(timeout=10)
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert not spinner.is_alive()
    assert "destruction was requested; spinning on" in capfd.readouterr().err
