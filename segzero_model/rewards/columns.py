"""How the GRPO rewards read TRL's dataset columns: ``solution`` (one ground truth per
completion), ``image_size`` (the side of the frame the answers are in) and ``json_decoding``
(how the single-object rewards read the answer's JSON,
`segzero_model.reasoning.reply_format.DECODINGS`).

Both reward modules (`segzero_model.rewards.single_object` for one object,
`segzero_model.rewards.objects` for lists of objects) read them the same way, so a malformed
column fails the same way in each: a ValueError, because it is a data bug that must not silently
train the model towards 0 rewards.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import TypeVar

from segzero_model.reasoning.frames import REASONING_SIZE
from segzero_model.reasoning.reply_format import DEFAULT_DECODING, check_decoding, short_repr

Truth = TypeVar("Truth")


def reward_solutions(
    solution: object, count: int, reward: str, parse: Callable[[object], Truth]
) -> list[Truth]:
    """One ground truth per completion, from TRL's ``solution`` column, read by `parse`."""
    if solution is None:
        raise ValueError(f"{reward} needs the dataset column 'solution' (one per completion)")
    if isinstance(solution, str | dict) or not isinstance(solution, Sequence):
        raise ValueError(
            f"{reward}: 'solution' must be a list with one ground truth per completion, got "
            f"{type(solution).__name__}: {short_repr(solution)}"
        )
    if len(solution) != count:
        raise ValueError(
            f"{reward}: got {len(solution)} solutions for {count} completions; need one each"
        )
    return [parse(s) for s in solution]


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def frame_side(value: object) -> float:
    """max(image size) from one ``image_size`` entry: None (840), a number or (width, height)."""
    if value is None:
        return float(REASONING_SIZE)
    sides = value if isinstance(value, list | tuple) else [value]
    if len(sides) not in (1, 2) or not all(_is_number(s) for s in sides):
        raise ValueError(
            f"image_size must be a number or a (width, height) pair, got {short_repr(value)}"
        )
    side = max(float(s) for s in sides)
    if not (math.isfinite(side) and side > 0):
        raise ValueError(f"image_size must be positive and finite, got {short_repr(value)}")
    return side


def frame_sides(image_size: object, count: int) -> list[float]:
    """max(image size) per completion: default 840, one value for all, or one per completion.

    A list/tuple is read as one entry per completion (as TRL passes dataset columns), so a
    single ``(width, height)`` pair must be given once per completion or as its maximum.
    """
    if isinstance(image_size, list | tuple):
        if len(image_size) != count:
            raise ValueError(
                f"image_size has {len(image_size)} entries for {count} completions; give one "
                f"per completion or a single number"
            )
        return [frame_side(v) for v in image_size]
    return [frame_side(image_size)] * count


def decodings(json_decoding: object, count: int) -> list[str]:
    """The JSON decoding per completion: the released one by default, one name for all, or one
    per completion (a dataset column; None entries are the default)."""
    if isinstance(json_decoding, list | tuple):
        if len(json_decoding) != count:
            raise ValueError(
                f"json_decoding has {len(json_decoding)} entries for {count} completions"
            )
        return [check_decoding(d if d is not None else DEFAULT_DECODING) for d in json_decoding]
    return [check_decoding(json_decoding or DEFAULT_DECODING)] * count
