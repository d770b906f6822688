from segzero_model.reasoning.prompts import build_prompt, normalize_question

# The released checkpoints' training prompt, written out by hand (not built from the template).
EXPECTED_RED_CUP = (
    "Please find 'the red cup' with bbox and points.Compare the difference between objects and "
    "find the most closely matched one.Output the thinking process in <think> </think> and final "
    "answer in <answer> </answer> tags.Output the one bbox and points of two largest inscribed "
    "circles inside the interested object in JSON format.i.e., <think> thinking process here "
    "</think><answer>{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}"
    "</answer>"
)


def test_prompt_is_byte_exact():
    assert build_prompt("the red cup") == EXPECTED_RED_CUP


def test_query_is_lowercased_and_dots_stripped_from_both_ends():
    assert build_prompt("The Red Cup.") == EXPECTED_RED_CUP
    assert build_prompt("...the red cup..") == EXPECTED_RED_CUP


def test_inner_dots_and_spaces_are_kept():
    assert normalize_question("Mr. Smith's mug.") == "mr. smith's mug"
    assert normalize_question(" the cup ") == " the cup "


def test_braces_in_query_do_not_break_formatting():
    assert "'the {weird} cup'" in build_prompt("the {weird} cup")


def test_ablation_prompts_change_only_what_they_ask_for():
    no_think = build_prompt("The red cup.", thinking=False)
    assert "<think>" not in no_think
    assert no_think.endswith(
        "Output the final answer in <answer> </answer> tags.Output the one bbox and points of two "
        "largest inscribed circles inside the interested object in JSON format.i.e., <answer>"
        "{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}</answer>"
    )
    box = build_prompt("the red cup", answer="box")
    assert box.startswith("Please find 'the red cup' with bbox.Compare")
    assert "points" not in box and box.endswith("<answer>{'bbox': [10,100,200,210]}</answer>")
    points = build_prompt("the red cup", answer="points", thinking=False)
    assert "bbox" not in points and "<think>" not in points
    assert points.endswith("<answer>{'points_1': [30,110], 'points_2': [35,180]}</answer>")
    # The defaults, spelled out, are still the released prompt.
    assert build_prompt("the red cup", thinking=True, answer="box_points") == EXPECTED_RED_CUP


def test_unknown_answer_variant_is_named():
    import pytest

    with pytest.raises(ValueError, match="'mask'.*box_points"):
        build_prompt("cup", answer="mask")
