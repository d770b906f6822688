"""Training targets: the answer the reasoning model should give, from a ground-truth mask, and
the training solution string both ways.

`mask_to_target` computes the bbox and two points of a mask; `format_solution` writes them as
the released datasets' ``solution`` column and `parse_solution` reads that column back (the
rewards and the SFT targets call it). VisionReasoner's data holds a list of objects instead
(a box and one point each): `format_objects_solution` / `parse_objects_solution`, which also
reads a single-object solution as a list of one.

Seg-Zero rewards the model for a bbox and two points. Following the paper, the bbox is spanned by
the leftmost, topmost, rightmost and bottommost foreground pixels, and the points are the centres
of the two largest inscribed circles, so both prompts sit deep inside the object where SAM2 is
least likely to leak into the background.

All coordinates are integer pixel indices (x = column, y = row) of the mask given.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segzero_model.reasoning.reply_format import (
    BOX_KEY,
    DEFAULT_VARIANT,
    LIST_BOX_KEY,
    LIST_POINT_KEY,
    NUMBER,
    POINT_KEYS,
    STRICT_KEYS,
    finite_numbers,
    short_repr,
)

Box = tuple[float, float, float, float]
Point = tuple[float, float]
Solution = tuple[Box, tuple[Point, Point]]

# The distance transform is float32 (about 7 significant digits) and OpenCV's values can differ
# from the exact ones, and between calls, by an ulp, so scores within this fraction of
# max(1, r1) count as equal.
# Without it, mathematically equal candidates (e.g. mirror-image pixels, or one limited by the
# mask edge and one by circle 1) would be ordered by rounding noise instead of the tie rule.
_SCORE_RTOL = 1e-6
# Centroid distances are float64 (the centroid itself is rounded), same reasoning.
_CENTROID_RTOL = 1e-9


class EmptyMaskError(ValueError):
    """The mask has no foreground pixel, so there is no target; data preparation skips these."""


@dataclass(frozen=True)
class Target:
    """What the model should answer for one mask.

    bbox: (x1, y1, x2, y2), the inclusive extreme foreground pixels.
    points: (x, y) centres of the two largest non-overlapping inscribed circles, largest first.
        Both always lie on foreground pixels.
    radii: the two circles' radii in pixels (distance from the centre to the nearest background
        pixel centre); radii[1] is 0.0 when no second circle fits (see `mask_to_target`).
    """

    bbox: tuple[int, int, int, int]
    points: tuple[tuple[int, int], tuple[int, int]]
    radii: tuple[float, float]


def _foreground(mask: np.ndarray) -> np.ndarray:
    """Validate `mask` and return it as a 2-D bool array (nonzero = foreground)."""
    if not isinstance(mask, np.ndarray):
        raise ValueError(f"mask must be a numpy array, got {type(mask).__name__}")
    if mask.ndim != 2 or mask.size == 0:
        raise ValueError(
            f"mask must be a non-empty 2-D array, got shape {mask.shape} (dtype {mask.dtype})"
        )
    kind = mask.dtype.kind
    if kind == "b":
        return mask
    if kind not in "iufc":
        raise ValueError(f"mask must be bool or numeric, got dtype {mask.dtype} ({mask.shape})")
    if kind in "fc" and not np.isfinite(mask).all():
        raise ValueError(f"mask of dtype {mask.dtype} and shape {mask.shape} contains NaN or inf")
    return mask != 0


def _pick(ys: np.ndarray, xs: np.ndarray, cy: float, cx: float) -> int:
    """Index of the candidate closest to the centroid (cy, cx); the first one on a tie.

    Candidates are given in row-major order, so "first" is row-major.
    """
    if len(ys) == 1:
        return 0
    d2 = (ys - cy) ** 2 + (xs - cx) ** 2
    best = d2.min()
    return int(np.flatnonzero(d2 <= best + _CENTROID_RTOL * max(1.0, best))[0])


def _exact_distance(padded: np.ndarray, c: tuple[int, int], approx: float) -> float:
    """Exact distance from pixel `c` to the nearest background pixel of `padded`.

    OpenCV's float32 distance transform can differ by an ulp between calls on the same input
    (seen with OpenCV 5), so the radii we return are recomputed from integer squared distances
    in a window just larger than `approx`, making results reproducible bit for bit.
    """
    reach = math.ceil(approx * (1 + 1e-5)) + 1
    y0, x0 = max(0, c[0] - reach), max(0, c[1] - reach)
    window = padded[y0 : c[0] + reach + 1, x0 : c[1] + reach + 1]
    ys, xs = np.divmod(np.flatnonzero(window == 0), window.shape[1])
    return math.sqrt(int(((ys + (y0 - c[0])) ** 2 + (xs + (x0 - c[1])) ** 2).min()))


def _argmax_min(
    d: np.ndarray, c: tuple[int, int], offset: float, tol: float, min_score: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """Foreground pixels p maximising min(d(p), |p - c| - offset), within `tol` of the maximum.

    Returns their rows, columns (row-major order) and the maximum; no pixels (and -inf) when
    no foreground pixel scores above `min_score`. Exact, but evaluates the score only where it
    can win: a strided sample gives a lower bound `low` on the maximum, and any pixel within
    `tol` of the maximum needs d(p) >= low - tol and |p - c| >= offset + low - tol, which two
    cheap comparisons check without computing square roots.
    """
    h, w = d.shape
    dy2 = (np.arange(h, dtype=np.int64) - c[0]) ** 2
    dx2 = (np.arange(w, dtype=np.int64) - c[1]) ** 2
    step = max(1, int(np.sqrt(h * w / 16384)))
    sample = np.minimum(d[::step, ::step], np.sqrt(np.add.outer(dy2[::step], dx2[::step])) - offset)
    # Background has d = 0, so a positive bound always comes from a foreground pixel.
    floor = max(float(sample.max()) - 2 * tol, min_score)  # 2 * tol: slack for rounding
    if floor > 0:
        keep = d >= floor
        # |p - c| >= offset + floor  <=>  dx^2 >= (offset + floor)^2 - dy^2 (integers, no sqrt).
        need = int(np.floor((offset + floor) ** 2)) - dy2
        keep &= np.less_equal.outer(need, dx2)
    else:
        keep = d > 0
    ys, xs = np.divmod(np.flatnonzero(keep), w)
    score = np.minimum(d[ys, xs].astype(np.float64), np.sqrt(dy2[ys] + dx2[xs]) - offset)
    above = score > min_score
    ys, xs, score = ys[above], xs[above], score[above]
    if not len(score):
        return ys, xs, -np.inf
    best = float(score.max())
    top = score >= best - tol
    return ys[top], xs[top], best


def mask_to_target(mask: np.ndarray) -> Target:
    """Compute the bbox and the two inscribed-circle points of a mask.

    Distances come from the exact Euclidean distance transform `d` of the mask padded by one
    background pixel on every side, so the image border counts as outside the object: `d(p)` is
    the distance from pixel p to the nearest background pixel centre, and a circle of radius
    `d(p)` around p covers only foreground pixels.

    Circle 1 is centred on the maximum of `d`, with radius r1 = d(c1).

    Circle 2 is the largest circle inside the mask that does not overlap circle 1. Around a
    foreground pixel p it can grow until it hits the background (radius d(p)) or touches circle 1
    (radius |p - c1| - r1), so its best radius at p is min(d(p), |p - c1| - r1), and c2 is the
    argmax of that over all foreground pixels, r2 its value.

    Ties (values equal within 1e-6 * max(1, r1), to absorb float32 rounding of `d`) are broken
    the same way for both circles: the candidate closest to the mask's centroid wins (distances
    equal within a relative 1e-9 tie), then the first in row-major order (smallest y, then
    smallest x). The returned radii are recomputed exactly from integer squared distances, so
    equal masks give bit-identical targets.

    Degenerate masks: when no second circle of positive radius fits (every foreground pixel lies
    within r1 of c1: a one-pixel mask, a plus sign, and usually a digitised disk), point 2 is the
    foreground pixel maximising min(d(p), |p - c1|), i.e. still inside the object and as far
    from c1 as the object allows, and radii[1] is 0.0. For a one-pixel mask both points are
    that pixel. Thin masks need no special case: on a 1-px line of 3 or more pixels d = 1
    everywhere, so circle 2 has radius 1 and (by the tie rule) sits two pixels from c1, on the
    side nearer the centroid.

    Raises:
        ValueError: `mask` is not a non-empty 2-D bool or numeric array (or holds NaN/inf).
        EmptyMaskError: `mask` has no foreground pixel.
    """
    import cv2

    fg = _foreground(mask)
    rows = fg.any(axis=1)
    if not rows.any():
        raise EmptyMaskError(f"mask of shape {mask.shape} has no foreground pixel")
    cols = fg.any(axis=0)
    y1 = int(np.argmax(rows))
    y2 = int(len(rows) - 1 - np.argmax(rows[::-1]))
    x1 = int(np.argmax(cols))
    x2 = int(len(cols) - 1 - np.argmax(cols[::-1]))
    bbox = (x1, y1, x2, y2)

    # Work on the bbox crop: its one-pixel padding holds the nearest background pixel of every
    # foreground pixel that lies farther out, so the distances are the same as for the whole
    # (padded) image, at a fraction of the cost for small objects. Coordinates below are in
    # this padded crop (contiguous arrays are faster), shifted back at the end.
    h, w = y2 - y1 + 3, x2 - x1 + 3
    padded = np.zeros((h, w), dtype=np.uint8)
    padded[1:-1, 1:-1] = fg[y1 : y2 + 1, x1 : x2 + 1]
    d = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)

    # Centroid from exact integer sums (cv2.reduce: several times faster than numpy's sum here).
    row_counts = cv2.reduce(padded, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel().astype(np.int64)
    col_counts = cv2.reduce(padded, 0, cv2.REDUCE_SUM, dtype=cv2.CV_32S).ravel().astype(np.int64)
    n = int(row_counts.sum())
    cy = int(np.dot(row_counts, np.arange(h, dtype=np.int64))) / n
    cx = int(np.dot(col_counts, np.arange(w, dtype=np.int64))) / n

    # Circle 1.
    r_max = float(d.max())
    tol = _SCORE_RTOL * max(1.0, r_max)
    ys, xs = np.divmod(np.flatnonzero(d >= r_max - tol), w)  # flatnonzero: much faster
    i = _pick(ys, xs, cy, cx)
    c1 = (int(ys[i]), int(xs[i]))
    r1 = _exact_distance(padded, c1, float(d[c1]))

    ys, xs, _ = _argmax_min(d, c1, r1, tol, min_score=tol)
    found = len(ys) > 0
    if not found:
        # No positive-radius circle fits beside circle 1: stay inside, as far from c1 as allowed.
        ys, xs, _ = _argmax_min(d, c1, 0.0, tol, min_score=-np.inf)
    j = _pick(ys, xs, cy, cx)
    c2 = (int(ys[j]), int(xs[j]))
    r2 = 0.0
    if found:
        gap = math.sqrt((c2[0] - c1[0]) ** 2 + (c2[1] - c1[1]) ** 2) - r1
        r2 = min(_exact_distance(padded, c2, float(d[c2])), gap)

    return Target(
        bbox=bbox,
        points=((c1[1] + x1 - 1, c1[0] + y1 - 1), (c2[1] + x1 - 1, c2[0] + y1 - 1)),
        radii=(r1, r2),
    )


# --------------------------------------------------------------------------- solution string

_PAIR = rf"\(\s*({NUMBER})\s*,\s*({NUMBER})\s*\)"
_SOLUTION_TEXT = re.compile(
    rf"\s*<box>\s*{_PAIR}\s*,\s*{_PAIR}\s*</box>\s*<points>\s*{_PAIR}\s*,\s*{_PAIR}\s*</points>\s*"
)
_SOLUTION_EXAMPLE = "<box>(x1,y1),(x2,y2)</box><points>(x1,y1),(x2,y2)</points>"
# The ground truth carries the full answer: bbox, points_1, points_2.
_SOLUTION_KEYS = STRICT_KEYS[DEFAULT_VARIANT]
_SOLUTION_KEY_NAMES = ", ".join(repr(key) for key, _ in _SOLUTION_KEYS[:-1])
_SOLUTION_KEY_NAMES += f" and {_SOLUTION_KEYS[-1][0]!r}"  # 'bbox', 'points_1' and 'points_2'


def format_solution(bbox: Sequence[int], points: Sequence[Sequence[int]]) -> str:
    """The released datasets' ``solution`` string for a bbox ``(x1, y1, x2, y2)`` and two
    points ``((x, y), (x, y))``: ``<box>(x1,y1),(x2,y2)</box><points>(x,y),(x,y)</points>``.
    `parse_solution` reads it back."""
    (px1, py1), (px2, py2) = points
    x1, y1, x2, y2 = bbox
    return f"<box>({x1},{y1}),({x2},{y2})</box><points>({px1},{py1}),({px2},{py2})</points>"


def _solution_from_dict(data: dict, original: object) -> Solution:
    parsed = {}
    for key, count in _SOLUTION_KEYS:
        if key not in data:
            raise ValueError(
                f"malformed ground truth: no {key!r} key (found {sorted(map(str, data))}): "
                f"{short_repr(original)}"
            )
        values = finite_numbers(data[key], count)
        if values is None:
            raise ValueError(
                f"malformed ground truth: {key!r} must be {count} finite numbers, got "
                f"{short_repr(data[key])} in {short_repr(original)}"
            )
        parsed[key] = values
    box = parsed[BOX_KEY]
    x1, y1, x2, y2 = box
    if x1 > x2 or y1 > y2:
        raise ValueError(
            f"malformed ground truth: {BOX_KEY!r} must be (x1, y1, x2, y2) with x1 <= x2 and "
            f"y1 <= y2, got {box} in {short_repr(original)}"
        )
    return box, tuple(parsed[key] for key in POINT_KEYS)  # type: ignore[return-value]


def parse_solution(solution: object) -> Solution:
    """The ground truth ``(bbox, (point_1, point_2))`` of one sample, as floats.

    Accepts the released datasets' string
    ``<box>(x1,y1),(x2,y2)</box><points>(x1,y1),(x2,y2)</points>`` (what `format_solution`
    writes), a JSON string ``{bbox: [x1, y1, x2, y2], points_1: [x, y], points_2: [x, y]}``
    (`reply_format.STRICT_KEYS`) or that dict already decoded (extra keys are ignored). The box
    is XYXY, inclusive pixels, in the frame the answers are in (`frames.REASONING_SIZE` square
    in the released data).

    Unlike the rewards, which score a bad completion 0, this raises: a malformed ground truth
    is a data bug that must not silently train the model towards 0 rewards.

    Raises:
        ValueError: the solution is not one of those forms, a value is not a finite number,
            a list has the wrong length, or the box has x1 > x2 or y1 > y2.
    """
    if isinstance(solution, dict):
        return _solution_from_dict(solution, solution)
    if not isinstance(solution, str):
        raise ValueError(
            f"malformed ground truth: expected a str or dict, got {type(solution).__name__}: "
            f"{short_repr(solution)}"
        )
    if solution.strip().startswith("{"):
        try:
            data = json.loads(solution)
        except (ValueError, RecursionError) as exc:
            raise ValueError(
                f"malformed ground truth: invalid JSON ({exc}): {short_repr(solution)}"
            ) from exc
        if not isinstance(data, dict):
            raise ValueError(f"malformed ground truth: not a JSON object: {short_repr(solution)}")
        return _solution_from_dict(data, solution)
    match = _SOLUTION_TEXT.fullmatch(solution)
    if match is None:
        raise ValueError(
            f"malformed ground truth: expected {_SOLUTION_EXAMPLE!r} or a JSON object with "
            f"{_SOLUTION_KEY_NAMES}, got {short_repr(solution)}"
        )
    values = [float(v) for v in match.groups()]
    first, second = POINT_KEYS
    return _solution_from_dict(
        {BOX_KEY: values[0:4], first: values[4:6], second: values[6:8]}, solution
    )


# --------------------------------------------------------------------------- lists of objects


@dataclass(frozen=True)
class ObjectTruth:
    """One ground-truth object of a list answer (VisionReasoner's form): an XYXY box and one
    point inside it, as floats in the frame of the solution."""

    bbox: Box
    point: Point


def format_objects_solution(objects: Sequence[ObjectTruth]) -> str:
    """VisionReasoner's ``solution`` string for a list of objects, integer coordinates:
    ``[{bbox_2d: [x1, y1, x2, y2], point_2d: [x, y]}, ...]`` (``[]``: no object; the keys
    are `reply_format.LIST_BOX_KEY` and `LIST_POINT_KEY`).
    `parse_objects_solution` reads it back."""
    return json.dumps(
        [
            {LIST_BOX_KEY: [round(v) for v in o.bbox], LIST_POINT_KEY: [round(v) for v in o.point]}
            for o in objects
        ]
    )


def is_objects_solution(solution: object) -> bool:
    """Whether `solution` is in the list form (a JSON list, decoded or not), not Seg-Zero's
    single object."""
    if isinstance(solution, list | tuple):
        return True
    return isinstance(solution, str) and solution.lstrip().startswith("[")


def _object_from_item(item: object, index: int, original: object) -> ObjectTruth:
    if not isinstance(item, dict):
        raise ValueError(
            f"malformed ground truth: object {index} is not a JSON object: {short_repr(original)}"
        )
    box = finite_numbers(item.get(LIST_BOX_KEY), 4)
    point = finite_numbers(item.get(LIST_POINT_KEY), 2)
    if box is None or point is None:
        raise ValueError(
            f"malformed ground truth: object {index} needs {LIST_BOX_KEY!r} (4 finite numbers) "
            f"and {LIST_POINT_KEY!r} (2), got {short_repr(item)} in {short_repr(original)}"
        )
    if box[0] > box[2] or box[1] > box[3]:
        raise ValueError(
            f"malformed ground truth: object {index}'s {LIST_BOX_KEY!r} must have x1 <= x2 and "
            f"y1 <= y2, got {list(box)} in {short_repr(original)}"
        )
    return ObjectTruth(box, point)  # type: ignore[arg-type]


def parse_objects_solution(solution: object) -> list[ObjectTruth]:
    """The ground truth as a list of objects, as floats.

    Reads VisionReasoner's list (a JSON string or the decoded list; ``[]`` is "no object"), or
    any single-object form `parse_solution` reads, as one object whose point is ``points_1``
    (the centre of the largest inscribed circle, the point deepest inside the object). Raises
    ValueError, as `parse_solution` does: a malformed ground truth is a data bug.
    """
    if not is_objects_solution(solution):
        box, (point, _) = parse_solution(solution)
        return [ObjectTruth(box, point)]
    items = solution
    if isinstance(solution, str):
        try:
            items = json.loads(solution)
        except (ValueError, RecursionError) as exc:
            raise ValueError(
                f"malformed ground truth: invalid JSON ({exc}): {short_repr(solution)}"
            ) from exc
    if not isinstance(items, list | tuple):
        raise ValueError(f"malformed ground truth: not a JSON list: {short_repr(solution)}")
    return [_object_from_item(item, i, solution) for i, item in enumerate(items)]
