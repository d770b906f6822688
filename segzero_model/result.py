"""`SegmentationResult`: the one result type that the CLI prints, the node converts and
evaluation scores."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Box = tuple[float, float, float, float]
Point = tuple[float, float]


class Status(str, enum.Enum):
    """Outcome of one query. Everything but OK carries a human-readable `reason`."""

    OK = "ok"
    NOT_FOUND = "not_found"  # the model answered that no such object is in view; no mask
    INVALID_QUERY = "invalid_query"  # empty or too long
    INVALID_IMAGE = "invalid_image"  # unsupported layout, zero size
    UNPARSEABLE_ANSWER = "unparseable_answer"  # the model did not answer in the format
    CANCELLED = "cancelled"  # the caller stopped the generation
    OUT_OF_MEMORY = "out_of_memory"
    ERROR = "error"  # anything else, with the exception text as reason
    # Outcomes of a server in front of the pipeline (the ROS node), never of the pipeline itself:
    NO_IMAGE = "no_image"  # no camera frame received yet
    STALE_IMAGE = "stale_image"  # the newest frame is older than the server allows
    DROPPED = "dropped"  # the request queue was full, or the server not running


@dataclass
class ObjectResult:
    """One object of an answer: XYXY `bbox` and `points` in the original image's pixels (either
    may be missing when the answer held only the other), its bool (H, W) `mask` and SAM2's
    `score` (None until segmented, or when segmentation failed)."""

    bbox: Box | None
    points: tuple[Point, ...]
    mask: np.ndarray | None = None
    score: float | None = None

    @property
    def mask_area(self) -> int:
        return 0 if self.mask is None else int(np.count_nonzero(self.mask))

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "bbox": _rounded_box(self.bbox),
            "points": [[round(x, 2), round(y, 2)] for x, y in self.points],
            "score": self.score,
            "mask_area": self.mask_area,
        }


@dataclass
class SegmentationResult:
    """What one (image, query) pair produced.

    Coordinates are in the original image's pixels (x right, y down); `bbox` is XYXY.
    `mask` is a bool array of shape (H, W) of the original image, or None on failure.
    `timings` maps stage name to seconds (reasoning, parse, embedding, mask, total, ...).

    `objects` holds every object the answer named, in answer order. For OK, `mask` is the union
    of their masks and `bbox`, `points` and `score` are the first object's, so code written for
    one object keeps working. NOT_FOUND has no objects and no mask, but keeps the reasoning.
    """

    status: Status
    query: str
    image_size: tuple[int, int]  # (width, height)
    reason: str = ""
    mask: np.ndarray | None = None
    bbox: Box | None = None
    points: tuple[Point, ...] | None = None
    score: float | None = None
    reasoning: str | None = None
    raw_output: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    num_generated_tokens: int = 0
    objects: list[ObjectResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    @property
    def mask_area(self) -> int:
        return 0 if self.mask is None else int(np.count_nonzero(self.mask))

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-serialisable summary (the mask is reduced to its area)."""
        return {
            "status": self.status.value,
            "reason": self.reason,
            "query": self.query,
            "image_size": list(self.image_size),
            "bbox": _rounded_box(self.bbox),
            "points": None
            if self.points is None
            else [[round(x, 2), round(y, 2)] for x, y in self.points],
            "score": self.score,
            "reasoning": self.reasoning,
            "raw_output": self.raw_output,
            "mask_area": self.mask_area,
            "objects": [obj.to_json_dict() for obj in self.objects],
            "num_generated_tokens": self.num_generated_tokens,
            "timings": {k: round(v, 4) for k, v in self.timings.items()},
        }


def _rounded_box(box: Box | None) -> list[float] | None:
    return None if box is None else [round(v, 2) for v in box]
