"""Turn the reasoning model's reply into a box, two points and its thinking.

The model is trained to reply ``<think>...</think><answer>{JSON}</answer>``, but sampled text
drifts: single quotes, code fences, truncation, several objects, the prompt's example echoed in
the thinking. Lenient mode recovers whatever the segmenter can use; strict mode accepts only what
the training-time strict format reward accepts, so the two can be compared.

Pure standard library: the JSON is decoded with ``json`` (after a textual normalisation when
needed), never evaluated.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "Answer",
    "AnswerFormatError",
    "extract_json_objects",
    "first_json_object",
    "parse_answer",
]

_SNIPPET_CHARS = 200
# Bounds that keep pathological input (huge garbage, deep nesting) linear-ish and fast.
_MAX_QUOTE_RESTARTS = 16
_MAX_DESCENT = 3
_MAX_KEY_SEARCH_DEPTH = 3

_BOX_KEYS = ("bbox", "bbox_2d", "box")
_POINT_PAIR_KEYS = (("points_1", "points_2"), ("point_1", "point_2"))
_POINT_LIST_KEY = "points"
_KNOWN_KEYS = frozenset(
    (*_BOX_KEYS, *(k for pair in _POINT_PAIR_KEYS for k in pair), _POINT_LIST_KEY)
)
_STRICT_KEYS = ("bbox", "points_1", "points_2")

_THINK_OPEN = re.compile(r"<think>", re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</think>", re.IGNORECASE)
_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.IGNORECASE | re.DOTALL)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)
_ANSWER_CLOSE = re.compile(r"</answer>", re.IGNORECASE)

# Characters that change the brace scanner's state; everything else is skipped at C speed.
_SCAN_EVENT = re.compile(r"[{}\"'\\]")
# A JSON object starts with a quoted key or closes at once; anything else cannot decode.
_OBJECT_START = re.compile(r"\{\s*[\"'}]")
# Tokens the normaliser rewrites; strings come first so their contents are never touched.
_NORMALISE_TOKEN = re.compile(
    r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|,(?=\s*[}\]])|[A-Za-z_]\w*", re.DOTALL
)
_SINGLE_QUOTED_ESCAPE = re.compile(r"\\.|\"", re.DOTALL)
_PY_LITERALS = {"True": "true", "False": "false", "None": "null"}
_NUMERIC_STRING = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


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


def _short(value: object) -> str:
    """A truncated repr of a decoded JSON value for error messages."""
    text = repr(value)
    return text if len(text) <= _SNIPPET_CHARS else text[:_SNIPPET_CHARS] + "..."


# --------------------------------------------------------------------------- JSON discovery


def _object_spans(text: str, start: int, end: int) -> tuple[list[tuple[int, int]], bool]:
    """Outermost balanced ``{...}`` spans of ``text[start:end]`` in order, and whether a ``{``
    was left open.

    Quotes only count inside braces, because prose apostrophes outside an object are common. An
    unterminated string is re-read with its opening quote as a literal, so one stray apostrophe
    cannot hide every later object. Spans inside a brace that never closes (truncated output)
    are still reported.
    """
    completed: list[tuple[int, int]] = []
    stack: list[int] = []
    quote: str | None = None
    quote_at = -1
    restarts = 0
    pos = start
    while True:
        match = _SCAN_EVENT.search(text, pos, end)
        if match is None:
            if quote is not None and restarts < _MAX_QUOTE_RESTARTS:
                # Nothing inside a string touches the stack, so resuming here is exact.
                quote, pos, restarts = None, quote_at + 1, restarts + 1
                continue
            break
        char, at = match.group(), match.start()
        pos = at + 1
        if quote is not None:
            if char == "\\":
                pos = at + 2
            elif char == quote:
                quote = None
        elif char == "{":
            stack.append(at)
        elif char == "}":
            if stack:
                completed.append((stack.pop(), at + 1))
        elif char in "\"'" and stack:
            quote, quote_at = char, at
    completed.sort()
    outermost: list[tuple[int, int]] = []
    reach = -1
    for span_start, span_end in completed:
        if span_start >= reach:
            outermost.append((span_start, span_end))
            reach = span_end
    return outermost, bool(stack)


def _rewrite_token(match: re.Match[str], full: bool) -> str:
    token = match.group()
    if token.startswith("'"):

        def escape(inner: re.Match[str]) -> str:
            piece = inner.group()
            if piece == '"':
                return '\\"'
            if piece == "\\'":
                return "'"
            return piece

        return '"' + _SINGLE_QUOTED_ESCAPE.sub(escape, token[1:-1]) + '"'
    if not full or token.startswith('"'):
        return token
    if token == ",":
        return ""
    return _PY_LITERALS.get(token, token)


def _normalise(src: str, full: bool) -> str:
    """Rewrite Python-ish JSON into JSON: single-quoted strings always; with `full`, also drop
    trailing commas and map True/False/None. Textual only, so nothing is ever evaluated."""
    return _NORMALISE_TOKEN.sub(lambda m: _rewrite_token(m, full), src)


def _decode(span: str, lenient: bool) -> tuple[dict | None, str | None]:
    """Decode one ``{...}`` span: plain JSON first, then the normalised copy."""
    if not _OBJECT_START.match(span):
        return None, "it does not start like a JSON object"
    error = ""
    normalised = _normalise(span, full=lenient)
    for candidate in (span, normalised) if normalised != span else (span,):
        try:
            value = json.loads(candidate, strict=not lenient)
        except RecursionError:
            return None, "it is nested too deeply"
        except ValueError as exc:  # JSONDecodeError, or int digit limits
            error = str(exc)
            continue
        if isinstance(value, dict):
            return value, None
        return None, "it is not a JSON object"
    return None, error


@dataclass
class _Found:
    """One ``{...}`` span: its text, and the object or the reason it did not decode."""

    text: str
    obj: dict | None
    error: str | None
    nested: bool


def _iter_found(text: str, start: int, end: int, lenient: bool, depth: int) -> Iterator[_Found]:
    """Every span in order; inside a span that fails to decode, look for objects one level in."""
    spans, _ = _object_spans(text, start, end)
    for span_start, span_end in spans:
        span = text[span_start:span_end]
        obj, error = _decode(span, lenient)
        yield _Found(span, obj, error, nested=depth > 0)
        if obj is None and depth < _MAX_DESCENT:
            yield from _iter_found(text, span_start + 1, span_end - 1, lenient, depth + 1)


def extract_json_objects(text: str) -> list[dict]:
    """Every JSON object in `text`, in order, decoded tolerantly ([] if none).

    Objects inside a top-level JSON list are returned one by one; objects nested inside a
    decoded object stay inside it.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    return [f.obj for f in _iter_found(text, 0, len(text), True, 0) if f.obj is not None]


def first_json_object(text: str) -> dict | None:
    """The first JSON object in `text` or None; the released rewards also read only the first.

    Unlike their ``{[^}]+}`` search this handles nested braces and single quotes.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    for found in _iter_found(text, 0, len(text), True, 0):
        if found.obj is not None:
            return found.obj
    return None


# --------------------------------------------------------------------------- coordinates


def _coordinate(value: object, what: str, high: int) -> int:
    """Round a number (or numeric string) half up and clamp it into ``[0, high]``."""
    if isinstance(value, str) and _NUMERIC_STRING.fullmatch(value.strip()):
        value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AnswerFormatError(f"{what} value {_short(value)} is not a number")
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
            return json.loads(_normalise(value.strip(), full=True))
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
        raise AnswerFormatError(f"{key!r} must be a list of 4 numbers, got {_short(value)}")
    if len(value) != 4:
        raise AnswerFormatError(
            f"{key!r} must have 4 numbers (x1, y1, x2, y2), got {len(value)}: {_short(value)}"
        )
    return _finish_box(value, repr(key), high)


def _lenient_point(value: object, key: str, high: int) -> tuple[int, int]:
    value = _unquote_list(value)
    if _is_seq(value) and len(value) == 1 and _is_seq(value[0]):
        value = value[0]  # [[x, y]]
    if not _is_seq(value) or len(value) != 2:
        raise AnswerFormatError(f"{key!r} must be one [x, y] pair, got {_short(value)}")
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
                f"'points' must be a list of two [x, y] pairs, got {_short(pairs)}"
            )
        points = (
            _lenient_point(pairs[0], "points[0]", high),
            _lenient_point(pairs[1], "points[1]", high),
        )
    if box is None and points is None:
        if lone_point is not None:
            raise AnswerFormatError(f"only one point ({lone_point!r}) and no 'bbox' in the answer")
        raise AnswerFormatError("the 'bbox' and points values are all null")
    return box, points


# --------------------------------------------------------------------------- locating the answer


def _split_thinking(text: str) -> tuple[str | None, str]:
    """(thinking, text outside the thinking). Thinking often quotes the prompt's example
    answer, so the answer is never searched for inside it."""
    opened = _THINK_OPEN.search(text)
    if opened is None:
        closed = _THINK_CLOSE.search(text)
        if closed is None:
            return None, text
        # Some chat templates put <think> in the prompt, so the reply starts mid-thought.
        return text[: closed.start()].strip(), text[closed.end() :]
    before = text[: opened.start()]
    closed = _THINK_CLOSE.search(text, opened.end())
    if closed is None:
        answer = _ANSWER_OPEN.search(text, opened.end())
        if answer is None:  # truncated while thinking
            return text[opened.end() :].strip(), before
        return text[opened.end() : answer.start()].strip(), before + text[answer.start() :]
    thinking = text[opened.end() : closed.start()].strip()
    after = _THINK_BLOCK.sub(" ", text[closed.end() :])
    stray = _THINK_OPEN.search(after)
    if stray is not None:  # a later <think> that never closes
        after = after[: stray.start()]
    return thinking, before + after


def extract_thinking(text: str) -> str | None:
    """The reasoning text of an output, also when its answer is unusable (so users still see
    why the model failed); None when there is no <think> part."""
    return _split_thinking(text)[0] if isinstance(text, str) else None


def _parse_lenient(text: str, high: int) -> Answer:
    thinking, outside = _split_thinking(text)
    opened = _ANSWER_OPEN.search(outside)
    if opened is None:
        region, where = outside, "the output (outside <think>)"
        if not region.strip():
            raise AnswerFormatError(
                f"no answer: the output has only <think> text and no <answer>: {_quote(text)}"
            )
    else:
        closed = _ANSWER_CLOSE.search(outside, opened.end())
        region = outside[opened.end() : closed.start() if closed else len(outside)]
        where = "the answer"
        if not region.strip():
            detail = "the <answer> tags are empty" if closed else "nothing follows <answer>"
            raise AnswerFormatError(f"{detail}: {_quote(outside[opened.start() :])}")

    # Remember the most telling failure: bad values > no known keys > undecodable > nothing.
    best_rank, best_message = 0, ""
    for found in _iter_found(region, 0, len(region), True, 0):
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
                    f"JSON object has no 'bbox' or points keys: found keys {keys} "
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
    _, left_open = _object_spans(region, 0, len(region))
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
            f"strict: {key!r} must be a list of exactly {count} numbers, got {_short(value)}"
        )
    for v in value:
        if isinstance(v, float) and not math.isfinite(v):
            raise AnswerFormatError(f"strict: {key!r} value {v!r} is not finite")
    return value


def _parse_strict(text: str, high: int) -> Answer:
    """The strict format is what the strict rewards score 1 (thinking format + strict
    segmentation format), so the parser and the rewards can never disagree; `_strict_problem`
    only says what is wrong when they reject."""
    from segzero_model.rewards import (
        answer_region,
        strict_format_reward,
        thinking_format_reward,
    )

    if thinking_format_reward([text]) != [1.0] or strict_format_reward([text]) != [1.0]:
        _strict_problem(text, high)
        raise AnswerFormatError(
            f"strict: not the strict format (<think>...</think><answer>{{JSON with bbox, "
            f"points_1, points_2}}</answer>, each tag once, nothing around): {_quote(text)}"
        )
    obj = first_json_object(answer_region(text))
    thinking = text[len("<think>") : text.index("</think>")].strip()
    box = _finish_box(_strict_numbers(obj["bbox"], "bbox", 4), "'bbox'", high)
    points = (
        _finish_point(_strict_numbers(obj["points_1"], "points_1", 2), "'points_1'", high),
        _finish_point(_strict_numbers(obj["points_2"], "points_2", 2), "'points_2'", high),
    )
    return Answer(bbox=box, points=points, thinking=thinking)


def _strict_problem(text: str, high: int) -> None:
    """Raise AnswerFormatError naming the first way `text` departs from the strict format."""
    if text != text.strip():
        raise AnswerFormatError(
            f"strict: nothing, not even white space, may come before <think> or after "
            f"</answer>: {_quote(text)}"
        )
    body = text
    if not body.startswith("<think>"):
        raise AnswerFormatError(f"strict: the output must start with <think>: {_quote(body)}")
    think_end = body.find("</think>")
    if think_end < 0:
        raise AnswerFormatError(f"strict: <think> is never closed by </think>: {_quote(body)}")
    rest = body[think_end + len("</think>") :].lstrip()
    if not rest.startswith("<answer>"):
        raise AnswerFormatError(
            f"strict: only whitespace may separate </think> and <answer>, found {_quote(rest)}"
        )
    answer_end = rest.find("</answer>")
    if answer_end < 0:
        raise AnswerFormatError(f"strict: <answer> is never closed by </answer>: {_quote(rest)}")
    content = rest[len("<answer>") : answer_end]
    trailing = rest[answer_end + len("</answer>") :]
    if trailing.strip():
        raise AnswerFormatError(f"strict: text after </answer>: {_quote(trailing.strip())}")
    spans, _ = _object_spans(content, 0, len(content))
    if not spans:
        raise AnswerFormatError(f"strict: no JSON object in the answer: {_quote(content)}")
    span = content[spans[0][0] : spans[0][1]]
    obj, error = _decode(span, lenient=False)
    if obj is None:
        raise AnswerFormatError(
            f"strict: the answer's JSON object does not decode ({error}): {_quote(span)}"
        )
    for key in _STRICT_KEYS:
        if key not in obj:
            alternates = sorted(_KNOWN_KEYS.intersection(obj) - set(_STRICT_KEYS))
            hint = f"; alternate keys {alternates} are not accepted" if alternates else ""
            raise AnswerFormatError(
                f"strict: the answer's JSON object has no {key!r} key "
                f"(found keys {[str(k) for k in obj]}{hint}): {_quote(span)}"
            )
    _strict_numbers(obj["bbox"], "bbox", 4)
    _strict_numbers(obj["points_1"], "points_1", 2)
    _strict_numbers(obj["points_2"], "points_2", 2)


# --------------------------------------------------------------------------- entry point


def parse_answer(text: str, strict: bool = False, frame_size: int = 840) -> Answer:
    """Parse one model reply into an `Answer` in the ``frame_size`` square frame.

    Lenient mode (default) recovers a box and/or two points from messy output; ``strict=True``
    accepts exactly what the thinking-format and strict-format rewards both score 1:
    ``<think>...</think><answer>{bbox, points_1, points_2}</answer>``, each tag once, only white
    space between the blocks and nothing around. Either way a failure raises
    `AnswerFormatError` naming what was wrong.
    """
    if not isinstance(text, str):
        raise AnswerFormatError(
            f"expected the model output as str, got {type(text).__name__}: {_short(text)}"
        )
    if isinstance(frame_size, bool) or not isinstance(frame_size, int) or frame_size < 1:
        raise ValueError(f"frame_size must be a positive int, got {frame_size!r}")
    if not text.strip():
        raise AnswerFormatError(f"the model output is empty: {_quote(text)}")
    high = frame_size - 1
    return _parse_strict(text, high) if strict else _parse_lenient(text, high)
