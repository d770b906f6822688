"""GRPO rewards: each reward and variant on hand-made completions with hand-computed values, the
paper's Figure 2 samples, garbage that must score 0 without raising, TRL's completion formats,
both ground-truth formats, the registry and pickling."""

from __future__ import annotations

import json
import math
import pickle
import random

import pytest

from segzero_model.reasoning.reply_format import answer_region
from segzero_model.rewards.objects import OBJECT_REWARD_FUNCTIONS
from segzero_model.rewards.registry import DEFAULT_REWARDS, REWARD_FUNCTIONS, get_reward_functions
from segzero_model.rewards.single_object import (
    box_iou_reward,
    box_l1_reward,
    points_reward,
    soft_box_iou_reward,
    soft_box_l1_reward,
    soft_format_reward,
    soft_points_reward,
    strict_format_reward,
    thinking_format_reward,
)

# The ground truth of Figure 2.
GT_BOX = (35, 60, 354, 423)
GT_POINTS = ((183, 235), (168, 305))
SOLUTION = "<box>(35,60),(354,423)</box><points>(183,235),(168,305)</points>"
SOLUTION_JSON = '{"bbox": [35, 60, 354, 423], "points_1": [183, 235], "points_2": [168, 305]}'
SOLUTION_DICT = {"bbox": [35, 60, 354, 423], "points_1": [183, 235], "points_2": [168, 305]}
PERFECT = "<think>reasoning</think><answer>" + SOLUTION_JSON + "</answer>"
PROMPT_EXAMPLE = "{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}"

# Seg-Zero's single-object rewards; the list-answer ones are in test_objects.py.
SINGLE_REWARDS = {n: f for n, f in REWARD_FUNCTIONS.items() if n not in OBJECT_REWARD_FUNCTIONS}
ALL_REWARDS = list(SINGLE_REWARDS.values())


def answer(obj: dict | str, thinking: str = "reasoning") -> str:
    """A well-formed completion around `obj` (a dict is written as JSON)."""
    body = obj if isinstance(obj, str) else json.dumps(obj)
    return f"<think>{thinking}</think><answer>{body}</answer>"


def scores(completion: object, solution: object = SOLUTION, **kwargs) -> dict[str, float]:
    """Every registered single-object reward of one completion, by registry name (the
    list-answer rewards have their own tests: test_objects.py)."""
    return {
        name: fn([completion], solution=[solution], **kwargs)[0]
        for name, fn in SINGLE_REWARDS.items()
    }


def with_box(box, points=GT_POINTS) -> str:
    return answer({"bbox": list(box), "points_1": list(points[0]), "points_2": list(points[1])})


# --------------------------------------------------------------------------- Figure 2

# Copied from the paper's Figure 2 (seg-zero.txt, "Sample #1..#3"), line breaks as extracted.
# The "..." inside sample 1's thinking is the figure's own elision (step 2 is not printed).
FIGURE2_SAMPLE_1 = """<think> Thought process:

1. Identify the image elements:
 - Two people wearing Santa hats.
 - One person in a brown coat.

...

3. Confirm the person in the brown coat is wearing a Santa hat.
4. Confirm the person in the brown coat is holding a cell phone.

5. Identify the most closely matched object in the image...</think>

<answer> {

"bbox": [35, 60, 354, 423], "points_1": [183, 235], "points_2": [168, 305]} </answer>"""

FIGURE2_SAMPLE_2 = """<think> The person in the brown coat is the one holding the cell phone \
and wearing a Santa hat.</think>

<answer> {

"bbox": [35, 60, 354, 423], "bbox": [35, 60, 354, 423]} </answer>"""

FIGURE2_SAMPLE_3 = """The people wearing a santa hat is on the right.

<answer> {

"bbox": [25, 70, 300, 410]} </answer>"""


@pytest.mark.parametrize(
    ("completion", "expected"),
    [
        # Sample 1: well-formed, exactly the ground truth. The figure prints the same: 5.
        (FIGURE2_SAMPLE_1, (1, 1, 1, 1, 1)),
        # Sample 2: tags fine (think 1); the object repeats "bbox" and has no points_1/points_2
        # (format 0, points 0); JSON keeps the last duplicate, the same box as the ground truth,
        # so IoU 1 and box L1 1 (L1 = 0 px). The figure prints box L1 = 0 and a total of 2,
        # yet sample 1 carries the identical box with box L1 = 1: the figure is an illustration.
        (FIGURE2_SAMPLE_2, (1, 0, 1, 1, 0)),
        # Sample 3: no <think> and text before <answer> (think 0); no points (format 0, points
        # 0); IoU of (25,70,300,410) with (35,60,354,423) is 266*341 / (276*341 + 320*364 -
        # 266*341) = 90706/119890 = 0.757 > 0.5 (IoU 1); mean |d| = (10+10+54+13)/4 = 21.75 px
        # >= 10 (box L1 0). The figure prints IoU = 0 and a total of 0.
        (FIGURE2_SAMPLE_3, (0, 0, 1, 0, 0)),
    ],
    ids=["sample1", "sample2", "sample3"],
)
def test_figure2_samples_score_as_the_released_definitions_give(completion, expected):
    """The released reward definitions, not the figure's printed numbers, are followed:
    think/format/IoU/box L1/points = 1/1/1/1/1, 1/0/1/1/0 and 0/0/1/0/0. The box rewards read
    the first JSON object's ``bbox`` even when its points are missing."""
    got = tuple(
        fn([completion], solution=[SOLUTION])[0] for fn in get_reward_functions(DEFAULT_REWARDS)
    )
    assert got == expected


def test_figure2_soft_variants_by_hand():
    sols = [SOLUTION] * 3
    samples = [FIGURE2_SAMPLE_1, FIGURE2_SAMPLE_2, FIGURE2_SAMPLE_3]
    assert soft_format_reward(samples) == [1.0, 0.0, 0.0]
    assert soft_box_iou_reward(samples, solution=sols) == pytest.approx([1, 1, 90706 / 119890])
    assert soft_box_l1_reward(samples, solution=sols) == pytest.approx([1, 1, 1 - 21.75 / 840])
    assert soft_points_reward(samples, solution=sols) == [1.0, 0.0, 0.0]


def test_figure2_in_conversational_format_scores_the_same():
    plain = [FIGURE2_SAMPLE_1, FIGURE2_SAMPLE_2, FIGURE2_SAMPLE_3]
    chat = [[{"role": "assistant", "content": text}] for text in plain]
    parts = [[{"role": "assistant", "content": [{"type": "text", "text": t}]}] for t in plain]
    for fn in ALL_REWARDS:
        expected = fn(plain, solution=[SOLUTION] * 3)
        assert fn(chat, solution=[SOLUTION] * 3) == expected
        assert fn(parts, solution=[SOLUTION] * 3) == expected


# --------------------------------------------------------------------------- totals


def test_perfect_completion_totals_5_under_the_default_recipe():
    rewards = get_reward_functions(DEFAULT_REWARDS)
    assert sum(fn([PERFECT], solution=[SOLUTION])[0] for fn in rewards) == 5.0
    assert all(value == 1.0 for value in scores(PERFECT).values())


def test_default_recipe_is_strict_format_and_hard_accuracy():
    assert DEFAULT_REWARDS == ("thinking_format", "strict_format", "box_iou", "box_l1", "points")


def test_batches_score_each_completion_independently():
    batch = [PERFECT, "garbage", None, FIGURE2_SAMPLE_3]
    for fn in ALL_REWARDS:
        got = fn(batch, solution=[SOLUTION] * 4)
        assert len(got) == 4 and all(isinstance(v, float) for v in got)
        assert got[0] == 1.0 and got[1] == got[2] == 0.0


def test_extra_dataset_columns_are_ignored():
    got = box_iou_reward(
        [PERFECT], solution=[SOLUTION], prompts=["p"], completion_ids=[[1]], img_width=[640]
    )
    assert got == [1.0]


# --------------------------------------------------------------------------- thinking format


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("<think>a</think><answer>b</answer>", 1.0),
        ("<think>a\nb</think>\n \n<answer>\n{}\n</answer>", 1.0),
        ("<think></think><answer></answer>", 1.0),
        (" <think>a</think><answer>b</answer>", 0.0),  # white space before
        ("<think>a</think><answer>b</answer>\n", 0.0),  # white space after
        ("<think>a</think>so<answer>b</answer>", 0.0),  # text between
        ("intro <think>a</think><answer>b</answer>", 0.0),
        ("<think>a</think>", 0.0),
        ("<answer>b</answer>", 0.0),
        ("<answer>b</answer><think>a</think>", 0.0),  # wrong order
        ("<think>a</think><answer>b</answer><answer>c</answer>", 0.0),  # two answers
        ("<think>a<think>b</think><answer>c</answer>", 0.0),  # a tag twice
        ("<think>a</think><answer>b", 0.0),  # truncated
        ("<THINK>a</THINK><ANSWER>b</ANSWER>", 0.0),  # exact tags
    ],
)
def test_thinking_format(text, expected):
    assert thinking_format_reward([text]) == [expected]


# --------------------------------------------------------------------------- segmentation format


# (body, strict, soft) as the released rewards read it, then with the "tolerant" decoding.
@pytest.mark.parametrize(
    ("body", "released", "tolerant"),
    [
        (SOLUTION_JSON, (1, 1), (1, 1)),
        # Single quotes, like the prompt's own example: json.loads refuses them.
        (PROMPT_EXAMPLE, (0, 0), (1, 1)),
        ('{"bbox": [1.5, 2, 3, 4], "points_1": [2, 3], "points_2": [2,3], "c": 1}', (1, 1), (1, 1)),
        ('{"points_2": [2, 3], "bbox": [1, 2, 3, 4], "points_1": [2, 3]}', (1, 1), (1, 1)),
        ("```json\n" + SOLUTION_JSON + "\n```", (1, 1), (1, 1)),
        # Key names: strict wants exactly bbox/points_1/points_2; soft wants "bbox"/"point" in them.
        ('{"bbox_2d": [1, 2, 3, 4], "point_1": [2, 3], "point_2": [2, 3]}', (0, 1), (0, 1)),
        ('{"BBox": [1, 2, 3, 4], "Points1": [2, 3], "Points2": [2, 3]}', (0, 1), (0, 1)),
        ('{"bbox": [1, 2, 3, 4], "points_1": [2, 3]}', (0, 0), (0, 0)),  # one point
        # Released: the first two "point" keys are read, a third is not.
        ('{"bbox": [1, 2, 3, 4], "points_1": [2, 3], "points_2": [2, 3], "points_3": [4, 5, 6]}',
         (1, 1), (1, 1)),
        ('{"bbox": [1, 2, 3, 4], "points": [[2, 3], [4, 5]]}', (0, 0), (0, 0)),
        ('{"box": [1, 2, 3, 4], "points_1": [2, 3], "points_2": [2, 3]}', (0, 0), (0, 0)),
        # Values: released, lists of 4 / 2 of anything; tolerant, finite numbers.
        ('{"bbox": [1, 2, 3], "points_1": [2, 3], "points_2": [2, 3]}', (0, 0), (0, 0)),
        ('{"bbox": [1, 2, 3, 4], "points_1": [2, 3, 4], "points_2": [2, 3]}', (0, 0), (0, 0)),
        ('{"bbox": ["1", 2, 3, 4], "points_1": [2, 3], "points_2": [2, 3]}', (1, 1), (0, 0)),
        ('{"bbox": "[1, 2, 3, 4]", "points_1": [2, 3], "points_2": [2, 3]}', (0, 0), (0, 0)),
        ('{"bbox": "1234", "points_1": [2, 3], "points_2": [2, 3]}', (0, 1), (0, 0)),  # len 4
        ('{"bbox": [true, 2, 3, 4], "points_1": [2, 3], "points_2": [2, 3]}', (1, 1), (0, 0)),
        ('{"bbox": [NaN, 2, 3, 4], "points_1": [2, 3], "points_2": [2, 3]}', (1, 1), (0, 0)),
        ('{"bbox": [1e400, 2, 3, 4], "points_1": [2, 3], "points_2": [2, 3]}', (1, 1), (0, 0)),
        # Not JSON: 0 as released; the tolerant decoder accepts it for soft.
        ('{"bbox": [1, 2, 3, 4,], "points_1": [2, 3], "points_2": [2, 3]}', (0, 0), (0, 1)),
        ('{"bbox": [1, 2, 3, 4], "points_1": [2,3], "points_2": [2,3], "k": True}', (0, 0), (0, 1)),
        ('{"bbox": [1, 2, 3, 4], "points_1": [2,3], "points_2": [2,3], "k": None}', (0, 0), (0, 1)),
        # The first object decides, as in the released rewards.
        ('{"bbox": [1, 2, 3, 4]} ' + SOLUTION_JSON, (0, 0), (0, 0)),
        ("no json at all", (0, 0), (0, 0)),
        ("", (0, 0), (0, 0)),
    ],
)  # fmt: skip
def test_segmentation_format_strict_and_soft(body, released, tolerant):
    completion = answer(body)
    for decoding, (strict, soft) in (("released", released), ("tolerant", tolerant)):
        assert strict_format_reward([completion], json_decoding=decoding) == [strict], decoding
        assert soft_format_reward([completion], json_decoding=[decoding]) == [soft], decoding
    assert strict_format_reward([completion]) == [released[0]]  # the default


@pytest.mark.parametrize(
    "body",
    [
        PROMPT_EXAMPLE,  # single quotes
        '{"bbox": [35, 60, 354, 423,], "points_1": [183, 235], "points_2": [168, 305]}',
        '{"bbox": [35, 60, 354, 423], "points_1": [183, 235], "points_2": [168, 305], "a": True}',
    ],
)
def test_near_json_scores_0_on_every_reward_as_released(body):
    """The issue's near-JSON cases: json.loads raises, so the released rewards give 0 on format
    and accuracy; the tolerant switch reads them."""
    completion = answer(body.replace("10,100,200,210", "35,60,354,423"))
    released = scores(completion)
    assert released["thinking_format"] == 1.0
    assert all(v == 0.0 for name, v in released.items() if name != "thinking_format")
    tolerant = scores(completion, json_decoding="tolerant")
    assert tolerant["soft_format"] == tolerant["box_iou"] == 1.0


def test_released_points_are_truncated_as_int_does():
    """The released point reward reads ``int(x)``: 0.9 px past the box edge is inside."""
    body = {"bbox": [35, 60, 354, 423], "points_1": [354.9, 235], "points_2": [168, 305]}
    assert scores(answer(body))["points"] == 1.0
    assert scores(answer(body), json_decoding="tolerant")["points"] == 0.0


def test_format_rewards_ignore_the_thinking_format():
    # Format is judged on the answer's object alone; thinking_format judges the tags.
    assert strict_format_reward([f"Sure! <answer>{SOLUTION_JSON}</answer> bye"]) == [1.0]
    assert strict_format_reward([SOLUTION_JSON]) == [1.0]  # no tags: whole completion read


# --------------------------------------------------------------------------- which JSON is read


def test_released_reads_the_first_object_anywhere_tolerant_the_answer():
    """As released, the first ``{...}`` of the whole reply is read, even in the thinking: quoting
    the prompt's single-quoted example there costs every reward but the thinking format."""
    text = f"<think>The prompt shows {PROMPT_EXAMPLE}.</think><answer>{SOLUTION_JSON}</answer>"
    assert answer_region(text) == SOLUTION_JSON
    got = scores(text)
    assert got["thinking_format"] == 1.0
    assert all(value == 0.0 for name, value in got.items() if name != "thinking_format")
    assert all(value == 1.0 for value in scores(text, json_decoding="tolerant").values())


def test_without_answer_tags_the_whole_completion_is_read():
    text = f"<think>I think it is {SOLUTION_JSON}</think>"
    got = scores(text)
    assert got["thinking_format"] == 0.0
    assert got["strict_format"] == got["box_iou"] == got["points"] == 1.0


def test_an_empty_answer_falls_back_to_the_thinking_only_as_released():
    text = f"<think>{SOLUTION_JSON}</think><answer></answer>"
    assert answer_region(text) == ""
    assert all(value == 1.0 for value in scores(text).values())
    got = scores(text, json_decoding="tolerant")
    assert got["thinking_format"] == 1.0
    assert all(value == 0.0 for name, value in got.items() if name != "thinking_format")


def test_a_truncated_answer_is_still_read():
    text = f"<think>a</think><answer>{SOLUTION_JSON}"
    assert scores(text)["box_iou"] == 1.0 and scores(text)["thinking_format"] == 0.0


# --------------------------------------------------------------------------- box IoU


@pytest.mark.parametrize(
    ("pred", "gt", "iou"),
    [
        ((0, 0, 9, 9), (0, 0, 9, 9), 1.0),
        ((0, 0, 9, 9), (5, 0, 14, 9), 50 / 150),  # inclusive: 10x10 boxes overlapping 5x10
        ((0, 0, 9, 9), (0, 0, 9, 19), 100 / 200),  # exactly 0.5: hard reward needs > 0.5
        ((0, 0, 9, 9), (0, 0, 9, 18), 100 / 190),
        ((0, 0, 9, 9), (9, 9, 20, 20), 1 / (100 + 144 - 1)),  # sharing one pixel
        ((0, 0, 9, 9), (10, 10, 20, 20), 0.0),
        ((9, 9, 0, 0), (0, 0, 9, 9), 1.0),  # corner order does not matter
    ],
)
def test_box_iou_hard_and_soft(pred, gt, iou):
    completion = with_box(pred)
    solution = {"bbox": list(gt), "points_1": [0, 0], "points_2": [0, 0]}
    assert soft_box_iou_reward([completion], solution=[solution]) == [pytest.approx(iou)]
    assert box_iou_reward([completion], solution=[solution]) == [1.0 if iou > 0.5 else 0.0]


def test_box_rewards_need_only_the_bbox():
    completion = answer({"bbox": list(GT_BOX)})
    got = scores(completion)
    assert got["box_iou"] == got["soft_box_iou"] == got["box_l1"] == got["soft_box_l1"] == 1.0
    assert got["points"] == got["soft_points"] == got["strict_format"] == 0.0


# --------------------------------------------------------------------------- box L1


@pytest.mark.parametrize(
    ("shift", "mean_l1"),
    [
        ((9, 9, 9, 9), 9.0),
        ((-9, 9, -9, 9), 9.0),
        ((0, 0, 0, 39), 9.75),
        ((10, 10, 10, 10), 10.0),  # hard reward needs < 10 px
        ((0, 0, 0, 40), 10.0),
        ((21, -21, 21, -21), 21.0),
    ],
)
def test_box_l1_hard_and_soft(shift, mean_l1):
    completion = with_box([g + s for g, s in zip(GT_BOX, shift, strict=True)])
    assert box_l1_reward([completion], solution=[SOLUTION]) == [1.0 if mean_l1 < 10 else 0.0]
    soft = soft_box_l1_reward([completion], solution=[SOLUTION])
    assert soft == [pytest.approx(1 - mean_l1 / 840)]


def test_soft_box_l1_image_size_and_clamp():
    completion = with_box((56, 39, 375, 402))  # mean |d| = 21 px
    sol = [SOLUTION]
    assert soft_box_l1_reward([completion], solution=sol, image_size=[420]) == [pytest.approx(0.95)]
    assert soft_box_l1_reward([completion], solution=sol, image_size=[(420, 300)]) == [
        pytest.approx(0.95)
    ]
    assert soft_box_l1_reward([completion], solution=sol, image_size=420) == [pytest.approx(0.95)]
    assert soft_box_l1_reward([completion], solution=sol, image_size=[20]) == [0.0]  # clamped
    far = with_box((800, 800, 839, 839))
    assert soft_box_l1_reward([far], solution=sol) == [pytest.approx(1 - 601.5 / 840)]


def test_soft_rewards_take_one_image_size_per_completion():
    completions = [with_box((56, 39, 375, 402)), "garbage", with_box((56, 39, 375, 402))]
    got = soft_box_l1_reward(completions, solution=[SOLUTION] * 3, image_size=[420, 840, 210])
    assert got == [pytest.approx(0.95), 0.0, pytest.approx(0.9)]


@pytest.mark.parametrize("bad", [0, -840, float("nan"), "840", [840, 840], [(1, 2, 3)], [True]])
def test_invalid_image_size_raises(bad):
    with pytest.raises(ValueError, match="image_size"):
        soft_box_l1_reward([PERFECT], solution=[SOLUTION], image_size=bad)
    with pytest.raises(ValueError, match="image_size"):
        soft_points_reward([PERFECT], solution=[SOLUTION], image_size=bad)


# --------------------------------------------------------------------------- points


def points_answer(p1, p2, box=GT_BOX) -> str:
    return answer({"bbox": list(box), "points_1": list(p1), "points_2": list(p2)})


def test_points_pairing_order_does_not_matter():
    swapped = points_answer(GT_POINTS[1], GT_POINTS[0])
    assert points_reward([swapped], solution=[SOLUTION]) == [1.0]
    assert soft_points_reward([swapped], solution=[SOLUTION]) == [1.0]


def test_points_use_the_better_pairing_by_hand():
    # Straight pairing: |(168,305)-(183,235)| = 71.59 twice -> 71.59; crossed pairing: the
    # points are 30-40-50 triangles away -> (50 + 0) / 2 = 25.
    completion = points_answer((168 + 30, 305 + 40), (183, 235))
    assert points_reward([completion], solution=[SOLUTION]) == [1.0]
    assert soft_points_reward([completion], solution=[SOLUTION]) == [pytest.approx(1 - 25 / 840)]
    assert soft_points_reward([completion], solution=[SOLUTION], image_size=[100]) == [
        pytest.approx(0.75)
    ]


@pytest.mark.parametrize(
    ("offset", "expected"),
    [((60, 80), 1.0), ((0, 199), 1.0), ((0, 200), 0.0), ((120, 160), 0.0)],
)
def test_points_distance_threshold(offset, expected):
    # Only points_1 moves, so the mean distance is |offset| / 2: 50, 99.5, 100, 100.
    p1 = (GT_POINTS[0][0] + offset[0], GT_POINTS[0][1] + offset[1])
    completion = points_answer(p1, GT_POINTS[1], box=(0, 0, 839, 839))
    assert points_reward([completion], solution=[SOLUTION]) == [expected]
    distance = math.hypot(*offset) / 2
    assert soft_points_reward([completion], solution=[SOLUTION]) == [
        pytest.approx(1 - distance / 840)
    ]


def test_points_outside_the_predicted_box_score_0():
    # The ground-truth points, but the predicted box stops short of points_2's row.
    completion = points_answer(GT_POINTS[0], GT_POINTS[1], box=(35, 60, 354, 300))
    assert points_reward([completion], solution=[SOLUTION]) == [0.0]
    assert soft_points_reward([completion], solution=[SOLUTION]) == [0.0]
    # Box edges are inside (inclusive pixel box).
    edge = points_answer(GT_POINTS[0], GT_POINTS[1], box=(168, 235, 183, 305))
    assert points_reward([edge], solution=[SOLUTION]) == [1.0]


def test_points_need_a_bbox():
    completion = answer({"points_1": list(GT_POINTS[0]), "points_2": list(GT_POINTS[1])})
    assert points_reward([completion], solution=[SOLUTION]) == [0.0]
    assert soft_points_reward([completion], solution=[SOLUTION]) == [0.0]


# --------------------------------------------------------------------------- garbage

GARBAGE = [
    None,
    42,
    3.5,
    b"bytes",
    "",
    "   ",
    "garbage",
    "{",
    "}{",
    "{{{{{{",
    "<answer>",
    "<answer></answer>",
    "<think><answer>{'bbox'",
    '{"bbox": null, "points_1": null, "points_2": null}',
    '{"bbox": {"x1": 1}, "points_1": [1, 2], "points_2": [1, 2]}',
    '{"bbox": [[1, 2], [3, 4]], "points_1": [[1, 2]], "points_2": [1, 2]}',
    '{"bbox": [-5000, -5000, -4000, -4000], "points_1": ["a", "b"], "points_2": [1, 2]}',
    '{"bbox": [Infinity, 2, 3, 4], "points_1": [1, 2], "points_2": [1, 2]}',
    '{"bbox": [-Infinity, 2, 3, 4], "points_1": [-1e308, 1e308], "points_2": [1, 2]}',
    '{"bbox": [1e308, -1e308, -1e308, 1e308], "points_1": [1e308, 1e308], "points_2": [0, 0]}',
    '{"bbox": [' + "9" * 400 + ', 2, 3, 4], "points_1": [1, 2], "points_2": [1, 2]}',
    '{"bbox": [' + "9" * 5000 + ', 2, 3, 4], "points_1": [1, 2], "points_2": [1, 2]}',
    "[" * 20000 + "]" * 20000,
    "<think>" + "</think><answer>" * 20000,  # quadratic for a naive tag regex
    "{" * 5000 + '"bbox": [1, 2, 3]' + "}" * 5000,
    '{"a": ' * 3000 + "1" + "}" * 3000,
    "\x00\udcff<answer>{'bbox': [1, 2, 3]}\x00",
    [{"role": "assistant", "content": None}],
    [{"role": "assistant"}],
    [{"role": "assistant", "content": [{"type": "image"}, {"type": "text", "text": None}]}],
    [None, 5, ["nested"]],
    [],
    {"content": 7},
    {"bbox": [35, 60, 354, 423]},  # a dict is a message, not an answer
]


def test_garbage_scores_0_everywhere_without_raising():
    n = len(GARBAGE)
    # A huge-but-finite box (1e308) is well-formed JSON, so only it may score (format rewards).
    huge = {i for i, g in enumerate(GARBAGE) if "1e308" in str(g)}
    # The box-only and points-only variants rightly accept garbage whose other half is broken
    # (e.g. a good box beside string points), so they only must score 0 without their keys.
    variants = {"strict_box_format", "soft_box_format", "strict_points_format"}
    variants |= {"soft_points_format", "points_only", "soft_points_only"}
    for name, fn in SINGLE_REWARDS.items():
        released = fn(GARBAGE, solution=[SOLUTION] * n)
        assert len(released) == n and all(0.0 <= v <= 1.0 for v in released), name
        # Released formats accept lists of anything (["a", "b"]) and json.loads accepts
        # Infinity, so a points-only answer beside an infinite box scores on its points.
        if "format" not in name and name not in variants:
            assert [v for i, v in enumerate(released) if i not in huge] == [0.0] * (
                n - len(huge)
            ), name
        got = fn(GARBAGE, solution=[SOLUTION] * n, json_decoding="tolerant")
        assert len(got) == n and all(isinstance(v, float) for v in got), name
        assert all(0.0 <= v <= 1.0 for v in got), (name, got)
        if name in variants:
            key = "bbox" if "box" in name else "point"
            assert all(v == 0.0 for v, g in zip(got, GARBAGE, strict=True) if key not in str(g)), (
                name
            )
        else:
            assert [v for i, v in enumerate(got) if i not in huge] == [0.0] * (n - len(huge)), name


def test_random_fragments_never_raise():
    fragments = [
        "<think>", "</think>", "<answer>", "</answer>", "{", "}", "[", "]", '"bbox"', "'bbox'",
        '"points_1"', '"points_2"', ":", ",", "1", "-2.5", "1e999", "NaN", "true", "null",
        '"', "'", "\\", " ", "\n", "840", "[35, 60, 354, 423]", "[183, 235]", "```",
    ]  # fmt: skip
    rng = random.Random(0)
    completions = ["".join(rng.choices(fragments, k=rng.randint(0, 40))) for _ in range(500)]
    for fn in ALL_REWARDS:
        got = fn(completions, solution=[SOLUTION] * len(completions))
        assert all(0.0 <= v <= 1.0 for v in got)


# --------------------------------------------------------------------------- completion formats


def test_conversational_completions_score_like_strings():
    chat = [{"role": "assistant", "content": PERFECT}]
    split = [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": PERFECT[:20]},
                {"type": "text", "text": PERFECT[20:]},
            ],
        }
    ]
    assert scores(chat) == scores(split) == scores(PERFECT)


# --------------------------------------------------------------------------- ground truth
# `segzero_model.targets.parse_solution` reads the ground truth (tests/model/test_targets.py checks
# each format and each malformed case); here: the rewards read every format alike and raise on
# a malformed one.


@pytest.mark.parametrize(
    "solution",
    [
        SOLUTION,
        " <box>( 35 , 60 ),(354,423)</box>\n<points>(183,235), (168,305)</points> ",
        SOLUTION_JSON,
        SOLUTION_DICT,
        {**SOLUTION_DICT, "extra": "ignored"},
    ],
)
def test_every_solution_format_scores_the_same(solution):
    assert scores(PERFECT, solution=solution) == scores(PERFECT)


def test_solution_formats_give_the_same_rewards():
    samples = [FIGURE2_SAMPLE_1, FIGURE2_SAMPLE_2, FIGURE2_SAMPLE_3, with_box((40, 65, 350, 420))]
    for fn in ALL_REWARDS:
        expected = fn(samples, solution=[SOLUTION] * 4)
        assert fn(samples, solution=[SOLUTION_JSON] * 4) == expected
        assert fn(samples, solution=[SOLUTION_DICT] * 4) == expected


@pytest.mark.parametrize(
    "solution",
    [
        "<box>(35,60),(354,423)</box>",
        '{"bbox": [35, 60, 354, 423], "points_1": [183, 235]}',
        '{"bbox": [354, 60, 35, 423], "points_1": [1, 2], "points_2": [1, 2]}',
        None,
    ],
)
def test_a_malformed_solution_makes_the_rewards_raise(solution):
    # A malformed ground truth is a data bug, so the rewards that read it raise.
    for fn in (box_iou_reward, points_reward, soft_box_l1_reward):
        with pytest.raises(ValueError, match="malformed ground truth"):
            fn([PERFECT], solution=[solution])


def test_solution_column_errors():
    with pytest.raises(ValueError, match="needs the dataset column 'solution'"):
        box_iou_reward([PERFECT])
    with pytest.raises(ValueError, match="got 1 solutions for 2 completions"):
        points_reward([PERFECT, PERFECT], solution=[SOLUTION])
    with pytest.raises(ValueError, match="one ground truth per completion"):
        box_l1_reward([PERFECT], solution=SOLUTION)
    # Format rewards need no ground truth.
    assert strict_format_reward([PERFECT]) == thinking_format_reward([PERFECT]) == [1.0]


# --------------------------------------------------------------------------- registry


def test_registry_names_and_functions():
    assert list(REWARD_FUNCTIONS) == [
        "thinking_format",
        "strict_format",
        "soft_format",
        "box_iou",
        "soft_box_iou",
        "box_l1",
        "soft_box_l1",
        "points",
        "soft_points",
        "strict_box_format",
        "soft_box_format",
        "strict_points_format",
        "soft_points_format",
        "points_only",
        "soft_points_only",
        "objects_format",
        "objects_box_iou",
        "objects_box_l1",
        "objects_points",
        "non_repeat",
    ]
    for name, fn in REWARD_FUNCTIONS.items():
        assert fn.__name__ == f"{name}_reward"  # the metric name TRL logs
    assert len({fn.__name__ for fn in ALL_REWARDS}) == len(ALL_REWARDS)


def test_get_reward_functions():
    assert get_reward_functions(["points", "box_iou"]) == [points_reward, box_iou_reward]
    assert get_reward_functions("soft_format") == [soft_format_reward]
    assert get_reward_functions([]) == []
    assert [f.__name__ for f in get_reward_functions(DEFAULT_REWARDS)] == [
        "thinking_format_reward",
        "strict_format_reward",
        "box_iou_reward",
        "box_l1_reward",
        "points_reward",
    ]


def test_unknown_reward_name_lists_the_valid_names():
    with pytest.raises(ValueError, match="unknown reward name") as caught:
        get_reward_functions(["box_iou", "accuracy"])
    message = str(caught.value)
    assert "'accuracy'" in message
    assert all(name in message for name in REWARD_FUNCTIONS)


def test_repeated_reward_name_is_rejected():
    with pytest.raises(ValueError, match="more than once"):
        get_reward_functions(["box_iou", "box_iou"])


@pytest.mark.parametrize("name", list(SINGLE_REWARDS))
def test_every_reward_pickles(name):
    fn = REWARD_FUNCTIONS[name]
    restored = pickle.loads(pickle.dumps(fn))
    assert restored is fn
    assert restored([PERFECT], solution=[SOLUTION]) == [1.0]


# --------------------------------------------------------------------------- ablation variants

BOX_ONLY = '<think>t</think><answer>{"bbox": [35,60,354,423]}</answer>'
POINTS_ONLY = '<think>t</think><answer>{"points_1": [183,235], "points_2": [168,305]}</answer>'
POINTS_FAR_OUTSIDE_ANY_BOX = (
    '<answer>{"points_1": [183,235], "points_2": [168,305], "bbox": [0,0,5,5]}</answer>'
)
FIGURE2_GT = "<box>(35,60),(354,423)</box><points>(183,235),(168,305)</points>"


def test_recipe_defaults_are_the_papers_final_recipe():
    from segzero_model.rewards.registry import DEFAULT_REWARDS, recipe_rewards

    assert recipe_rewards() == DEFAULT_REWARDS


def test_recipe_switches():
    from segzero_model.rewards.registry import REWARD_FUNCTIONS, recipe_rewards

    assert recipe_rewards(thinking=False) == ("strict_format", "box_iou", "box_l1", "points")
    assert recipe_rewards(format="soft", accuracy="soft") == (
        "thinking_format",
        "soft_format",
        "soft_box_iou",
        "soft_box_l1",
        "soft_points",
    )
    assert recipe_rewards(answer="box") == (
        "thinking_format",
        "strict_box_format",
        "box_iou",
        "box_l1",
    )
    assert recipe_rewards(answer="points", format="soft", accuracy="soft") == (
        "thinking_format",
        "soft_points_format",
        "soft_points_only",
    )
    for thinking in (True, False):
        for fmt in ("strict", "soft"):
            for accuracy in ("hard", "soft"):
                for answer in ("box_points", "box", "points"):
                    names = recipe_rewards(
                        thinking=thinking, format=fmt, accuracy=accuracy, answer=answer
                    )
                    assert set(names) <= set(REWARD_FUNCTIONS), names


def test_recipe_rejects_unknown_switch_values_by_name():
    import pytest

    from segzero_model.rewards.registry import recipe_rewards

    with pytest.raises(ValueError, match="format 'loose'.*strict, soft"):
        recipe_rewards(format="loose")
    with pytest.raises(ValueError, match="accuracy 'medium'"):
        recipe_rewards(accuracy="medium")
    with pytest.raises(ValueError, match="answer 'mask'"):
        recipe_rewards(answer="mask")


def test_box_only_and_points_only_formats():
    from segzero_model.rewards.single_object import (
        soft_box_format_reward,
        soft_points_format_reward,
        strict_box_format_reward,
        strict_format_reward,
        strict_points_format_reward,
    )

    completions = [BOX_ONLY, POINTS_ONLY, '<answer>{"bbox": [1,2,3]}</answer>', "garbage"]
    assert strict_box_format_reward(completions) == [1.0, 0.0, 0.0, 0.0]
    assert strict_points_format_reward(completions) == [0.0, 1.0, 0.0, 0.0]
    assert soft_box_format_reward(completions) == [1.0, 0.0, 0.0, 0.0]
    assert soft_points_format_reward(completions) == [0.0, 1.0, 0.0, 0.0]
    # The full answer needs both, so neither partial answer passes it.
    assert strict_format_reward(completions) == [0.0, 0.0, 0.0, 0.0]
    assert soft_points_format_reward(['<answer>{"Point_a": [1,2], "pointB": [3,4]}</answer>']) == [
        1.0
    ]


def test_points_only_rewards_need_no_box():
    from segzero_model.rewards.single_object import (
        points_only_reward,
        points_reward,
        soft_points_only_reward,
    )

    completions = [POINTS_ONLY, POINTS_FAR_OUTSIDE_ANY_BOX, BOX_ONLY]
    truth = [FIGURE2_GT] * 3
    assert points_only_reward(completions, solution=truth) == [1.0, 1.0, 0.0]
    # The full recipe's point reward wants the points inside the predicted box.
    assert points_reward(completions, solution=truth) == [0.0, 0.0, 0.0]
    soft = soft_points_only_reward(
        [POINTS_ONLY, '<answer>{"points_1": [183,235], "points_2": [168,389]}</answer>'],
        solution=truth[:2],
    )
    assert soft[0] == 1.0 and abs(soft[1] - (1 - 42 / 840)) < 1e-9  # mean of 0 and 84 px
