"""Depth frames matched to colour frames by stamp (no rclpy here).

The subscription callbacks only store: the newest few depth messages (bounded, the latest
`capacity` by stamp) and the latest CameraInfo of each camera. When a colour frame is used, its
stamp picks the depth message nearest in time, if one lies within the tolerance.

This matcher is the only code path, on every install: `message_filters` is not on PyPI (the
pip-only environment lacks it), and its `Cache` answers only "before" / "after" a stamp, not
"nearest within a tolerance"; an ApproximateTimeSynchronizer would pair every colour frame with
a depth frame although only the few frames a query or the tracker uses need one.

Contract: `nearest` never raises; it returns the message or None with a reason that names
the stamps involved. Thread-safe (callbacks store on executor threads; the worker and the
tracking loop read).
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from typing import Any

DEPTH_CAPACITY = 10  # depth frames kept: 1/3 s at 30 Hz, ~6 MB at 640x480 16UC1


@dataclass(frozen=True)
class DepthMatch:
    """The depth message nearest to a stamp (None when none is close enough, and why)."""

    msg: Any
    reason: str = ""


class DepthMatcher:
    """The latest depth frames by stamp, and the latest colour and depth CameraInfo."""

    def __init__(self, capacity: int = DEPTH_CAPACITY):
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._stamps: list[int] = []  # ascending
        self._msgs: list[Any] = []  # in the order of _stamps
        self.camera_info: Any = None  # the colour camera's latest CameraInfo
        self.depth_info: Any = None  # the depth camera's latest CameraInfo (when not aligned)
        self.received = 0  # depth frames received since the last clear

    def add_depth(self, msg: Any, stamp_ns: int) -> None:
        """Keep a depth message; the oldest by stamp goes beyond `capacity`. A second message
        with the same stamp replaces the first."""
        with self._lock:
            self.received += 1
            index = bisect.bisect_left(self._stamps, stamp_ns)
            if index < len(self._stamps) and self._stamps[index] == stamp_ns:
                self._msgs[index] = msg
                return
            self._stamps.insert(index, stamp_ns)
            self._msgs.insert(index, msg)
            if len(self._stamps) > self.capacity:
                del self._stamps[0], self._msgs[0]

    def nearest(self, stamp_ns: int, tolerance_s: float) -> DepthMatch:
        """The stored depth message nearest in stamp to `stamp_ns`, if within `tolerance_s`."""
        with self._lock:
            if not self._stamps:
                return DepthMatch(None, "no depth frame received yet")
            index = bisect.bisect_left(self._stamps, stamp_ns)
            candidates = [i for i in (index - 1, index) if 0 <= i < len(self._stamps)]
            best = min(candidates, key=lambda i: abs(self._stamps[i] - stamp_ns))
            offset = abs(self._stamps[best] - stamp_ns) / 1e9
            if offset > tolerance_s:
                first, last = self._stamps[0] / 1e9, self._stamps[-1] / 1e9
                return DepthMatch(
                    None,
                    f"no depth frame within {tolerance_s:g} s of the colour frame's stamp "
                    f"{stamp_ns / 1e9:.3f} (nearest {offset:.3f} s off; {len(self._stamps)} "
                    f"kept, stamps {first:.3f}..{last:.3f})",
                )
            return DepthMatch(self._msgs[best])

    def __len__(self) -> int:
        with self._lock:
            return len(self._stamps)

    def clear(self) -> None:
        """Forget every frame and CameraInfo (at deactivate: they are stale by the next
        activate)."""
        with self._lock:
            self._stamps.clear()
            self._msgs.clear()
            self.camera_info = None
            self.depth_info = None
            self.received = 0
