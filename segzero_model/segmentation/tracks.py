"""Tracks of answered queries: which object each follows, and when one is lost.

`TrackSession` sits on a `StreamingTracker` and adds what a user of tracks needs beyond masks:
the query each track answers (a new answer to the same query replaces its track), a cap on
how many are followed at once, and loss: a track whose object score or mask area stays below
its threshold for `lost_frames` frames in a row is reported LOST once and ended. The node and
`segzero track` both drive one; neither the tracker nor this module knows about ROS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segzero_model.segmentation.streaming_tracker import StreamingTracker, TrackedMask

TRACKING = "TRACKING"
LOST = "LOST"


@dataclass(frozen=True)
class TrackSettings:
    max_tracks: int = 4  # tracks followed at once; a new one beyond it ends the oldest
    lost_score: float = 0.5  # object presence probability below which a frame counts as missed
    lost_min_area: int = 16  # mask pixels below which a frame counts as missed
    lost_frames: int = 5  # missed frames in a row that make a track LOST

    def __post_init__(self):
        if self.max_tracks < 1:
            raise ValueError(f"max_tracks must be at least 1, got {self.max_tracks}")
        if not 0.0 <= self.lost_score <= 1.0:
            raise ValueError(f"lost_score must be in [0, 1], got {self.lost_score}")
        if self.lost_min_area < 0:
            raise ValueError(f"lost_min_area must be >= 0, got {self.lost_min_area}")
        if self.lost_frames < 1:
            raise ValueError(f"lost_frames must be at least 1, got {self.lost_frames}")


@dataclass(frozen=True)
class TrackStatus:
    """One track on one frame, as published: its mask, box and score, and its state."""

    track_id: int
    query: str
    state: str  # TRACKING or LOST
    mask: np.ndarray  # bool (H, W)
    box: tuple[int, int, int, int] | None  # XYXY around the mask, None when empty
    score: float
    reason: str = ""  # why a LOST track was lost

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class _Entry:
    query: str
    missed: int = 0  # frames in a row below a threshold


class TrackSession:
    """Queries' tracks on one stream. Not thread-safe: one caller at a time."""

    def __init__(self, tracker: StreamingTracker, settings: TrackSettings | None = None):
        self.tracker = tracker
        self.settings = settings or TrackSettings()
        self._entries: dict[int, _Entry] = {}  # in start order: the first is the oldest

    @property
    def queries(self) -> dict[int, str]:
        """track id -> query, oldest first."""
        return {track_id: entry.query for track_id, entry in self._entries.items()}

    def start(
        self,
        image: np.ndarray,
        query: str,
        *,
        mask: np.ndarray | None = None,
        box=None,
        points=None,
    ) -> tuple[TrackStatus, list[int]]:
        """Start following `query`'s object on `image` from its mask (or box/points). Returns
        its status on that frame and the ids it ended: the earlier track of the same query
        (its id is kept) or, at max_tracks, the oldest track."""
        replaced = next((i for i, e in self._entries.items() if e.query == query), None)
        ended = []
        if replaced is None and len(self._entries) >= self.settings.max_tracks:
            oldest = next(iter(self._entries))
            self.stop(oldest)
            ended.append(oldest)
        tracked = self.tracker.add(image, mask=mask, box=box, points=points, track_id=replaced)
        if replaced is not None:
            ended.append(replaced)
            del self._entries[replaced]  # re-inserted below: it is now the newest
        self._entries[tracked.track_id] = _Entry(query)
        return self._status(tracked, query), ended

    def step(self, image: np.ndarray) -> list[TrackStatus]:
        """Every track on the next frame. A track missed for `lost_frames` frames in a row
        comes back once with state LOST and is ended."""
        statuses = []
        for tracked in self.tracker.track(image):
            entry = self._entries[tracked.track_id]
            missed = self._missed(tracked)
            entry.missed = entry.missed + 1 if missed else 0
            if entry.missed >= self.settings.lost_frames:
                self.stop(tracked.track_id)
                reason = f"{missed} for {entry.missed} frames"
                statuses.append(self._status(tracked, entry.query, LOST, reason))
            else:
                statuses.append(self._status(tracked, entry.query))
        return statuses

    def stop(self, track_id: int | None = None) -> list[int]:
        """End one track (or all, with None) and free its memory; the ids ended."""
        ids = list(self._entries) if track_id is None else [track_id]
        ended = [i for i in ids if self._entries.pop(i, None) is not None]
        for i in ended:
            self.tracker.remove(i)
        return ended

    def _missed(self, tracked: TrackedMask) -> str:
        """Why this frame counts as missed ('' when it does not)."""
        s = self.settings
        if tracked.score < s.lost_score:
            return f"object score below {s.lost_score:g}"
        if tracked.area < s.lost_min_area:
            return f"mask area below {s.lost_min_area} pixels"
        return ""

    @staticmethod
    def _status(
        tracked: TrackedMask, query: str, state: str = TRACKING, reason: str = ""
    ) -> TrackStatus:
        return TrackStatus(
            track_id=tracked.track_id,
            query=query,
            state=state,
            mask=tracked.mask,
            box=tracked.box,
            score=tracked.score,
            reason=reason,
        )


def union_mask(statuses: list[TrackStatus], shape: tuple[int, int]) -> np.ndarray:
    """The union of the TRACKING masks (bool, `shape`): what the tracking mask topic carries."""
    union = np.zeros(shape, bool)
    for status in statuses:
        if status.state == TRACKING:
            union |= status.mask
    return union
