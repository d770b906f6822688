"""Model families: their prompts (VisionReasoner's byte-exact), detection from model type,
recipe and override, parsing and scaling of single and list answers, custom YAML families and
the processor's frame-size check."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from segzero_model.reasoning.answer_parser import (
    AnswerFormatError,
    FoundTarget,
    parse_answer,
    parse_objects,
)
from segzero_model.reasoning.families import (
    FAMILIES,
    SUPPORTED_MODEL_TYPES,
    Family,
    check_image_size,
    family_for_checkpoint,
    family_named,
    load_family_file,
)
from segzero_model.reasoning.prompts import RECIPE_FILE, build_prompt

# The released VisionReasoner user text for the question "the red cup", written out by hand
# from dvlab-research/Seg-Zero inference_scripts/infer_multi_object.py.
RELEASED_VISION_REASONER = (
    'Please find "the red cup" with bboxs and points.Compare the difference between object(s) '
    "and find the most closely matched object(s).Output the thinking process in <think> </think> "
    "and final answer in <answer> </answer> tags.Output the bbox(es) and point(s) inside the "
    "interested object(s) in JSON format.i.e., <think> thinking process here </think><answer>"
    '[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, '
    '{"bbox_2d": [225,296,706,786], "point_2d": [302,410]}]</answer>'
)

SEG_ZERO_REPLY = (
    "<think>the cup</think><answer>{'bbox': [84,168,420,840], 'points_1': [210,420], "
    "'points_2': [0,839]}</answer>"
)


def checkpoint(tmp_path, model_type, recipe=None):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    if recipe is not None:
        (tmp_path / RECIPE_FILE).write_text(json.dumps(recipe))
    return tmp_path


# --------------------------------------------------------------------------- prompts


def test_seg_zero_prompt_is_todays_prompt():
    family = FAMILIES["seg_zero"]
    assert family.prompt("The Red Cup.") == build_prompt("The Red Cup.")
    assert (family.answer, family.frame, family.image_size) == ("single", "absolute", 840)


def test_vision_reasoner_prompt_is_the_released_one_byte_for_byte():
    family = FAMILIES["vision_reasoner"]
    assert family.prompt("The Red Cup?") == RELEASED_VISION_REASONER
    assert family.prompt('"the red cup!"') == RELEASED_VISION_REASONER
    assert family.prompt("the red cup") == RELEASED_VISION_REASONER
    assert (family.answer, family.frame, family.image_size) == ("list", "absolute", 840)


def test_qwen3_vl_prompt_asks_for_a_relative_list_in_think_tags():
    family = FAMILIES["qwen3_vl"]
    text = family.prompt("The Red Cup?")
    assert '"the red cup"' in text and "<think> </think>" in text
    assert "bbox_2d" in text and "point_2d" in text and "0 to 1000" in text
    assert (family.answer, family.frame) == ("list", "relative_1000")
    assert family.image_size % 32 == 0 and family.frame_width == 1000


def test_every_model_type_is_a_transformers_image_text_to_text_model():
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    assert set(SUPPORTED_MODEL_TYPES) <= set(MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES)
    for family in FAMILIES.values():
        assert set(family.model_types) <= set(SUPPORTED_MODEL_TYPES)


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("model_type", "name"),
    [("qwen2_5_vl", "seg_zero"), ("qwen2_vl", "seg_zero"), ("qwen3_vl", "qwen3_vl")],
)
def test_auto_detection_by_model_type(tmp_path, model_type, name):
    assert family_for_checkpoint(checkpoint(tmp_path, model_type)).name == name
    assert family_for_checkpoint({"model_type": model_type}).name == name
    assert family_for_checkpoint(SimpleNamespace(model_type=model_type)).name == name


def test_the_recipe_names_the_family_and_the_seg_zero_prompt_variant(tmp_path):
    directory = checkpoint(tmp_path, "qwen2_5_vl", {"family": "vision_reasoner"})
    assert family_for_checkpoint(directory).name == "vision_reasoner"
    directory = checkpoint(tmp_path, "qwen2_5_vl", {"thinking": False, "answer": "box"})
    family = family_for_checkpoint(directory)
    assert family.name == "seg_zero"
    assert family.prompt("Cup") == build_prompt("Cup", thinking=False, answer="box")


def test_an_override_wins_over_the_model_type(tmp_path):
    directory = checkpoint(tmp_path, "qwen2_5_vl")
    assert family_for_checkpoint(directory, "vision_reasoner").name == "vision_reasoner"
    assert family_for_checkpoint(directory, FAMILIES["vision_reasoner"]).name == "vision_reasoner"


@pytest.mark.parametrize(
    ("model_type", "family", "message"),
    [
        ("llava", "auto", r"'llava' is not supported; expected one of \('qwen2_5_vl'"),
        ("qwen2_5_vl", "segzero", r"unknown model family 'segzero'; choose one of \['auto', "),
        ("qwen3_vl", "seg_zero", r"serves \('qwen2_5_vl', 'qwen2_vl'\) models, not 'qwen3_vl'"),
        ("qwen2_vl", "vision_reasoner", r"not 'qwen2_vl'; choose 'auto' or one of \['seg_zero'\]"),
    ],
)
def test_unknown_or_unfit_names_are_refused_with_the_choices(model_type, family, message):
    with pytest.raises(ValueError, match=message):
        family_for_checkpoint({"model_type": model_type}, family)


def test_a_directory_without_a_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no config.json"):
        family_for_checkpoint(tmp_path)


# --------------------------------------------------------------------------- parsing, scaling


def test_seg_zero_objects_match_parse_answer_scaled_from_840():
    found = parse_objects(SEG_ZERO_REPLY, FAMILIES["seg_zero"], 1680, 420)
    answer = parse_answer(SEG_ZERO_REPLY)
    assert answer.bbox == (84, 168, 420, 839)  # clamped into the 840 frame
    assert found == [FoundTarget((168.0, 84.0, 840.0, 419.5), ((420.0, 210.0), (0.0, 419.5)))]


def test_vision_reasoner_lists_scale_and_round_as_released():
    reply = (
        '<think>two cups</think><answer>[{"bbox_2d": [10,100,200,210], "point_2d": [30,110]}, '
        '{"bbox_2d": [225,296,706,786], "point_2d": [302,410]}]</answer>'
    )
    found = parse_objects(reply, FAMILIES["vision_reasoner"], 640, 480)
    # int(v * W / 840 + 0.5): 10*640/840 = 7.62 -> 8, 100*480/840 = 57.1 -> 57, ...
    assert found[0] == FoundTarget((8.0, 57.0, 152.0, 120.0), ((23.0, 63.0),))
    assert found[1] == FoundTarget((171.0, 169.0, 538.0, 449.0), ((230.0, 234.0),))


def test_qwen3_vl_lists_scale_from_the_relative_1000_frame():
    reply = "<think>x</think><answer>[{'bbox_2d': [250, 400, 1000, 1200], 'point_2d': [500, 500]}]"
    found = parse_objects(reply, FAMILIES["qwen3_vl"], 1920, 1080)
    assert found == [FoundTarget((480.0, 432.0, 1920.0, 1080.0), ((960.0, 540.0),))]


@pytest.mark.parametrize(
    "reply", ["<think>no cup here</think><answer>[]</answer>", "<answer> [ ] </answer>", "[]"]
)
def test_an_empty_list_is_an_explicit_no_object(reply):
    assert parse_objects(reply, FAMILIES["vision_reasoner"], 100, 100) == []


def test_a_bare_object_is_a_list_of_one_and_the_thinking_is_not_read():
    reply = (
        '<think>[{"bbox_2d": [1,1,2,2]}]</think><answer>```json\n'
        '{"bbox_2d": [0, 0, 840, 840]}\n```</answer>'
    )
    found = parse_objects(reply, FAMILIES["vision_reasoner"], 84, 84)
    assert found == [FoundTarget((0.0, 0.0, 84.0, 84.0), ())]


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        ("", "empty"),
        ("<think>only thinking</think>", "no answer after the thinking"),
        ("<answer>the cup</answer>", "no JSON list of objects"),
        ("<answer>[1, 2, 3, 4]</answer>", "no JSON list of objects"),
        ('<answer>[{"label": "cup"}]</answer>', "item 0 .* no 'bbox_2d' or 'point_2d'"),
        ('<answer>[{"bbox_2d": [1, 2, 3]}]</answer>', "'bbox_2d' must have 4 numbers"),
        ('<answer>[{"point_2d": "left"}]</answer>', "'point_2d' must be one"),
        ('<answer>[{"bbox_2d": [1, 2, 3, "x"]}]</answer>', "is not a number"),
    ],
)
def test_malformed_list_answers_say_what_is_wrong(reply, message):
    with pytest.raises(AnswerFormatError, match=message):
        parse_objects(reply, FAMILIES["vision_reasoner"], 100, 100)


def test_malformed_single_answers_and_bad_sizes():
    with pytest.raises(AnswerFormatError, match="no JSON object"):
        parse_objects("<answer>none</answer>", FAMILIES["seg_zero"], 10, 10)
    with pytest.raises(ValueError, match="width"):
        parse_objects(SEG_ZERO_REPLY, FAMILIES["seg_zero"], 0, 10)


# --------------------------------------------------------------------------- custom YAML

GOOD_YAML = """\
name: my-finetune
prompt: "Find '{question}'. Answer {'bbox': [x1,y1,x2,y2]} in <answer> </answer>."
answer: single
frame: relative_1000
image_size: 448
question: seg_zero
model_types: [qwen2_5_vl]
"""


def test_a_custom_family_from_yaml(tmp_path):
    path = tmp_path / "family.yaml"
    path.write_text(GOOD_YAML)
    family = load_family_file(path)
    assert family.name == "my-finetune" and family.model_types == ("qwen2_5_vl",)
    assert family.prompt("The Cup.") == (
        "Find 'the cup'. Answer {'bbox': [x1,y1,x2,y2]} in <answer> </answer>."
    )
    assert family_named(str(path)).name == "my-finetune"
    (tmp_path / "model").mkdir()
    directory = checkpoint(tmp_path / "model", "qwen2_5_vl")
    assert family_for_checkpoint(directory, str(path)).image_size == 448
    found = parse_objects("<answer>{'bbox': [0, 500, 1000, 1000]}</answer>", family, 200, 100)
    assert found == [FoundTarget((0.0, 50.0, 200.0, 100.0), ())]
    with pytest.raises(ValueError, match="serves \\('qwen2_5_vl',\\)"):
        family_for_checkpoint({"model_type": "qwen2_vl"}, str(path))
    assert family.prompt_without_thinking is None  # SFT and thinking=false are refused
    path.write_text(GOOD_YAML + "prompt_without_thinking: 'Just answer {question}.'\n")
    assert load_family_file(path).prompt_without_thinking("The Cup.") == "Just answer the cup."


def test_prompts_without_thinking():
    """Seg-Zero's is its no-CoT prompt; Qwen3-VL's asks the same list without <think>;
    VisionReasoner's release has none."""
    from segzero_model.reasoning.prompts import build_prompt

    assert FAMILIES["seg_zero"].prompt_without_thinking("a cup") == build_prompt(
        "a cup", thinking=False
    )
    direct = FAMILIES["qwen3_vl"].prompt_without_thinking("The Cup?")
    assert "<think>" not in direct and '"the cup"' in direct and "0 to 1000" in direct
    assert FAMILIES["vision_reasoner"].prompt_without_thinking is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prompt: [unclosed", "not valid YAML"),
        ("- a list", "expected a mapping"),
        (GOOD_YAML + "colour: red\n", r"unknown keys \['colour'\]"),
        ("prompt: '{question}'\nanswer: single\n", r"missing keys \['frame', 'image_size'\]"),
        (GOOD_YAML.replace("{question}", "{query}"), "must be text holding {question}"),
        (GOOD_YAML + "prompt_without_thinking: 3\n", "'prompt_without_thinking' must be text"),
        (GOOD_YAML.replace("answer: single", "answer: many"), "answer 'many' not in"),
        (GOOD_YAML.replace("frame: relative_1000", "frame: pixels"), "frame 'pixels' not in"),
        (GOOD_YAML.replace("image_size: 448", "image_size: big"), "positive int, got 'big'"),
        (GOOD_YAML.replace("question: seg_zero", "question: upper"), "'question' 'upper'"),
        (GOOD_YAML.replace("[qwen2_5_vl]", "[llava]"), "'model_types' \\['llava'\\]"),
    ],
)
def test_bad_family_files_are_refused_with_the_file_and_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as error:
        load_family_file(path)
    assert str(path) in str(error.value)


def test_a_missing_family_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read it"):
        family_named(str(tmp_path / "none.yaml"))


# --------------------------------------------------------------------------- frame size


def test_the_tiny_qwen2_5_vl_processor_takes_840(tiny_qwen_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen_dir)
    check_image_size(processor, 840)  # 14 * 2 = 28 divides 840
    with pytest.raises(ValueError, match="900 would be resized .* to 896x896 .*multiples of 28"):
        check_image_size(processor, 900)  # 896 or 924 would fit


def test_a_32_pixel_processor_refuses_840_and_takes_896():
    images = SimpleNamespace(
        patch_size=16, merge_size=2, size={"shortest_edge": 65536, "longest_edge": 16777216}
    )
    processor = SimpleNamespace(image_processor=images)
    with pytest.raises(ValueError, match=r"840 would be resized .* to 832x832 .* e\.g\. 832"):
        check_image_size(processor, 840)
    check_image_size(processor, FAMILIES["qwen3_vl"].image_size)
    with pytest.raises(ValueError, match="pixels within"):
        check_image_size(processor, 128)  # 128 * 128 < 65536


def test_family_fields_are_checked():
    with pytest.raises(ValueError, match="image_size must be a positive int"):
        Family("x", (), str, "single", "absolute", 0)


# --------------------------------------------------------------------------- segzero infer


def _infer(tmp_path, family):
    from pathlib import Path

    import segzero_model
    from segzero_model.cli import main

    scene = Path(segzero_model.__file__).parent / "assets" / "kitchen.png"
    json_path = tmp_path / "r.json"
    argv = ["infer", "--tiny", "--image", str(scene), "--query", "the red cup"]
    code = main([*argv, "--device", "cpu", "--json", str(json_path), "--model-family", family])
    return code, json_path


def test_infer_takes_a_model_family(tiny_cache, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SEGZERO_CACHE", str(tiny_cache))
    code, json_path = _infer(tmp_path, "seg_zero")
    assert code == 0, capsys.readouterr().err
    assert json.loads(json_path.read_text())["status"] == "ok"
    path = tmp_path / "family.yaml"
    path.write_text("prompt: '{question}'\nanswer: list\nframe: relative_1000\nimage_size: 840\n")
    assert _infer(tmp_path, "nope")[0] == 2
    assert "unknown model family 'nope'" in capsys.readouterr().err
    # A custom list family in the relative frame runs (the tiny Qwen2.5-VL answers in Seg-Zero's
    # single-object form, which that family cannot read: an unparseable answer, exit 1).
    code, json_path = _infer(tmp_path, str(path))
    assert code == 1, capsys.readouterr().err
    assert json.loads(json_path.read_text())["status"] == "unparseable_answer"
