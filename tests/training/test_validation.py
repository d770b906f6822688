"""Validation during GRPO training (training/validation.py) and the held-out layouts it reads
(training/heldout.py): scores by hand against the tiny model's trained-in answer, real GRPO steps
that evaluate every step and keep the best checkpoint, and the pre-flight checks."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import tiny_recipe

from segzero_model.metrics import box_iou
from segzero_training import grpo
from segzero_training.heldout import open_heldout
from segzero_training.recipe import RecipeError
from segzero_training.validation import (
    ValidationTotals,
    placeholder_eval_dataset,
    run_family,
    sample_box_iou,
    score_samples,
)

CANNED_BOX = (84, 168, 420, 630)  # what the tiny reasoner answers (segzero_model/tiny/qwen.py)


@pytest.fixture(scope="module")
def eval_layout_dir(tmp_path_factory):
    """Three samples in the released evaluation layout (image, text, mask, ids, sizes)."""
    from datasets import Dataset, DatasetDict
    from PIL import Image

    rows = {k: [] for k in ("image", "text", "mask", "image_id", "ann_id")}
    rows |= {"img_height": [], "img_width": []}
    for index in range(3):
        image = np.full((120, 160, 3), 40 * index, np.uint8)
        mask = np.zeros((120, 160), np.uint8)
        mask[20 + index : 80, 30 : 90 + index] = 255
        for key, value in (
            ("image", Image.fromarray(image)),
            ("text", f"object {index}"),
            ("mask", Image.fromarray(mask)),
            ("image_id", str(index)),
            ("ann_id", str(index)),
            ("img_height", 120),
            ("img_width", 160),
        ):
            rows[key].append(value)
    path = tmp_path_factory.mktemp("eval-layout") / "set"
    DatasetDict({"test": Dataset.from_dict(rows)}).save_to_disk(str(path))
    return path


@pytest.fixture(scope="module")
def folder_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder")
    for sub in ("images", "masks", "texts"):
        (root / sub).mkdir()
    mask = np.zeros((48, 64), np.uint8)
    mask[10:30, 5:25] = 255
    cv2.imwrite(str(root / "images" / "a.png"), np.full((48, 64, 3), 90, np.uint8))
    cv2.imwrite(str(root / "masks" / "a.png"), mask)
    (root / "texts" / "a.txt").write_text("the square\n")
    return root


def test_the_three_layouts_give_images_queries_boxes_and_masks(
    eval_layout_dir, training_data_dir, folder_dir
):
    evaluation = open_heldout(eval_layout_dir)
    sample = evaluation[1]
    assert evaluation.layout == "evaluation" and len(evaluation) == 3
    assert sample.query == "object 1" and sample.image.shape == (120, 160, 3)
    assert sample.boxes == [(30.0, 21.0, 90.0, 79.0)] and sample.mask.sum() == 59 * 61

    training = open_heldout(training_data_dir, "train")
    assert training.layout == "training" and training[0].mask is None
    assert training[0].image.shape == (840, 840, 3) and len(training[0].boxes) == 1

    folder = open_heldout(folder_dir)
    assert folder.layout == "folder" and folder[0].query == "the square"
    assert folder[0].boxes == [(5.0, 10.0, 24.0, 29.0)]

    with pytest.raises(ValueError, match="no split 'val'"):
        open_heldout(eval_layout_dir, "val")


def test_sample_box_iou():
    a, b = (0, 0, 9, 9), (5, 0, 14, 9)
    assert sample_box_iou([a], [a]) == 1.0
    assert sample_box_iou([b, a], [a]) == 1.0  # the best predicted box counts
    assert sample_box_iou([a], [a, b]) == pytest.approx((1 + 50 / 150) / 2)
    assert sample_box_iou([], []) == 1.0 and sample_box_iou([], [a]) == sample_box_iou([a], []) == 0


def test_scores_of_the_tiny_models_trained_in_answer(
    tiny_reasoner, tiny_segmenter, training_data_dir
):
    """The tiny reasoner always answers CANNED_BOX in the 840 frame: every reply parses, and the
    box IoU is that box's IoU with each true box."""
    samples = open_heldout(training_data_dir, "train")[:3]
    scored = score_samples(tiny_reasoner, samples)
    totals = ValidationTotals()
    for one in scored:
        totals.add(one)
    expected = [box_iou(CANNED_BOX, s.boxes[0]) for s in samples]
    assert [one.box_iou for one in scored] == pytest.approx(expected)
    metrics = totals.metrics()
    assert metrics["eval_parse_rate"] == 1.0 and metrics["eval_samples"] == 3
    assert metrics["eval_box_iou"] == pytest.approx(sum(expected) / 3)
    assert "eval_giou" not in metrics  # no segmentation model


def test_with_sam2_masks_are_scored_as_evaluate_scores_them(
    tiny_reasoner, tiny_segmenter, eval_layout_dir
):
    from segzero_model.pipeline import SegZeroPipeline
    from segzero_training.evaluate import score

    samples = open_heldout(eval_layout_dir)[:2]
    scored = score_samples(tiny_reasoner, samples, tiny_segmenter)
    results = SegZeroPipeline(tiny_reasoner, tiny_segmenter).segment_batch(
        [s.image for s in samples], [s.query for s in samples]
    )
    for one, result, sample in zip(scored, results, samples, strict=True):
        intersection, union, _ = score(result, sample.mask)
        assert (one.intersection, one.union, one.masked) == (intersection, union, 1)
    totals = ValidationTotals()
    for one in scored:
        totals.add(one)
    assert set(totals.metrics()) >= {"eval_giou", "eval_ciou", "eval_box_iou"}
    assert ValidationTotals.from_list(totals.as_list()) == totals  # what processes exchange


def test_the_run_prompt_is_the_training_prompt(tiny_qwen_dir, training_data_dir, tmp_path):
    from segzero_model.reasoning.prompts import build_prompt

    args, _, _ = grpo.parse_and_check(
        tiny_recipe(tiny_qwen_dir, training_data_dir, tmp_path, "thinking=false", "answer=box")
    )
    assert run_family(args).prompt("a cup") == build_prompt("a cup", thinking=False, answer="box")


def test_two_steps_evaluate_every_step_and_keep_the_best(
    tiny_qwen_dir, training_data_dir, tmp_path
):
    output = tmp_path / "run"
    recipe = tiny_recipe(
        tiny_qwen_dir,
        training_data_dir,
        output,
        "max_steps=2",
        f"eval_dataset_path={training_data_dir}",
        "eval_dataset_split=train",
        "eval_samples=2",
        "eval_steps=1",
        "save_steps=1",
    )
    assert grpo.main(recipe) == 0
    logs = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    evals = [log for log in logs if "eval_box_iou" in log]
    assert [log["step"] for log in evals] == [1, 2]
    for log in evals:
        assert 0.0 <= log["eval_box_iou"] <= 1.0 and 0.0 <= log["eval_parse_rate"] <= 1.0
        assert log["eval_samples"] == 2.0
    best = json.loads((output / "segzero_recipe.json").read_text())["best_checkpoint"]
    values = [log["eval_box_iou"] for log in evals]
    step = 1 + values.index(max(values))  # the first of equals: later ones are not better
    assert best["step"] == step and best["metric"] == pytest.approx(max(values))
    assert best["checkpoint"].endswith(f"checkpoint-{step}")


def test_pre_flight_checks_of_validation(
    tiny_qwen_dir, training_data_dir, eval_layout_dir, tmp_path
):
    def problems(*extra: str) -> list[str]:
        with pytest.raises(RecipeError) as caught:
            grpo.parse_and_check(tiny_recipe(tiny_qwen_dir, training_data_dir, tmp_path, *extra))
        return caught.value.problems

    assert problems("eval_strategy=steps", "eval_steps=1") == [
        "eval_strategy=steps needs eval_dataset_path (the held-out set)"
    ]
    held = f"eval_dataset_path={eval_layout_dir}"
    (divide,) = problems(held, "eval_steps=3", "save_steps=2")
    assert divide.startswith("eval_steps: 3 is not a multiple of save_steps=2")
    (metric,) = problems(held, "metric_for_best_model=giou")
    assert metric == "metric_for_best_model: 'giou' is not one of ['box_iou', 'parse_rate']"
    (masks,) = problems(
        f"eval_dataset_path={training_data_dir}",
        "eval_dataset_split=train",
        "eval_segmentation_model=sam",
    )
    assert masks.startswith("eval_segmentation_model: the held-out set is in the training layout")
    (missing,) = problems(f"eval_dataset_path={tmp_path / 'nothing'}")
    assert missing.startswith("eval_dataset_path:")


def test_two_processes_score_their_shards_and_add_them(tiny_qwen_dir, training_data_dir, tmp_path):
    """torchrun with 2 CPU processes (gloo), 3 held-out samples: shards of 2, one padded; the
    sums over both processes are exactly the 3 samples' scores (the model still answers its
    trained-in box after one step at lr 1e-6)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    output = tmp_path / "run"
    recipe = tiny_recipe(
        tiny_qwen_dir,
        training_data_dir,
        output,
        "max_steps=1",
        "max_completion_length=96",
        f"eval_dataset_path={training_data_dir}",
        "eval_dataset_split=train",
        "eval_samples=3",
        "eval_steps=1",
        "save_steps=1",
        "use_vllm=false",
    )
    recipe = [
        r for r in recipe if r not in ("max_completion_length=8", "per_device_train_batch_size=2")
    ]
    recipe.append("per_device_train_batch_size=1")  # x 2 processes = the 2 samples of a step
    recipe.append("use_cpu=true")  # without it Trainer does not run distributed on a CPU
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", str(grpo.__file__), *recipe],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logs = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    (evaluated,) = [log for log in logs if "eval_box_iou" in log]
    heldout = open_heldout(training_data_dir, "train")
    expected = sum(box_iou(CANNED_BOX, heldout[i].boxes[0]) for i in range(3)) / 3
    assert evaluated["eval_samples"] == 3.0 and evaluated["eval_parse_rate"] == 1.0
    assert evaluated["eval_box_iou"] == pytest.approx(expected)


def test_validation_keeps_the_checkpoint_of_the_highest_score(
    tiny_qwen_dir, training_data_dir, eval_layout_dir, tmp_path
):
    """README: the best checkpoint is the one with the highest box IoU. The recipe as
    parse_and_check leaves it, in transformers' own Trainer, fed three validations."""
    import torch
    from transformers import Trainer

    recipe = tiny_recipe(
        tiny_qwen_dir, training_data_dir, tmp_path, f"eval_dataset_path={eval_layout_dir}"
    )
    _, config, _ = grpo.parse_and_check(recipe)
    assert (config.metric_for_best_model, config.greater_is_better) == ("box_iou", True)
    assert str(config.eval_strategy).lower().endswith("steps")
    assert config.eval_steps == config.save_steps
    held_out = placeholder_eval_dataset(2)  # what grpo.py hands the trainer
    trainer = Trainer(model=torch.nn.Linear(1, 1), args=config, eval_dataset=held_out)
    kept = []
    for step, score in [(1, 0.2), (2, 0.5), (3, 0.3)]:
        trainer.state.global_step = step
        if trainer._determine_best_metric({"eval_box_iou": score}, None):
            kept.append(step)
    assert kept == [1, 2] and trainer.state.best_metric == 0.5
