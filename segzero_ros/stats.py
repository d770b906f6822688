"""Counters and a bounded latency window for the node's diagnostics (no rclpy here)."""

from __future__ import annotations

import collections
import statistics
import threading
from dataclasses import dataclass

# Statuses (SegmentationResult status names) that say the node or model failed, as opposed to
# a bad request (empty query, bad image, no or stale camera frame) or a full queue.
INTERNAL_FAILURES = frozenset({"ERROR", "OUT_OF_MEMORY"})


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
    last_status: str | None

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
        self._recent: collections.deque[str] = collections.deque(maxlen=recent)
        self._answered = self._failed = self._dropped = 0
        self._last_latency: float | None = None
        self._internal_run = 0

    def record(self, status_name: str, latency: float | None = None) -> None:
        """Count one result; `latency` (seconds) only for queries that were served."""
        with self._lock:
            if status_name == "OK":
                self._answered += 1
            elif status_name == "DROPPED":
                self._dropped += 1
            else:
                self._failed += 1
            self._internal_run = self._internal_run + 1 if status_name in INTERNAL_FAILURES else 0
            self._recent.append(status_name)
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
                recent_failures=sum(status != "OK" for status in self._recent),
                recent_internal_failures=self._internal_run,
                last_status=self._recent[-1] if self._recent else None,
            )


# How many ERROR / OUT_OF_MEMORY results in a row make the diagnostics level ERROR.
ERROR_RUN = 3


def health(snapshot: StatsSnapshot, *, loaded: bool, worker_alive: bool) -> tuple[str, str]:
    """Diagnostics level ("OK", "WARN" or "ERROR") and a one-line message.

    ERROR: the worker thread is gone, or the last ERROR_RUN results were internal failures
    (ERROR / OUT_OF_MEMORY). WARN: the models are not loaded (inactive or loading), or a recent
    result failed or was dropped. OK otherwise.
    """
    if loaded and not worker_alive:
        return "ERROR", "the worker thread is not running"
    if snapshot.recent_internal_failures >= ERROR_RUN:
        return "ERROR", (
            f"the last {snapshot.recent_internal_failures} queries failed inside the node or "
            f"model (last: {snapshot.last_status})"
        )
    if not loaded:
        return "WARN", "models not loaded (node not active)"
    if snapshot.recent_failures:
        return "WARN", (
            f"{snapshot.recent_failures} of the recent results failed or were dropped "
            f"(last: {snapshot.last_status})"
        )
    return "OK", "ready"
