"""training/sft.py: two real SFTTrainer steps of the tiny Qwen2.5-VL on synthetic data (CPU),
then the saved checkpoint through `Reasoner` and `segzero infer`; the loss mask; bad recipes."""

import dataclasses
import json
import math
import shutil
from pathlib import Path

import pytest
from conftest import infer_trained

from segzero_training.recipe import parse_recipe, split_command_line
from segzero_training.sft import (
    SegZeroSFTConfig,
    SFTScriptArguments,
    build_parser,
    build_trainer,
    main,
    recipe_checks,
)

REPO = Path(__file__).resolve().parents[2]
YAML = REPO / "training" / "configs" / "sft_3b.yaml"


@pytest.fixture(scope="module")
def dataset_dir(training_data_dir):
    """Four synthetic rows in the released layout (the session's shared training data)."""
    return training_data_dir


def recipe(model_dir, dataset_dir, output_dir, *extra):
    """A CPU recipe of two steps of two examples: fp32, no DeepSpeed, tiny everything."""
    return [
        f"model_name_or_path={model_dir}",
        f"dataset_path={dataset_dir}",
        f"output_dir={output_dir}",
        "dtype=float32",
        "bf16=false",
        "use_cpu=true",
        "max_steps=2",
        "per_device_train_batch_size=2",
        "global_batch_size=2",
        "learning_rate=1e-4",
        "warmup_steps=0",
        "logging_steps=1",
        "save_steps=2",
        "report_to=none",
        "activation_checkpointing=true",  # as the recipe file (its old name warns)
        *extra,
    ]


@pytest.fixture(scope="module")
def trained(tiny_qwen_dir, dataset_dir, tmp_path_factory):
    """The output directory of one SFT run (shared: training is the slow part)."""
    output = tmp_path_factory.mktemp("sft-run") / "out"
    assert main(recipe(tiny_qwen_dir, dataset_dir, output)) == 0
    return output


def test_run_logs_a_finite_loss_and_saves_a_hugging_face_checkpoint(
    trained, dataset_dir, tiny_qwen_dir
):
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        assert (trained / name).is_file(), name
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        assert (trained / name).is_file(), name
    assert (trained / "processor_config.json").is_file() or (
        trained / "preprocessor_config.json"
    ).is_file()
    assert (trained / "checkpoint-2").is_dir()

    history = json.loads((trained / "trainer_state.json").read_text())["log_history"]
    losses = [entry["loss"] for entry in history if "loss" in entry]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)
    logged = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged if "loss" in entry] == [1, 2]

    from safetensors.torch import load_file

    before = load_file(Path(tiny_qwen_dir) / "model.safetensors")
    after = load_file(trained / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not before[name].equal(after[name]) for name in before)  # it did train

    made = json.loads((trained / "segzero_recipe.json").read_text())
    assert made["method"] == "sft" and made["thinking"] is False
    assert made["answer"] == "box_points" and made["steps"] == 2
    assert made["dataset_path"] == str(dataset_dir) and made["dataset_split"] == "train"
    assert Path(made["base_model"]).name == "reasoner"


def test_reasoner_loads_the_checkpoint_and_generates(trained):
    from PIL import Image

    from segzero_model.reasoning.local import Reasoner

    reasoner = Reasoner.from_pretrained(trained, device="cpu", max_new_tokens=8)
    (generation,) = reasoner.generate([Image.new("RGB", (64, 48), "red")], ["the red disk"])
    assert 1 <= generation.num_tokens <= 8 and isinstance(generation.text, str)


def test_segzero_infer_runs_the_checkpoint_with_sam2(trained, tiny_sam2_dir, tmp_path, capsys):
    infer_trained(trained, tiny_sam2_dir, tmp_path / "r.json", family="seg_zero")
    assert "status:" in capsys.readouterr().out


@pytest.mark.slow
def test_resume_continues_from_the_latest_checkpoint(trained, tiny_qwen_dir, dataset_dir, tmp_path):
    output = Path(shutil.copytree(trained, tmp_path / "out"))
    argv = recipe(tiny_qwen_dir, dataset_dir, output, "max_steps=3", "resume_from_checkpoint=true")
    assert main(argv) == 0
    history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    assert [entry["step"] for entry in history if "loss" in entry] == [1, 2, 3]
    # A restart would log steps 1, 2, 3 again after the first run's 1, 2: only step 3 is new.
    logged = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    assert [entry["step"] for entry in logged if "loss" in entry] == [1, 2, 3]
    assert json.loads((output / "segzero_recipe.json").read_text())["steps"] == 3


def test_labels_are_the_answer_tokens_only(tiny_qwen_dir, dataset_dir, tmp_path):
    parser = build_parser()
    command_line = split_command_line(recipe(tiny_qwen_dir, dataset_dir, tmp_path / "out"), parser)
    args, config, _ = parse_recipe(parser, command_line)
    assert config.max_length is None  # the default here: TRL's 1024 would cut these examples
    trainer = build_trainer(args, config)
    rows = [dict(trainer.train_dataset[i]) for i in range(2)]
    answers = [row["completion"][0]["content"][0]["text"] for row in rows]
    batch = trainer.data_collator(rows)

    tokenizer = trainer.processing_class.tokenizer
    image_token = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for input_ids, labels, answer in zip(batch["input_ids"], batch["labels"], answers, strict=True):
        trained_positions = (labels != -100).nonzero().flatten()
        assert trained_positions.numel() > 0
        # One contiguous span at the end of the sequence (before right padding) ...
        first, last = int(trained_positions[0]), int(trained_positions[-1])
        assert trained_positions.numel() == last - first + 1
        assert (labels[trained_positions] == input_ids[trained_positions]).all()
        # ... holding exactly the answer and the end of the turn; prompt and image untrained.
        assert tokenizer.decode(input_ids[first : last + 1]) == f"{answer}<|im_end|>\n"
        assert (input_ids[:first] == image_token).sum() == 900
        assert (labels[:first] == -100).all()


def test_the_recipe_file_parses(dataset_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the recipe names training/configs/zero2.json relative to the root
    parser = build_parser()
    command_line = split_command_line(
        [
            "--config",
            str(YAML),
            "--dataset_path",
            str(dataset_dir),
            f"--output_dir={tmp_path / 'o'}",
            "--use_cpu",  # else bf16=true is refused on a machine without a GPU
        ],
        parser,
    )
    args, config, given = parse_recipe(parser, command_line, checks=[_per_8_gpus(recipe_checks)])
    assert args.model_name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert (args.answer, args.dtype, args.global_batch_size) == ("box_points", "bfloat16", 16)
    assert config.learning_rate == 1e-5 and config.num_train_epochs == 1
    assert config.bf16 and config.gradient_checkpointing and config.max_length is None
    assert config.deepspeed == "training/configs/zero2.json"
    assert config.logging_steps == 1 and not config.report_to
    assert "max_length" in given


def _per_8_gpus(check):
    """`check` as if launched on the 8 GPUs the recipe's batch sizes are written for."""

    def checked(values, given):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("WORLD_SIZE", "8")
            return check(values, given)

    return checked


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (["learning_rat=1e-5"], "unknown key 'learning_rat'; did you mean learning_rate"),
        (["dataset_path=/no/such/data"], "dataset_path"),
        (["answer=mask"], "answer='mask' is not one of"),
        (["global_batch_size=16"], "set gradient_accumulation_steps=8"),
        (["dtype=bfloat16"], "dtype=bfloat16 without deepspeed"),
        (["max_length=200"], "max_length=200 would cut the examples"),
        (["gradient_checkpointing=false"], "gradient_checkpointing (its deprecated name) would"),
    ],
)
def test_bad_recipe_exits_2_naming_the_key(
    tiny_qwen_dir, dataset_dir, tmp_path, capsys, extra, expected
):
    argv = recipe(tiny_qwen_dir, dataset_dir, tmp_path / "out", *extra)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_rerun_on_a_finished_run_needs_resume(trained, tiny_qwen_dir, dataset_dir, capsys):
    assert main(recipe(tiny_qwen_dir, dataset_dir, trained)) == 2
    assert "resume_from_checkpoint=true" in capsys.readouterr().err


def test_check_flag_runs_the_checks_only(tiny_qwen_dir, dataset_dir, tmp_path, capsys):
    assert main([*recipe(tiny_qwen_dir, dataset_dir, tmp_path / "out"), "--check"]) == 0
    assert "pre-flight checks passed" in capsys.readouterr().out
    assert not (tmp_path / "out").exists()


def test_help_lists_every_key_with_its_help(capsys):
    """In this process (grpo.py's --help test runs a training script as a script)."""
    fields = [
        field
        for cls in (SFTScriptArguments, SegZeroSFTConfig)
        for field in dataclasses.fields(cls)
        if field.init
    ]
    assert all(field.metadata.get("help") for field in fields), "a field without help text"
    with pytest.raises(SystemExit) as exited:
        main(["--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: sft.py [--config FILE]")
    for field in fields:
        assert f"--{field.name}" in out, field.name
    assert "Token limit per example" in out and "--check" in out
