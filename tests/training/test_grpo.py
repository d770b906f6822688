"""training/grpo.py: recipe parsing, every pre-flight check, and real GRPO steps on the tiny
Qwen2.5-VL (CPU) whose checkpoint resumes and then loads in `segzero infer`."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import infer_trained, tiny_recipe

from segzero_model.reasoning.prompts import RECIPE_FILE
from segzero_training import grpo, preflight
from segzero_training.recipe import RecipeError

REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "training" / "configs"


# --------------------------------------------------------------------------- command line


def run(*argv: str | os.PathLike, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """`python ARGV...` as a user types it (the installed packages, no PYTHONPATH)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def test_help_lists_every_key_with_its_help():
    fields = [
        field
        for cls in (grpo.SegZeroArguments, grpo.SegZeroGRPOConfig)
        for field in dataclasses.fields(cls)
        if field.init
    ]
    assert all(field.metadata.get("help") for field in fields), "a field without help text"
    done = run("training/grpo.py", "--help")  # as a script, as documented
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: grpo.py [--config FILE]")
    for field in fields:
        assert f"--{field.name}" in done.stdout, field.name
    for text in ("--check", "KL coefficient", "The initial learning rate for"):
        assert text in done.stdout, text


def test_the_quick_start_smoke_run(tiny_cache, tmp_path, monkeypatch, capsys):
    """The documented sequence (README, docs/training.md): synthetic data, then the tiny recipe,
    from the folder it is typed in (in this process: `--help` above runs the script itself)."""
    from segzero_training import synthetic

    monkeypatch.chdir(tmp_path)
    assert synthetic.main(["--output", "data/synthetic"]) == 0
    assert "wrote data/synthetic: 8 train, 4 test rows" in capsys.readouterr().out
    config = str(CONFIGS / "smoke.yaml")
    assert grpo.main(["--config", config, "--max_steps", "4"]) == 0
    output = tmp_path / "runs" / "smoke"
    logs = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [log["step"] for log in logs if "reward" in log] == [1, 2, 3, 4]
    (validated,) = [log for log in logs if "eval_box_iou" in log]  # every 4 steps
    assert validated["step"] == 4 and validated["eval_samples"] == 4
    best = json.loads((output / RECIPE_FILE).read_text())["best_checkpoint"]
    assert best["checkpoint"].endswith("checkpoint-4")  # the only validated step
    assert all(log["rewards/strict_format_reward/mean"] >= 0 for log in logs if "reward" in log)
    assert (output / "checkpoint-2").is_dir() and (output / "model.safetensors").is_file()
    recipe = json.loads((output / RECIPE_FILE).read_text())
    assert recipe["tiny"] is True and recipe["steps"] == 4
    assert Path(recipe["base_model"]).name == "reasoner"  # the tiny model's directory

    from segzero_training.evaluate import main as evaluate

    argv = "--tiny --dataset data/synthetic --split test --output-dir runs/smoke-eval".split()
    assert evaluate([*argv, "--device", "cpu"]) == 0  # the README's third command
    summary = json.loads((tmp_path / "runs" / "smoke-eval" / "summary.json").read_text())
    assert summary["count"] == 4 and summary["dataset"]["layout"] == "training"


# --------------------------------------------------------------------------- recipe files


@pytest.mark.parametrize("recipe", ["seg_zero_3b.yaml", "seg_zero_7b.yaml"])
def test_released_recipe_parses_with_the_papers_settings(
    recipe, tiny_qwen_dir, training_data_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(preflight, "world_size", lambda: 8)  # the recipe is written for 8 GPUs
    args, config, check_only = grpo.parse_and_check(
        [
            "--config",
            str(CONFIGS / recipe),
            f"model_name_or_path={tiny_qwen_dir}",
            f"dataset_path={training_data_dir}",
            f"output_dir={tmp_path / 'run'}",
            "use_cpu=true",  # bf16 on this GPU-less machine
            "--check",
        ]
    )
    assert check_only
    assert args.reward_names() == (
        "thinking_format", "strict_format", "box_iou", "box_l1", "points",
    )  # fmt: skip
    assert (config.learning_rate, config.weight_decay, config.beta) == (1e-6, 0.01, 0.005)
    assert (config.num_generations, config.temperature, config.max_completion_length) == (
        8, 1.0, 1024,
    )  # fmt: skip
    assert config.bf16 and config.gradient_checkpointing and args.dtype == "bfloat16"
    assert config.deepspeed.endswith("zero3.json")
    # 16 prompts x 8 samples = per device x 8 GPUs x accumulation steps
    assert config.per_device_train_batch_size * 8 * config.gradient_accumulation_steps == 16 * 8


def test_a_family_that_does_not_serve_the_model_is_refused(
    tiny_qwen_dir, training_data_dir, tmp_path
):
    with pytest.raises(RecipeError) as caught:
        grpo.parse_and_check(
            tiny_recipe(tiny_qwen_dir, training_data_dir, tmp_path / "r", "model_family=qwen3_vl")
        )
    (problem,) = caught.value.problems
    assert problem.startswith("model_family: model family 'qwen3_vl' serves")


def test_a_family_file_gives_the_training_prompt(tiny_qwen_dir, training_data_dir, tmp_path):
    """A single-object, pixel-frame family (a user's .yaml) trains with its own prompt, and the
    saved recipe names the file so the checkpoint is asked the same way."""
    family = tmp_path / "mine.yaml"
    family.write_text(
        "prompt: \"Find '{question}'. Answer in <answer> </answer> tags.\"\n"
        "answer: single\nframe: absolute\nimage_size: 840\nquestion: seg_zero\n"
    )
    args, config, _ = grpo.parse_and_check(
        tiny_recipe(tiny_qwen_dir, training_data_dir, tmp_path / "run", f"model_family={family}")
    )
    trainer = grpo.build_trainer(args, config)
    problem = trainer.train_dataset[0]["problem"]
    text = trainer.train_dataset[0]["prompt"][0]["content"][1]["text"]
    assert text == f"Find '{problem.lower().strip('.')}'. Answer in <answer> </answer> tags."
    assert args.family_record() == str(family.resolve())


def test_defaults_in_code_are_the_papers():
    config = grpo.SegZeroGRPOConfig(output_dir="x", use_cpu=True, bf16=False)
    assert (config.learning_rate, config.weight_decay, config.beta) == (1e-6, 0.01, 0.005)
    assert (config.num_generations, config.max_completion_length) == (8, 1024)
    args = grpo.SegZeroArguments()
    assert args.model_name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert (args.global_batch_size, args.thinking, args.answer) == (16, True, "box_points")


def test_no_cot_box_only_recipe_builds_prompts_and_rewards(
    tiny_qwen_dir, training_data_dir, tmp_path
):
    args, config, _ = grpo.parse_and_check(
        tiny_recipe(
            tiny_qwen_dir,
            training_data_dir,
            tmp_path / "run",
            "thinking=false",
            "answer=box",
            "format_reward=soft",
            "accuracy_reward=soft",
            "freeze_vision_tower=true",
        )  # fmt: skip
    )
    trainer = grpo.build_trainer(args, config)
    names = [fn.__name__ for fn in trainer.reward_funcs]
    assert names == ["soft_box_format_reward", "soft_box_iou_reward", "soft_box_l1_reward"]
    text = trainer.train_dataset[0]["prompt"][0]["content"][1]["text"]
    assert "<think>" not in text and "points" not in text and "{'bbox': [10,100,200,210]}" in text
    trainable = {name: p.requires_grad for name, p in trainer.model.named_parameters()}
    assert not any(on for name, on in trainable.items() if ".visual." in name)
    assert all(on for name, on in trainable.items() if ".visual." not in name)


def test_the_json_decoding_key_reaches_the_rewards_the_trainer_runs(
    tiny_qwen_dir, training_data_dir, tmp_path
):
    """docs/training.md: json_decoding=tolerant reads a single-quoted answer. The trainer's own
    rewards, given a row of its own dataset as TRL gives it (every column but the prompt, one
    entry per completion), score that answer; without the key they score it 0, as released."""
    text = (
        "<think>t</think><answer>{'bbox': [1,2,3,4], 'points_1': [1,2], 'points_2': [2,3]}</answer>"
    )
    completions = [[{"role": "assistant", "content": text}]]

    def format_score(*extra: str) -> float:
        recipe = tiny_recipe(tiny_qwen_dir, training_data_dir, tmp_path / "run", *extra)
        args, config, _ = grpo.parse_and_check(recipe)
        trainer = grpo.build_trainer(args, config)
        row = trainer.train_dataset[0]
        columns = {key: [value] for key, value in row.items() if key != "prompt"}
        (reward,) = [fn for fn in trainer.reward_funcs if fn.__name__ == "strict_format_reward"]
        (score,) = reward(prompts=[row["prompt"]], completions=completions, **columns)
        return score

    assert format_score("json_decoding=tolerant") == 1.0
    assert format_score() == 0.0


# --------------------------------------------------------------------------- real training


def test_two_steps_resume_and_the_result_loads_in_segzero_infer(
    tiny_qwen_dir, tiny_sam2_dir, training_data_dir, tmp_path, capsys
):
    output = tmp_path / "run"
    assert grpo.main(tiny_recipe(tiny_qwen_dir, training_data_dir, output, "max_steps=2")) == 0
    assert {"checkpoint-1", "checkpoint-2"} <= {p.name for p in output.iterdir()}
    logs = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [log for log in logs if "reward" in log]
    assert [log["step"] for log in steps] == [1, 2]
    for log in steps:  # every reward component and the completion length, every step
        for name in ("thinking_format", "strict_format", "box_iou", "box_l1", "points"):
            assert 0.0 <= log[f"rewards/{name}_reward/mean"] <= 1.0
        assert 1 <= log["completions/mean_length"] <= 8
    recipe = json.loads((output / RECIPE_FILE).read_text())
    assert recipe["method"] == "grpo" and recipe["steps"] == 2 and recipe["thinking"] is True
    assert recipe["family"] == "seg_zero"  # read back by family_for_checkpoint
    from segzero_model.reasoning.families import family_for_checkpoint

    assert family_for_checkpoint(output).name == "seg_zero"

    # A second run on the same output_dir must say how to continue ...
    again = tiny_recipe(tiny_qwen_dir, training_data_dir, output, "max_steps=3")
    assert grpo.main(again) == 2
    assert "resume_from_checkpoint=true" in capsys.readouterr().err
    # ... and resumes from checkpoint-2 (one more step, not three).
    assert grpo.main([*again, "resume_from_checkpoint=true"]) == 0
    logs = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [log["step"] for log in logs if "reward" in log] == [1, 2, 3]
    assert json.loads((output / RECIPE_FILE).read_text())["steps"] == 3

    infer_trained(output, tiny_sam2_dir, tmp_path / "result.json", family="seg_zero")


@pytest.mark.slow
@pytest.mark.parametrize("zero", ["zero2.json", "zero3.json"])
def test_a_step_under_deepspeed_zero_with_the_shipped_configs(
    zero, tiny_qwen_dir, training_data_dir, tmp_path
):
    """The shipped ZeRO configs drive a real DeepSpeed engine (CPU accelerator, one process,
    as `accelerate launch` would set it up), validation answers through it (ZeRO-3 gathers the
    weights to generate), and the ZeRO-3 save gathers full weights."""
    from segzero_model.reasoning.local import Reasoner

    repo = Path(__file__).resolve().parents[2]
    output = tmp_path / "run"
    env = dict(os.environ, MASTER_ADDR="127.0.0.1", RANK="0")
    env.update(LOCAL_RANK="0", WORLD_SIZE="1", MASTER_PORT=str(29500 + os.getpid() % 400))
    validation = [f"eval_dataset_path={training_data_dir}", "eval_dataset_split=train"]
    validation += ["eval_samples=2", "eval_steps=1"]
    argv = tiny_recipe(tiny_qwen_dir, training_data_dir, output, "max_steps=1", *validation)
    done = subprocess.run(
        [sys.executable, str(repo / "training" / "grpo.py"), *argv, f"deepspeed={CONFIGS / zero}"],
        env=env, cwd=repo, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DeepSpeed" in done.stderr + done.stdout
    assert (output / "checkpoint-1").is_dir() and (output / "model.safetensors").is_file()
    logs = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [log["eval_samples"] for log in logs if "eval_samples" in log] == [2.0]
    reasoner = Reasoner.from_pretrained(output, device="cpu", max_new_tokens=4)
    assert reasoner.generate([np.zeros((48, 64, 3), np.uint8)], ["the cup"])[0].num_tokens >= 1
