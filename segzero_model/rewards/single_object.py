"""The Seg-Zero GRPO rewards, in the open-r1 style: one module-level function per reward.

Each reward is ``name_reward(completions, **kwargs) -> list[float]`` with one float per
completion; TRL passes the dataset columns (``solution``, optionally ``image_size`` and
``json_decoding``) as keyword
arguments and logs each reward under its ``__name__``. The functions are module-level, so they
pickle. `rewards.registry` maps recipe names to them.

- ``thinking_format``: 1 if the whole completion is ``<think>...</think>``, white space,
  ``<answer>...</answer>``, nothing around, each tag once.
- ``strict_format``: 1 if the object read has ``bbox`` (a list of 4), ``points_1`` and
  ``points_2`` (lists of 2); other keys may stand beside them. ``soft_format``: the first key
  containing "bbox" with 4 values and the first two others containing "point" with 2 each.
- ``box_iou``: 1 if IoU > 0.5. ``soft_box_iou``: the IoU.
- ``box_l1``: 1 if the mean absolute coordinate difference < 10 px. ``soft_box_l1``:
  max(0, 1 - that difference / S).
- ``points``: 1 if both predicted points lie inside the predicted box and their mean distance
  to the ground-truth points (better pairing) < 100 px. ``soft_points``: max(0, 1 - that
  distance / S), also 0 when a point lies outside the predicted box.

Decisions (the issue's spec wins over the paper where they differ):

- The JSON is read as the released rewards read it (the ``json_decoding`` "released", the
  default): the first ``{[^}]+}`` of the whole reply, the thinking included, decoded by
  ``json.loads``. What it raises on (single quotes, even the prompt's own example; a trailing
  comma; True/None) scores 0 on every reward but ``thinking_format``; what it accepts counts
  (NaN and Infinity pass the format rewards, which, as released, check only list lengths; the
  accuracy rewards need finite numbers and score them 0). Points are truncated by ``int()`` as
  released. So a run optimises the paper's objective, writing valid JSON included. The
  "tolerant" decoding (a ``json_decoding`` column, the GRPO recipe key of that name) reads the
  first object of the answer region (`reply_format.answer_region`) forgivingly instead, and asks the
  format rewards for finite numbers. The box rewards need only the exact key ``bbox``, so a box
  scores even when the points are missing.
- Boxes are XYXY inclusive pixel boxes (area (x2-x1+1)(y2-y1+1), `segzero_model.metrics.box_iou`).
  Corner order does not matter: like `box_iou` and `parse_answer`, the rewards order the corners
  first, so the box that is rewarded is the box the segmenter would get.
- "Mean |d|" is the mean absolute difference of the 4 box coordinates; "distance" is the mean
  Euclidean distance of predicted to ground-truth points under the better of the two pairings,
  so the order of ``points_1`` and ``points_2`` does not matter.
- S, max(image size), is the side of the frame the answers are in. In the released datasets the
  images are resized to 840x840 and both answers and ground truth are in that frame, so S = 840
  by default. An optional ``image_size`` column (or keyword) overrides it: a number or a
  ``(width, height)`` pair per completion, or one number for all. Columns such as
  ``img_width``/``img_height`` are deliberately NOT read: they describe the original image,
  which is not the frame the answer is in.
- The accuracy rewards need JSON numbers (not strings, not booleans), finite.
- One bad completion (garbage, None content, wrong types or lengths, NaN, huge numbers) scores
  0 and never raises. A malformed ground truth is a data bug, so `parse_solution` raises
  ValueError for it, as do a missing ``solution`` column and an invalid ``image_size``.
- The reply format (tags, keys per answer variant, strict JSON) is
`segzero_model.reasoning.reply_format`'s, and
  the ground-truth string is `segzero_model.targets.parse_solution`'s; this module only scores.

The paper's Figure 2 prints illustrative scores; under these definitions its three samples
score 1/1/1/1/1, 1/0/1/1/0 and 0/0/1/0/0 (think/format/IoU/box L1/points), as the released
rewards give them (tests/model/rewards/test_single_object.py reproduces them and explains each
number).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from segzero_model.metrics import box_iou
from segzero_model.reasoning.reply_format import (
    BOX_KEY,
    DEFAULT_VARIANT,
    POINT_KEYS,
    completion_text,
    finite_numbers,
    is_strict_format,
    is_thinking_format,
    reply_object,
    variant_has,
)
from segzero_model.rewards.columns import decodings, frame_sides, reward_solutions
from segzero_model.targets import Box, Point, parse_solution

__all__ = [
    "BOX_L1_THRESHOLD",
    "IOU_THRESHOLD",
    "POINTS_DISTANCE_THRESHOLD",
    "box_iou_reward",
    "box_l1_reward",
    "points_only_reward",
    "points_reward",
    "soft_box_format_reward",
    "soft_box_iou_reward",
    "soft_box_l1_reward",
    "soft_format_reward",
    "soft_points_only_reward",
    "soft_points_format_reward",
    "soft_points_reward",
    "strict_box_format_reward",
    "strict_format_reward",
    "strict_points_format_reward",
    "thinking_format_reward",
]

IOU_THRESHOLD = 0.5  # box_iou: 1 if IoU > this
BOX_L1_THRESHOLD = 10.0  # box_l1: 1 if the mean absolute coordinate difference < this (px)
POINTS_DISTANCE_THRESHOLD = 100.0  # points: 1 if the mean point distance < this (px)

# --------------------------------------------------------------------------- completions


def _answer_object(completion: object, decoding: str) -> dict | None:
    """The object the rewards read in the completion (`reply_format.reply_object`), or None."""
    return reply_object(completion_text(completion), decoding)


def _scored(completions: Iterable[object], kwargs: dict) -> list[tuple[object, str]]:
    """(completion, decoding) pairs: the ``json_decoding`` column or keyword (`decodings`)."""
    completions = list(completions)
    chosen = decodings(kwargs.get("json_decoding"), len(completions))
    return list(zip(completions, chosen, strict=True))


# --------------------------------------------------------------------------- values


def _ordered(box: Sequence[float]) -> Box:
    x1, y1, x2, y2 = box
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _predicted_box(obj: dict | None) -> Box | None:
    """The answer's ``bbox`` with ordered corners, or None when missing or malformed."""
    if obj is None:
        return None
    box = finite_numbers(obj.get(BOX_KEY), 4)
    return None if box is None else _ordered(box)


def _predicted_points(obj: dict | None, decoding: str) -> tuple[Point, Point] | None:
    """The answer's ``points_1`` and ``points_2``, or None when either is missing/malformed;
    truncated to integers with the released decoding (the released reward's ``int()``)."""
    if obj is None:
        return None
    first, second = (finite_numbers(obj.get(key), 2) for key in POINT_KEYS)
    if first is None or second is None:
        return None
    if decoding == "released":
        first, second = (tuple(float(math.trunc(v)) for v in p) for p in (first, second))
    return first, second  # type: ignore[return-value]


def _clamp01(value: float) -> float:
    """`value` clamped into [0, 1]; NaN (possible with absurd but finite inputs) gives 0."""
    if math.isnan(value):
        return 0.0
    return min(max(value, 0.0), 1.0)


def _box_l1(pred: Box, gt: Box) -> float:
    """Mean absolute difference of the 4 coordinates (both boxes corner-ordered)."""
    return sum(abs(p - g) for p, g in zip(pred, gt, strict=True)) / 4


def _points_distance(pred: tuple[Point, Point], gt: tuple[Point, Point]) -> float:
    """Mean Euclidean distance of predicted to ground-truth points, better pairing of the two."""
    (a, b), (c, d) = pred, gt
    straight = (math.dist(a, c) + math.dist(b, d)) / 2
    crossed = (math.dist(a, d) + math.dist(b, c)) / 2
    return min(straight, crossed)


def _inside(point: Point, box: Box) -> bool:
    """Whether `point` lies in the inclusive pixel box (edges count as inside)."""
    x, y = point
    x1, y1, x2, y2 = box
    return x1 <= x <= x2 and y1 <= y <= y2


# --------------------------------------------------------------------------- format rewards


def thinking_format_reward(completions: Iterable[object], **kwargs: Any) -> list[float]:
    """1.0 if the completion is exactly ``<think>...</think>``, white space, ``<answer>...
    </answer>``, with nothing before or after (not even white space) and each of the four tags
    once (a second ``<answer>`` is not the format); else 0.0."""
    return [1.0 if is_thinking_format(completion_text(c)) else 0.0 for c in completions]


def _strict_scores(completions: Iterable[object], kwargs: dict, answer: str) -> list[float]:
    return [
        1.0 if is_strict_format(completion_text(c), answer, decoding) else 0.0
        for c, decoding in _scored(completions, kwargs)
    ]


def strict_format_reward(completions: Iterable[object], **kwargs: Any) -> list[float]:
    """1.0 if the object the rewards read has ``bbox`` a list of 4 and ``points_1``,
    ``points_2`` lists of 2 (exact key names; other keys may stand beside them), else 0.0. As
    released: any items; "tolerant": real JSON (single quotes allowed), finite numbers."""
    return _strict_scores(completions, kwargs, DEFAULT_VARIANT)


def _has_len(value: object, count: int) -> bool:
    try:
        return len(value) == count  # type: ignore[arg-type]
    except TypeError:
        return False


# The soft format's test of a points key, as released: it contains "point" (points_1, Point2...).
_POINT_PART = "point"


def _is_soft_format(completion: object, answer: str, decoding: str) -> bool:
    """A key containing "bbox" with 4 values if the variant has a box, and two keys containing
    "point" with 2 values each if it has points.

    As released: the first key containing "bbox" and the first two others containing "point",
    their values of that length (`len`); "tolerant": any such keys, finite numbers."""
    obj = _answer_object(completion, decoding)
    if obj is None:
        return False
    pairs = [(str(key).lower(), value) for key, value in obj.items()]
    if decoding == "released":
        box_values = [v for k, v in pairs if BOX_KEY in k][:1]
        point_values = [v for k, v in pairs if _POINT_PART in k and BOX_KEY not in k][:2]
        box_ok = bool(box_values) and _has_len(box_values[0], 4)
        points_ok = len(point_values) == 2 and all(_has_len(v, 2) for v in point_values)
    else:
        box_ok = any(BOX_KEY in k and finite_numbers(v, 4) is not None for k, v in pairs)
        point_hits = sum(_POINT_PART in k and finite_numbers(v, 2) is not None for k, v in pairs)
        points_ok = point_hits >= 2
    return (box_ok or not variant_has(answer, BOX_KEY)) and (
        points_ok or not variant_has(answer, POINT_KEYS[0])
    )


def _soft_scores(completions: Iterable[object], kwargs: dict, answer: str) -> list[float]:
    return [
        1.0 if _is_soft_format(c, answer, decoding) else 0.0
        for c, decoding in _scored(completions, kwargs)
    ]


def soft_format_reward(completions: Iterable[object], **kwargs: Any) -> list[float]:
    """1.0 if the object the rewards read has a key containing "bbox" with 4 values and two
    keys containing "point" with 2 each (case-insensitive, top level only: "bbox_2d",
    "point_1", "Points2" all count); else 0.0."""
    return _soft_scores(completions, kwargs, DEFAULT_VARIANT)


def strict_box_format_reward(completions: Iterable[object], **kwargs: Any) -> list[float]:
    """`strict_format_reward` for box-only answers: ``bbox`` with 4 values is enough."""
    return _strict_scores(completions, kwargs, "box")


def strict_points_format_reward(completions: Iterable[object], **kwargs: Any) -> list[float]:
    """`strict_format_reward` for points-only answers: ``points_1`` and ``points_2``."""
    return _strict_scores(completions, kwargs, "points")


def soft_box_format_reward(completions: Iterable[object], **kwargs: Any) -> list[float]:
    """`soft_format_reward` for box-only answers: a key containing "bbox" with 4 values."""
    return _soft_scores(completions, kwargs, "box")


def soft_points_format_reward(completions: Iterable[object], **kwargs: Any) -> list[float]:
    """`soft_format_reward` for points-only answers: two keys containing "point"."""
    return _soft_scores(completions, kwargs, "points")


# --------------------------------------------------------------------------- accuracy rewards


def _box_scores(
    completions: Iterable[object], kwargs: dict, solution: object, reward: str, score: Callable
) -> list[float]:
    """`score(pred_box, gt_box, index)` per completion; 0.0 when the answer has no usable bbox."""
    scored = _scored(completions, kwargs)
    truths = reward_solutions(solution, len(scored), reward, parse_solution)
    scores = []
    for index, ((completion, decoding), (gt_box, _)) in enumerate(zip(scored, truths, strict=True)):
        pred = _predicted_box(_answer_object(completion, decoding))
        scores.append(0.0 if pred is None else _clamp01(score(pred, gt_box, index)))
    return scores


def box_iou_reward(
    completions: Iterable[object], solution: object = None, **kwargs: Any
) -> list[float]:
    """1.0 if IoU(predicted bbox, ground-truth bbox) > 0.5 (inclusive pixel boxes), else 0.0."""
    return _box_scores(
        completions,
        kwargs,
        solution,
        "box_iou_reward",
        lambda pred, gt, _: 1.0 if box_iou(pred, gt) > IOU_THRESHOLD else 0.0,
    )


def soft_box_iou_reward(
    completions: Iterable[object], solution: object = None, **kwargs: Any
) -> list[float]:
    """IoU(predicted bbox, ground-truth bbox) (inclusive pixel boxes); 0.0 without a bbox."""
    return _box_scores(
        completions, kwargs, solution, "soft_box_iou_reward", lambda pred, gt, _: box_iou(pred, gt)
    )


def box_l1_reward(
    completions: Iterable[object], solution: object = None, **kwargs: Any
) -> list[float]:
    """1.0 if the mean absolute difference of the 4 box coordinates is < 10 px, else 0.0."""
    return _box_scores(
        completions,
        kwargs,
        solution,
        "box_l1_reward",
        lambda pred, gt, _: 1.0 if _box_l1(pred, gt) < BOX_L1_THRESHOLD else 0.0,
    )


def soft_box_l1_reward(
    completions: Iterable[object],
    solution: object = None,
    image_size: object = None,
    **kwargs: Any,
) -> list[float]:
    """max(0, 1 - mean absolute coordinate difference / max(image size)); 0.0 without a bbox.

    ``image_size``: the frame side (default 840, the released datasets' frame), a number or a
    (width, height) pair per completion, or one number for all.
    """
    completions = list(completions)
    sides = frame_sides(image_size, len(completions))
    return _box_scores(
        completions,
        kwargs,
        solution,
        "soft_box_l1_reward",
        lambda pred, gt, index: 1.0 - _box_l1(pred, gt) / sides[index],
    )


def _points_scores(
    completions: Iterable[object],
    kwargs: dict,
    solution: object,
    reward: str,
    score: Callable,
    *,
    inside_box: bool = True,
) -> list[float]:
    """`score(distance, index)` per completion whose two points lie inside its own predicted
    bbox; 0.0 when the bbox or a point is missing or a point is outside the box. Without
    `inside_box` (points-only answers, which have no box) only the two points are needed."""
    scored = _scored(completions, kwargs)
    truths = reward_solutions(solution, len(scored), reward, parse_solution)
    scores = []
    for index, ((completion, decoding), (_, gt_points)) in enumerate(
        zip(scored, truths, strict=True)
    ):
        obj = _answer_object(completion, decoding)
        box, points = _predicted_box(obj), _predicted_points(obj, decoding)
        if points is None:
            scores.append(0.0)
        elif inside_box and (box is None or not all(_inside(p, box) for p in points)):
            scores.append(0.0)
        else:
            scores.append(_clamp01(score(_points_distance(points, gt_points), index)))
    return scores


def points_reward(
    completions: Iterable[object], solution: object = None, **kwargs: Any
) -> list[float]:
    """1.0 if both predicted points lie inside the predicted bbox and their mean distance to
    the ground-truth points, under the better pairing, is < 100 px; else 0.0."""
    return _points_scores(
        completions,
        kwargs,
        solution,
        "points_reward",
        lambda distance, _: 1.0 if distance < POINTS_DISTANCE_THRESHOLD else 0.0,
    )


def soft_points_reward(
    completions: Iterable[object],
    solution: object = None,
    image_size: object = None,
    **kwargs: Any,
) -> list[float]:
    """max(0, 1 - mean point distance (better pairing) / max(image size)), and 0.0 unless both
    predicted points lie inside the predicted bbox (the hard reward's precondition, kept so the
    soft variant only relaxes the distance threshold). ``image_size`` as in
    `soft_box_l1_reward`."""
    completions = list(completions)
    sides = frame_sides(image_size, len(completions))
    return _points_scores(
        completions,
        kwargs,
        solution,
        "soft_points_reward",
        lambda distance, index: 1.0 - distance / sides[index],
    )


def points_only_reward(
    completions: Iterable[object], solution: object = None, **kwargs: Any
) -> list[float]:
    """`points_reward` for points-only answers (no box to lie inside): 1.0 if the mean
    distance to the ground-truth points, under the better pairing, is < 100 px; else 0.0."""
    return _points_scores(
        completions,
        kwargs,
        solution,
        "points_only_reward",
        lambda distance, _: 1.0 if distance < POINTS_DISTANCE_THRESHOLD else 0.0,
        inside_box=False,
    )


def soft_points_only_reward(
    completions: Iterable[object],
    solution: object = None,
    image_size: object = None,
    **kwargs: Any,
) -> list[float]:
    """`soft_points_reward` for points-only answers: max(0, 1 - distance / max(image size))."""
    completions = list(completions)
    sides = frame_sides(image_size, len(completions))
    return _points_scores(
        completions,
        kwargs,
        solution,
        "soft_points_only_reward",
        lambda distance, index: 1.0 - distance / sides[index],
        inside_box=False,
    )
