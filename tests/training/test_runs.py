"""training/runs.py: what the GRPO and SFT scripts share around their trainer (the model
arguments, the tiny switch, resuming, the metrics file)."""

import json
from types import SimpleNamespace

from transformers import TrainerControl, TrainerState, TrainingArguments

from segzero_training.runs import (
    METRICS_FILE,
    ModelDataArguments,
    leave_process_group,
    metrics_callback,
    resume_argument,
)


def test_the_recipes_dtype_and_attention_go_into_model_init_kwargs():
    args = ModelDataArguments(dtype="float32", attn_implementation="sdpa")
    assert args.model_init_kwargs({"revision": "main", "dtype": "bfloat16"}) == {
        "revision": "main",
        "dtype": "float32",
        "attn_implementation": "sdpa",
    }
    assert ModelDataArguments().model_init_kwargs(None) == {"dtype": "bfloat16"}


def test_resume_argument_is_what_trainer_train_takes():
    checkpoint = "runs/x/checkpoint-4"
    cases = [(None, None), ("", None), ("false", None), ("True", True), ("true", True)]
    for value, expected in [*cases, (checkpoint, checkpoint)]:
        assert resume_argument(SimpleNamespace(resume_from_checkpoint=value)) == expected, value


def test_tiny_points_the_model_at_the_built_in_checkpoint(tiny_qwen_dir):
    args = ModelDataArguments(tiny=True)
    args.use_tiny_model()
    assert args.model_name_or_path == str(tiny_qwen_dir)
    untouched = ModelDataArguments()
    untouched.use_tiny_model()
    assert untouched.model_name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct"


def test_metrics_are_appended_one_json_line_per_log_with_its_step(tmp_path):
    callback = metrics_callback(str(tmp_path / "run"))
    args, control = TrainingArguments(output_dir=str(tmp_path)), TrainerControl()
    for step, loss in ((1, 0.5), (2, 0.25)):
        callback.on_log(args, TrainerState(global_step=step), control, logs={"loss": loss})
    callback.on_log(args, TrainerState(global_step=3), control, logs={})  # nothing to write
    lines = (tmp_path / "run" / METRICS_FILE).read_text().splitlines()
    assert [json.loads(line) for line in lines] == [
        {"step": 1, "loss": 0.5},
        {"step": 2, "loss": 0.25},
    ]


def test_the_process_group_is_left_before_exit(tmp_path):
    """A one-process gloo group, as torchrun makes one per rank: left, and leaving twice (or
    without torchrun) does nothing."""
    import torch.distributed as dist

    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1
    )
    try:
        assert dist.is_initialized()
        leave_process_group()
        assert not dist.is_initialized()
        leave_process_group()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
