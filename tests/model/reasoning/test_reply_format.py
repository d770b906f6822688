"""The reply format (segzero_model/reasoning/reply_format.py): JSON discovery, the answer region,
TRL's completion formats, the thinking and strict formats, and the one list of answer variants that
the prompts, the rewards, the strict parser and the SFT targets all follow."""

from __future__ import annotations

import json
import math

import pytest

from segzero_model.reasoning import prompts as prompt
from segzero_model.reasoning import reply_format as reply
from segzero_model.reasoning.reply_format import (
    STRICT_KEYS,
    VARIANTS,
    answer_region,
    completion_text,
    extract_json_objects,
    finite_numbers,
    first_json_object,
    is_strict_format,
    is_thinking_format,
    strict_first_object,
)

PROMPT_EXAMPLE = "{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}"
SOLUTION = "<box>(35,60),(354,423)</box><points>(183,235),(168,305)</points>"


# --------------------------------------------------------------------------- JSON discovery


def test_extract_json_objects_in_order():
    text = 'a {\'x\': 1} b [{"y": 2}, {"z": {"w": 3}}] {bad} {"n": None,} {'
    assert extract_json_objects(text) == [{"x": 1}, {"y": 2}, {"z": {"w": 3}}, {"n": None}]
    assert extract_json_objects("no objects here") == []


def test_first_json_object():
    assert first_json_object("prefix " + PROMPT_EXAMPLE + " {'bbox': [0, 0, 1, 1]}") == {
        "bbox": [10, 100, 200, 210],
        "points_1": [30, 110],
        "points_2": [35, 180],
    }
    assert first_json_object("{not json} and nothing else") is None


def test_double_quote_inside_single_quoted_string():
    answer = "{'label': 'the \"red\" cup', 'bbox': [1, 2, 3, 4]}"
    assert first_json_object(answer) == {"label": 'the "red" cup', "bbox": [1, 2, 3, 4]}


def test_an_object_inside_a_span_that_does_not_decode_is_found():
    assert first_json_object("{oops {'bbox': [1, 2, 3, 4]} more}") == {"bbox": [1, 2, 3, 4]}


def test_apostrophes_in_prose_around_objects_do_not_count_as_quotes():
    assert first_json_object("it's here: {'a': 1}, isn't it") == {"a": 1}
    assert extract_json_objects("it's {'a': 1} and {'b': 2}'s") == [{"a": 1}, {"b": 2}]


@pytest.mark.parametrize("reader", [first_json_object, extract_json_objects])
def test_json_readers_want_text(reader):
    with pytest.raises(TypeError, match="expected str, got NoneType"):
        reader(None)


def test_strict_first_object_reads_real_json_only():
    assert strict_first_object('x {"a": [1, 2]} {"b": 3}') == {"a": [1, 2]}
    assert strict_first_object("{'a': 1}") == {"a": 1}  # single quotes, as the prompt shows
    assert strict_first_object('{"a": 1,}') is None  # trailing comma
    assert strict_first_object('{"a": NaN}') is None
    assert strict_first_object('{"a": True}') is None
    assert strict_first_object("no object") is None


# --------------------------------------------------------------------------- values


def test_finite_numbers():
    assert finite_numbers([1, 2.5], 2) == (1.0, 2.5)
    assert finite_numbers((1, 2, 3, 4), 4) == (1.0, 2.0, 3.0, 4.0)
    for bad in ([1, 2, 3], [1, "2"], [True, 2], [1, math.nan], [1, math.inf], [10**400, 1], None):
        assert finite_numbers(bad, 2) is None, bad


# --------------------------------------------------------------------------- regions and texts


def test_answer_region():
    assert answer_region("<think>{'a': 1}</think><answer>{'b': 2}</answer>") == "{'b': 2}"
    assert answer_region("<think>a</think><ANSWER>x") == "x"  # truncated, any case
    assert answer_region("<think>{'a': 1}</think>") == "<think>{'a': 1}</think>"  # no answer tag
    assert answer_region("<think>a</think><answer></answer>") == ""  # empty stays empty
    # An <answer> inside the thinking is not the answer.
    assert answer_region("<think><answer>no</answer></think><answer>yes</answer>") == "yes"


def test_completion_text_in_trl_formats():
    assert completion_text("plain") == "plain"
    assert completion_text([{"role": "assistant", "content": "chat"}]) == "chat"
    parts = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]
    assert completion_text([{"role": "assistant", "content": parts}]) == "ab"
    assert completion_text({"role": "assistant", "content": "one message"}) == "one message"
    assert completion_text([{"role": "assistant", "content": None}]) == ""
    assert completion_text(None) == ""


# --------------------------------------------------------------------------- formats


def test_thinking_format():
    assert is_thinking_format("<think>a</think>\n<answer>b</answer>")
    assert not is_thinking_format(" <think>a</think><answer>b</answer>")
    assert not is_thinking_format("<think>a</think><answer>b</answer><answer>c</answer>")
    assert not is_thinking_format("<THINK>a</THINK><ANSWER>b</ANSWER>")


def test_strict_format_per_variant():
    full = '{"bbox": [1, 2, 3, 4], "points_1": [1, 2], "points_2": [3, 4]}'
    box_only = '{"bbox": [1, 2, 3, 4]}'
    assert is_strict_format(f"<answer>{full}</answer>")
    assert all(is_strict_format(f"<answer>{full}</answer>", v) for v in VARIANTS)
    assert is_strict_format(f"<answer>{box_only}</answer>", "box")
    assert not is_strict_format(f"<answer>{box_only}</answer>", "box_points")
    assert not is_strict_format(f"<answer>{box_only}</answer>", "points")
    assert not is_strict_format('<answer>{"bbox": [1, 2, 3, 4],}</answer>', "box")


def test_unknown_variants_are_named():
    with pytest.raises(ValueError, match="unknown answer variant 'mask'.*box_points"):
        reply.check_variant("mask")
    with pytest.raises(ValueError, match="unknown answer variant"):
        reply.variant_has("mask", "bbox")


# --------------------------------------------------------------------------- one list of variants


def _example_reply(variant: str) -> str:
    """A reply that answers as the `variant` prompt's own example does, in real JSON (the
    example's single quotes are not JSON: the released rewards score them 0)."""
    example = prompt.example_answer(variant).replace("'", '"')
    return f"<think>t</think><answer>{example}</answer>"


def test_the_default_variant_is_the_released_answer():
    assert reply.DEFAULT_VARIANT == VARIANTS[0] == "box_points"
    assert prompt.example_answer() == prompt.ANSWER_EXAMPLE == PROMPT_EXAMPLE


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_has_a_prompt_showing_its_keys(variant):
    assert set(prompt.ANSWER_VARIANTS) == set(VARIANTS)
    example = json.loads(prompt.example_answer(variant).replace("'", '"'))
    assert [(key, len(value)) for key, value in example.items()] == list(STRICT_KEYS[variant])
    for thinking in (True, False):
        text = prompt.build_prompt("the cup", thinking=thinking, answer=variant)
        assert text.endswith(f"<answer>{prompt.example_answer(variant)}</answer>")


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_has_a_strict_format_rule(variant):
    assert is_strict_format(_example_reply(variant), variant)
    as_shown = f"<think>t</think><answer>{prompt.example_answer(variant)}</answer>"
    assert not is_strict_format(as_shown, variant)  # single quotes: json.loads refuses
    assert is_strict_format(as_shown, variant, decoding="tolerant")
    for key, _ in STRICT_KEYS[variant]:  # each key is required
        obj = json.loads(prompt.example_answer(variant).replace("'", '"'))
        del obj[key]
        assert not is_strict_format(f"<answer>{json.dumps(obj)}</answer>", variant)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_has_reward_functions(variant):
    from segzero_model.rewards.registry import REWARD_FUNCTIONS, format_reward_name, recipe_rewards

    example = _example_reply(variant)
    for fmt in ("strict", "soft"):
        reward = REWARD_FUNCTIONS[format_reward_name(fmt, variant)]
        assert reward([example]) == [1.0]
        for other in VARIANTS:  # a variant with more keys rejects this one's answer
            if set(STRICT_KEYS[other]) - set(STRICT_KEYS[variant]):
                assert REWARD_FUNCTIONS[format_reward_name(fmt, other)]([example]) == [0.0]
        for accuracy in ("hard", "soft"):
            names = recipe_rewards(format=fmt, accuracy=accuracy, answer=variant)
            assert set(names) <= set(REWARD_FUNCTIONS)
            # Each accuracy reward of the recipe can score the variant's own answer.
            truth = {"bbox": [10, 100, 200, 210], "points_1": [30, 110], "points_2": [35, 180]}
            for name in names:
                got = REWARD_FUNCTIONS[name]([example], solution=[truth])
                assert got == [1.0], (name, got)
    keys = {key for key, _ in STRICT_KEYS[variant]}
    accuracy = set(recipe_rewards(answer=variant)) - {
        "thinking_format",
        format_reward_name("strict", variant),
    }
    assert bool(accuracy & {"box_iou", "box_l1"}) == ("bbox" in keys)
    assert bool(accuracy & {"points", "points_only"}) == ("points_1" in keys)


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variants_sft_target_is_in_its_strict_format(variant):
    from training.conversation import answer_json

    text = f"<think>t</think><answer>{answer_json(SOLUTION, variant)}</answer>"
    assert is_strict_format(text, variant)
    assert list(json.loads(answer_json(SOLUTION, variant))) == [
        key for key, _ in STRICT_KEYS[variant]
    ]
