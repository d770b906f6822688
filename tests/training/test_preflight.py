"""training/preflight.py: every check that runs before training, each naming the key to change;
through `grpo.parse_and_check` where the check needs the parsed recipe."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_recipe

from segzero_training import grpo, preflight
from segzero_training.recipe import RecipeError

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def problems_of(argv: list[str]) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        grpo.parse_and_check(argv)
    return caught.value.problems


# --------------------------------------------------------------------------- checks


def test_batch_sizes_that_do_not_divide_name_the_fix(
    tiny_qwen_dir, training_data_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(preflight, "world_size", lambda: 4)
    problems = problems_of(
        [
            "--config",
            str(CONFIGS / "seg_zero_3b.yaml"),
            f"model_name_or_path={tiny_qwen_dir}",
            f"dataset_path={training_data_dir}",
            f"output_dir={tmp_path / 'run'}",
        ]
    )
    assert len(problems) == 1
    assert "16 prompts x num_generations=8 = 128 completions per step" in problems[0]
    assert "x 4 process(es) x gradient_accumulation_steps=8 = 64" in problems[0]
    assert problems[0].endswith("set gradient_accumulation_steps=16")
    assert preflight.batch_problems(
        global_batch_size=4, num_generations=1, per_device_train_batch_size=4,
        gradient_accumulation_steps=1, processes=1,
    )[0].startswith("num_generations=1: GRPO compares samples")  # fmt: skip


def test_missing_model_and_dataset_are_both_reported(tmp_path):
    problems = problems_of(
        tiny_recipe(tmp_path / "no-model", tmp_path / "no-data", tmp_path / "run")
    )
    assert len(problems) == 2
    assert problems[0].startswith("model_name_or_path:") and "no-model" in problems[0]
    assert problems[1].startswith("dataset_path:") and "no-data" in problems[1]
    wrong_split = problems_of(
        tiny_recipe(tmp_path, tmp_path, tmp_path / "run", "dataset_split=validation")
    )
    assert any("model_name_or_path" in p for p in wrong_split)


def test_dataset_split_and_image_size_checks(training_data_dir, tmp_path):
    assert preflight.dataset_problems(str(training_data_dir), "train") == []
    (problem,) = preflight.dataset_problems(str(training_data_dir), "test")
    assert problem.startswith("dataset_split:") and "'test'" in problem
    from datasets import DatasetDict, load_from_disk

    small = load_from_disk(str(training_data_dir))["train"].map(
        lambda image: {"image": image.resize((420, 420))}, input_columns="image"
    )
    DatasetDict({"train": small}).save_to_disk(str(tmp_path / "small"))
    (problem,) = preflight.dataset_problems(str(tmp_path / "small"), "train")
    assert "must be 840x840" in problem and "420x420" in problem


def test_a_processor_that_resizes_the_image_or_a_length_limit_that_cuts_it(tiny_qwen_dir, tmp_path):
    from transformers import AutoConfig, AutoProcessor

    from segzero_model.reasoning.prompts import build_messages

    prompt = build_messages("the cup")
    processor = AutoProcessor.from_pretrained(tiny_qwen_dir)
    config = AutoConfig.from_pretrained(tiny_qwen_dir)
    assert preflight.prompt_problems(processor, config, prompt, max_completion_length=1024) == []
    (cut,) = preflight.prompt_problems(
        processor, config, prompt, max_completion_length=1024, vllm_max_model_length=1500
    )
    assert "image included" in cut and "> vllm_max_model_length=1500" in cut
    prompt_tokens = int(cut.split(" tokens")[0].split()[-1])
    assert prompt_tokens > 900  # the 840x840 image alone is 900 tokens

    shutil.copytree(tiny_qwen_dir, tmp_path / "model")
    preprocessor = tmp_path / "model" / "preprocessor_config.json"
    if not preprocessor.exists():
        preprocessor = tmp_path / "model" / "processor_config.json"
    data = json.loads(preprocessor.read_text())
    section = data.get("image_processor", data)
    section["max_pixels"] = 448 * 448
    section.setdefault("size", {})
    section["size"]["longest_edge"] = 448 * 448
    preprocessor.write_text(json.dumps(data))
    shrunk = AutoProcessor.from_pretrained(tmp_path / "model")
    (resized,) = preflight.prompt_problems(shrunk, config, prompt, max_completion_length=8)
    assert "resizes the 840x840 image" in resized and "max_pixels >= 705600" in resized


def test_a_family_image_size_the_processor_would_resize_is_refused(
    tiny_qwen_dir, training_data_dir, tmp_path
):
    """The family's image size, not 840, is what the processor must keep and what the token
    count is taken at."""
    family = tmp_path / "odd.yaml"
    family.write_text("prompt: 'Find {question}.'\nanswer: single\nframe: absolute\n")
    with family.open("a") as file:
        file.write("image_size: 850\n")
    recipe = tiny_recipe(tiny_qwen_dir, training_data_dir, tmp_path / "r", f"model_family={family}")
    (size, data) = problems_of(recipe)
    assert size.startswith("model_family: image size 850 would be resized by the processor")
    assert "multiples of 28" in size
    assert data.startswith("dataset_path: images must be 850x850")

    from transformers import AutoConfig, AutoProcessor

    from segzero_model.reasoning.prompts import build_messages

    processor = AutoProcessor.from_pretrained(tiny_qwen_dir)
    assert "e.g. 840" in preflight.image_size_problems(processor, 850)[0]
    config = AutoConfig.from_pretrained(tiny_qwen_dir)
    (small,) = preflight.prompt_problems(
        processor, config, build_messages("x"), max_completion_length=8,
        vllm_max_model_length=10, image_size=560,
    )  # fmt: skip
    assert 400 < int(small.split(" tokens")[0].split()[-1]) < 900  # 560x560: 400 image tokens


def test_deepspeed_configs_are_checked_against_the_model_and_batch():
    common = dict(per_device_train_batch_size=2, gradient_accumulation_steps=8, processes=8)
    for name in ("zero2.json", "zero3.json"):
        assert (
            preflight.deepspeed_problems(
                str(CONFIGS / name), dtype="bfloat16", bf16=True, fp16=False, **common
            )
            == []
        )
    mismatched = {
        "zero_optimization": {"stage": 1},
        "fp16": {"enabled": True},
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": "auto",
        "train_batch_size": 128,
    }
    problems = preflight.deepspeed_problems(
        mismatched, dtype="bfloat16", bf16=True, fp16=False, **common
    )
    assert len(problems) == 3
    assert "stage is 1" in problems[0]
    assert "enables fp16 but the model is loaded as dtype=bfloat16" in problems[1]
    assert "train_micro_batch_size_per_gpu=4 in the config but the trainer uses 2" in problems[2]
    (missing,) = preflight.deepspeed_problems(
        "nowhere.json", dtype="bfloat16", bf16=True, fp16=False, **common
    )
    assert "nowhere.json does not exist" in missing
    (fp32,) = preflight.deepspeed_problems(
        {"zero_optimization": {"stage": 3}, "bf16": {"enabled": True}},
        dtype="float32", bf16=False, fp16=False, **common,
    )  # fmt: skip
    assert "enables bf16 but the model is loaded as dtype=float32" in fp32


def test_16_bit_weights_need_deepspeed_and_old_names_clash_with_new(
    tiny_qwen_dir, training_data_dir, tmp_path
):
    problems = problems_of(
        tiny_recipe(
            tiny_qwen_dir,
            training_data_dir,
            tmp_path / "run",
            "dtype=bfloat16",
            "gradient_checkpointing=true",
            "activation_checkpointing=true",
            'model_init_kwargs={"dtype": "float16"}',
        )  # fmt: skip
    )
    assert len(problems) == 3, problems
    assert problems[0].startswith("dtype=bfloat16 without deepspeed or fsdp")
    assert "set deepspeed=training/configs/zero2.json" in problems[0]
    assert "gradient_checkpointing (its deprecated name) would be ignored" in problems[1]
    assert problems[2].startswith("model_init_kwargs: set dtype as its own key")


def test_output_dir_with_checkpoints_needs_resume(tmp_path):
    (tmp_path / "checkpoint-2").mkdir()
    (tmp_path / "checkpoint-10").mkdir()
    (problem,) = preflight.output_dir_problems(str(tmp_path), None)
    assert "latest checkpoint-10" in problem and "resume_from_checkpoint=true" in problem
    assert preflight.output_dir_problems(str(tmp_path), "true") == []
    (nothing,) = preflight.output_dir_problems(str(tmp_path / "new"), "true")
    assert "holds no checkpoint-N" in nothing


def test_tiny_and_a_model_are_not_both_chosen(training_data_dir, tmp_path):
    (problem,) = problems_of(
        tiny_recipe("some/model", training_data_dir, tmp_path / "run", "--tiny")
    )
    assert problem.startswith("tiny=true trains the built-in tiny model")
    assert preflight.tiny_problems(True, {"dataset_path"}) == []


def test_sft_example_batches_name_the_accumulation_that_fits():
    assert preflight.example_batch_problems(None, 2, 1, 8) == []
    assert preflight.example_batch_problems(16, 2, 1, 8) == []
    (problem,) = preflight.example_batch_problems(16, 2, 1, 4)
    assert problem.endswith("= 8; set gradient_accumulation_steps=2")
