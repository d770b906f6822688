"""The Seg-Zero user prompt: by default byte-identical to the released checkpoints' training
prompt; variants for the paper's ablations (no thinking; box-only or points-only answers)."""

from __future__ import annotations

import os
from pathlib import Path

from segzero_model.reasoning.reply_format import (
    DEFAULT_VARIANT,
    STRICT_KEYS,
    VARIANTS,
    check_variant,
)

ANSWER_EXAMPLE = "{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}"

# Sentences are joined with no space, exactly as in the released training code.
PROMPT_TEMPLATE = (
    "Please find '{question}' with bbox and points."
    "Compare the difference between objects and find the most closely matched one."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    "Output the one bbox and points of two largest inscribed circles inside the interested object"
    " in JSON format."
    "i.e., <think> thinking process here </think><answer>{answer}</answer>"
)

THINKING_TAGS = (
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
)
ANSWER_ONLY_TAGS = "Output the final answer in <answer> </answer> tags."

# The example answer's values; each variant's example shows its own keys (`reply.STRICT_KEYS`),
# written as the released example is: single quotes, no space inside the lists.
_EXAMPLE_VALUES = {"bbox": (10, 100, 200, 210), "points_1": (30, 110), "points_2": (35, 180)}

# What the model is asked for, per answer variant (Table 2 of the paper): the words in the first
# and fourth sentences.
_VARIANT_WORDS: dict[str, tuple[str, str]] = {
    "box_points": (
        "bbox and points",
        "the one bbox and points of two largest inscribed circles",
    ),
    "box": ("bbox", "the one bbox"),
    "points": ("points", "the points of two largest inscribed circles"),
}


def example_answer(answer: str = DEFAULT_VARIANT) -> str:
    """The prompt's example JSON for the `answer` variant, e.g. ``{'bbox': [10,100,200,210]}``."""
    fields = (
        f"'{key}': [{','.join(str(v) for v in _EXAMPLE_VALUES[key])}]"
        for key, _ in STRICT_KEYS[check_variant(answer)]
    )
    return "{" + ", ".join(fields) + "}"


# Per variant: (what to find, what to output, the example answer), for every variant of
# `reply.VARIANTS` (a variant without words fails here, at import).
ANSWER_VARIANTS: dict[str, tuple[str, str, str]] = {
    name: (*_VARIANT_WORDS[name], example_answer(name)) for name in VARIANTS
}


def normalize_question(query: str) -> str:
    """Lower-case and strip '.' from both ends, as the released code did at training time."""
    return query.lower().strip(".")


def build_prompt(query: str, *, thinking: bool = True, answer: str = DEFAULT_VARIANT) -> str:
    """Return the user text for `query` (the chat template is applied by the reasoner).

    The defaults give the released prompt. `thinking=False` asks for the answer alone (the
    paper's RL-without-CoT and SFT rows); `answer` is "box_points", "box" or "points".
    """
    check_variant(answer)
    if thinking and answer == DEFAULT_VARIANT:
        return PROMPT_TEMPLATE.format(question=normalize_question(query), answer=ANSWER_EXAMPLE)
    wanted, output, example = ANSWER_VARIANTS[answer]
    if thinking:
        tags = THINKING_TAGS
        shape = f"<think> thinking process here </think><answer>{example}</answer>"
    else:
        tags = ANSWER_ONLY_TAGS
        shape = f"<answer>{example}</answer>"
    return (
        f"Please find '{normalize_question(query)}' with {wanted}."
        "Compare the difference between objects and find the most closely matched one."
        f"{tags}"
        f"Output {output} inside the interested object in JSON format."
        f"i.e., {shape}"
    )


def build_messages(
    query: str, *, thinking: bool = True, answer: str = DEFAULT_VARIANT
) -> list[dict]:
    """The chat the model gets: one user turn, the image then `build_prompt`'s text. Inference
    and training both build it here, so the model is trained on what it is later asked."""
    text = build_prompt(query, thinking=thinking, answer=answer)
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


# Written by training/grpo.py and training/sft.py beside a trained model: how it was prompted.
RECIPE_FILE = "segzero_recipe.json"


def checkpoint_prompt_variant(checkpoint_dir: str | os.PathLike) -> dict:
    """``{"thinking": bool, "answer": str}`` a checkpoint was trained with, from its recipe
    file; the released prompt's values for a checkpoint without one (the released models)."""
    import json

    variant = {"thinking": True, "answer": DEFAULT_VARIANT}
    path = Path(checkpoint_dir) / RECIPE_FILE
    if path.is_file():
        recipe = json.loads(path.read_text())
        variant.update({key: recipe[key] for key in variant if key in recipe})
    if variant["answer"] not in ANSWER_VARIANTS or not isinstance(variant["thinking"], bool):
        raise ValueError(f"{path}: unknown prompt variant {variant}")
    return variant
