"""The Seg-Zero GRPO rewards, in the open-r1 style: one module-level function per reward.

Each reward is ``name_reward(completions, **kwargs) -> list[float]`` with one float per
completion; TRL passes the dataset columns (``solution``, optionally ``image_size`` and
``json_decoding``) as keyword
arguments and logs each reward under its ``__name__``. The functions are module-level, so they
pickle. `REWARD_FUNCTIONS` maps recipe names to them and `get_reward_functions` looks names up;
`DEFAULT_REWARDS` is the paper's final recipe (strict format, hard accuracy: at most 5).

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
  first object of the answer region (`reply.answer_region`) forgivingly instead, and asks the
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
- The reply format (tags, keys per answer variant, strict JSON) is `segzero_model.reply`'s, and
  the ground-truth string is `segzero_model.targets.parse_solution`'s; this module only scores.

The paper's Figure 2 prints illustrative scores; under these definitions its three samples
score 1/1/1/1/1, 1/0/1/1/0 and 0/0/1/0/0 (think/format/IoU/box L1/points), as the released
rewards give them (tests/test_rewards.py reproduces them and explains each number).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from segzero_model.metrics import box_iou
from segzero_model.object_rewards import OBJECT_REWARD_FUNCTIONS
from segzero_model.reply import (
    DEFAULT_VARIANT,
    STRICT_KEYS,
    check_variant,
    completion_text,
    finite_numbers,
    is_strict_format,
    is_thinking_format,
    reply_object,
    variant_has,
)
from segzero_model.reward_columns import decodings, frame_sides, reward_solutions
from segzero_model.targets import Box, Point, parse_solution

__all__ = [
    "BOX_L1_THRESHOLD",
    "DEFAULT_REWARDS",
    "IOU_THRESHOLD",
    "POINTS_DISTANCE_THRESHOLD",
    "REWARD_FUNCTIONS",
    "box_iou_reward",
    "box_l1_reward",
    "format_reward_name",
    "get_reward_functions",
    "object_recipe_rewards",
    "points_only_reward",
    "points_reward",
    "recipe_rewards",
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
    """The object the rewards read in the completion (`reply.reply_object`), or None."""
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
    box = finite_numbers(obj.get("bbox"), 4)
    return None if box is None else _ordered(box)


def _predicted_points(obj: dict | None, decoding: str) -> tuple[Point, Point] | None:
    """The answer's ``points_1`` and ``points_2``, or None when either is missing/malformed;
    truncated to integers with the released decoding (the released reward's ``int()``)."""
    if obj is None:
        return None
    first = finite_numbers(obj.get("points_1"), 2)
    second = finite_numbers(obj.get("points_2"), 2)
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
        box_values = [v for k, v in pairs if "bbox" in k][:1]
        point_values = [v for k, v in pairs if "point" in k and "bbox" not in k][:2]
        box_ok = bool(box_values) and _has_len(box_values[0], 4)
        points_ok = len(point_values) == 2 and all(_has_len(v, 2) for v in point_values)
    else:
        box_ok = any("bbox" in k and finite_numbers(v, 4) is not None for k, v in pairs)
        point_hits = sum("point" in k and finite_numbers(v, 2) is not None for k, v in pairs)
        points_ok = point_hits >= 2
    return (box_ok or not variant_has(answer, "bbox")) and (
        points_ok or not variant_has(answer, "points_1")
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


# --------------------------------------------------------------------------- registry

REWARD_FUNCTIONS: dict[str, Callable[..., list[float]]] = {
    "thinking_format": thinking_format_reward,
    "strict_format": strict_format_reward,
    "soft_format": soft_format_reward,
    "box_iou": box_iou_reward,
    "soft_box_iou": soft_box_iou_reward,
    "box_l1": box_l1_reward,
    "soft_box_l1": soft_box_l1_reward,
    "points": points_reward,
    "soft_points": soft_points_reward,
    "strict_box_format": strict_box_format_reward,
    "soft_box_format": soft_box_format_reward,
    "strict_points_format": strict_points_format_reward,
    "soft_points_format": soft_points_format_reward,
    "points_only": points_only_reward,
    "soft_points_only": soft_points_only_reward,
    **OBJECT_REWARD_FUNCTIONS,  # the list-answer families' (segzero_model.object_rewards)
}

# The paper's final recipe (Section 4.4): strict format and hard accuracy rewards, at most 5.
DEFAULT_REWARDS: tuple[str, ...] = (
    "thinking_format",
    "strict_format",
    "box_iou",
    "box_l1",
    "points",
)


def get_reward_functions(names: Iterable[str] | str) -> list[Callable[..., list[float]]]:
    """The reward functions for `names` (registry keys), in order; one name may be a str.

    Raises:
        ValueError: a name is unknown (the message lists the valid names) or repeated (it
            would count twice and log twice under the same name).
    """
    names = [names] if isinstance(names, str) else list(names)
    valid = ", ".join(REWARD_FUNCTIONS)
    unknown = [n for n in names if not isinstance(n, str) or n not in REWARD_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown reward name(s) {unknown}; valid names: {valid}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"reward name(s) {repeated} given more than once")
    return [REWARD_FUNCTIONS[n] for n in names]


def recipe_rewards(
    *,
    thinking: bool = True,
    format: str = "strict",
    accuracy: str = "hard",
    answer: str = DEFAULT_VARIANT,
) -> tuple[str, ...]:
    """The reward names of one training recipe: the paper's switches, defaults = `DEFAULT_REWARDS`.

    `thinking=False` drops the thinking-format reward (the no-CoT rows); `format` is "strict" or
    "soft" (Table 4), `accuracy` "hard" or "soft" (Table 3); `answer` "box_points", "box" or
    "points" (Table 2: a box-only answer has no point reward, a points-only answer no box
    rewards, and its point reward cannot ask the points to lie inside a box). The rewards follow
    from the variant's keys (`reply.STRICT_KEYS`): box rewards for a ``bbox``, a point reward
    for ``points_1``/``points_2``.
    """
    choices = {"format": (format, ("strict", "soft")), "accuracy": (accuracy, ("hard", "soft"))}
    choices["answer"] = (answer, tuple(STRICT_KEYS))
    for name, (value, valid) in choices.items():
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    has_box, has_points = variant_has(answer, "bbox"), variant_has(answer, "points_1")
    soft = "soft_" if accuracy == "soft" else ""
    names = ["thinking_format"] if thinking else []
    names.append(format_reward_name(format, answer))
    if has_box:
        names += [f"{soft}box_iou", f"{soft}box_l1"]
    if has_points:
        names.append(f"{soft}points" if has_box else f"{soft}points_only")
    return tuple(names)


# VisionReasoner's rewards for a list-answer family (segzero_model.object_rewards), in order.
OBJECT_REWARDS: tuple[str, ...] = (
    "thinking_format",
    "objects_format",
    "objects_box_iou",
    "objects_box_l1",
    "objects_points",
    "non_repeat",
)


def object_recipe_rewards(*, thinking: bool = True) -> tuple[str, ...]:
    """The reward names of a list-answer family's recipe: `OBJECT_REWARDS`, without the
    thinking-format reward when the prompt asks for no thinking."""
    return OBJECT_REWARDS if thinking else OBJECT_REWARDS[1:]


def format_reward_name(format: str, answer: str = DEFAULT_VARIANT) -> str:
    """The registry name of the `format` ("strict" or "soft") reward of the `answer` variant:
    ``strict_format`` for the default variant, ``strict_box_format`` for "box", and so on."""
    check_variant(answer)
    return f"{format}_format" if answer == DEFAULT_VARIANT else f"{format}_{answer}_format"
