"""Coordinate frames: the reasoning model sees every image at 840x840 and answers in that frame;
SAM2 and the user work in the original image's pixels."""

from __future__ import annotations

REASONING_SIZE = 840


def scale_xy(
    x: float, y: float, width: int, height: int, frame: int = REASONING_SIZE
) -> tuple[float, float]:
    """Map a point from the square `frame` to a `width` x `height` image: (x*W/frame, y*H/frame)."""
    return x * width / frame, y * height / frame


def scale_box(
    box: tuple[float, float, float, float], width: int, height: int, frame: int = REASONING_SIZE
) -> tuple[float, float, float, float]:
    """Map an XYXY box from the square `frame` to the original image."""
    x1, y1 = scale_xy(box[0], box[1], width, height, frame)
    x2, y2 = scale_xy(box[2], box[3], width, height, frame)
    return x1, y1, x2, y2


def to_frame_xy(
    x: float, y: float, width: int, height: int, frame: int = REASONING_SIZE
) -> tuple[float, float]:
    """Inverse of `scale_xy`: original-image pixels to the square `frame` (used to make targets)."""
    return x * frame / width, y * frame / height


def clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)
