"""What the perception node says on /diagnostics, end to end on the shared tiny node
(tests/ros_harness.py): each check waits, bounded, for a message that reflects a known action;
counters are deltas from the test's own start."""

from __future__ import annotations

import pytest
from conftest import ros_importorskip

ros_importorskip(
    "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
)

from rclpy.event_handler import PublisherEventCallbacks  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from ros_harness import NODE_NAME, QUEUE_SIZE, R, held_worker  # noqa: E402
from std_msgs.msg import String  # noqa: E402

pytestmark = pytest.mark.slow

OK, WARN = b"\x00", b"\x01"


def ours(array) -> bool:
    return array.status[0].name.startswith(f"{NODE_NAME}:")


def values(status) -> dict[str, str]:
    return {kv.key: kv.value for kv in status.values}


def wait_status(probe, predicate, after: int, what: str, timeout: float = 20):
    """The first of this node's statuses published from index `after` on for which
    `predicate(status, values)` holds."""
    array = probe.wait_for(
        "diagnostics",
        lambda a: ours(a) and predicate(a.status[0], values(a.status[0])),
        timeout,
        f"diagnostics: {what}",
        after=after,
    )
    return array.status[0]


def test_diagnostics_report_state_and_counters(harness, capfd):
    node, probe = harness.node, harness.probe
    start = node.stats.snapshot()
    mark = probe.mark("diagnostics")
    status = wait_status(probe, lambda s, v: True, mark, "any")
    v = values(status)
    assert "segzero_perception" in status.name and "Seg-Zero" in status.name
    assert v["state"] == "active" and v["models_loaded"] == "true"
    assert v["device"] == "cpu" and status.hardware_id == "cpu"
    assert v["queue_size"] == str(QUEUE_SIZE) and int(v["queue_depth"]) == 0
    assert v["unmatched_publishers"] == ""

    # The worker held in a query, the queue filled, one more query dropped: busy, depth,
    # dropped and a WARN naming the drop, each seen in a message.
    header = harness.fresh_frame()
    fillers = [f"the red cup, filler {i}" for i in range(QUEUE_SIZE)]
    with held_worker(harness, lambda: probe.query("the red cup, diagnosed")):
        mark = probe.mark("diagnostics")
        wait_status(probe, lambda s, v: v["busy"] == "true", mark, "busy")
        for text in fillers:
            probe.query(text)
        wait_status(probe, lambda s, v: v["queue_depth"] == str(QUEUE_SIZE), mark, "a full queue")
        probe.query("the red cup, dropped")
        dropped = probe.result("the red cup, dropped", timeout=20)
        assert dropped.status == R.DROPPED
        status = wait_status(
            probe, lambda s, v: int(v["dropped"]) == start.dropped + 1, mark, "one more drop"
        )
        assert status.level == WARN and "(last: DROPPED)" in status.message, status.message
    served = [probe.result(text) for text in ["the red cup, diagnosed", *fillers]]
    assert all(r.header == header for r in served)
    harness.wait_idle()

    # Every counter moved by what the test did, and nothing else.
    ok = sum(r.status == R.OK for r in served)
    counters = {
        "answered": start.answered + ok,
        "failed": start.failed + len(served) - ok,
        "dropped": start.dropped + 1,
    }
    mark = probe.mark("diagnostics")
    status = wait_status(
        probe,
        lambda s, v: (
            all(int(v[key]) == count for key, count in counters.items())
            and v["busy"] == "false"
            and v["queue_depth"] == "0"
        ),
        mark,
        f"the counters {counters} with the queue empty",
    )
    v = values(status)
    assert float(v["median_latency_s"]) > 0 and float(v["last_latency_s"]) > 0
    assert int(v["latency_window"]) == min(100, start.window + len(served))
    assert int(v["frames_received"]) >= 1 and float(v["frame_age_s"]) >= 0
    assert status.level == WARN  # the drop is among the recent results
    assert f"(last: {served[-1].status_name})" in status.message, status.message

    # A best-effort query publisher cannot match the node's reliable reader: said, not silent.
    best_effort = probe.node.create_publisher(
        String,
        "/segzero/query",
        QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT),
        event_callbacks=PublisherEventCallbacks(use_default_callbacks=False),
    )
    try:
        mark = probe.mark("diagnostics")
        last = wait_status(
            probe,
            lambda s, v: v["unmatched_publishers"] == "/segzero/query: 1",
            mark,
            "the unmatched publisher",
        )
        assert last.level == WARN and "/segzero/query do not match" in last.message
    finally:
        probe.node.destroy_publisher(best_effort)
    mark = probe.mark("diagnostics")
    wait_status(
        probe,
        lambda s, v: v["unmatched_publishers"] == "",
        mark,
        "the unmatched publisher gone",
    )
    assert "publisher(s) on /segzero/query do not match" in capfd.readouterr().err

    # While inactive the node says so (WARN).
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    try:
        mark = probe.mark("diagnostics")
        last = wait_status(probe, lambda s, v: v["state"] == "inactive", mark, "inactive")
        assert last.level == WARN and "not loaded" in last.message
        assert values(last)["models_loaded"] == "false"
    finally:
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        harness.wait_ready()
    mark = probe.mark("diagnostics")
    status = wait_status(probe, lambda s, v: v["state"] == "active", mark, "active again")
    assert values(status)["models_loaded"] == "true"
