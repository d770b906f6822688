"""training/recipe.py: TRL's command-line convention (--config FILE, --key value, --help) with
every problem of the recipe collected and reported at once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest
from trl import GRPOConfig

from segzero_training import grpo
from segzero_training.recipe import (
    RecipeError,
    new_default,
    parse_recipe,
    recipe_parser,
    split_command_line,
)


@dataclass
class Example:
    a: int = field(default=0, metadata={"help": "an integer"})
    b: float = 1.0
    c: str = "x"
    on: bool = False
    kept: bool = True
    mode: Literal["fast", "slow"] = "fast"
    weights: list[float] = field(default_factory=lambda: [1.0])


def example_parser():
    return recipe_parser((Example,), prog="example.py", flags={"--check": "checks only"})


def problems_of(argv: list[str]) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        grpo.parse_and_check(argv)
    return caught.value.problems


def test_every_problem_is_reported_at_once_naming_what_to_change(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("lerning_rate: 1e-6\nmax_prompt_length: 1024\nnum_generations: 8\n")
    problems = problems_of(
        ["--config", str(recipe), "temperature=hot", "format_reward=loose", "beta=0.01"]
    )
    text = "\n".join(problems)
    assert "unknown key 'lerning_rate'; did you mean learning_rate" in text
    assert "'max_prompt_length' is not used here" in text and "never truncates" in text
    assert "temperature='hot' is not a valid value" in text
    assert "format_reward='loose' is not one of strict, soft" in text
    assert len(problems) == 4


def test_unknown_flags_and_missing_values_are_reported_with_the_rest():
    problems = problems_of(["--temprature", "0.7", "--beta", "--answer", "mask", "lonely"])
    assert problems[0].startswith(
        "command line: unknown key 'temprature'; did you mean temperature"
    )
    assert problems[1:] == [
        "--beta needs a value: --beta VALUE (or beta=VALUE)",
        "cannot read 'lonely': overrides are written key=value",
        "command line: answer='mask' is not one of box_points, box, points",
    ]


def test_command_line_spellings():
    parser = example_parser()
    line = split_command_line(
        ["--config", "r.yaml", "a=1", "--b", "2", "--c=3", "--check", "--on", "--no_kept"],
        parser,
    )
    assert line.overrides == {"a": "1", "b": "2", "c": "3", "on": True, "kept": False}
    assert line.flags == ("--check",) and line.config == Path("r.yaml") and not line.problems
    line = split_command_line(["--on", "false", "--weights", "0.5", "2", "--mode=slow"], parser)
    assert line.overrides == {"on": "false", "weights": ["0.5", "2"], "mode": "slow"}
    assert split_command_line(["--help"], parser).help and split_command_line(["-h"], parser).help
    (problem,) = split_command_line(["lonely"], parser).problems
    assert problem == "cannot read 'lonely': overrides are written key=value"
    (problem,) = split_command_line(["--check=yes"], parser).problems
    assert problem == "--check takes no value (got 'yes')"


def test_yaml_then_command_line_values_are_typed_and_env_is_set(tmp_path, monkeypatch):
    monkeypatch.delenv("SEGZERO_RECIPE_TEST", raising=False)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("a: 5\nb: 1e-6\nmode: slow\nenv:\n  SEGZERO_RECIPE_TEST: 7\n")
    parser = example_parser()
    command_line = split_command_line(["--config", str(recipe), "--a", "6", "--no_kept"], parser)
    example, given = parse_recipe(parser, command_line)
    assert example == Example(a=6, b=1e-6, mode="slow", kept=False)
    assert given == {"a", "b", "mode", "kept"}
    assert os.environ["SEGZERO_RECIPE_TEST"] == "7"  # TrlParser's env: section
    recipe.write_text("weights: [x]\n")
    with pytest.raises(RecipeError) as caught:
        parse_recipe(parser, split_command_line(["--config", str(recipe), "b=z"], parser))
    assert [problem.split(":")[0] for problem in caught.value.problems] == [
        str(recipe),
        "command line",
    ]


def test_help_lists_the_fields_switches_and_defaults(capsys):
    example_parser().print_help()
    text = capsys.readouterr().out
    assert text.startswith("usage: example.py [--config FILE] [--help]")
    for name in ("--config FILE", "--check", "--a A", "--no_kept", "--weights"):
        assert name in text, name
    assert "an integer (default: 0)" in text


def test_a_new_default_keeps_trls_help_text():
    kept = new_default(GRPOConfig, "learning_rate", 1e-6)
    assert kept.default == 1e-6
    assert (
        kept.metadata["help"] == GRPOConfig.__dataclass_fields__["learning_rate"].metadata["help"]
    )
    assert new_default(GRPOConfig, "beta", 0.1, help="KL").metadata["help"] == "KL"


def test_main_exits_2_with_the_problems_on_stderr(tmp_path, capsys):
    assert grpo.main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml' does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "recipe",
    ["seg_zero_3b.yaml", "seg_zero_7b.yaml", "qwen3_vl_4b.yaml", "smoke.yaml", "lora_3b_24gb.yaml"],
)
def test_shipped_grpo_recipes_hold_only_known_keys_and_valid_values(recipe):
    """A dry parse (no model or data loaded): every key is a field, every value its type."""
    from segzero_training.recipe import load_recipe_file

    parser = grpo.build_parser()
    config = Path(__file__).resolve().parents[2] / "training" / "configs" / recipe
    line = split_command_line(["--config", str(config), "use_cpu=true"], parser)  # bf16: no GPU
    args, _, given = parse_recipe(parser, line)
    assert set(load_recipe_file(config)) | {"use_cpu"} == given
    if recipe == "qwen3_vl_4b.yaml":
        assert args.model_family == "qwen3_vl"
        assert args.model_name_or_path == "Qwen/Qwen3-VL-4B-Instruct"
    if recipe == "lora_3b_24gb.yaml":
        assert args.lora and not args.load_in_4bit
        assert args.model_name_or_path == "Qwen/Qwen2.5-VL-3B-Instruct"
