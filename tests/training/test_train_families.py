"""Training follows the model family: a list-answer family (Qwen3-VL, VisionReasoner) trains
with its prompt, at its image size, on ground truth in its answer frame, with VisionReasoner's
rewards; real GRPO and SFT steps of a tiny Qwen3-VL (CPU) whose checkpoint loads in
`segzero infer`; and what pre-flight refuses, with the key to change."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import infer_trained, tiny_recipe

from segzero_model.reasoning.families import FAMILIES
from segzero_model.reasoning.prompts import RECIPE_FILE
from segzero_model.rewards.registry import OBJECT_REWARDS
from segzero_model.targets import parse_objects_solution, parse_solution
from segzero_training import grpo, preflight, sft
from segzero_training.conversation import (
    family_solution,
    grpo_dataset,
    sft_dataset,
    training_messages,
)
from segzero_training.prepare_data import load_training_dataset
from segzero_training.prepare_data import main as prepare_data
from segzero_training.recipe import RecipeError

REPO = Path(__file__).resolve().parents[2]
QWEN3_RECIPE = REPO / "training" / "configs" / "qwen3_vl_4b.yaml"
QWEN3 = FAMILIES["qwen3_vl"]


@pytest.fixture(scope="module")
def tiny_qwen3_dir(tmp_path_factory):
    """A random tiny Qwen3-VL (seconds to write): a qwen3_vl-family base model."""
    from segzero_model.tiny.qwen3 import write_tiny_qwen3_vl

    return write_tiny_qwen3_vl(tmp_path_factory.mktemp("qwen3") / "tiny", taught=False)


@pytest.fixture(scope="module")
def data_896(training_data_dir, tmp_path_factory):
    """The shared 840 training data rewritten at Qwen3-VL's 896 by the command users run."""
    output = tmp_path_factory.mktemp("data-896") / "data"
    argv = ["--resize", str(training_data_dir), "--image-size", "896", "--output", str(output)]
    assert prepare_data(argv) == 0
    return output


@pytest.fixture(scope="module")
def list_data(training_data_dir, tmp_path_factory):
    """840 data whose solutions list two objects (VisionReasoner's form)."""
    from datasets import DatasetDict

    def two_objects(solution: str) -> dict:
        box, (point, _) = parse_solution(solution)
        other = {"bbox_2d": [0, 0, 40, 40], "point_2d": [20, 20]}
        first = {"bbox_2d": [round(v) for v in box], "point_2d": [round(v) for v in point]}
        return {"solution": json.dumps([first, other])}

    rows = load_training_dataset(training_data_dir).map(two_objects, input_columns="solution")
    output = tmp_path_factory.mktemp("list-data") / "data"
    DatasetDict({"train": rows}).save_to_disk(str(output))
    return output


# --------------------------------------------------------------------------- data


def test_resize_scales_images_and_solutions(training_data_dir, data_896, tmp_path):
    before, after = load_training_dataset(training_data_dir), load_training_dataset(data_896)
    assert after[0]["image"].size == (896, 896) and len(after) == len(before)
    for old, new in zip(before["solution"], after["solution"], strict=True):
        (box, points), (new_box, new_points) = parse_solution(old), parse_solution(new)
        old_values = (*box, *points[0], *points[1])
        new_values = (*new_box, *new_points[0], *new_points[1])
        for a, b in zip(old_values, new_values, strict=True):
            assert abs(a * 896 / 840 - b) <= 0.5
    # The command refuses to overwrite and says why.
    argv = ["--resize", str(training_data_dir), "--image-size", "896", "--output", str(data_896)]
    assert prepare_data(argv) == 2


def test_a_list_family_trains_on_its_frame_and_prompt(data_896, list_data):
    """Qwen3-VL's ground truth is the 896-pixel solution in 0..1000, rounded half up; the
    rewards get the frame's side; the SFT target is the list after the prompt without thinking."""
    rows = load_training_dataset(data_896)
    grpo_rows = grpo_dataset(rows, family=QWEN3)
    stored = parse_objects_solution(rows[0]["solution"])
    (truth,) = parse_objects_solution(grpo_rows[0]["solution"])
    assert truth.bbox == tuple(float(int(v * 1000 / 896 + 0.5)) for v in stored[0].bbox)
    assert grpo_rows[0]["image_size"] == 1000
    tie = '[{"bbox_2d": [0.448, 0, 896, 896], "point_2d": [2.24, 448]}]'  # 0.5 and 2.5 in 0..1000
    assert family_solution(tie, QWEN3) == (
        '[{"bbox_2d": [1, 0, 1000, 1000], "point_2d": [3, 500]}]'
    )  # half up, not Python's half to even
    text = grpo_rows[0]["prompt"][0]["content"][1]["text"]
    assert text == QWEN3.prompt(rows[0]["problem"]) and "<think>" in text

    pair = sft_dataset(rows, family=QWEN3)[0]
    assert "<think>" not in pair["prompt"][0]["content"][1]["text"]
    answer = pair["completion"][0]["content"][0]["text"]
    assert answer == f"<answer>{grpo_rows[0]['solution']}</answer>"

    vision_reasoner = FAMILIES["vision_reasoner"]  # absolute 840 frame: the list as stored
    listed = load_training_dataset(list_data)
    row = grpo_dataset(listed, family=vision_reasoner)[0]
    assert json.loads(row["solution"]) == json.loads(listed[0]["solution"])
    assert row["image_size"] == 840
    with pytest.raises(ValueError, match="no prompt without thinking"):
        training_messages("the cup", vision_reasoner, thinking=False)


# --------------------------------------------------------------------------- pre-flight


def test_the_qwen3_vl_recipe_passes_pre_flight(tiny_qwen3_dir, data_896, tmp_path, monkeypatch):
    """The shipped recipe (8 GPUs) with the tiny Qwen3-VL in place of the 4B: the 896 frame is
    one the processor keeps, the prompt's tokens fit; the rewards are VisionReasoner's."""
    monkeypatch.setattr(preflight, "world_size", lambda: 8)
    args, _, check_only = grpo.parse_and_check(
        [
            "--config",
            str(QWEN3_RECIPE),
            f"model_name_or_path={tiny_qwen3_dir}",
            f"dataset_path={data_896}",
            f"output_dir={tmp_path / 'run'}",
            "use_cpu=true",
            "--check",
        ]
    )
    assert check_only and args.family().name == "qwen3_vl"
    assert args.reward_names() == OBJECT_REWARDS


def test_pre_flight_refusals_name_the_key(
    tiny_qwen3_dir, tiny_qwen_dir, training_data_dir, data_896, list_data, tmp_path
):
    def problems(*argv: str) -> list[str]:
        with pytest.raises(RecipeError) as caught:
            grpo.parse_and_check(list(argv))
        return caught.value.problems

    (size,) = problems(*tiny_recipe(tiny_qwen3_dir, training_data_dir, tmp_path / "a"))
    assert size.startswith("dataset_path: images must be 896x896") and "--resize" in size
    soft = problems(*tiny_recipe(tiny_qwen3_dir, data_896, tmp_path / "b", "format_reward=soft"))
    assert soft == [
        "format_reward: 'soft' is a Seg-Zero single-object ablation; 'qwen3_vl' answers a list "
        "of objects and trains with VisionReasoner's rewards (keep format_reward=strict)"
    ]
    no_cot = tiny_recipe(
        tiny_qwen_dir, list_data, tmp_path / "c", "model_family=vision_reasoner", "thinking=false"
    )
    (direct,) = problems(*no_cot)
    assert direct.startswith("model_family: 'vision_reasoner' has no prompt without thinking")
    (single,) = problems(*tiny_recipe(tiny_qwen_dir, list_data, tmp_path / "d"))
    assert single.startswith("dataset_path: its solutions are lists of objects")
    relative = tmp_path / "relative.yaml"
    relative.write_text(
        "prompt: 'Find {question}.'\nanswer: single\nframe: relative_1000\nimage_size: 840\n"
    )
    family = f"model_family={relative}"
    (frame,) = problems(*tiny_recipe(tiny_qwen_dir, training_data_dir, tmp_path / "e", family))
    assert frame.startswith("model_family: 'relative' answers 'single' in the 'relative_1000'")


# --------------------------------------------------------------------------- real training


def test_two_grpo_steps_of_qwen3_vl_load_in_segzero_infer(
    tiny_qwen3_dir, tiny_sam2_dir, data_896, tmp_path, capsys
):
    output = tmp_path / "run"
    assert grpo.main(tiny_recipe(tiny_qwen3_dir, data_896, output, "max_steps=2")) == 0
    logs = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [log for log in logs if "reward" in log]
    assert [log["step"] for log in steps] == [1, 2]
    for log in steps:
        for name in OBJECT_REWARDS:
            high = 2.0 if name == "objects_format" else 1.0
            assert 0.0 <= log[f"rewards/{name}_reward/mean"] <= high
    recipe = json.loads((output / RECIPE_FILE).read_text())
    assert recipe["family"] == "qwen3_vl" and recipe["rewards"] == list(OBJECT_REWARDS)

    infer_trained(output, tiny_sam2_dir, tmp_path / "result.json", family="qwen3_vl")


def test_sft_teaches_qwen3_vl_its_list(tiny_qwen3_dir, data_896, tmp_path):
    output = tmp_path / "sft"
    argv = [
        f"model_name_or_path={tiny_qwen3_dir}",
        f"dataset_path={data_896}",
        f"output_dir={output}",
        "dtype=float32",
        "bf16=false",
        "use_cpu=true",
        "max_steps=1",
        "per_device_train_batch_size=2",
        "global_batch_size=2",
        "report_to=none",
    ]
    assert sft.main(argv) == 0
    recipe = json.loads((output / RECIPE_FILE).read_text())
    assert recipe["family"] == "qwen3_vl" and recipe["method"] == "sft"
    logs = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in log for log in logs)
