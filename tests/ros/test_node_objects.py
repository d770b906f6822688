"""Answers with several objects, and NOT_FOUND, end to end on the shared tiny node
(tests/ros_harness.py). The tiny reasoner answers one object; the pipeline's `segment` is
wrapped to turn its real output into a two-object answer (the real mask split in two halves)
or into NOT_FOUND, so everything after the model is the node's real path: the result message's
objects, the union mask, the instance image, one track per object, the action's terminal state.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import ros_importorskip

ros_importorskip(
    "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
)

from action_msgs.msg import GoalStatus  # noqa: E402
from ros_harness import R, kept_tracks, wait_until, wrap_segment  # noqa: E402
from test_node_depth import ask_with_depth, depth, depth_probe  # noqa: E402, F401 - fixtures

from segzero_model.result import ObjectResult, SegmentationResult, Status  # noqa: E402
from segzero_ros.action import Segment  # noqa: E402

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 160, 120


def two_objects(segment, *args, **kwargs) -> SegmentationResult:
    """The real answer, made into two objects: the left and right halves of the image, each
    with the real mask's score; mask = their union (the whole image)."""
    real = segment(*args, **kwargs)
    assert real.status is Status.OK, real.reason
    height, width = real.mask.shape
    left = np.zeros((height, width), bool)
    left[:, : width // 2] = True
    objects = [
        ObjectResult((0.0, 0.0, width / 2, float(height)), ((10.0, 10.0),), left, 0.75),
        ObjectResult((width / 2, 0.0, float(width), float(height)), ((120.0, 60.0),), ~left, 0.5),
    ]
    return dataclasses.replace(
        real,
        mask=left | ~left,
        bbox=objects[0].bbox,
        points=objects[0].points,
        score=objects[0].score,
        objects=objects,
    )


def not_found(segment, *args, **kwargs) -> SegmentationResult:
    """The real answer's reasoning, with the model saying there is no such object."""
    real = segment(*args, **kwargs)
    return SegmentationResult(
        status=Status.NOT_FOUND,
        query=real.query,
        image_size=real.image_size,
        reason="the model found no such object in view",
        reasoning=real.reasoning or "nothing like that here",
        raw_output=real.raw_output,
        timings=real.timings,
        num_generated_tokens=real.num_generated_tokens,
    )


def goal(harness, query: str, track: int = Segment.Goal.TRACK_DEFAULT):
    assert harness.probe.action.wait_for_server(timeout_sec=20), "no action server"
    future = harness.probe.action.send_goal_async(Segment.Goal(query=query, track=track))
    wait_until(future.done, 20, "goal response")
    return harness.goal_result(future.result())


def test_two_objects_result_union_mask_and_instance_image(harness):
    probe, node = harness.probe, harness.node
    wait_until(
        lambda: node._pubs["instances"].get_subscription_count() > 0, 20, "instances matched"
    )
    header = harness.fresh_frame(width=WIDTH, height=HEIGHT)
    with wrap_segment(node, two_objects):
        status, result = goal(harness, "the two halves")
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert result.status == R.OK, result.error
    assert [o.instance_id for o in result.objects] == [1, 2]
    half = WIDTH // 2 * HEIGHT
    assert [o.area for o in result.objects] == [half, half]
    assert [o.score for o in result.objects] == pytest.approx([0.75, 0.5])
    assert all(o.has_bbox for o in result.objects) and not result.objects[0].has_position
    assert list(result.bbox) == list(result.objects[0].bbox)  # top level: the first object
    assert result.score == pytest.approx(0.75)
    assert [(p.x, p.y) for p in result.objects[1].points] == [(120.0, 60.0)]

    stamped = lambda m: m.header == header  # noqa: E731
    mask = probe.wait_for("mask", stamped, what="mask")
    assert (mask.encoding, mask.width, mask.height) == ("mono8", WIDTH, HEIGHT)
    assert set(np.frombuffer(bytes(mask.data), np.uint8)) == {255}  # the union: everything
    labels_msg = probe.wait_for("instances", stamped, what="instance image")
    assert (labels_msg.encoding, labels_msg.width, labels_msg.height) == (
        "mono16",
        WIDTH,
        HEIGHT,
    )
    labels = np.frombuffer(bytes(labels_msg.data), "<u2").reshape(HEIGHT, WIDTH)
    assert (labels[:, : WIDTH // 2] == 1).all() and (labels[:, WIDTH // 2 :] == 2).all()


def test_each_object_starts_its_own_track(harness):
    node = harness.node
    harness.fresh_frame(width=WIDTH, height=HEIGHT)
    with kept_tracks(harness):
        with wrap_segment(node, two_objects):
            status, result = goal(harness, "the cups", Segment.Goal.TRACK)
        assert status == GoalStatus.STATUS_SUCCEEDED and result.status == R.OK
        ids = node.tracking.track_ids
        assert len(ids) == 2 and result.track_id == ids[0] > 0
        queries = dict(node.tracking._session.queries)
        assert [queries[i] for i in ids] == ["the cups", "the cups #2"]

        # The same query answered again replaces both tracks (same names, same ids).
        with wrap_segment(node, two_objects):
            _, again = goal(harness, "the cups", Segment.Goal.TRACK)
        assert sorted(node.tracking.track_ids) == sorted(ids)
        assert again.track_id == result.track_id


def test_not_found_sends_reasoning_and_result_but_no_mask(harness):
    probe, node = harness.probe, harness.node
    header = harness.fresh_frame(width=WIDTH, height=HEIGHT)
    masks, instances = probe.mark("mask"), probe.mark("instances")
    reasoning = probe.mark("reasoning")
    results = probe.mark("result")
    with wrap_segment(node, not_found):
        status, result = goal(harness, "the unicorn", Segment.Goal.TRACK)
    # Served: the answer is "not there", so the goal succeeds (failures abort).
    assert status == GoalStatus.STATUS_SUCCEEDED
    assert (result.status, result.status_name) == (R.NOT_FOUND, "NOT_FOUND")
    assert result.reasoning and result.error
    assert result.header == header
    assert result.mask.height == 0 and not result.has_bbox and len(result.objects) == 0
    assert result.track_id == 0 and node.tracking.track_ids == []
    probe.wait_for("result", lambda m: m.query == "the unicorn", after=results)
    probe.wait_for("reasoning", lambda m: m.data == result.reasoning, 10, after=reasoning)
    harness.wait_idle()
    assert probe.messages("mask", masks) == [] and probe.messages("instances", instances) == []


def test_a_single_object_answer_is_unchanged(harness):
    header = harness.fresh_frame(width=WIDTH, height=HEIGHT)
    result = harness.probe.ask("the red cup")
    assert result.status == R.OK and result.header == header
    (obj,) = result.objects
    assert obj.instance_id == 1 and list(obj.bbox) == list(result.bbox)
    mask = np.frombuffer(bytes(result.mask.data), np.uint8).reshape(HEIGHT, WIDTH) == 255
    assert obj.area == int(mask.sum())
    labels_msg = harness.probe.wait_for("instances", lambda m: m.header == header, 10)
    labels = np.frombuffer(bytes(labels_msg.data), "<u2").reshape(HEIGHT, WIDTH)
    np.testing.assert_array_equal(labels, mask.astype(np.uint16))


def test_each_object_has_its_own_position(depth):  # noqa: F811 - the imported fixture
    probe = depth.probe
    after = probe.mark("markers")
    with wrap_segment(depth.node, two_objects):
        result = ask_with_depth(depth, "the two halves")
    assert result.depth_status == R.DEPTH_OK and result.has_position
    left, right = result.objects
    assert left.has_position and right.has_position
    assert left.position == result.position.point  # top level: the first object's
    assert left.position.x < 0 < right.position.x  # optical frame: x to the right
    assert left.size.x > 0 and right.size.x > 0
    markers = probe.wait_for(
        "markers", lambda m: m.markers[0].header == result.header, after=after
    ).markers
    labels = [m.text for m in markers if m.type == m.TEXT_VIEW_FACING]
    assert labels == ["the two halves", "the two halves #2"]
    boxes = [m for m in markers if m.type == m.CUBE]
    assert [b.pose.position for b in boxes] == [left.position, right.position]
