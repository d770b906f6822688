"""The reward registry: recipe names → reward functions, and the names each recipe trains with.

`REWARD_FUNCTIONS` maps names to the functions of `single_object` (Seg-Zero's, one object) and
`objects` (VisionReasoner's, a list); `get_reward_functions` looks names up; `DEFAULT_REWARDS`
is the paper's final recipe (strict format, hard accuracy: at most 5).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from segzero_model.reasoning.reply_format import (
    BOX_KEY,
    DEFAULT_VARIANT,
    POINT_KEYS,
    STRICT_KEYS,
    check_variant,
    variant_has,
)
from segzero_model.rewards.objects import OBJECT_REWARD_FUNCTIONS
from segzero_model.rewards.single_object import (
    box_iou_reward,
    box_l1_reward,
    points_only_reward,
    points_reward,
    soft_box_format_reward,
    soft_box_iou_reward,
    soft_box_l1_reward,
    soft_format_reward,
    soft_points_format_reward,
    soft_points_only_reward,
    soft_points_reward,
    strict_box_format_reward,
    strict_format_reward,
    strict_points_format_reward,
    thinking_format_reward,
)

REWARD_FUNCTIONS: dict[str, Callable[..., list[float]]] = {
    "thinking_format": thinking_format_reward,
    "strict_format": strict_format_reward,
    "soft_format": soft_format_reward,
    "box_iou": box_iou_reward,
    "soft_box_iou": soft_box_iou_reward,
    "box_l1": box_l1_reward,
    "soft_box_l1": soft_box_l1_reward,
    "points": points_reward,
    "soft_points": soft_points_reward,
    "strict_box_format": strict_box_format_reward,
    "soft_box_format": soft_box_format_reward,
    "strict_points_format": strict_points_format_reward,
    "soft_points_format": soft_points_format_reward,
    "points_only": points_only_reward,
    "soft_points_only": soft_points_only_reward,
    **OBJECT_REWARD_FUNCTIONS,  # the list-answer families' (segzero_model.rewards.objects)
}

# The paper's final recipe (Section 4.4): strict format and hard accuracy rewards, at most 5.
DEFAULT_REWARDS: tuple[str, ...] = (
    "thinking_format",
    "strict_format",
    "box_iou",
    "box_l1",
    "points",
)


def get_reward_functions(names: Iterable[str] | str) -> list[Callable[..., list[float]]]:
    """The reward functions for `names` (registry keys), in order; one name may be a str.

    Raises:
        ValueError: a name is unknown (the message lists the valid names) or repeated (it
            would count twice and log twice under the same name).
    """
    names = [names] if isinstance(names, str) else list(names)
    valid = ", ".join(REWARD_FUNCTIONS)
    unknown = [n for n in names if not isinstance(n, str) or n not in REWARD_FUNCTIONS]
    if unknown:
        raise ValueError(f"unknown reward name(s) {unknown}; valid names: {valid}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"reward name(s) {repeated} given more than once")
    return [REWARD_FUNCTIONS[n] for n in names]


def recipe_rewards(
    *,
    thinking: bool = True,
    format: str = "strict",
    accuracy: str = "hard",
    answer: str = DEFAULT_VARIANT,
) -> tuple[str, ...]:
    """The reward names of one training recipe: the paper's switches, defaults = `DEFAULT_REWARDS`.

    `thinking=False` drops the thinking-format reward (the no-CoT rows); `format` is "strict" or
    "soft" (Table 4), `accuracy` "hard" or "soft" (Table 3); `answer` "box_points", "box" or
    "points" (Table 2: a box-only answer has no point reward, a points-only answer no box
    rewards, and its point reward cannot ask the points to lie inside a box). The rewards follow
    from the variant's keys (`reply_format.STRICT_KEYS`): box rewards for a ``bbox``, a point reward
    for ``points_1``/``points_2``.
    """
    choices = {"format": (format, ("strict", "soft")), "accuracy": (accuracy, ("hard", "soft"))}
    choices["answer"] = (answer, tuple(STRICT_KEYS))
    for name, (value, valid) in choices.items():
        if value not in valid:
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
    has_box, has_points = variant_has(answer, BOX_KEY), variant_has(answer, POINT_KEYS[0])
    soft = "soft_" if accuracy == "soft" else ""
    names = ["thinking_format"] if thinking else []
    names.append(format_reward_name(format, answer))
    if has_box:
        names += [f"{soft}box_iou", f"{soft}box_l1"]
    if has_points:
        names.append(f"{soft}points" if has_box else f"{soft}points_only")
    return tuple(names)


# VisionReasoner's rewards for a list-answer family (segzero_model.rewards.objects), in order.
OBJECT_REWARDS: tuple[str, ...] = (
    "thinking_format",
    "objects_format",
    "objects_box_iou",
    "objects_box_l1",
    "objects_points",
    "non_repeat",
)


def object_recipe_rewards(*, thinking: bool = True) -> tuple[str, ...]:
    """The reward names of a list-answer family's recipe: `OBJECT_REWARDS`, without the
    thinking-format reward when the prompt asks for no thinking."""
    return OBJECT_REWARDS if thinking else OBJECT_REWARDS[1:]


def format_reward_name(format: str, answer: str = DEFAULT_VARIANT) -> str:
    """The registry name of the `format` ("strict" or "soft") reward of the `answer` variant:
    ``strict_format`` for the default variant, ``strict_box_format`` for "box", and so on."""
    check_variant(answer)
    return f"{format}_format" if answer == DEFAULT_VARIANT else f"{format}_{answer}_format"
