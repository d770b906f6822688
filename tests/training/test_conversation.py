"""training/conversation.py: training rows as the chat the reasoner later sends (GRPO prompts)
and the answer-only targets of the SFT baseline."""

import json

import pytest
from datasets import load_from_disk

from segzero_model.reasoning.prompts import build_messages
from segzero_training.conversation import answer_json, grpo_dataset, sft_dataset

SOLUTION = "<box>(35,60),(354,423)</box><points>(183,235),(200,300)</points>"


def test_answer_json_per_variant_with_integer_coordinates():
    assert json.loads(answer_json(SOLUTION)) == {
        "bbox": [35, 60, 354, 423],
        "points_1": [183, 235],
        "points_2": [200, 300],
    }
    assert json.loads(answer_json(SOLUTION, "box")) == {"bbox": [35, 60, 354, 423]}
    assert set(json.loads(answer_json(SOLUTION, "points"))) == {"points_1", "points_2"}
    with pytest.raises(ValueError, match="unknown answer variant 'mask'"):
        answer_json(SOLUTION, "mask")


def test_grpo_prompts_and_sft_pairs_are_built_from_the_rows(training_data_dir):
    rows = load_from_disk(str(training_data_dir))["train"]
    grpo = grpo_dataset(rows, thinking=False, answer="box")
    assert grpo[0]["prompt"] == build_messages(rows[0]["problem"], thinking=False, answer="box")
    assert grpo[0]["solution"] == rows[0]["solution"] and "image" in grpo.column_names
    sft = sft_dataset(rows)
    (turn,) = sft[1]["completion"]
    assert turn["role"] == "assistant"
    assert turn["content"][0]["text"] == f"<answer>{answer_json(rows[1]['solution'])}</answer>"
    assert sft[1]["prompt"] == build_messages(rows[1]["problem"], thinking=False)


def test_the_tolerant_json_switch_reaches_the_rewards(training_data_dir):
    """json_decoding=tolerant (a GRPO recipe key) becomes a column TRL passes to the rewards:
    a single-quoted answer then scores; by default it scores 0, as released."""
    from segzero_model.rewards.single_object import strict_format_reward
    from segzero_training.prepare_data import load_training_dataset

    rows = load_training_dataset(training_data_dir)
    tolerant = grpo_dataset(rows, json_decoding="tolerant")
    assert grpo_dataset(rows).column_names == [*rows.column_names, "prompt", "image_size"]
    completion = (
        "<think>t</think><answer>{'bbox': [1,2,3,4], 'points_1': [1,2], 'points_2': [2,3]}</answer>"
    )
    column = tolerant["json_decoding"][:1]
    assert strict_format_reward([completion], json_decoding=column) == [1.0]
    assert strict_format_reward([completion]) == [0.0]
