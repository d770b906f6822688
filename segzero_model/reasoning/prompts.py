"""The Seg-Zero user prompt: by default byte-identical to the released checkpoints' training
prompt; variants for the paper's ablations (no thinking; box-only or points-only answers)."""

from __future__ import annotations

import os
from pathlib import Path

from segzero_model.reasoning.reply_format import (
    ANSWER_TAGS,
    BOX_KEY,
    DEFAULT_VARIANT,
    POINT_KEYS,
    STRICT_KEYS,
    THINK_TAGS,
    VARIANTS,
    check_variant,
    reply_text,
)

# The sentence that asks for the tags: with thinking, and for the answer alone.
THINKING_TAGS = (
    f"Output the thinking process in {' '.join(THINK_TAGS)} and final answer in "
    f"{' '.join(ANSWER_TAGS)} tags."
)
ANSWER_ONLY_TAGS = f"Output the final answer in {' '.join(ANSWER_TAGS)} tags."


def reply_shape(example: str, thinking: bool = True) -> str:
    """The reply the prompts show after "i.e., ": ``<think> thinking process here </think>``
    (with `thinking`) then ``<answer>{example}</answer>``."""
    return reply_text(example, " thinking process here " if thinking else None)


# The example answer's values; each variant's example shows its own keys
# (`reply_format.STRICT_KEYS`), written as the released example is: single quotes, no space
# inside the lists.
_EXAMPLE_VALUES = {
    BOX_KEY: (10, 100, 200, 210),
    POINT_KEYS[0]: (30, 110),
    POINT_KEYS[1]: (35, 180),
}


def example_answer(answer: str = DEFAULT_VARIANT) -> str:
    """The prompt's example JSON for the `answer` variant, e.g. ``{'bbox': [10,100,200,210]}``."""
    fields = (
        f"'{key}': [{','.join(str(v) for v in _EXAMPLE_VALUES[key])}]"
        for key, _ in STRICT_KEYS[check_variant(answer)]
    )
    return "{" + ", ".join(fields) + "}"


# The released example: ``{'bbox': [10,100,200,210], 'points_1': [30,110], 'points_2': [35,180]}``.
ANSWER_EXAMPLE = example_answer(DEFAULT_VARIANT)

# Sentences are joined with no space, exactly as in the released training code; "{question}"
# and "{answer}" are filled in by `str.format`.
PROMPT_TEMPLATE = (
    "Please find '{question}' with bbox and points."
    "Compare the difference between objects and find the most closely matched one."
    f"{THINKING_TAGS}"
    "Output the one bbox and points of two largest inscribed circles inside the interested object"
    " in JSON format."
    f"i.e., {reply_shape('{answer}')}"
)

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
# `reply_format.VARIANTS` (a variant without words fails here, at import).
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
    tags = THINKING_TAGS if thinking else ANSWER_ONLY_TAGS
    shape = reply_shape(example, thinking)
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
