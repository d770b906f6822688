from segzero_model.prompt import build_prompt, normalize_question

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
