"""Evaluation metrics shared by the evaluation scripts and the tests.

ReasonSeg reports two numbers: gIoU, the mean of per-sample IoUs (every sample weighs the same),
and cIoU, total intersection over total union (large objects weigh more). Both follow the
LISA convention that an empty prediction of an empty ground truth is a perfect IoU of 1.0.

A failed prediction (None: the model's answer could not be parsed or SAM2 produced nothing) is
scored as an empty mask that is always wrong: IoU 0.0, intersection 0, union = ground-truth
area, so it pulls down both gIoU and cIoU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _as_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """Validate a mask and return it as bool (nonzero = foreground)."""
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(mask).__name__}")
    kind = mask.dtype.kind
    if kind == "b":
        return mask
    if kind not in "iufc":
        raise ValueError(f"{name} must be bool or numeric, got dtype {mask.dtype}")
    return mask != 0


def intersection_and_union(pred: np.ndarray | None, gt: np.ndarray) -> tuple[int, int]:
    """Foreground pixel counts of pred AND gt and of pred OR gt, as Python ints.

    `pred` None is a failed prediction: (0, area of gt).

    Raises:
        ValueError: a mask is not a bool/numeric array, or the shapes differ.
    """
    g = _as_mask(gt, "gt")
    if pred is None:
        return 0, int(np.count_nonzero(g))
    p = _as_mask(pred, "pred")
    if p.shape != g.shape:
        raise ValueError(f"pred shape {p.shape} does not match gt shape {g.shape}")
    return int(np.count_nonzero(p & g)), int(np.count_nonzero(p | g))


def _iou(intersection: int, union: int) -> float:
    """IoU from counts; union 0 means both masks are empty, which is a perfect 1.0."""
    return 1.0 if union == 0 else intersection / union


def mask_iou(pred: np.ndarray | None, gt: np.ndarray) -> float:
    """Intersection over union of two masks.

    Both empty gives 1.0 (the LISA/ReasonSeg convention: correctly predicting "nothing" is
    perfect). A failed prediction (None) gives 0.0, even when gt is empty: a failure is never
    rewarded.
    """
    intersection, union = intersection_and_union(pred, gt)
    return 0.0 if pred is None else _iou(intersection, union)


def _box(box: Sequence[float], name: str) -> tuple[float, float, float, float]:
    """Validate an XYXY box and return it with x1 <= x2 and y1 <= y2."""
    try:
        values = [float(v) for v in box]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be 4 numbers (x1, y1, x2, y2), got {box!r}") from exc
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"{name} must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = values
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two XYXY boxes read as inclusive pixel boxes.

    Inclusive means (x1, y1, x2, y2) covers pixels x1..x2 and y1..y2, so its area is
    (x2 - x1 + 1) * (y2 - y1 + 1): a one-pixel box (5, 5, 5, 5) has area 1, and boxes that
    share an edge row or column overlap by that row or column. This matches the bbox made by
    `segzero_model.targets.mask_to_target`. Swapped corners are normalised first; boxes that
    share no pixel give 0.0.

    Raises:
        ValueError: a box is not 4 finite numbers.
    """
    ax1, ay1, ax2, ay2 = _box(a, "a")
    bx1, by1, bx2, by2 = _box(b, "b")
    iw = min(ax2, bx2) - max(ax1, bx1) + 1
    ih = min(ay2, by2) - max(ay1, by1) + 1
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    area_a = (ax2 - ax1 + 1) * (ay2 - ay1 + 1)
    area_b = (bx2 - bx1 + 1) * (by2 - by1 + 1)
    return inter / (area_a + area_b - inter)


class IoUAccumulator:
    """Running gIoU and cIoU over an evaluation set.

    Sums are Python ints, so they cannot overflow however large the dataset.

    Conventions:
        - No samples: count 0, giou 0.0, ciou 0.0 (nothing measured, nothing claimed).
        - Total union 0 with samples (every ground truth empty): cIoU is 0/0, so it is defined
          as the gIoU, i.e. 1.0 when every prediction was correctly empty and lower for each
          failed prediction; consistent with the both-empty convention of `mask_iou`.
    """

    def __init__(self) -> None:
        self._count = 0
        self._iou_sum = 0.0
        self._intersection = 0
        self._union = 0

    def add(self, pred: np.ndarray | None, gt: np.ndarray) -> float:
        """Score one sample (pred None = failed prediction) and return its IoU."""
        intersection, union = intersection_and_union(pred, gt)
        return self.add_counts(intersection, union, failed=pred is None)

    def add_counts(self, intersection: int, union: int, *, failed: bool = False) -> float:
        """Add one sample from stored counts (to resume an evaluation); returns its IoU.

        `failed` marks a failed prediction, which scores 0.0 even when union is 0; pass it
        when resuming so a failure on an empty ground truth is not counted as a perfect 1.0.

        Raises:
            ValueError: the counts are not integers with 0 <= intersection <= union, or a failed
                prediction has a nonzero intersection.
        """
        for name, value in (("intersection", intersection), ("union", union)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {value!r}")
        intersection, union = int(intersection), int(union)
        if not 0 <= intersection <= union:
            raise ValueError(
                f"need 0 <= intersection <= union, got intersection={intersection}, union={union}"
            )
        if failed and intersection:
            raise ValueError(f"a failed prediction has intersection 0, got {intersection}")
        iou = 0.0 if failed else _iou(intersection, union)
        self._count += 1
        self._iou_sum += iou
        self._intersection += intersection
        self._union += union
        return iou

    @property
    def count(self) -> int:
        """Number of samples added."""
        return self._count

    @property
    def giou(self) -> float:
        """Mean of the per-sample IoUs (0.0 when empty)."""
        return self._iou_sum / self._count if self._count else 0.0

    @property
    def ciou(self) -> float:
        """Total intersection / total union (0.0 when empty; the gIoU when the union is 0)."""
        if self._union == 0:
            return self.giou
        return self._intersection / self._union

    def summary(self) -> dict[str, int | float]:
        """All numbers at once, ready for JSON: count, giou, ciou, intersection, union."""
        return {
            "count": self._count,
            "giou": self.giou,
            "ciou": self.ciou,
            "intersection": self._intersection,
            "union": self._union,
        }
