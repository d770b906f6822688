"""The perception node's topic side, end to end on the shared tiny node (tests/ros_harness.py):
queries in, result / mask / reasoning / overlay out, bad inputs answered, the overlay switch,
stale frames, the query length limit, a compressed camera."""

from __future__ import annotations

import re
import time

import cv2
import numpy as np
import pytest
from conftest import ros_importorskip

ros_importorskip(
    "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
)

from action_msgs.msg import GoalStatus  # noqa: E402
from builtin_interfaces.msg import Time  # noqa: E402
from rclpy.duration import Duration  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_harness import (  # noqa: E402
    CAMERA,
    LATCHED,
    NODE_OVERRIDES,
    R,
    scene,
    wait_matched,
    wait_until,
)
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from segzero_model.pipeline import MAX_QUERY_CHARS  # noqa: E402
from segzero_ros.inputs import frame_key  # noqa: E402
from segzero_ros.node import PerceptionNode  # noqa: E402

pytestmark = pytest.mark.slow


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
    try:
        # Matched by query_id: earlier tests asked "the red cup" too, and the history comes
        # one message at a time, so waiting for the text could stop at an older one.
        wait_until(
            lambda: (
                any(m.header == header for m in late)
                and any(r.query_id == result.query_id for r in late_results)
            ),
            10,
            "latched mask and result",
        )
        # The result topic keeps the last 10, delivered oldest first: ours is the newest.
        assert late[-1].header == header and late_results[-1].query_id == result.query_id
        assert late_results[-1].query == "the red cup"
    finally:
        probe.node.destroy_subscription(sub)
        probe.node.destroy_subscription(sub2)


def test_queries_on_one_camera_frame_share_the_reasoners_prefix(harness):
    """The node names the camera frame (its stamp) for the reasoner's prefix cache as for
    SAM2's: the second query on a frame prefills only its own tokens."""
    harness.fresh_frame(width=160, height=120)
    key = frame_key(harness.node.latest_frame)
    prefixes = harness.node.pipeline.reasoner.prefixes
    misses, hits = prefixes.misses, prefixes.hits
    assert harness.probe.ask("the red cup").status == R.OK
    assert harness.probe.ask("the blue mug").status == R.OK
    assert (prefixes.misses, prefixes.hits) == (misses + 1, hits + 1)
    assert ("key", key) in prefixes  # the frame's stamp, not a digest of its pixels


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

    assert node.set_parameters([Parameter("max_image_age", value=1.0)])[0].successful
    try:
        old = node.get_clock().now() - Duration(seconds=10)
        harness.publish_frame(harness.image_msg(stamp=old.to_msg()))
        result = probe.ask("a cup, long ago")
        assert result.status == R.STALE_IMAGE and "max_image_age 1 s" in result.error
        harness.fresh_frame()
        good("a stale frame")
    finally:
        node.set_parameters([Parameter("max_image_age", value=NODE_OVERRIDES["max_image_age"])])
    rejected = node.set_parameters([Parameter("queue_size", value=50)])[0]
    assert not rejected.successful  # read-only
    rejected = node.set_parameters([Parameter("max_image_age", value=-1.0)])[0]
    assert not rejected.successful


def test_a_stampless_frame_ages_from_its_arrival(harness):
    """A zero stamp means the camera driver set none: the frame is as old as its arrival at the
    node, not 55 years (the epoch), and it does go stale."""
    node, probe = harness.node, harness.probe
    max_age = 0.6
    assert node.set_parameters([Parameter("max_image_age", value=max_age)])[0].successful
    try:
        header = harness.publish_frame(harness.image_msg(stamp=Time(), frame_id="stampless"))
        arrived = node.latest_frame.received_ns
        fresh = probe.ask("the red cup, stampless and fresh")
        assert fresh.status == R.OK, (fresh.status_name, fresh.error)
        assert fresh.header == header

        remaining = max_age - (node.get_clock().now().nanoseconds - arrived) / 1e9
        time.sleep(max(0.0, remaining) + 0.05)
        stale = probe.ask("the red cup, stampless and stale")
        assert stale.status == R.STALE_IMAGE, (stale.status_name, stale.error)
        assert stale.header == header
        age = re.search(rf"on {CAMERA} is (\d+\.\d+) s old \(max_image_age 0.6 s\)", stale.error)
        assert age is not None, stale.error
        assert max_age < float(age.group(1)) < 60, stale.error  # from its arrival
    finally:
        node.set_parameters([Parameter("max_image_age", value=NODE_OVERRIDES["max_image_age"])])


def test_publish_overlay_switches_the_overlay_off_and_on_at_runtime(harness):
    node, probe = harness.node, harness.probe
    assert harness.params.publish_overlay
    seen = probe.mark("overlay")
    assert node.set_parameters([Parameter("publish_overlay", value=False)])[0].successful
    try:
        header_a = harness.fresh_frame(frame_id="overlay_off")
        result = probe.ask("the red cup, no overlay")
        assert result.status == R.OK, result.error
        # The mask goes out just before the overlay would: A's overlay, had it been drawn, is
        # on the wire ahead of B's (one reliable writer, in order).
        probe.wait_for("mask", lambda m: m.header == header_a, what="mask of A")
    finally:
        node.set_parameters([Parameter("publish_overlay", value=True)])
    header_b = harness.fresh_frame(frame_id="overlay_on")
    result = probe.ask("the red cup, overlay again")
    assert result.status == R.OK, result.error
    probe.wait_for("overlay", lambda m: m.header == header_b, what="overlay of B", after=seen)
    assert [m.header for m in probe.messages("overlay", after=seen)] == [header_b]


def test_the_query_length_limit(harness):
    probe = harness.probe
    harness.fresh_frame()
    assert MAX_QUERY_CHARS == 2000  # the documented limit
    text = ("the red cup on the left " * 100)[: MAX_QUERY_CHARS + 1]
    result = probe.ask(text)
    assert result.status == R.INVALID_QUERY
    assert result.error == f"query is 2001 characters long; the limit is {MAX_QUERY_CHARS}"
    assert result.generated_tokens == 0

    result = probe.ask(text[:MAX_QUERY_CHARS])
    assert result.status in (R.OK, R.UNPARSEABLE_ANSWER), (result.status_name, result.error)
    assert result.generated_tokens > 0  # served by the model


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
    entities = [
        probe.create_subscription(R, "/c/result", results.append, LATCHED),
        camera := probe.create_publisher(CompressedImage, "/test_camera2/image_raw/compressed", 5),
        queries := probe.create_publisher(String, "/c/query", LATCHED),
    ]
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
        # the latched mask but no overlay. The parts go out after the result, so the overlay
        # subscriber joins only once the mask (sent just before the overlay check) is out.
        masks: list = []
        overlays: list = []
        entities.append(probe.create_subscription(Image, "/c/mask", masks.append, LATCHED))
        wait_until(lambda: masks, 10, "latched mask")
        time.sleep(0.2)
        entities.append(probe.create_subscription(Image, "/c/overlay", overlays.append, LATCHED))
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
        for entity in entities:
            if hasattr(entity, "publish"):
                probe.destroy_publisher(entity)
            else:
                probe.destroy_subscription(entity)
