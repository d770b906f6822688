"""Training rows (the released ``refCOCOg_9k_840`` layout) as TRL conversational examples.

GRPO and SFT both build their examples here, from `segzero_model.reasoning.prompts.build_messages`,
so a model is trained on exactly the chat the reasoner later sends it:

- GRPO: ``prompt`` (the user turn: image + prompt text), ``image`` (the family's square image),
  ``solution`` (the ground truth the rewards read); ``id`` and the original size stay beside.
- SFT: the same ``prompt`` and ``image`` plus ``completion``, the assistant turn
  ``<answer>{bbox: [...], points_1: [...], points_2: [...]}</answer>``: the answer JSON in
  the format the strict rewards and the inference parser accept, and no reasoning.

A model family (`segzero_model.reasoning.families`) other than Seg-Zero's brings its own prompt text
(`training_messages`); Seg-Zero's keeps `build_messages` with the recipe's variant. A family
that answers a list of objects gets its ``solution`` rewritten into that list, in its answer
frame (`family_solution`: pixels of the family's image, or 0..1000 of it), which is what its
rewards (`segzero_model.rewards.objects`) read and its SFT target says; ``image_size`` is that
frame's side, which the rewards' thresholds scale with.

Adding columns with `Dataset.map` keeps the stored images as they are (no decode, no re-encode).
"""

from __future__ import annotations

import json
import math

from segzero_model.reasoning.prompts import build_messages, build_prompt
from segzero_model.reasoning.reply_format import (
    BOX_KEY,
    DEFAULT_VARIANT,
    POINT_KEYS,
    STRICT_KEYS,
    reply_text,
)
from segzero_model.targets import (
    ObjectTruth,
    format_objects_solution,
    parse_objects_solution,
    parse_solution,
)


def training_messages(
    problem: str, family=None, *, thinking: bool = True, answer: str = DEFAULT_VARIANT
) -> list[dict]:
    """The user turn for `problem`: `build_messages` (the recipe's thinking and answer variant)
    for the Seg-Zero prompt (`family` None or one whose prompt is `build_prompt`), else the
    image then the family's prompt (`prompt_without_thinking` when `thinking` is False;
    ValueError when the family has none)."""
    if family is None or getattr(family.prompt, "func", family.prompt) is build_prompt:
        return build_messages(problem, thinking=thinking, answer=answer)
    prompt = family.prompt if thinking else family.prompt_without_thinking
    if prompt is None:
        raise ValueError(
            f"model family {family.name!r} has no prompt without thinking (SFT and "
            "thinking=false need one: prompt_without_thinking in a family .yaml file)"
        )
    text = prompt(problem)
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def family_solution(solution: object, family) -> str:
    """A list-answer `family`'s ground truth: `solution` (pixels of the stored image, which is
    the family's image size; a single object or a list) as `format_objects_solution`'s JSON
    list in the family's answer frame, rounded half up."""
    scale = family.frame_width / family.image_size

    def scaled(values) -> tuple:  # half up, as VisionReasoner's data is written (int(v + 0.5))
        return tuple(math.floor(v * scale + 0.5) for v in values)

    return format_objects_solution(
        [
            ObjectTruth(scaled(truth.bbox), scaled(truth.point))
            for truth in parse_objects_solution(solution)
        ]
    )


def _answers_list(family) -> bool:
    return family is not None and family.answers_list


def answer_json(solution: object, answer: str = DEFAULT_VARIANT) -> str:
    """The ground truth (`parse_solution` formats) as the answer JSON of the `answer` variant,
    with integer coordinates, e.g. ``{bbox: [35, 60, 354, 423], points_1: [183, 235], ...}``."""
    if answer not in STRICT_KEYS:
        raise ValueError(f"unknown answer variant {answer!r}; valid: {list(STRICT_KEYS)}")
    box, points = parse_solution(solution)
    values = {BOX_KEY: box, **dict(zip(POINT_KEYS, points, strict=True))}
    return json.dumps({key: [round(v) for v in values[key]] for key, _ in STRICT_KEYS[answer]})


def target_completion(solution: object, answer: str = DEFAULT_VARIANT, family=None) -> list[dict]:
    """The SFT target: one assistant turn holding only the tagged answer (a list-answer
    family's: its JSON list of objects in its frame)."""
    body = family_solution(solution, family) if _answers_list(family) else None
    text = reply_text(body or answer_json(solution, answer))
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def grpo_dataset(
    dataset,
    *,
    thinking: bool = True,
    answer: str = DEFAULT_VARIANT,
    family=None,
    json_decoding: str | None = None,
):
    """`dataset` with the ``prompt`` column GRPOTrainer samples completions for, and the
    ``image_size`` the rewards read (the side of the family's answer frame) and, when given,
    their ``json_decoding``; a list-answer family's ``solution`` rewritten by
    `family_solution`."""
    side = family.frame_width if family is not None else None

    def row(problem: str, solution: object) -> dict:
        columns = {
            "prompt": training_messages(problem, family, thinking=thinking, answer=answer),
            "image_size": side,
        }
        if json_decoding is not None:
            columns["json_decoding"] = json_decoding
        if _answers_list(family):
            columns["solution"] = family_solution(solution, family)
        return columns

    return dataset.map(row, input_columns=["problem", "solution"], desc="prompts")


def sft_dataset(dataset, *, answer: str = DEFAULT_VARIANT, family=None):
    """`dataset` as prompt-completion pairs for SFTTrainer: the no-thinking prompt (the paper's
    SFT baseline answers without reasoning) and the ground-truth answer as the completion."""
    return dataset.map(
        lambda problem, solution: {
            "prompt": training_messages(problem, family, thinking=False, answer=answer),
            "completion": target_completion(solution, answer, family),
        },
        input_columns=["problem", "solution"],
        desc="prompt-completion pairs",
    )
