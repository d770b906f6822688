"""`segzero track`'s run: answer a query on a clip's first frame, then follow its mask.

The full pipeline (reasoner + SAM2) runs once, on the first frame. When that answer is OK each
object's mask starts a track in a `TrackSession` (the query, then the query plus " #2", " #3",
... for the others, so they do not replace each other), and every later frame only pays for a
SAM2 tracking step. A LOST track is ended; when none is left the remaining frames are passed
through untracked. A NOT_FOUND answer (no such object in view) starts nothing.

Frames are read one at a time (a video through cv2.VideoCapture, or a folder's .jpg/.jpeg/.png
files in name order), so a clip of any length fits in memory. Outputs, in one folder:
`frames.jsonl` (one line per frame; the first also holds the query's answer) and the overlay
(`overlay.mp4` at the video's fps, or `overlay/NNNNN.png` for a folder). No argparse here: the
command line is `segzero_model.cli`.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segzero_model.errors import ImageLoadError
from segzero_model.overlay import BOX_COLOR, MASK_COLOR, OBJECT_COLORS, draw_overlay
from segzero_model.result import SegmentationResult
from segzero_model.segmentation.tracks import (
    LOST,
    TRACKING,
    TrackSession,
    TrackSettings,
    TrackStatus,
)

NOT_TRACKED = "NOT_TRACKED"
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
JSONL_NAME = "frames.jsonl"
VIDEO_NAME = "overlay.mp4"
FOLDER_NAME = "overlay"
DEFAULT_FPS = 30.0  # when a video does not say its frame rate
_STATE_COLORS = {TRACKING: (0, 255, 0), LOST: (255, 0, 0), NOT_TRACKED: (255, 255, 255)}


class TrackInputError(ValueError):
    """The clip cannot be read: a missing file or folder, an unreadable video, no frames."""


# -- reading frames ---------------------------------------------------------------------------


class VideoFrames:
    """A video file's frames as HxWx3 uint8 RGB, decoded one at a time. Opening reads the
    first frame, so a file cv2 cannot decode fails here and not halfway through a run."""

    def __init__(self, path: str | os.PathLike):
        import cv2

        self.path = Path(path)
        if not self.path.is_file():
            what = "is not a file" if self.path.exists() else "not found"
            raise TrackInputError(f"video {what}: {self.path}")
        self._capture = cv2.VideoCapture(str(self.path))
        ok, self._first = self._capture.read() if self._capture.isOpened() else (False, None)
        if not ok:
            self._capture.release()
            raise TrackInputError(f"cannot read video {self.path} (not a video, or corrupt)")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        self.fps = fps if fps and np.isfinite(fps) and fps > 0 else DEFAULT_FPS

    def __iter__(self) -> Iterator[np.ndarray]:
        import cv2

        try:
            frame = self._first
            self._first = None
            while frame is not None:
                yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
                ok, frame = self._capture.read()
                frame = frame if ok else None
        finally:
            self._capture.release()


class FolderFrames:
    """A folder's .jpg/.jpeg/.png files in name order, each loaded when it is reached."""

    fps = None  # a folder has no frame rate; its overlay is written as images

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_dir():
            what = "is not a folder" if self.path.exists() else "not found"
            raise TrackInputError(f"frames folder {what}: {self.path}")
        self.files = sorted(
            p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES
        )
        if not self.files:
            suffixes = "/".join(FRAME_SUFFIXES)
            raise TrackInputError(f"frames folder {self.path} holds no {suffixes} images")

    def __iter__(self) -> Iterator[np.ndarray]:
        from segzero_model.images import load_image

        for file in self.files:
            try:
                yield load_image(file)
            except ImageLoadError as error:
                raise TrackInputError(str(error)) from error


def open_frames(
    video: str | os.PathLike | None = None, frames: str | os.PathLike | None = None
) -> VideoFrames | FolderFrames:
    """The clip from exactly one of a video file or a folder of images."""
    if (video is None) == (frames is None):
        raise TrackInputError("give exactly one of a video file or a frames folder")
    return VideoFrames(video) if video is not None else FolderFrames(frames)


# -- writing the overlay ----------------------------------------------------------------------


class VideoOverlayWriter:
    """overlay.mp4 (mp4v) at the input's fps; opened on the first frame, which sets its size."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps, self._writer, self._size = path, fps, None, None

    def write(self, image_rgb: np.ndarray) -> None:
        import cv2

        size = (image_rgb.shape[1], image_rgb.shape[0])
        if self._writer is None:
            self._writer = cv2.VideoWriter(
                str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size
            )
            if not self._writer.isOpened():
                raise OSError(f"cannot write video {self.path} (mp4v)")
            self._size = size
        elif size != self._size:
            raise TrackInputError(f"frame size changed from {self._size} to {size} mid-video")
        self._writer.write(cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()


class FolderOverlayWriter:
    """overlay/00000.png, 00001.png, ...: one PNG per frame, named by frame index."""

    def __init__(self, path: Path):
        self.path, self._index = path, 0
        path.mkdir(parents=True, exist_ok=True)

    def write(self, image_rgb: np.ndarray) -> None:
        from segzero_model.images import save_image

        save_image(self.path / f"{self._index:05d}.png", image_rgb)
        self._index += 1

    def close(self) -> None:
        pass


def draw_frame(
    image_rgb: np.ndarray, state: str, status: TrackStatus | list[TrackStatus] | None
) -> np.ndarray:
    """The frame with each TRACKING track's mask tinted and its box drawn, and the state
    (with the first track's score) written top left."""
    import cv2

    canvas = image_rgb.copy()
    statuses = [] if status is None else status if isinstance(status, list) else [status]
    for index, each in enumerate(statuses):
        if each.state != TRACKING:
            continue
        color = MASK_COLOR if index == 0 else OBJECT_COLORS[index % len(OBJECT_COLORS)]
        tint = np.array(color, dtype=np.float32)
        canvas[each.mask] = (canvas[each.mask] * 0.5 + tint * 0.5).astype(np.uint8)
        if each.box is not None:
            x0, y0, x1, y1 = each.box
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), BOX_COLOR, 1)
    label = state if not statuses else f"{state} {statuses[0].score:.2f}"
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, max(0.35, image_rgb.shape[0] / 1000)
    (width, height), baseline = cv2.getTextSize(label, font, scale, 1)
    cv2.rectangle(canvas, (0, 0), (width + 6, height + baseline + 6), (0, 0, 0), -1)
    cv2.putText(canvas, label, (3, height + 3), font, scale, _STATE_COLORS[state], 1, cv2.LINE_AA)
    return canvas


# -- the run ----------------------------------------------------------------------------------


@dataclass
class TrackRun:
    """What one run did: the first frame's answer, how far the track went, where it wrote."""

    result: SegmentationResult
    frames: int = 0  # frames read (and written)
    tracked: int = 0  # frames after the first on which a track was TRACKING
    lost_at: int | None = None  # the frame that reported the last track LOST
    lost_reason: str = ""
    track_seconds: list[float] = field(default_factory=list)  # one per tracking step
    jsonl: Path | None = None
    overlay: Path | None = None

    @property
    def median_track_ms(self) -> float | None:
        return statistics.median(self.track_seconds) * 1000 if self.track_seconds else None


def frame_record(
    index: int,
    state: str,
    status: TrackStatus | list[TrackStatus] | None,
    seconds: float | None,
) -> dict:
    """One frames.jsonl line: the (first) track's box (XYXY pixels), score and mask area on a
    frame; with several tracks, also "tracks": each one's query, state, box, score and area."""
    if isinstance(status, list):
        statuses, status = status, (status[0] if status else None)
        record = frame_record(index, state, status, seconds)
        if len(statuses) > 1:
            record["tracks"] = [_track_record(each) for each in statuses]
        return record
    return {
        "frame": index,
        "state": state,
        "box": None if status is None or status.box is None else list(status.box),
        "score": None if status is None else round(status.score, 4),
        "area": 0 if status is None else status.area,
        "track_ms": None if seconds is None else round(seconds * 1000, 2),
        **({"reason": status.reason} if status is not None and status.reason else {}),
    }


def _track_record(status: TrackStatus) -> dict:
    return {
        "track_id": status.track_id,
        "query": status.query,
        "state": status.state,
        "box": None if status.box is None else list(status.box),
        "score": round(status.score, 4),
        "area": status.area,
        **({"reason": status.reason} if status.reason else {}),
    }


def result_summary(result: SegmentationResult) -> dict:
    """The first frame's answer, as frames.jsonl's first line carries it."""
    summary = result.to_json_dict()
    keep = ("status", "reason", "bbox", "points", "reasoning", "score", "mask_area", "timings")
    keep += ("objects",)
    return {key: summary[key] for key in keep}


def track_video(
    pipeline,
    frames: VideoFrames | FolderFrames,
    query: str,
    output: str | os.PathLike,
    *,
    settings: TrackSettings | None = None,
    max_frames: int | None = None,
) -> TrackRun:
    """Answer `query` on the first frame with `pipeline`, then track its mask on the rest, with
    a tracker on the pipeline's own SAM2 model (no second copy of the weights).

    Writes frames.jsonl and the overlay under `output`. When the first answer is not OK (a
    failure, or NOT_FOUND) only that frame's line is written and the run stops
    (`run.result.ok` is False)."""
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    source = iter(frames)
    try:
        return _run(pipeline, frames, source, query, output, settings, max_frames)
    finally:
        source.close()  # releases the video capture when the run stops early


def _run(pipeline, frames, source, query, output, settings, max_frames) -> TrackRun:

    first = next(source)
    result = pipeline.segment(first, query)
    run = TrackRun(result=result, jsonl=output / JSONL_NAME)
    header = {"query": query, "result": result_summary(result)}
    with run.jsonl.open("w", encoding="utf-8") as jsonl:
        if not result.ok:
            run.frames = 1
            jsonl.write(json.dumps({**frame_record(0, NOT_TRACKED, None, None), **header}) + "\n")
            return run
        tracker = pipeline.segmenter.new_tracker()
        session = TrackSession(tracker, settings)
        masks = [obj.mask for obj in result.objects] or [result.mask]
        names = [query] + [f"{query} #{k}" for k in range(2, len(masks) + 1)]
        started = [
            session.start(first, name, mask=mask)[0]
            for name, mask in zip(names, masks, strict=True)
        ]
        # A start beyond max_tracks ends the oldest: keep the statuses of tracks still followed.
        status = [each for each in started if each.track_id in session.queries]
        writer = (
            VideoOverlayWriter(output / VIDEO_NAME, frames.fps)
            if frames.fps is not None
            else FolderOverlayWriter(output / FOLDER_NAME)
        )
        run.overlay = writer.path
        try:
            jsonl.write(json.dumps({**frame_record(0, TRACKING, status, None), **header}) + "\n")
            writer.write(draw_overlay(first, result))
            run.frames = 1
            rest = source if max_frames is None else itertools.islice(source, max_frames - 1)
            for index, image in enumerate(rest, start=1):
                state, status, seconds = NOT_TRACKED, None, None
                if run.lost_at is None:
                    began = time.perf_counter()
                    status = session.step(image)
                    seconds = time.perf_counter() - began
                    run.track_seconds.append(seconds)
                    if any(each.state == TRACKING for each in status):
                        state = TRACKING
                        run.tracked += 1
                    else:  # the last tracks were lost on this frame
                        state = LOST
                        run.lost_at = index
                        run.lost_reason = "; ".join(each.reason for each in status)
                jsonl.write(json.dumps(frame_record(index, state, status, seconds)) + "\n")
                writer.write(draw_frame(image, state, status))
                run.frames += 1
        finally:
            writer.close()
    return run
