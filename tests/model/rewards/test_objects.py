"""The list-answer rewards (VisionReasoner's), scored by hand on small scenes."""

from __future__ import annotations

import json
import pickle

import pytest

from segzero_model.rewards.objects import (
    OBJECT_REWARD_FUNCTIONS,
    non_repeat_reward,
    objects_format_reward,
)
from segzero_model.rewards.registry import get_reward_functions, object_recipe_rewards

# Two ground-truth objects in the 840 frame.
A = {"bbox_2d": [100, 100, 300, 300], "point_2d": [200, 200]}
B = {"bbox_2d": [500, 400, 700, 600], "point_2d": [600, 500]}
TRUTH = json.dumps([A, B])


def reply(objects, thinking: str = "two cups") -> str:
    return f"<think>{thinking}</think><answer>{json.dumps(objects)}</answer>"


def accuracy(completion, solution=TRUTH, **kwargs) -> tuple[float, float, float]:
    names = ("objects_box_iou", "objects_box_l1", "objects_points")
    return tuple(
        OBJECT_REWARD_FUNCTIONS[n]([completion], solution=[solution], **kwargs)[0] for n in names
    )


def total(completion, solution=TRUTH) -> float:
    rewards = get_reward_functions(object_recipe_rewards())
    return sum(fn([completion], solution=[solution])[0] for fn in rewards)


def test_a_perfect_answer_in_any_order_scores_the_released_maximum_of_7():
    """thinking 1 + format 2 + accuracy 3 + non-repeat 1, as VisionReasoner's score."""
    assert accuracy(reply([B, A])) == (1.0, 1.0, 1.0)
    assert objects_format_reward([reply([B, A])]) == [2.0]
    assert total(reply([B, A])) == 7.0


def test_missing_and_extra_objects_divide_by_the_larger_count():
    assert accuracy(reply([A])) == (0.5, 0.5, 0.5)  # one of two found
    far = {"bbox_2d": [0, 700, 50, 800], "point_2d": [10, 750]}
    assert accuracy(reply([A, far])) == (0.5, 0.5, 0.5)  # far matches B and hits nothing
    assert accuracy(reply([A, B, far])) == pytest.approx((2 / 3, 2 / 3, 2 / 3))


def test_each_hit_has_its_own_threshold():
    # Off by 20 px each corner: L1 20 >= 10 misses; IoU 32761/48041 = 0.68 and the point hit.
    shifted = {"bbox_2d": [120, 120, 320, 320], "point_2d": [200, 200]}
    assert accuracy(reply([shifted]), json.dumps([A])) == (1.0, 0.0, 1.0)
    # A point on the ground truth's point but outside its own (too narrow) box misses, and the
    # box (IoU 0.45, L1 27.5) misses too.
    narrow = {"bbox_2d": [100, 100, 190, 300], "point_2d": [200, 200]}
    assert accuracy(reply([narrow]), json.dumps([A])) == (0.0, 0.0, 0.0)
    near = {"bbox_2d": [101, 100, 300, 300], "point_2d": [229, 200]}  # 29 px away: a hit
    assert accuracy(reply([near]), json.dumps([A])) == (1.0, 1.0, 1.0)
    away = {"bbox_2d": [101, 100, 300, 300], "point_2d": [230, 200]}  # 30 px: not < 30
    assert accuracy(reply([away]), json.dumps([A])) == (1.0, 1.0, 0.0)


def test_thresholds_scale_with_the_frame_side():
    """In the 0..1000 relative frame (image_size 1000) the thresholds are 11.9 and 35.7: the
    fractions of the image the released 10 and 30 px are of 840."""
    pred = {"bbox_2d": [122, 100, 322, 300], "point_2d": [230, 200]}  # L1 11, point 30 away
    truth = json.dumps([A])
    assert accuracy(reply([pred]), truth) == (1.0, 0.0, 0.0)
    assert accuracy(reply([pred]), truth, image_size=1000) == (1.0, 1.0, 1.0)
    assert accuracy(reply([pred]), truth, image_size=[1000]) == (1.0, 1.0, 1.0)


def test_no_such_object_is_an_answer():
    """``[]`` is well formed; it is right when nothing is there and wrong otherwise."""
    assert objects_format_reward([reply([])]) == [2.0]
    assert accuracy(reply([]), "[]") == (1.0, 1.0, 1.0)
    assert total(reply([]), "[]") == 7.0
    assert accuracy(reply([]), TRUTH) == (0.0, 0.0, 0.0)
    assert accuracy(reply([A]), "[]") == (0.0, 0.0, 0.0)


def test_format_credits_each_item_and_accuracy_needs_every_key():
    no_point = {"bbox_2d": [500, 400, 700, 600]}
    assert objects_format_reward([reply([A, no_point])]) == [1.5]
    assert accuracy(reply([A, no_point])) == (0.0, 0.0, 0.0)  # released: an exception, 0
    as_text = {"bbox_2d": "[100, 100, 300, 300]", "point_2d": [200, 200]}
    assert objects_format_reward([reply([as_text])]) == [1.0]  # the point's 1 of 2
    nan_box = '<answer>[{"bbox_2d": [NaN,100,300,300], "point_2d": [200,200]}]</answer>'
    assert objects_format_reward([nan_box]) == [1.0]
    assert accuracy(nan_box) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "completion",
    [
        None,
        123,
        "",
        "no tags at all",
        "<think>t</think><answer>[{'bbox_2d': [100,100,300,300], 'point_2d': [200,200]}]</answer>",
        '<think>t</think><answer>[{"bbox_2d": [100,100,300,300], "point_2d": [200',
        "<think>t</think><answer>[1, 2, 3]</answer>",
        '<think>t</think><answer>{"bbox_2d": [100,100,300,300], "point_2d": [200,200]}</answer>',
        "<think>t</think><answer>" + "[" * 5000 + "</answer>",
    ],
)
def test_malformed_answers_score_0_and_never_raise(completion):
    """Single quotes are not JSON (the released rewards ``json.loads`` the answer too); a lone
    object is not a list."""
    assert objects_format_reward([completion]) == [0.0]
    assert accuracy(completion) == (0.0, 0.0, 0.0)


def test_a_seg_zero_solution_is_a_list_of_one_with_its_first_point():
    solution = "<box>(100,100),(300,300)</box><points>(200,200),(150,250)</points>"
    assert accuracy(reply([A]), solution) == (1.0, 1.0, 1.0)


def test_a_malformed_ground_truth_raises():
    with pytest.raises(ValueError, match="object 0 needs 'bbox_2d'"):
        accuracy(reply([A]), '[{"bbox": [1, 2, 3, 4]}]')
    with pytest.raises(ValueError, match="one ground truth per completion"):
        OBJECT_REWARD_FUNCTIONS["objects_box_iou"]([reply([A])], solution=TRUTH)


def test_non_repeat():
    assert non_repeat_reward(["a. b. a. c."]) == [1.0]  # one repeat is tolerated
    assert non_repeat_reward(["a. b. a. b."]) == [0.0]
    assert non_repeat_reward([reply([A], "the cup. the cup. the cup. the cup.")]) == [0.0]


def test_recipes_and_pickling():
    assert object_recipe_rewards() == (
        "thinking_format",
        "objects_format",
        "objects_box_iou",
        "objects_box_l1",
        "objects_points",
        "non_repeat",
    )
    assert object_recipe_rewards(thinking=False)[0] == "objects_format"
    for name, fn in OBJECT_REWARD_FUNCTIONS.items():
        assert fn.__name__ == f"{name}_reward"
        assert pickle.loads(pickle.dumps(fn)) is fn
