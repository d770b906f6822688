"""Answer parsing: real model output is messy, so each messy form and each strict-mode rejection
is pinned to exact values or an exact message."""

from __future__ import annotations

import dataclasses
import random
import re

import pytest

from segzero_model.reasoning import reply_format as reply
from segzero_model.reasoning.answer_parser import Answer, AnswerFormatError, parse_answer

GOOD = (
    "<think>The cup on the left is red ...</think>"
    '<answer>{"bbox": [35, 60, 354, 423], "points_1": [183, 235], "points_2": [168, 305]}</answer>'
)
GOOD_BOX = (35, 60, 354, 423)
GOOD_POINTS = ((183, 235), (168, 305))
PROMPT_EXAMPLE = "{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}"


def wrap(answer: str, thinking: str = "reasoning") -> str:
    return f"<think>{thinking}</think><answer>{answer}</answer>"


# --------------------------------------------------------------------------- well-formed


@pytest.mark.parametrize("strict", [False, True])
def test_well_formed_output_in_both_modes(strict):
    result = parse_answer(GOOD, strict=strict)
    assert result == Answer(
        bbox=GOOD_BOX, points=GOOD_POINTS, thinking="The cup on the left is red ..."
    )


def test_answer_is_frozen_and_error_is_value_error():
    result = parse_answer(GOOD)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.bbox = None  # type: ignore[misc]
    assert issubclass(AnswerFormatError, ValueError)
    with pytest.raises(ValueError):
        parse_answer("no answer here")


def test_prompt_example_with_single_quotes_parses_leniently_not_strictly():
    """Single quotes are not JSON: the released rewards (json.loads) score the prompt's own
    example 0, and the strict parser follows them; the lenient parser reads it."""
    result = parse_answer(wrap(PROMPT_EXAMPLE))
    assert result.bbox == (10, 100, 200, 210)
    assert result.points == ((30, 110), (35, 180))
    with pytest.raises(AnswerFormatError, match="strict: the reply's first {...} is not JSON"):
        parse_answer(wrap(PROMPT_EXAMPLE), strict=True)
    strict = parse_answer(wrap(PROMPT_EXAMPLE.replace("'", '"')), strict=True)
    assert strict.bbox == result.bbox and strict.points == result.points


def test_thinking_is_stripped_and_missing_think_gives_none():
    assert parse_answer(wrap(PROMPT_EXAMPLE, thinking="\n  look left \n")).thinking == "look left"
    assert parse_answer(f"<answer>{PROMPT_EXAMPLE}</answer>").thinking is None


# --------------------------------------------------------------------------- locating the answer


def test_echoed_prompt_example_inside_think_is_ignored():
    text = (
        "<think>The format is <answer>"
        + PROMPT_EXAMPLE
        + "</answer>, e.g. "
        + PROMPT_EXAMPLE
        + " but the real cup is on the right.</think>"
        "<answer>{'bbox': [400, 410, 600, 700], 'points_1': [500, 500], "
        "'points_2': [510, 650]}</answer>"
    )
    result = parse_answer(text)
    assert result.bbox == (400, 410, 600, 700)
    assert result.points == ((500, 500), (510, 650))


def test_json_only_inside_think_is_not_taken():
    text = "<think>Example: " + PROMPT_EXAMPLE + "</think> I am not sure."
    with pytest.raises(AnswerFormatError, match=r"no JSON object in the output \(outside <think>"):
        parse_answer(text)


def test_no_answer_tags_searches_text_outside_think():
    text = "<think>" + PROMPT_EXAMPLE + "</think>Final: {'bbox': [1, 2, 3, 4]} done"
    assert parse_answer(text) == Answer(bbox=(1, 2, 3, 4), points=None, thinking=PROMPT_EXAMPLE)


def test_unclosed_answer_tag_takes_rest_of_text():
    text = "<think>t</think><answer>" + PROMPT_EXAMPLE + " and then the generation stopped"
    assert parse_answer(text).bbox == (10, 100, 200, 210)


def test_first_answer_block_wins():
    text = wrap("{'bbox': [1, 2, 3, 4]}") + "<answer>{'bbox': [5, 6, 7, 8]}</answer>"
    assert parse_answer(text).bbox == (1, 2, 3, 4)


def test_text_before_and_after_json_in_answer():
    text = wrap("Sure! The object is: " + PROMPT_EXAMPLE + " Hope this helps.")
    assert parse_answer(text).bbox == (10, 100, 200, 210)


def test_closing_think_without_opening_tag():
    text = "mid-thought reasoning</think><answer>{'bbox': [1, 2, 3, 4]}</answer>"
    assert parse_answer(text) == Answer(
        bbox=(1, 2, 3, 4), points=None, thinking="mid-thought reasoning"
    )


def test_unclosed_think_before_answer_ends_at_answer():
    text = "<think>still thinking <answer>{'bbox': [1, 2, 3, 4]}</answer>"
    result = parse_answer(text)
    assert result.thinking == "still thinking"
    assert result.bbox == (1, 2, 3, 4)


def test_uppercase_tags_are_accepted_leniently():
    text = "<THINK>x</THINK><Answer>{'bbox': [1, 2, 3, 4]}</Answer>"
    assert parse_answer(text) == Answer(bbox=(1, 2, 3, 4), points=None, thinking="x")


# --------------------------------------------------------------------------- messy JSON


def test_markdown_code_fence_trailing_commas_and_python_literals():
    answer = (
        "```json\n{'bbox': [1, 2, 3, 4,], 'points_1': [5, 6], 'points_2': [7, 8], "
        "'visible': True, 'note': None,}\n```"
    )
    assert parse_answer(wrap(answer)) == Answer(
        bbox=(1, 2, 3, 4), points=((5, 6), (7, 8)), thinking="reasoning"
    )


def test_several_objects_take_first_usable():
    answer = '{"label": "cup"} {"bbox": [10, 20, 30, 40]} {"bbox": [50, 60, 70, 80]}'
    assert parse_answer(wrap(answer)).bbox == (10, 20, 30, 40)


def test_list_of_objects_takes_first_usable_element():
    answer = '[{"label": "cup"}, {"bbox_2d": [11, 22, 33, 44], "label": "cup"}, {"bbox": [0, 1]}]'
    assert parse_answer(wrap(answer)).bbox == (11, 22, 33, 44)


def test_braces_and_quotes_inside_strings():
    answer = (
        '{"note": "a {weird} label with } and \\" quote", "bbox": [1, 2, 3, 4], '
        "'alt': 'it\\'s {fine'}"
    )
    assert parse_answer(wrap(answer)).bbox == (1, 2, 3, 4)


def test_double_quote_inside_single_quoted_string():
    answer = "{'label': 'the \"red\" cup', 'bbox': [1, 2, 3, 4]}"
    assert parse_answer(wrap(answer)).bbox == (1, 2, 3, 4)


@pytest.mark.parametrize("key", ["bbox", "bbox_2d", "box", "BBox"])
def test_box_key_variants(key):
    assert parse_answer(wrap(f'{{"{key}": [5, 6, 7, 8]}}')).bbox == (5, 6, 7, 8)


def test_point_key_variants():
    singular = '{"point_1": [1, 2], "point_2": [3, 4]}'
    listed = '{"points": [[1, 2], [3, 4]]}'
    for answer in (singular, listed):
        assert parse_answer(wrap(answer)) == Answer(
            bbox=None, points=((1, 2), (3, 4)), thinking="reasoning"
        )


def test_points_only_and_box_only_ablation_answers():
    assert parse_answer(wrap("{'points_1': [1, 2], 'points_2': [3, 4]}")).bbox is None
    assert parse_answer(wrap("{'bbox': [1, 2, 3, 4]}")).points is None


def test_floats_and_numeric_strings_round_half_up():
    answer = (
        '{"bbox": [10.4, "12.5", " 99.6 ", 100.5], "points_1": ["3", 4.49], "points_2": [0.5, 1e2]}'
    )
    assert parse_answer(wrap(answer)) == Answer(
        bbox=(10, 13, 100, 101), points=((3, 4), (1, 100)), thinking="reasoning"
    )


def test_swapped_corners_are_reordered():
    assert parse_answer(wrap("{'bbox': [300, 400, 100, 50]}")).bbox == (100, 50, 300, 400)


def test_out_of_frame_and_negative_coordinates_are_clamped():
    answer = "{'bbox': [-20, -1, 900, 5000], 'points_1': [-3, 840], 'points_2': [839, 1000]}"
    assert parse_answer(wrap(answer)) == Answer(
        bbox=(0, 0, 839, 839), points=((0, 839), (839, 839)), thinking="reasoning"
    )


def test_frame_size_changes_the_clamp():
    result = parse_answer(wrap("{'bbox': [0, 0, 900, 900]}"), frame_size=448)
    assert result.bbox == (0, 0, 447, 447)
    with pytest.raises(ValueError, match="frame_size must be a positive int"):
        parse_answer(GOOD, frame_size=0)


def test_nested_list_forms_are_flattened():
    pairs = "{'bbox': [[10, 20], [30, 40]], 'points_1': [[1, 2]], 'points_2': [3, 4]}"
    wrapped = "{'bbox': [[10, 20, 30, 40]]}"
    assert parse_answer(wrap(pairs)).bbox == (10, 20, 30, 40)
    assert parse_answer(wrap(pairs)).points == ((1, 2), (3, 4))
    assert parse_answer(wrap(wrapped)).bbox == (10, 20, 30, 40)


def test_deeper_nested_list_is_rejected():
    with pytest.raises(AnswerFormatError, match=r"'bbox' value \[\[1, 2\]\] is not a number"):
        parse_answer(wrap("{'bbox': [[[1, 2]], 3, 4, 5]}"))


def test_wrapper_object_is_searched_one_level_in():
    answer = '{"answer": {"bbox": [1, 2, 3, 4], "points_1": [1, 1], "points_2": [2, 2]}}'
    assert parse_answer(wrap(answer)).bbox == (1, 2, 3, 4)


def test_unicode_text_around_answer():
    text = "<think>左边的红色杯子 ☕ — café</think><answer>{'bbox': [1, 2, 3, 4], 'label': '杯子'}"
    text += "</answer>"
    result = parse_answer(text)
    assert result.thinking == "左边的红色杯子 ☕ — café"
    assert result.bbox == (1, 2, 3, 4)


def test_malformed_object_is_skipped_for_a_later_good_one():
    answer = "{'bbox': [1, 2, 3]} corrected: {'bbox': [1, 2, 3, 4]}"
    assert parse_answer(wrap(answer)).bbox == (1, 2, 3, 4)


def test_unclosed_outer_brace_still_finds_inner_object():
    answer = "{ oops {'bbox': [1, 2, 3, 4]}"
    assert parse_answer(wrap(answer)).bbox == (1, 2, 3, 4)


# --------------------------------------------------------------------------- lenient errors


@pytest.mark.parametrize("text", ["", "   \n\t "])
def test_empty_output(text):
    with pytest.raises(AnswerFormatError, match="the model output is empty"):
        parse_answer(text)


@pytest.mark.parametrize("value", [None, b"<answer>{}</answer>", 42])
def test_non_str_input(value):
    with pytest.raises(AnswerFormatError, match="expected the model output as str, got"):
        parse_answer(value)  # type: ignore[arg-type]


def test_empty_answer_tags():
    with pytest.raises(AnswerFormatError, match=re.escape("the <answer> tags are empty")):
        parse_answer("<think>hmm</think><answer>  </answer>")


def test_only_thinking_no_answer():
    with pytest.raises(AnswerFormatError, match="only <think> text and no <answer>"):
        parse_answer("<think>I was cut off while thinking about the cup")


def test_no_json_in_answer():
    with pytest.raises(AnswerFormatError, match="no JSON object in the answer: 'the red cup'"):
        parse_answer(wrap("the red cup"))


def test_no_known_keys_lists_found_keys():
    with pytest.raises(
        AnswerFormatError,
        match=re.escape("JSON object has no 'bbox' or points keys: found keys ['foo']"),
    ):
        parse_answer(wrap('{"foo": [1, 2, 3, 4]}'))


def test_truncated_mid_json():
    text = '<think>t</think><answer>{"bbox": [35, 60, 354, 423], "points_1": [183, 2'
    with pytest.raises(AnswerFormatError, match=r"a '\{' is never closed \(truncated output\?\)"):
        parse_answer(text)


def test_unbalanced_closing_braces_only():
    with pytest.raises(AnswerFormatError, match="no JSON object in the answer"):
        parse_answer(wrap("}} 'bbox': [1, 2, 3, 4] }"))


def test_bbox_of_wrong_length():
    with pytest.raises(AnswerFormatError, match=r"'bbox' must have 4 numbers .*got 3: \[1, 2, 3\]"):
        parse_answer(wrap("{'bbox': [1, 2, 3], 'points_1': [1, 2], 'points_2': [3, 4]}"))


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_values(literal):
    with pytest.raises(AnswerFormatError, match=r"'bbox' value (nan|inf|-inf) is not finite"):
        parse_answer(wrap(f'{{"bbox": [1, {literal}, 3, 4]}}'))


def test_non_numeric_values():
    with pytest.raises(AnswerFormatError, match=r"'points_2' value 'left' is not a number"):
        parse_answer(wrap("{'points_1': [1, 2], 'points_2': ['left', 4]}"))
    with pytest.raises(AnswerFormatError, match=r"'bbox' value True is not a number"):
        parse_answer(wrap("{'bbox': [True, 2, 3, 4]}"))


def test_single_point_without_box():
    with pytest.raises(AnswerFormatError, match=r"only one point \('points_1'\) and no 'bbox'"):
        parse_answer(wrap("{'points_1': [1, 2]}"))


def test_null_values_count_as_missing():
    result = parse_answer(wrap('{"bbox": null, "points_1": [1, 2], "points_2": [3, 4]}'))
    assert result.bbox is None and result.points == ((1, 2), (3, 4))
    with pytest.raises(AnswerFormatError, match="values are all null"):
        parse_answer(wrap('{"bbox": null}'))


def test_undecodable_object_message_quotes_it():
    with pytest.raises(
        AnswerFormatError, match=r"could not decode a JSON object .*\"\{'bbox' 1 2\}\""
    ):
        parse_answer(wrap("{'bbox' 1 2}"))


def test_error_message_quote_is_truncated():
    with pytest.raises(AnswerFormatError) as info:
        parse_answer(wrap("x" * 5000))
    assert len(str(info.value)) < 300
    assert str(info.value).endswith("...")


class _Work:
    """Counts the work of the JSON discovery in `segzero_model.reasoning.reply_format` by wrapping
    its real parts:
    one step per brace-scanner event, one per character handed to the JSON decoder."""

    def __init__(self, monkeypatch):
        self.steps = 0
        scanner, decode = reply._SCAN_EVENT, reply.decode_object
        work = self

        class CountingScanner:
            def search(self, *args):
                work.steps += 1
                return scanner.search(*args)

        def counting_decode(span, lenient):
            work.steps += len(span)
            return decode(span, lenient)

        monkeypatch.setattr(reply, "_SCAN_EVENT", CountingScanner())
        monkeypatch.setattr(reply, "decode_object", counting_decode)


# Pathological replies of size ~n; each must be rejected, or parsed, with work linear in n.
GARBAGE = {
    "nested braces": lambda n: "{" * n + "}" * n,
    "many non-objects": lambda n: "{a}" * n,
    "unclosed quotes": lambda n: "{'" * n,
    "deep list": lambda n: '{"a": ' + "[" * n + "]" * n + "}",
    "prose": lambda n: "lorem ipsum {dolor} 'sit' \"amet\" [1, 2] " * (n // 10),
    "quote soup": lambda n: '{"a": \'' + "x'\"" * n + "}",
}


@pytest.mark.parametrize("name", GARBAGE)
def test_garbage_costs_linear_work(name, monkeypatch):
    steps = []
    for n in (4_000, 8_000):
        work = _Work(monkeypatch)
        with pytest.raises(AnswerFormatError):
            parse_answer(GARBAGE[name](n))
        steps.append(work.steps)
    assert steps[0] > 0
    assert steps[1] <= 2.2 * steps[0], f"{name}: {steps[0]} steps for n, {steps[1]} for 2n"


def test_an_object_after_many_open_braces_is_found_with_linear_work(monkeypatch):
    steps = []
    for n in (4_000, 8_000):
        work = _Work(monkeypatch)
        assert parse_answer("x{" * n + "{'bbox': [1, 2, 3, 4]}").bbox == (1, 2, 3, 4)
        steps.append(work.steps)
    assert steps[1] <= 2.2 * steps[0]


def test_the_work_count_sees_a_quadratic_search(monkeypatch):
    """The linear-work checks above can fail: without the bound on how deep the search
    descends into spans that do not decode, nested braces cost quadratic work."""
    monkeypatch.setattr(reply, "_MAX_DESCENT", 10**9)
    steps = []
    for n in (400, 800):
        work = _Work(monkeypatch)
        with pytest.raises(AnswerFormatError):
            parse_answer("{" * n + "}" * n)
        steps.append(work.steps)
    assert steps[1] > 3.5 * steps[0]


# --------------------------------------------------------------------------- strict mode


def test_strict_missing_think():
    text = '<answer>{"bbox": [1, 2, 3, 4], "points_1": [1, 2], "points_2": [3, 4]}</answer>'
    with pytest.raises(AnswerFormatError, match="strict: the output must start with <think>"):
        parse_answer(text, strict=True)


def test_strict_allows_whitespace_between_the_blocks_only():
    assert parse_answer(GOOD.replace("</think>", "</think>\n\n"), strict=True).bbox
    # "nothing around", as the thinking-format reward demands: not even white space
    for text in ("\n  " + GOOD, GOOD + " \n"):
        with pytest.raises(AnswerFormatError, match="strict: nothing, not even white space"):
            parse_answer(text, strict=True)
    with pytest.raises(AnswerFormatError, match="strict: text after </answer>: 'Done.'"):
        parse_answer(GOOD + " Done.", strict=True)


def test_strict_text_between_think_and_answer():
    text = GOOD.replace("</think>", "</think> So: ")
    with pytest.raises(AnswerFormatError, match="strict: only whitespace may separate"):
        parse_answer(text, strict=True)


def test_strict_unclosed_tags():
    with pytest.raises(AnswerFormatError, match="strict: <think> is never closed"):
        parse_answer("<think>thinking forever", strict=True)
    with pytest.raises(AnswerFormatError, match="strict: <answer> is never closed"):
        parse_answer(GOOD.replace("</answer>", ""), strict=True)


def test_strict_bbox_of_three_values():
    text = GOOD.replace("[35, 60, 354, 423]", "[35, 60, 354]")
    with pytest.raises(
        AnswerFormatError,
        match=re.escape("strict: 'bbox' must be a list of exactly 4 numbers, got [35, 60, 354]"),
    ):
        parse_answer(text, strict=True)


def test_strict_points_must_be_numbers():
    text = GOOD.replace("[183, 235]", '["183", 235]')
    with pytest.raises(AnswerFormatError, match="strict: 'points_1' must be a list of exactly 2"):
        parse_answer(text, strict=True)


@pytest.mark.parametrize(
    ("old", "new", "missing"),
    [('"bbox"', '"bbox_2d"', "bbox"), ('"points_1"', '"point_1"', "points_1")],
)
def test_strict_rejects_alternate_keys(old, new, missing):
    with pytest.raises(
        AnswerFormatError,
        match=rf"strict: the answer's JSON object has no '{missing}' key .*alternate keys",
    ):
        parse_answer(GOOD.replace(old, new), strict=True)
    assert parse_answer(GOOD.replace(old, new)).bbox == GOOD_BOX  # lenient takes it


def test_strict_takes_code_fences_inside_the_answer_as_the_strict_reward_does():
    text = GOOD.replace("<answer>", "<answer>```json\n").replace("</answer>", "\n```</answer>")
    assert parse_answer(text, strict=True).bbox == (35, 60, 354, 423)


def test_strict_parser_accepts_exactly_what_the_strict_rewards_score_1():
    from segzero_model.rewards.single_object import strict_format_reward, thinking_format_reward

    pieces = {
        "around": ["", " ", "\n", "x", "</answer>", "<think>"],
        "thinking": ["x", " x ", "", "\n", "<answer>"],
        "between": ["", " ", "\n", "x"],
        "inside": ["", " ", "```json\n", "\n```", "x", "{", "}"],
        "json": [
            '{"bbox": [1, 2, 30, 40], "points_1": [5, 6], "points_2": [7, 8]}',
            "{'bbox': [1,2,30,40], 'points_1': [5,6], 'points_2': [7,8]}",
            '{"bbox": [1.5, 2, 900, 40], "points_1": [5, 6], "points_2": [7, 8], "x": 1}',
            '{"bbox": [1, 2, 30, 40]}',
            '{"bbox": [1, 2, 30, 40], "points_1": [5, 6], "points_2": [7, NaN]}',
            '{"bbox": [1, 2, 30, 40], "points_1": [5, 6], "points_2": [7, 8],}',
        ],
    }
    rng = random.Random(0)
    agreed = accepted = 0
    for _ in range(3000):
        pick = {name: rng.choice(options) for name, options in pieces.items()}
        text = (
            f"{rng.choice(pieces['around'])}<think>{pick['thinking']}</think>{pick['between']}"
            f"<answer>{pick['inside']}{pick['json']}{rng.choice(pieces['inside'])}</answer>"
            f"{pick['around']}"
        )
        rewarded = thinking_format_reward([text]) == strict_format_reward([text]) == [1.0]
        try:
            parse_answer(text, strict=True)
            parsed = True
        except AnswerFormatError:
            parsed = False
        # The released format accepts NaN (a list of 2); no point can be made of it.
        assert parsed == (rewarded and "NaN" not in pick["json"]), text
        agreed += 1
        accepted += parsed
    assert agreed == 3000 and 10 < accepted < 2990  # both outcomes were exercised


def test_strict_rejects_trailing_commas_and_missing_json():
    with pytest.raises(AnswerFormatError, match="strict: the reply's first {...} is not JSON"):
        parse_answer(GOOD.replace("[183, 235]", "[183, 235,]"), strict=True)
    with pytest.raises(AnswerFormatError, match="strict: no {...} object in the reply"):
        parse_answer(wrap("the red cup"), strict=True)


def test_strict_non_finite():
    with pytest.raises(AnswerFormatError, match="strict: 'bbox' value nan is not finite"):
        parse_answer(GOOD.replace("[35, 60", "[NaN, 60"), strict=True)


def test_strict_still_rounds_reorders_and_clamps():
    text = wrap('{"bbox": [900.4, 60.5, 10, -3], "points_1": [1.5, 2], "points_2": [3, 4]}')
    assert parse_answer(text, strict=True) == Answer(
        bbox=(10, 0, 839, 61), points=((2, 2), (3, 4)), thinking="reasoning"
    )


def test_strict_extra_keys_allowed():
    text = GOOD.replace('{"bbox"', '{"label": "cup", "bbox"')
    assert parse_answer(text, strict=True).bbox == GOOD_BOX


# --------------------------------------------------------------------------- thinking


def test_extract_thinking_survives_unusable_answers():
    from segzero_model.reasoning.answer_parser import extract_thinking

    assert extract_thinking("<think>the mug</think><answer>{oops</answer>") == "the mug"
    assert extract_thinking("<think>cut off mid-thou") == "cut off mid-thou"
    assert extract_thinking("no tags at all") is None
