"""benchmarks/grpo_learning.py runs end to end and writes what it promises. Whether the reward
rises is a benchmark fact (benchmarks/RESULTS.md), not checked here; that rewards vary within a
group from the first step, which the task is designed for, is.

The benchmark's guessing model is built once (about a minute on an idle 2-core CPU) into the
tiny-model cache (`$SEGZERO_CACHE`) and reused, like the tiny checkpoints of conftest.py; a
rougher, quicker one would not reliably vary, which is the property under test."""

from __future__ import annotations

import json
import random
import statistics

from benchmarks import grpo_learning


def test_the_guesses_it_is_taught_score_differently_on_every_reward():
    from segzero_model.rewards.registry import get_reward_functions, recipe_rewards

    rng = random.Random(0)
    guesses = [grpo_learning.guess_answer(rng) for _ in range(64)]
    solution = [grpo_learning.scene_row()["solution"]] * len(guesses)
    names = recipe_rewards(format="strict", accuracy="soft")
    for name, reward in zip(names, get_reward_functions(names), strict=True):
        scores = reward(guesses, solution=solution)
        assert statistics.pstdev(scores) > 0, name
    assert sum("<think>" in g for g in guesses) > len(guesses) / 2


def test_two_steps_write_the_curve_and_the_plot(tmp_path, capsys):
    output = tmp_path / "out"
    code = grpo_learning.main(
        [
            "--steps",
            "2",
            "--generations",
            "4",
            "--output-dir",
            str(output),
        ]  # fmt: skip
    )
    assert code == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.split()[:2] == ["step", "reward"])
    for column in ("thinking_for", "strict_forma", "box_iou", "box_l1", "points", "length"):
        assert column in header.split(), column
    assert "mean reward, first 2 steps" in printed and "grpo_learning.png" in printed

    curve = json.loads((output / "curve.json").read_text())
    assert [p["step"] for p in curve["curve"]] == [1, 2]
    assert curve["summary"]["steps"] == 2 and "first_mean_reward" in curve["summary"]
    first = curve["curve"][0]
    assert set(first["rewards"]) == {
        "thinking_format_reward", "strict_format_reward", "soft_box_iou_reward",
        "soft_box_l1_reward", "soft_points_reward",
    }  # fmt: skip
    # The design property: the samples of the very first group already score differently.
    assert first["reward_std"] > 0 and first["frac_reward_zero_std"] < 1
    assert (output / "grpo_learning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output / "metrics.jsonl").is_file()
