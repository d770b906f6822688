"""The GRPO rewards of a list-answer model family (VisionReasoner's, and Qwen3-VL's here): the
answer is a JSON list of objects, ``[{bbox_2d: [x1, y1, x2, y2], point_2d: [x, y]}, ...]`` (the
keys are `reply_format.LIST_BOX_KEY` and `LIST_POINT_KEY`).

They follow VisionReasoner's released rewards (dvlab-research/Seg-Zero,
``verl/utils/reward_score/vision_reasoner.py``), whose score is a format part (thinking 0/1 plus
a segmentation format 0..2), an accuracy part (0..3) and a non-repeat part (0/1). Here each part
is its own function in the open-r1 style of `segzero_model.rewards.single_object`, so TRL logs each
one; the thinking part is `rewards.thinking_format_reward`. With every reward at weight 1 their sum
is the released score, except where a decision below says otherwise.

- ``objects_format``: per item of the answer's list, 1 for a ``bbox_2d`` of 4 finite numbers
  and 1 for a ``point_2d`` of 2, averaged over the items (0..2, as released).
- ``objects_box_iou``, ``objects_box_l1``, ``objects_points``: predicted and ground-truth
  objects are matched one to one by the assignment that maximises the sum of three hits (box
  IoU > 0.5; mean absolute box coordinate difference < 10; point distance < 30 with the point
  inside its own predicted box), as released (scipy's ``linear_sum_assignment``). Each reward
  is its own hits over the matched pairs divided by max(predicted, ground-truth objects), so
  missing and extra objects both cost; the three sum to the released accuracy (0..3).
- ``non_repeat``: 0 once two sentences (the completion split on ".") repeat an earlier one,
  else 1 (as released).

Decisions:

- The answer is the text `reply_format.answer_region` gives (as the other rewards read it), decoded
  by ``json.loads`` after stripping white space, as released: real JSON, a list, or 0.
- An empty list is an answer: "no such object". It scores 2 on format (released: 0, because
  its data never had an empty answer; a robot must learn to say "none") and, against an empty
  ground truth, 1 on each accuracy reward (released: 0, by an exception). Against objects it
  scores 0 on accuracy, as does an extra object against an empty ground truth.
- Thresholds are the released ones in the 840 frame (`frames.REASONING_SIZE`) and scale with
  the frame's side S (the ``image_size`` column, default 840): ``10 * S / 840`` and
  ``30 * S / 840``. For the 0..1000 relative frame (S = 1000) that is 11.9 and 35.7: the same
  fraction of the image.
- The IoU orders a box's corners first, as `segzero_model.metrics.box_iou` (and so the
  single-object rewards) does: the box rewarded is the box the segmenter gets (released: the
  raw corners, so an inverted box gets a negative area). With ordered corners the sum of these
  rewards equalled the released score on 4,443 random multi-object answers (checked once
  against the released file; not a test, its code is not in this repository).
- A completion whose list has an item without both keys (or non-numbers) scores 0 on accuracy
  (released: an exception, so 0); at most 120 objects per side are compared (released).
- The ground truth (``solution``) is in the answer's frame: `targets.parse_objects_solution`
  reads it (a Seg-Zero single-object solution counts as a list of one).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from segzero_model.metrics import box_iou
from segzero_model.reasoning.frames import REASONING_SIZE
from segzero_model.reasoning.reply_format import (
    LIST_BOX_KEY,
    LIST_POINT_KEY,
    answer_region,
    completion_text,
    finite_numbers,
)
from segzero_model.rewards.columns import frame_sides, reward_solutions
from segzero_model.targets import ObjectTruth, parse_objects_solution

__all__ = [
    "MAX_OBJECTS",
    "OBJECT_BOX_L1_THRESHOLD",
    "OBJECT_IOU_THRESHOLD",
    "OBJECT_POINT_THRESHOLD",
    "non_repeat_reward",
    "objects_box_iou_reward",
    "objects_box_l1_reward",
    "objects_format_reward",
    "objects_points_reward",
]

OBJECT_IOU_THRESHOLD = 0.5
OBJECT_BOX_L1_THRESHOLD = 10.0  # in the 840 frame; scaled by the frame's side / 840
OBJECT_POINT_THRESHOLD = 30.0  # in the 840 frame; scaled likewise
MAX_OBJECTS = 120  # objects per side compared, as released
_HITS = ("iou", "l1", "point")


def _answer_list(completion: object) -> list | None:
    """The answer's JSON list (strict ``json.loads`` of the stripped answer), or None."""
    try:
        value = json.loads(answer_region(completion_text(completion)).strip())
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, list) else None


def _predicted_objects(completion: object) -> list[ObjectTruth] | None:
    """The answer's objects, or None when the list does not decode or an item lacks a key."""
    items = _answer_list(completion)
    if items is None:
        return None
    objects = []
    for item in items[:MAX_OBJECTS]:
        if not isinstance(item, dict):
            return None
        box = finite_numbers(item.get(LIST_BOX_KEY), 4)
        point = finite_numbers(item.get(LIST_POINT_KEY), 2)
        if box is None or point is None:
            return None
        objects.append(ObjectTruth(box, point))  # type: ignore[arg-type]
    return objects


def _item_format(item: object) -> float:
    if not isinstance(item, dict):
        return 0.0
    box = finite_numbers(item.get(LIST_BOX_KEY), 4) is not None
    point = finite_numbers(item.get(LIST_POINT_KEY), 2) is not None
    return float(box) + float(point)


def objects_format_reward(completions: Iterable[object], **kwargs: Any) -> list[float]:
    """Per item of the answer's JSON list: 1 for ``bbox_2d`` (4 finite numbers) plus 1 for
    ``point_2d`` (2), averaged over the items (0..2); 2.0 for ``[]``; 0.0 without a list."""
    scores = []
    for completion in completions:
        items = _answer_list(completion)
        if items is None:
            scores.append(0.0)
        elif not items:
            scores.append(2.0)
        else:
            scores.append(sum(_item_format(item) for item in items) / len(items))
    return scores


def _inside(point, box) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


def _hits(pred: ObjectTruth, truth: ObjectTruth, side: float) -> dict[str, float]:
    scale = side / REASONING_SIZE
    l1 = sum(abs(p - t) for p, t in zip(pred.bbox, truth.bbox, strict=True)) / 4
    distance = math.dist(pred.point, truth.point)
    return {
        "iou": float(box_iou(pred.bbox, truth.bbox) > OBJECT_IOU_THRESHOLD),
        "l1": float(l1 < OBJECT_BOX_L1_THRESHOLD * scale),
        "point": float(
            distance < OBJECT_POINT_THRESHOLD * scale and _inside(pred.point, pred.bbox)
        ),
    }


def matched_hits(
    predicted: list[ObjectTruth] | None, truths: list[ObjectTruth], side: float
) -> dict[str, float]:
    """Each accuracy reward of one completion: its hits over the best one-to-one matching,
    divided by max(len(predicted), len(truths)); 1.0 each when both lists are empty."""
    if predicted is None:
        return dict.fromkeys(_HITS, 0.0)
    truths = truths[:MAX_OBJECTS]
    if not predicted and not truths:
        return dict.fromkeys(_HITS, 1.0)
    if not predicted or not truths:
        return dict.fromkeys(_HITS, 0.0)
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    table = [[_hits(p, t, side) for t in truths] for p in predicted]
    totals = np.array([[sum(cell.values()) for cell in row] for row in table])
    rows, cols = linear_sum_assignment(totals, maximize=True)
    count = max(len(predicted), len(truths))
    return {
        hit: sum(table[r][c][hit] for r, c in zip(rows, cols, strict=True)) / count for hit in _HITS
    }


def _accuracy(
    completions: Iterable[object], solution: object, image_size: object, reward: str, hit: str
) -> list[float]:
    completions = list(completions)
    truths = reward_solutions(solution, len(completions), reward, parse_objects_solution)
    sides = frame_sides(image_size, len(completions))
    return [
        matched_hits(_predicted_objects(completion), truth, side)[hit]
        for completion, truth, side in zip(completions, truths, sides, strict=True)
    ]


def objects_box_iou_reward(
    completions: Iterable[object], solution: object = None, image_size: object = None, **kwargs
) -> list[float]:
    """Matched objects whose box IoU > 0.5, over max(predicted, ground-truth objects)."""
    return _accuracy(completions, solution, image_size, "objects_box_iou_reward", "iou")


def objects_box_l1_reward(
    completions: Iterable[object], solution: object = None, image_size: object = None, **kwargs
) -> list[float]:
    """Matched objects whose mean absolute box coordinate difference < 10 (840 frame; scaled
    by the frame's side), over max(predicted, ground-truth objects)."""
    return _accuracy(completions, solution, image_size, "objects_box_l1_reward", "l1")


def objects_points_reward(
    completions: Iterable[object], solution: object = None, image_size: object = None, **kwargs
) -> list[float]:
    """Matched objects whose point lies inside its own predicted box and within 30 (840 frame;
    scaled by the frame's side) of the ground-truth point, over max(predicted, ground truth)."""
    return _accuracy(completions, solution, image_size, "objects_points_reward", "point")


def _repeats(text: str) -> bool:
    seen: set[str] = set()
    repeats = 0
    for sentence in (s.strip() for s in text.split(".")):
        if not sentence:
            continue
        if sentence in seen:
            repeats += 1
            if repeats >= 2:
                return True
        seen.add(sentence)
    return False


def non_repeat_reward(completions: Iterable[object], **kwargs: Any) -> list[float]:
    """0.0 once two sentences of the completion (split on ".") repeat an earlier one, else 1.0:
    a sampled model that loops gains nothing from it."""
    return [0.0 if _repeats(completion_text(c)) else 1.0 for c in completions]


OBJECT_REWARD_FUNCTIONS: dict[str, Callable[..., list[float]]] = {
    "objects_format": objects_format_reward,
    "objects_box_iou": objects_box_iou_reward,
    "objects_box_l1": objects_box_l1_reward,
    "objects_points": objects_points_reward,
    "non_repeat": non_repeat_reward,
}
