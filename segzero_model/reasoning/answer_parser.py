"""Turn the reasoning model's reply into a box, two points and its thinking.

The model is trained to reply ``<think>...</think><answer>{JSON}</answer>``, but sampled text
drifts: single quotes, code fences, truncation, several objects, the prompt's example echoed in
the thinking. Lenient mode recovers whatever the segmenter can use; strict mode accepts only what
the training-time strict format reward accepts, so the two can be compared.

The reply format itself (the tags, the strict keys, how the JSON objects are found and decoded)
is `segzero_model.reasoning.reply_format`'s, which the rewards read too. Pure standard library: the
JSON is decoded with ``json`` (after a textual normalisation when needed), never evaluated.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from segzero_model.reasoning.frames import REASONING_SIZE
from segzero_model.reasoning.reply_format import (
    ANSWER_CLOSE,
    ANSWER_OPEN,
    ANSWER_TAGS,
    BOX_KEY,
    DEFAULT_VARIANT,
    LIST_BOX_KEY,
    LIST_POINT_KEY,
    NUMBER,
    POINT_KEYS,
    STRICT_KEYS,
    THINK_BLOCK,
    THINK_CLOSE,
    THINK_OPEN,
    THINK_TAGS,
    is_strict_format,
    is_thinking_format,
    iter_objects,
    normalise_json,
    object_spans,
    released_first_object,
    released_object_text,
    short_repr,
)

if TYPE_CHECKING:
    from segzero_model.reasoning.families import Family

__all__ = [
    "Answer",
    "AnswerFormatError",
    "FoundTarget",
    "extract_thinking",
    "parse_answer",
    "parse_objects",
]

_SNIPPET_CHARS = 200
_MAX_KEY_SEARCH_DEPTH = 3  # how deep a wrapper object may hide the object with the keys

# The keys the lenient parser reads (the answer's own, then alternates models drift to); the
# strict keys are `reply_format.STRICT_KEYS`.
_BOX_KEYS = (BOX_KEY, LIST_BOX_KEY, "box")
_POINT_PAIR_KEYS = (POINT_KEYS, ("point_1", "point_2"))
_POINT_LIST_KEY = "points"
_KNOWN_KEYS = frozenset(
    (*_BOX_KEYS, *(k for pair in _POINT_PAIR_KEYS for k in pair), _POINT_LIST_KEY)
)
# Strict mode reads the released checkpoints' answer: bbox, points_1, points_2.
_STRICT_KEYS = STRICT_KEYS[DEFAULT_VARIANT]
_NUMERIC_STRING = re.compile(NUMBER)


class AnswerFormatError(ValueError):
    """The model output holds no usable answer; the message says what was wrong and quotes it."""


@dataclass(frozen=True)
class Answer:
    """What the segmenter needs, in the reasoning frame (integer pixels, clamped).

    Either ``bbox`` or ``points`` may be None in lenient mode, because box-only and points-only
    ablation checkpoints answer with just one of them.
    """

    bbox: tuple[int, int, int, int] | None
    points: tuple[tuple[int, int], tuple[int, int]] | None
    thinking: str | None


def _quote(text: str, limit: int = _SNIPPET_CHARS) -> str:
    """A short repr of `text` for error messages, so huge outputs do not flood logs."""
    if len(text) > limit:
        return repr(text[:limit]) + "..."
    return repr(text)


# --------------------------------------------------------------------------- coordinates


def _coordinate(value: object, what: str, high: int) -> int:
    """Round a number (or numeric string) half up and clamp it into ``[0, high]``."""
    if isinstance(value, str) and _NUMERIC_STRING.fullmatch(value.strip()):
        value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnswerFormatError(f"{what} value {short_repr(value)} is not a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AnswerFormatError(f"{what} value {value!r} is not finite")
        value = math.floor(value + 0.5)
    return min(max(value, 0), high)


def _finish_box(raw: list | tuple, what: str, high: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (_coordinate(v, what, high) for v in raw)
    return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)


def _finish_point(raw: list | tuple, what: str, high: int) -> tuple[int, int]:
    x, y = (_coordinate(v, what, high) for v in raw)
    return x, y


def _is_seq(value: object) -> bool:
    return isinstance(value, list | tuple)


def _unquote_list(value: object) -> object:
    """A list the model wrapped in a string ("[1, 2, 3, 4]") decodes to the list."""
    if isinstance(value, str) and value.strip().startswith("["):
        try:
            return json.loads(normalise_json(value.strip(), full=True))
        except (ValueError, RecursionError):
            return value
    return value


def _lenient_box(value: object, key: str, high: int) -> tuple[int, int, int, int]:
    value = _unquote_list(value)
    if _is_seq(value) and len(value) == 1 and _is_seq(value[0]):
        value = value[0]  # [[x1, y1, x2, y2]]
    if _is_seq(value) and len(value) == 2 and all(_is_seq(p) and len(p) == 2 for p in value):
        value = [*value[0], *value[1]]  # [[x1, y1], [x2, y2]]
    if not _is_seq(value):
        raise AnswerFormatError(f"{key!r} must be a list of 4 numbers, got {short_repr(value)}")
    if len(value) != 4:
        raise AnswerFormatError(
            f"{key!r} must have 4 numbers (x1, y1, x2, y2), got {len(value)}: {short_repr(value)}"
        )
    return _finish_box(value, repr(key), high)


def _lenient_point(value: object, key: str, high: int) -> tuple[int, int]:
    value = _unquote_list(value)
    if _is_seq(value) and len(value) == 1 and _is_seq(value[0]):
        value = value[0]  # [[x, y]]
    if not _is_seq(value) or len(value) != 2:
        raise AnswerFormatError(f"{key!r} must be one [x, y] pair, got {short_repr(value)}")
    return _finish_point(value, repr(key), high)


def _keyed(obj: dict) -> dict[str, object]:
    """Known keys, matched case-insensitively, with null values dropped (null means absent)."""
    found: dict[str, object] = {}
    for key, value in obj.items():
        name = str(key).strip().lower()
        if name in _KNOWN_KEYS and value is not None:
            found.setdefault(name, value)
    return found


def _find_keyed(obj: object, depth: int = 0) -> dict | None:
    """The first dict with a known key: `obj` itself, else one nested in it (e.g. a wrapper
    such as ``{"answer": {"bbox": ...}}``)."""
    if isinstance(obj, dict):
        if any(str(k).strip().lower() in _KNOWN_KEYS for k in obj):
            return obj
        children: list = list(obj.values())
    elif isinstance(obj, list):
        children = obj
    else:
        return None
    if depth >= _MAX_KEY_SEARCH_DEPTH:
        return None
    for child in children:
        if isinstance(child, dict | list):
            hit = _find_keyed(child, depth + 1)
            if hit is not None:
                return hit
    return None


def _lenient_fields(obj: dict, high: int) -> tuple[tuple | None, tuple | None]:
    """Box and points of one object; raises AnswerFormatError when neither is usable."""
    keyed = _keyed(obj)
    box = None
    for key in _BOX_KEYS:
        if key in keyed:
            box = _lenient_box(keyed[key], key, high)
            break
    points = None
    lone_point = None
    for first, second in _POINT_PAIR_KEYS:
        if first in keyed and second in keyed:
            points = (
                _lenient_point(keyed[first], first, high),
                _lenient_point(keyed[second], second, high),
            )
            break
        if lone_point is None and (first in keyed or second in keyed):
            lone_point = first if first in keyed else second
    if points is None and _POINT_LIST_KEY in keyed:
        pairs = _unquote_list(keyed[_POINT_LIST_KEY])
        if not _is_seq(pairs) or len(pairs) < 2 or not all(_is_seq(p) for p in pairs[:2]):
            raise AnswerFormatError(
                f"{_POINT_LIST_KEY!r} must be a list of two [x, y] pairs, got {short_repr(pairs)}"
            )
        points = (
            _lenient_point(pairs[0], "points[0]", high),
            _lenient_point(pairs[1], "points[1]", high),
        )
    if box is None and points is None:
        if lone_point is not None:
            raise AnswerFormatError(
                f"only one point ({lone_point!r}) and no {BOX_KEY!r} in the answer"
            )
        raise AnswerFormatError(f"the {BOX_KEY!r} and points values are all null")
    return box, points


# --------------------------------------------------------------------------- locating the answer


def _split_thinking(text: str) -> tuple[str | None, str]:
    """(thinking, text outside the thinking). Thinking often quotes the prompt's example
    answer, so the answer is never searched for inside it."""
    opened = THINK_OPEN.search(text)
    if opened is None:
        closed = THINK_CLOSE.search(text)
        if closed is None:
            return None, text
        # Some chat templates put <think> in the prompt, so the reply starts mid-thought.
        return text[: closed.start()].strip(), text[closed.end() :]
    before = text[: opened.start()]
    closed = THINK_CLOSE.search(text, opened.end())
    if closed is None:
        answer = ANSWER_OPEN.search(text, opened.end())
        if answer is None:  # truncated while thinking
            return text[opened.end() :].strip(), before
        return text[opened.end() : answer.start()].strip(), before + text[answer.start() :]
    thinking = text[opened.end() : closed.start()].strip()
    after = THINK_BLOCK.sub(" ", text[closed.end() :])
    stray = THINK_OPEN.search(after)
    if stray is not None:  # a later <think> that never closes
        after = after[: stray.start()]
    return thinking, before + after


def extract_thinking(text: str) -> str | None:
    """The reasoning text of an output, also when its answer is unusable (so users still see
    why the model failed); None when there is no <think> part."""
    return _split_thinking(text)[0] if isinstance(text, str) else None


def _parse_lenient(text: str, high: int) -> Answer:
    thinking, outside = _split_thinking(text)
    opened = ANSWER_OPEN.search(outside)
    if opened is None:
        region, where = outside, "the output (outside <think>)"
        if not region.strip():
            raise AnswerFormatError(
                f"no answer: the output has only <think> text and no <answer>: {_quote(text)}"
            )
    else:
        closed = ANSWER_CLOSE.search(outside, opened.end())
        region = outside[opened.end() : closed.start() if closed else len(outside)]
        where = "the answer"
        if not region.strip():
            detail = "the <answer> tags are empty" if closed else "nothing follows <answer>"
            raise AnswerFormatError(f"{detail}: {_quote(outside[opened.start() :])}")

    # Remember the most telling failure: bad values > no known keys > undecodable > nothing.
    best_rank, best_message = 0, ""
    for found in iter_objects(region, 0, len(region)):
        if found.obj is None:
            rank = 0 if found.nested else 1
            message = f"could not decode a JSON object in {where} ({found.error}): "
            message += _quote(found.text)
        else:
            keyed = _find_keyed(found.obj)
            if keyed is None:
                rank = 0 if found.nested else 2
                keys = [str(k) for k in found.obj]
                message = (
                    f"JSON object has no {BOX_KEY!r} or points keys: found keys {keys} "
                    f"in {_quote(found.text)}"
                )
            else:
                try:
                    box, points = _lenient_fields(keyed, high)
                except AnswerFormatError as exc:
                    rank, message = 3, f"{exc} in {_quote(found.text)}"
                else:
                    return Answer(bbox=box, points=points, thinking=thinking)
        if rank > best_rank:
            best_rank, best_message = rank, message
    if best_rank:
        raise AnswerFormatError(best_message)
    _, left_open = object_spans(region, 0, len(region))
    if left_open:
        raise AnswerFormatError(
            f"no complete JSON object in {where}: a '{{' is never closed (truncated output?): "
            f"{_quote(region.strip())}"
        )
    raise AnswerFormatError(f"no JSON object in {where}: {_quote(region.strip())}")


# --------------------------------------------------------------------------- strict mode


def _strict_numbers(value: object, key: str, count: int) -> list:
    if (
        not isinstance(value, list)
        or len(value) != count
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise AnswerFormatError(
            f"strict: {key!r} must be a list of exactly {count} numbers, got {short_repr(value)}"
        )
    for v in value:
        if isinstance(v, float) and not math.isfinite(v):
            raise AnswerFormatError(f"strict: {key!r} value {v!r} is not finite")
    return value


def _parse_strict(text: str, high: int) -> Answer:
    """The strict format is what the strict rewards score 1 (`reply_format.is_thinking_format` and
    `reply_format.is_strict_format` with the released decoding, which those rewards use by default),
    so the parser and the rewards can never disagree; `_strict_problem` only says what is wrong
    when they reject. The released format accepts lists of anything; values that are not finite
    numbers are then refused here, since no box can be made of them."""
    if not (is_thinking_format(text) and is_strict_format(text, DEFAULT_VARIANT)):
        _strict_problem(text, high)
        raise AnswerFormatError(
            f"strict: not the strict format (<think>...</think><answer>{{JSON with "
            f"{', '.join(key for key, _ in _STRICT_KEYS)}}}</answer>, each tag once, nothing "
            f"around): {_quote(text)}"
        )
    obj = released_first_object(text)
    thinking = text[len(THINK_TAGS[0]) : text.index(THINK_TAGS[1])].strip()
    box_key, box_count = _STRICT_KEYS[0]
    box = _finish_box(_strict_numbers(obj[box_key], box_key, box_count), repr(box_key), high)
    points = tuple(
        _finish_point(_strict_numbers(obj[key], key, count), repr(key), high)
        for key, count in _STRICT_KEYS[1:]
    )
    return Answer(bbox=box, points=points, thinking=thinking)  # type: ignore[arg-type]


def _strict_problem(text: str, high: int) -> None:
    """Raise AnswerFormatError naming the first way `text` departs from the strict format."""
    if text != text.strip():
        raise AnswerFormatError(
            f"strict: nothing, not even white space, may come before <think> or after "
            f"</answer>: {_quote(text)}"
        )
    body = text
    (think, think_close), (answer, answer_close) = THINK_TAGS, ANSWER_TAGS
    if not body.startswith(think):
        raise AnswerFormatError(f"strict: the output must start with {think}: {_quote(body)}")
    think_end = body.find(think_close)
    if think_end < 0:
        raise AnswerFormatError(f"strict: {think} is never closed by {think_close}: {_quote(body)}")
    rest = body[think_end + len(think_close) :].lstrip()
    if not rest.startswith(answer):
        raise AnswerFormatError(
            f"strict: only whitespace may separate {think_close} and {answer}, found {_quote(rest)}"
        )
    answer_end = rest.find(answer_close)
    if answer_end < 0:
        raise AnswerFormatError(
            f"strict: {answer} is never closed by {answer_close}: {_quote(rest)}"
        )
    content = rest[len(answer) : answer_end]
    trailing = rest[answer_end + len(answer_close) :]
    if trailing.strip():
        raise AnswerFormatError(f"strict: text after {answer_close}: {_quote(trailing.strip())}")
    # The rewards read the first {...} of the whole reply with json.loads, as released.
    span = released_object_text(text)
    if span is None:
        raise AnswerFormatError(f"strict: no {{...}} object in the reply: {_quote(content)}")
    try:
        obj = json.loads(span)
    except (ValueError, RecursionError) as error:
        raise AnswerFormatError(
            f"strict: the reply's first {{...}} is not JSON (json.loads: {error}; single "
            f"quotes, trailing commas and True/None are not JSON): {_quote(span)}"
        ) from None
    names = {key for key, _ in _STRICT_KEYS}
    for key, _ in _STRICT_KEYS:
        if key not in obj:
            alternates = sorted(_KNOWN_KEYS.intersection(obj) - names)
            hint = f"; alternate keys {alternates} are not accepted" if alternates else ""
            raise AnswerFormatError(
                f"strict: the answer's JSON object has no {key!r} key "
                f"(found keys {[str(k) for k in obj]}{hint}): {_quote(span)}"
            )
    for key, count in _STRICT_KEYS:
        _strict_numbers(obj[key], key, count)


# --------------------------------------------------------------------------- entry point


def parse_answer(text: str, strict: bool = False, frame_size: int = REASONING_SIZE) -> Answer:
    """Parse one model reply into an `Answer` in the ``frame_size`` square frame.

    Lenient mode (default) recovers a box and/or two points from messy output; ``strict=True``
    accepts exactly what the thinking-format and strict-format rewards both score 1:
    ``<think>...</think><answer>{bbox, points_1, points_2}</answer>``, each tag once, only white
    space between the blocks and nothing around. Either way a failure raises
    `AnswerFormatError` naming what was wrong.
    """
    if not isinstance(text, str):
        raise AnswerFormatError(
            f"expected the model output as str, got {type(text).__name__}: {short_repr(text)}"
        )
    if isinstance(frame_size, bool) or not isinstance(frame_size, int) or frame_size < 1:
        raise ValueError(f"frame_size must be a positive int, got {frame_size!r}")
    if not text.strip():
        raise AnswerFormatError(f"the model output is empty: {_quote(text)}")
    high = frame_size - 1
    return _parse_strict(text, high) if strict else _parse_lenient(text, high)


# --------------------------------------------------------------------------- model families

_LIST_BOX_KEYS = (LIST_BOX_KEY, BOX_KEY, "box")
_LIST_POINT_KEYS = (LIST_POINT_KEY, "point")
_MAX_LIST_STARTS = 64  # '[' tried as a list's start, so garbage cannot make parsing quadratic


@dataclass(frozen=True)
class FoundTarget:
    """One object of an answer in the original image's pixels (XYXY box, (x, y) points): two
    points for Seg-Zero's single object, one for a list item. ``bbox`` may be None, and
    ``points`` empty, when the answer held only the other."""

    bbox: tuple[float, float, float, float] | None
    points: tuple[tuple[float, float], ...]


def parse_objects(text: str, family: Family, width: int, height: int) -> list[FoundTarget]:
    """The objects a reply names, scaled from the `family`'s frame to a `width` x `height` image.

    A single-object family reads the reply as `parse_answer` does (lenient). A list family
    reads the first JSON list in the answer; ``[]`` is an explicit "no object" and gives an
    empty list. An absolute frame is the family's square image (coordinates clamped to it), a
    relative one 0..1000 of the image; the VisionReasoner family rounds as its release does,
    ``int(v * W / S + 0.5)`` for its image size S. AnswerFormatError says what was wrong.
    """
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ValueError(f"width must be a positive int, got {width!r}")
    if isinstance(height, bool) or not isinstance(height, int) or height < 1:
        raise ValueError(f"height must be a positive int, got {height!r}")
    frame = family.frame_width
    high = frame if family.relative else frame - 1

    def scale(x: float, y: float) -> tuple[float, float]:
        x, y = x * width / frame, y * height / frame
        if family.round_pixels:
            return float(math.floor(x + 0.5)), float(math.floor(y + 0.5))
        return x, y

    if family.answers_list:
        items = _list_items(text, high)
    else:
        answer = parse_answer(text, frame_size=high + 1)
        items = [(answer.bbox, answer.points or ())]
    found = []
    for box, points in items:
        scaled_box = None
        if box is not None:
            (x1, y1), (x2, y2) = scale(box[0], box[1]), scale(box[2], box[3])
            scaled_box = (x1, y1, x2, y2)
        found.append(FoundTarget(scaled_box, tuple(scale(x, y) for x, y in points)))
    return found


def _list_items(text: str, high: int) -> list[tuple[tuple | None, tuple]]:
    """(box, points) in the answer frame of each item of the reply's first JSON list."""
    if not isinstance(text, str):
        raise AnswerFormatError(
            f"expected the model output as str, got {type(text).__name__}: {short_repr(text)}"
        )
    if not text.strip():
        raise AnswerFormatError(f"the model output is empty: {_quote(text)}")
    _, outside = _split_thinking(text)
    opened = ANSWER_OPEN.search(outside)
    region = outside
    if opened is not None:
        closed = ANSWER_CLOSE.search(outside, opened.end())
        region = outside[opened.end() : closed.start() if closed else len(outside)]
    if not region.strip():
        raise AnswerFormatError(f"no answer after the thinking: {_quote(text)}")
    items = _first_list(region)
    if items is None:  # no list: one bare object is read as a list of one
        objects = [f.obj for f in iter_objects(region, 0, len(region)) if f.obj is not None]
        if not objects:
            raise AnswerFormatError(f"no JSON list of objects in the answer: {_quote(region)}")
        items = objects[:1]
    out = []
    for index, item in enumerate(items):
        keyed = {str(k).strip().lower(): v for k, v in item.items() if v is not None}
        box_key = next((k for k in _LIST_BOX_KEYS if k in keyed), None)
        point_key = next((k for k in _LIST_POINT_KEYS if k in keyed), None)
        if box_key is None and point_key is None:
            raise AnswerFormatError(
                f"item {index} of the answer has no {LIST_BOX_KEY!r} or {LIST_POINT_KEY!r}: "
                f"{short_repr(item)}"
            )
        box = _lenient_box(keyed[box_key], box_key, high) if box_key else None
        points = (_lenient_point(keyed[point_key], point_key, high),) if point_key else ()
        out.append((box, points))
    return out


def _first_list(region: str) -> list | None:
    """The first ``[...]`` in `region` that decodes (tolerantly) to a list of objects (``[]``
    included; a bare box's ``[x1, y1, x2, y2]`` is not one), or None."""
    decoder = json.JSONDecoder()
    start = region.find("[")
    for _ in range(_MAX_LIST_STARTS):
        if start < 0:
            break
        for candidate in (region[start:], normalise_json(region[start:], full=True)):
            try:
                value, _ = decoder.raw_decode(candidate)
            except (ValueError, RecursionError):
                continue
            if isinstance(value, list) and all(isinstance(v, dict) for v in value):
                return value
        start = region.find("[", start + 1)
    return None
