"""What the node reports on /diagnostics: result counters with a bounded latency window, the
health level, publishers its readers do not match, and the assembly of one DiagnosticStatus.

Everything here is plain data in, plain data (or a diagnostic_msgs message) out: the node
gathers a `NodeState` and publishes what `diagnostic_array` builds.
"""

from __future__ import annotations

import collections
import statistics
import threading
from dataclasses import dataclass
from typing import Any

from segzero_model.result import Status

# Statuses that say the node or model failed, as opposed to a bad request (empty query, bad
# image, no or stale camera frame) or a full queue.
INTERNAL_FAILURES = frozenset({Status.ERROR, Status.OUT_OF_MEMORY})


@dataclass(frozen=True)
class StatsSnapshot:
    answered: int  # results with status OK
    failed: int  # served but not OK (including CANCELLED)
    dropped: int  # never served: the queue was full or the node inactive
    last_latency: float | None  # seconds the last served query took (handler time)
    median_latency: float | None  # over the window
    window: int  # latencies the median is over
    recent_failures: int  # non-OK results among the last `recent` outcomes
    recent_internal_failures: int  # trailing run of ERROR / OUT_OF_MEMORY results
    last_status: Status | None

    @property
    def total(self) -> int:
        return self.answered + self.failed + self.dropped


class Stats:
    """Thread-safe counters; `record` is called once per result, from any thread."""

    def __init__(self, window: int = 100, recent: int = 10):
        if window < 1 or recent < 1:
            raise ValueError(f"window and recent must be at least 1, got {window}, {recent}")
        self._lock = threading.Lock()
        self._latencies: collections.deque[float] = collections.deque(maxlen=window)
        self._recent: collections.deque[Status] = collections.deque(maxlen=recent)
        self._answered = self._failed = self._dropped = 0
        self._last_latency: float | None = None
        self._internal_run = 0

    def record(self, status: Status, latency: float | None = None) -> None:
        """Count one result; `latency` (seconds) only for queries that were served."""
        with self._lock:
            if status is Status.OK:
                self._answered += 1
            elif status is Status.DROPPED:
                self._dropped += 1
            else:
                self._failed += 1
            self._internal_run = self._internal_run + 1 if status in INTERNAL_FAILURES else 0
            self._recent.append(status)
            if latency is not None:
                self._latencies.append(float(latency))
                self._last_latency = float(latency)

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            latencies = list(self._latencies)
            return StatsSnapshot(
                answered=self._answered,
                failed=self._failed,
                dropped=self._dropped,
                last_latency=self._last_latency,
                median_latency=statistics.median(latencies) if latencies else None,
                window=len(latencies),
                recent_failures=sum(status is not Status.OK for status in self._recent),
                recent_internal_failures=self._internal_run,
                last_status=self._recent[-1] if self._recent else None,
            )


# How many ERROR / OUT_OF_MEMORY results in a row make the diagnostics level ERROR.
ERROR_RUN = 3


def health(
    snapshot: StatsSnapshot,
    *,
    loaded: bool,
    worker_alive: bool,
    server_error: str | None = None,
) -> tuple[str, str]:
    """Diagnostics level ("OK", "WARN" or "ERROR") and a one-line message.

    ERROR: the worker thread is gone, or the last ERROR_RUN results were internal failures
    (ERROR / OUT_OF_MEMORY). WARN: the reasoning server's last request failed (`server_error`,
    why; its ERROR results then say the server, not the node, failed), the models are not
    loaded (inactive or loading), or a recent result failed or was dropped. OK otherwise.
    """
    if loaded and not worker_alive:
        return "ERROR", "the worker thread is not running"
    if loaded and server_error:
        return "WARN", f"the reasoning server is failing: {server_error}"
    if snapshot.recent_internal_failures >= ERROR_RUN:
        return "ERROR", (
            f"the last {snapshot.recent_internal_failures} queries failed inside the node or "
            f"model (last: {_name(snapshot.last_status)})"
        )
    if not loaded:
        return "WARN", "models not loaded (node not active)"
    if snapshot.recent_failures:
        return "WARN", (
            f"{snapshot.recent_failures} of the recent results failed or were dropped "
            f"(last: {_name(snapshot.last_status)})"
        )
    return "OK", "ready"


class UnmatchedPublishers:
    """Per input topic: the confirmed count of publishers that the node's reader has not matched.

    The graph lists every publisher on a topic; a reader matches only those with compatible QoS.
    The difference, seen on two checks in a row (one check can fall between discovery and
    matching), is what the node reports: almost always incompatible QoS, e.g. best-effort
    queries sent to its reliable reader.
    """

    def __init__(self) -> None:
        self._last_seen: dict[str, int] = {}
        self._reported: dict[str, int] = {}

    def update(self, topic: str, in_graph: int, matched: int) -> tuple[int, bool]:
        """Record one check; returns (confirmed unmatched publishers, whether that count is new
        and larger than what was last reported, i.e. worth one log line)."""
        missing = max(0, in_graph - matched)
        confirmed = min(self._last_seen.get(topic, 0), missing)
        self._last_seen[topic] = missing
        worth_saying = confirmed > self._reported.get(topic, 0)
        self._reported[topic] = confirmed
        return confirmed, worth_saying


class RateMeter:
    """Events per second over the last `window` seconds (0 when fewer than two fall in it);
    thread-safe: `tick` from one thread, `rate` from another."""

    def __init__(self, window: float = 2.0):
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        self.window = window
        self._lock = threading.Lock()
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float) -> None:
        with self._lock:
            self._times.append(now)
            self._prune(now)

    def rate(self, now: float) -> float:
        with self._lock:
            self._prune(now)
            if len(self._times) < 2 or self._times[-1] <= self._times[0]:
                return 0.0
            return (len(self._times) - 1) / (self._times[-1] - self._times[0])

    def _prune(self, now: float) -> None:
        while self._times and self._times[0] < now - self.window:
            self._times.popleft()


@dataclass(frozen=True)
class TrackingSnapshot:
    """The tracking loop's side of a diagnostics message."""

    tracks_active: int = 0
    frames_tracked: int = 0  # camera frames tracked since the node started
    frames_skipped: int = 0  # camera frames received while tracking that were never tracked
    rate: float = 0.0  # frames tracked per second, recently


@dataclass(frozen=True)
class NodeState:
    """The node's side of a diagnostics message, gathered by the node at each period."""

    active: bool
    loading: bool
    models_loaded: bool
    worker_alive: bool
    reasoning_model: str
    segmentation_model: str
    device: str
    queue_depth: int
    queue_size: int
    busy: bool
    frames_received: int
    frame_age: float | None  # seconds; None before the first frame
    tracking: TrackingSnapshot = TrackingSnapshot()
    reasoning_url: str = ""  # the reasoning server; "" for a model loaded in the node
    reasoning_server_error: str | None = None  # why its last request failed; None: it answered


def status_values(
    state: NodeState, snapshot: StatsSnapshot, unmatched: list[tuple[str, int]]
) -> tuple[str, str, dict[str, str]]:
    """(level, message, key/values) of the node's DiagnosticStatus."""
    level, message = health(
        snapshot,
        loaded=state.models_loaded,
        worker_alive=state.worker_alive,
        server_error=state.reasoning_server_error,
    )
    if state.loading:
        message = "loading the models"
    if unmatched:
        said = "; ".join(
            f"{n} publisher(s) on {topic} do not match this node's QoS" for topic, n in unmatched
        )
        level, message = ("WARN", said) if level == "OK" else (level, f"{message}; {said}")
    values: dict[str, Any] = {
        "state": "active" if state.active else "inactive",
        "models_loaded": state.models_loaded,
        "reasoning_model": state.reasoning_model,
        "reasoning_url": state.reasoning_url,
        "reasoning_server": (state.reasoning_server_error or "ok") if state.reasoning_url else "",
        "segmentation_model": state.segmentation_model,
        "device": state.device,
        "queue_depth": state.queue_depth,
        "queue_size": state.queue_size,
        "busy": state.busy,
        "answered": snapshot.answered,
        "failed": snapshot.failed,
        "dropped": snapshot.dropped,
        "last_latency_s": _seconds(snapshot.last_latency),
        "median_latency_s": _seconds(snapshot.median_latency),
        "latency_window": snapshot.window,
        "frames_received": state.frames_received,
        "frame_age_s": _seconds(state.frame_age),
        "tracks_active": state.tracking.tracks_active,
        "frames_tracked": state.tracking.frames_tracked,
        "frames_skipped": state.tracking.frames_skipped,
        "tracking_rate_hz": f"{state.tracking.rate:.2f}",
        "unmatched_publishers": ", ".join(f"{topic}: {n}" for topic, n in unmatched),
    }
    return level, message, {key: _text(value) for key, value in values.items()}


def diagnostic_array(
    name: str,
    state: NodeState,
    snapshot: StatsSnapshot,
    unmatched: list[tuple[str, int]],
    stamp,
):
    """The DiagnosticArray (one status) the node publishes on /diagnostics."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    level, message, values = status_values(state, snapshot, unmatched)
    status = DiagnosticStatus(
        level=getattr(DiagnosticStatus, level),
        name=name,
        message=message,
        hardware_id=state.device,
        values=[KeyValue(key=key, value=value) for key, value in values.items()],
    )
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array


def _name(status: Status | None) -> str:
    return str(status) if status is None else status.name


def _seconds(seconds: float | None) -> str:
    return "" if seconds is None else f"{seconds:.4f}"


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
