"""What the node reports on /diagnostics (segzero_ros/diagnostics.py): counters, the latency
window, health levels, unmatched publishers and the assembled DiagnosticStatus (no node)."""

from __future__ import annotations

import pytest

from segzero_model.result import Status
from segzero_ros.diagnostics import (
    NodeState,
    RateMeter,
    Stats,
    TrackingSnapshot,
    UnmatchedPublishers,
    diagnostic_array,
    health,
    status_values,
)

# --------------------------------------------------------------------------- stats


def test_stats_counts_and_latency():
    stats = Stats(window=5)
    assert stats.snapshot().median_latency is None and stats.snapshot().total == 0
    for status, latency in [
        (Status.OK, 1.0),
        (Status.OK, 3.0),
        (Status.NO_IMAGE, 0.001),
        (Status.DROPPED, None),
    ]:
        stats.record(status, latency)
    snap = stats.snapshot()
    assert (snap.answered, snap.failed, snap.dropped, snap.total) == (2, 1, 1, 4)
    assert snap.last_latency == 0.001 and snap.median_latency == 1.0 and snap.window == 3
    assert snap.last_status is Status.DROPPED and snap.recent_failures == 2


def test_latency_window_is_bounded():
    stats = Stats(window=10)
    for i in range(10_000):
        stats.record(Status.OK, float(i))
    snap = stats.snapshot()
    assert snap.window == 10 and len(stats._latencies) == 10
    assert snap.median_latency == pytest.approx(9994.5) and snap.answered == 10_000


def test_stats_rejects_an_empty_window():
    with pytest.raises(ValueError, match="at least 1"):
        Stats(window=0)


def test_health_levels():
    stats = Stats(recent=4)
    assert health(stats.snapshot(), loaded=False, worker_alive=True)[0] == "WARN"
    assert health(stats.snapshot(), loaded=True, worker_alive=True) == ("OK", "ready")
    assert health(stats.snapshot(), loaded=True, worker_alive=False)[0] == "ERROR"
    stats.record(Status.STALE_IMAGE, 0.0)
    level, message = health(stats.snapshot(), loaded=True, worker_alive=True)
    assert level == "WARN" and "STALE_IMAGE" in message
    for _ in range(3):
        stats.record(Status.OUT_OF_MEMORY, 1.0)
    level, message = health(stats.snapshot(), loaded=True, worker_alive=True)
    assert level == "ERROR" and "last 3 queries" in message
    for _ in range(4):
        stats.record(Status.OK, 1.0)
    assert health(stats.snapshot(), loaded=True, worker_alive=True)[0] == "OK"


def test_a_failing_reasoning_server_is_a_warning_that_says_why():
    """Its ERROR results are the server's failures, not the node's: WARN, not ERROR, however
    many in a row; a dead worker is still ERROR."""
    stats = Stats()
    for _ in range(5):
        stats.record(Status.ERROR, 0.1)
    down = "reasoning server http://gpu:8000/v1/chat/completions (m): ConnectError"
    level, message = health(stats.snapshot(), loaded=True, worker_alive=True, server_error=down)
    assert level == "WARN" and message == f"the reasoning server is failing: {down}"
    assert health(stats.snapshot(), loaded=True, worker_alive=True)[0] == "ERROR"
    assert health(stats.snapshot(), loaded=True, worker_alive=False, server_error=down)[0] == (
        "ERROR"
    )
    remote = node_state(reasoning_url="http://gpu:8000/v1", reasoning_server_error=down)
    level, message, values = status_values(remote, stats.snapshot(), [])
    assert level == "WARN" and down in message
    assert (values["reasoning_url"], values["reasoning_server"]) == ("http://gpu:8000/v1", down)
    answering = node_state(reasoning_url="http://gpu:8000/v1")
    assert status_values(answering, Stats().snapshot(), [])[2]["reasoning_server"] == "ok"


# --------------------------------------------------------------------------- unmatched


def test_a_gap_counts_only_once_seen_twice():
    watch = UnmatchedPublishers()
    # Discovery before matching: one check shows a publisher not yet matched.
    assert watch.update("/q", in_graph=1, matched=0) == (0, False)
    assert watch.update("/q", in_graph=1, matched=1) == (0, False)
    # A publisher that never matches: confirmed on the second check, said once.
    assert watch.update("/q", in_graph=2, matched=1) == (0, False)
    assert watch.update("/q", in_graph=2, matched=1) == (1, True)
    assert watch.update("/q", in_graph=2, matched=1) == (1, False)


def test_more_unmatched_is_said_again_and_gone_resets():
    watch = UnmatchedPublishers()
    for _ in range(2):
        confirmed, said = watch.update("/q", in_graph=1, matched=0)
    assert (confirmed, said) == (1, True)
    watch.update("/q", in_graph=2, matched=0)
    assert watch.update("/q", in_graph=2, matched=0) == (2, True)
    assert watch.update("/q", in_graph=1, matched=1) == (0, False)  # gone at once
    watch.update("/q", in_graph=2, matched=1)
    assert watch.update("/q", in_graph=2, matched=1) == (1, True)  # back: said again


def test_topics_are_independent_and_counts_never_negative():
    watch = UnmatchedPublishers()
    watch.update("/a", in_graph=1, matched=0)
    assert watch.update("/b", in_graph=1, matched=0) == (0, False)
    assert watch.update("/a", in_graph=1, matched=0) == (1, True)
    # The graph can lag behind matching: more matched than listed is no gap.
    assert watch.update("/c", in_graph=0, matched=2) == (0, False)
    assert watch.update("/c", in_graph=0, matched=2) == (0, False)


# --------------------------------------------------------------------------- the status


def node_state(**changes) -> NodeState:
    values = dict(
        active=True,
        loading=False,
        models_loaded=True,
        worker_alive=True,
        reasoning_model="/models/reasoner",
        segmentation_model="/models/sam2",
        device="cpu",
        queue_depth=2,
        queue_size=8,
        busy=True,
        frames_received=41,
        frame_age=0.25,
        tracking=TrackingSnapshot(tracks_active=2, frames_tracked=30, frames_skipped=4, rate=14.5),
    )
    values.update(changes)
    return NodeState(**values)


def test_status_values_name_every_field_as_text():
    stats = Stats()
    stats.record(Status.OK, 1.5)
    stats.record(Status.DROPPED)
    level, message, values = status_values(node_state(), stats.snapshot(), [])
    assert (level, message) == (
        "WARN",
        "1 of the recent results failed or were dropped (last: DROPPED)",
    )
    assert values == {
        "state": "active",
        "models_loaded": "true",
        "reasoning_model": "/models/reasoner",
        "reasoning_url": "",
        "reasoning_server": "",
        "segmentation_model": "/models/sam2",
        "device": "cpu",
        "queue_depth": "2",
        "queue_size": "8",
        "busy": "true",
        "answered": "1",
        "failed": "0",
        "dropped": "1",
        "last_latency_s": "1.5000",
        "median_latency_s": "1.5000",
        "latency_window": "1",
        "frames_received": "41",
        "frame_age_s": "0.2500",
        "tracks_active": "2",
        "frames_tracked": "30",
        "frames_skipped": "4",
        "tracking_rate_hz": "14.50",
        "unmatched_publishers": "",
    }


def test_status_while_loading_inactive_and_with_unmatched_publishers():
    snapshot = Stats().snapshot()
    level, message, values = status_values(
        node_state(active=False, loading=True, models_loaded=False, frame_age=None),
        snapshot,
        [],
    )
    assert (level, message) == ("WARN", "loading the models")
    assert values["state"] == "inactive" and values["frame_age_s"] == ""
    level, message, values = status_values(node_state(), snapshot, [("/segzero/query", 2)])
    assert level == "WARN"
    assert message == "2 publisher(s) on /segzero/query do not match this node's QoS"
    assert values["unmatched_publishers"] == "/segzero/query: 2"
    # An ERROR stays ERROR; the QoS problem is added to its message.
    level, message, _ = status_values(node_state(worker_alive=False), snapshot, [("/q", 1)])
    assert level == "ERROR" and message.startswith("the worker thread is not running; 1 publisher")


def test_diagnostic_array_carries_level_name_and_stamp():
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    array = diagnostic_array("n: Seg-Zero", node_state(), Stats().snapshot(), [], Time(sec=7))
    (status,) = array.status
    assert status.level == DiagnosticStatus.OK and status.name == "n: Seg-Zero"
    assert status.hardware_id == "cpu" and array.header.stamp.sec == 7
    assert {kv.key: kv.value for kv in status.values}["queue_size"] == "8"


def test_rate_meter_counts_recent_events_only():
    meter = RateMeter(window=2.0)
    assert meter.rate(0.0) == 0.0
    for i in range(11):  # 10 Hz for one second
        meter.tick(10.0 + i * 0.1)
    assert meter.rate(11.0) == pytest.approx(10.0)
    assert meter.rate(12.5) == pytest.approx(10.0)  # events from 10.5 s on: still 10 Hz
    assert meter.rate(13.5) == 0.0  # nothing tracked in the last 2 s
    with pytest.raises(ValueError, match="window"):
        RateMeter(window=0)


def test_tracking_values_default_to_none_tracked():
    _, _, values = status_values(node_state(tracking=TrackingSnapshot()), Stats().snapshot(), [])
    assert (values["tracks_active"], values["frames_skipped"], values["tracking_rate_hz"]) == (
        "0",
        "0",
        "0.00",
    )
