"""The Seg-Zero reply format, in one place: the tags, the answer variants and their keys (also a
list answer's), and how the answer's first JSON object is found and decoded.

A reply is ``<think>...</think><answer>{JSON}</answer>``. Two readers share these facts, so they
can never disagree: the lenient/strict parser (`segzero_model.reasoning.answer_parser`) and the
GRPO rewards (`segzero_model.rewards.single_object`). Neither imports the other; both import this
module.

- `THINK_TAGS`, `ANSWER_TAGS`, `BOX_KEY`, `POINT_KEYS` (a single-object answer) and
  `LIST_BOX_KEY`, `LIST_POINT_KEY` (an item of a list answer): the only spelling of each in
  the code; `reply_text` and `list_answer_text` write replies and list answers with them.
- `STRICT_KEYS`: per answer variant (Table 2 of the paper: box and points, box only, points
  only) the exact keys its JSON object carries and how many numbers each holds. It is the one
  list of variants: the prompts, the strict format rules, the rewards and the training targets
  are all keyed by it.
- `is_thinking_format` / `is_strict_format`: what the thinking-format and strict-format rewards
  score 1, and what ``parse_answer(strict=True)`` accepts.
- `reply_object`: the object the rewards read. By default as the released rewards read it
  (`released_first_object`: the first ``{[^}]+}`` of the whole reply, ``json.loads``); with the
  "tolerant" decoding, `first_json_object` of `answer_region` (single quotes, trailing commas,
  Python literals forgiven). The inference parser is always tolerant.

Pure standard library: the JSON is decoded with ``json`` (after a textual normalisation when
needed), never evaluated.
"""

from __future__ import annotations

import json
import math
import numbers
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = [
    "ANSWER_CLOSE",
    "ANSWER_OPEN",
    "ANSWER_TAGS",
    "BOX_KEY",
    "DECODINGS",
    "DEFAULT_DECODING",
    "DEFAULT_VARIANT",
    "LIST_BOX_KEY",
    "LIST_POINT_KEY",
    "NUMBER",
    "POINT_KEYS",
    "STRICT_KEYS",
    "THINK_BLOCK",
    "THINK_CLOSE",
    "THINK_OPEN",
    "THINK_TAGS",
    "VARIANTS",
    "FoundObject",
    "answer_region",
    "check_decoding",
    "check_variant",
    "completion_text",
    "decode_object",
    "extract_json_objects",
    "finite_numbers",
    "first_json_object",
    "is_strict_format",
    "is_thinking_format",
    "iter_objects",
    "list_answer_text",
    "normalise_json",
    "object_spans",
    "released_first_object",
    "released_object_text",
    "reply_object",
    "reply_text",
    "short_repr",
    "sized_list",
    "strict_first_object",
    "variant_has",
]

# --------------------------------------------------------------------------- keys and tags

# The keys of Seg-Zero's single-object answer (the released checkpoints'): the box, then the
# centres of the two largest inscribed circles.
BOX_KEY = "bbox"
POINT_KEYS: tuple[str, str] = ("points_1", "points_2")
# The keys of one item of a list answer (VisionReasoner's and Qwen3-VL's): a box and one point.
LIST_BOX_KEY = "bbox_2d"
LIST_POINT_KEY = "point_2d"
# The tags, opening and closing, as the thinking format demands them (lower case).
THINK_TAGS: tuple[str, str] = ("<think>", "</think>")
ANSWER_TAGS: tuple[str, str] = ("<answer>", "</answer>")


def reply_text(answer: str, thinking: str | None = None) -> str:
    """A reply in the format: ``<think>{thinking}</think><answer>{answer}</answer>``, or the
    answer block alone when `thinking` is None."""
    block = f"{ANSWER_TAGS[0]}{answer}{ANSWER_TAGS[1]}"
    return block if thinking is None else f"{THINK_TAGS[0]}{thinking}{THINK_TAGS[1]}{block}"


def list_answer_text(items: Iterable[tuple[Sequence[int], Sequence[int]]]) -> str:
    """A list answer of (box, point) items as the prompts write it, no space inside the lists:
    ``[{"bbox_2d": [x1,y1,x2,y2], "point_2d": [x,y]}, ...]`` (``[]`` for none)."""

    def numbers(values: Sequence[int]) -> str:
        return "[" + ",".join(str(v) for v in values) + "]"

    return (
        "["
        + ", ".join(
            f'{{"{LIST_BOX_KEY}": {numbers(box)}, "{LIST_POINT_KEY}": {numbers(point)}}}'
            for box, point in items
        )
        + "]"
    )


# --------------------------------------------------------------------------- answer variants

# The exact keys, and the count of numbers in each key's list, that each answer variant's JSON
# object carries. Other keys may stand beside them.
STRICT_KEYS: dict[str, tuple[tuple[str, int], ...]] = {
    "box_points": ((BOX_KEY, 4), (POINT_KEYS[0], 2), (POINT_KEYS[1], 2)),
    "box": ((BOX_KEY, 4),),
    "points": ((POINT_KEYS[0], 2), (POINT_KEYS[1], 2)),
}
VARIANTS: tuple[str, ...] = tuple(STRICT_KEYS)
DEFAULT_VARIANT = "box_points"  # the released checkpoints' answer


def check_variant(answer: object) -> str:
    """`answer` if it names an answer variant; ValueError listing the valid names otherwise."""
    if not isinstance(answer, str) or answer not in STRICT_KEYS:
        raise ValueError(f"unknown answer variant {answer!r}; valid: {list(VARIANTS)}")
    return answer


def variant_has(answer: str, key: str) -> bool:
    """Whether the `answer` variant's JSON object carries `key` (`BOX_KEY`, `POINT_KEYS`...)."""
    return any(name == key for name, _ in STRICT_KEYS[check_variant(answer)])


# --------------------------------------------------------------------------- tags and numbers

# Case-insensitive, for finding the parts of a reply (the content matters, not the spelling);
# the thinking format itself (`is_thinking_format`) demands the exact lower-case tags.
_THINK_OPEN, _THINK_CLOSE = (re.escape(tag) for tag in THINK_TAGS)
_ANSWER_OPEN, _ANSWER_CLOSE = (re.escape(tag) for tag in ANSWER_TAGS)
THINK_OPEN = re.compile(_THINK_OPEN, re.IGNORECASE)
THINK_CLOSE = re.compile(_THINK_CLOSE, re.IGNORECASE)
THINK_BLOCK = re.compile(f"{_THINK_OPEN}.*?{_THINK_CLOSE}", re.IGNORECASE | re.DOTALL)
ANSWER_OPEN = re.compile(_ANSWER_OPEN, re.IGNORECASE)
ANSWER_CLOSE = re.compile(_ANSWER_CLOSE, re.IGNORECASE)

_THINKING_FORMAT = re.compile(
    rf"{_THINK_OPEN}.*?{_THINK_CLOSE}\s*{_ANSWER_OPEN}.*?{_ANSWER_CLOSE}", re.DOTALL
)
_FORMAT_TAG = re.compile("|".join((_THINK_OPEN, _THINK_CLOSE, _ANSWER_OPEN, _ANSWER_CLOSE)))

# A decimal number as written in text: sign, digits with an optional fraction, exponent.
NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"

_SNIPPET_CHARS = 200


def short_repr(value: object, limit: int = _SNIPPET_CHARS) -> str:
    """repr(value), cut to `limit` characters plus "...", so huge values do not flood messages."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def finite_numbers(value: object, count: int) -> tuple[float, ...] | None:
    """`value` as `count` finite floats if it is a list of exactly `count` JSON numbers (not
    strings, not booleans), else None."""
    if not isinstance(value, list | tuple) or len(value) != count:
        return None
    out = []
    for item in value:
        if not isinstance(item, numbers.Real) or isinstance(item, bool):
            return None
        try:
            number = float(item)
        except OverflowError:  # an int too large for a float
            return None
        if not math.isfinite(number):
            return None
        out.append(number)
    return tuple(out)


# --------------------------------------------------------------------------- completions


def _content_text(content: object) -> str:
    """Text of a message content: a string, or a list of ``{"type": "text", "text": ...}``
    parts (other parts, such as images, are skipped); anything else is empty."""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        pieces = []
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    pieces.append(text)
        return "".join(pieces)
    return ""


def completion_text(completion: object) -> str:
    """The text of one completion in any of TRL's formats ("" when there is none).

    A plain string; a conversational list of messages (``[{"role": "assistant", "content":
    ...}]``, their contents joined); or one message dict. A content is a string or a list of
    ``{"type": "text", "text": ...}`` parts; None or any other type gives "".
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, list | tuple):
        return "".join(
            m if isinstance(m, str) else _content_text(m.get("content"))
            for m in completion
            if isinstance(m, str | dict)
        )
    return ""


def answer_region(text: str) -> str:
    """The text the accuracy and segmentation format rewards read.

    The content of the first ``<answer>`` that follows the first ``</think>`` (or the start,
    when there is none), up to the next ``</answer>`` or the end of a truncated reply. Without
    an ``<answer>`` tag, the whole text (so a JSON object in the thinking counts, as in the
    released rewards; such a reply scores 0 on ``thinking_format``). An empty answer stays
    empty: it does not fall back to the whole text.
    """
    think_end = THINK_CLOSE.search(text)
    opened = ANSWER_OPEN.search(text, think_end.end() if think_end else 0)
    if opened is None:
        return text
    closed = ANSWER_CLOSE.search(text, opened.end())
    return text[opened.end() : closed.start() if closed else len(text)]


# --------------------------------------------------------------------------- JSON discovery

# Bounds that keep pathological input (huge garbage, deep nesting) linear-ish and fast.
_MAX_QUOTE_RESTARTS = 16
_MAX_DESCENT = 3

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


def object_spans(text: str, start: int, end: int) -> tuple[list[tuple[int, int]], bool]:
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


def normalise_json(src: str, full: bool) -> str:
    """Rewrite Python-ish JSON into JSON: single-quoted strings always; with `full`, also drop
    trailing commas and map True/False/None. Textual only, so nothing is ever evaluated."""
    return _NORMALISE_TOKEN.sub(lambda m: _rewrite_token(m, full), src)


def decode_object(span: str, lenient: bool) -> tuple[dict | None, str | None]:
    """Decode one ``{...}`` span: plain JSON first, then the normalised copy.

    Returns (the object, None), or (None, why it did not decode). `lenient` also accepts
    trailing commas, True/False/None and raw control characters in strings.
    """
    if not _OBJECT_START.match(span):
        return None, "it does not start like a JSON object"
    error = ""
    normalised = normalise_json(span, full=lenient)
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
class FoundObject:
    """One ``{...}`` span: its text, and the object or the reason it did not decode; `nested`
    when it was found inside a larger span that did not decode."""

    text: str
    obj: dict | None
    error: str | None
    nested: bool


def iter_objects(
    text: str, start: int, end: int, lenient: bool = True, depth: int = 0
) -> Iterator[FoundObject]:
    """Every span of ``text[start:end]`` in order; inside a span that fails to decode, look for
    objects one level in (at most three levels deep)."""
    spans, _ = object_spans(text, start, end)
    for span_start, span_end in spans:
        span = text[span_start:span_end]
        obj, error = decode_object(span, lenient)
        yield FoundObject(span, obj, error, nested=depth > 0)
        if obj is None and depth < _MAX_DESCENT:
            yield from iter_objects(text, span_start + 1, span_end - 1, lenient, depth + 1)


def extract_json_objects(text: str) -> list[dict]:
    """Every JSON object in `text`, in order, decoded tolerantly ([] if none).

    Objects inside a top-level JSON list are returned one by one; objects nested inside a
    decoded object stay inside it.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    return [f.obj for f in iter_objects(text, 0, len(text)) if f.obj is not None]


def first_json_object(text: str) -> dict | None:
    """The first JSON object in `text` or None; the released rewards also read only the first.

    Unlike their ``{[^}]+}`` search this handles nested braces and single quotes.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected str, got {type(text).__name__}")
    for found in iter_objects(text, 0, len(text)):
        if found.obj is not None:
            return found.obj
    return None


# --------------------------------------------------------------------------- the strict format


def is_thinking_format(text: str) -> bool:
    """Whether `text` is exactly ``<think>...</think>``, white space, ``<answer>...</answer>``,
    with nothing before or after (not even white space) and each of the four tags once."""
    # Counting the tags first also keeps the regex linear on replies full of tags.
    return len(_FORMAT_TAG.findall(text)) == 4 and _THINKING_FORMAT.fullmatch(text) is not None


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


# `first_json_object` forgives trailing commas, True/False/None, raw control characters in
# strings and NaN/Infinity, and finds an object inside a larger span that does not decode.
# The strict format must accept only real JSON (or JSON written with single quotes, as the
# prompt's own example is), so it also decodes strictly from each "{" in turn and requires the
# first object found that way to be the tolerant first object.
_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant)
_MAX_STRICT_STARTS = 64  # bounds the work on garbage full of braces


def strict_first_object(region: str) -> dict | None:
    """The first dict that real JSON (or JSON with all ' read as ") decodes to, or None."""
    swapped = region.replace("'", '"') if "'" in region else None
    for tried, brace in enumerate(re.finditer(r"\{", region)):
        if tried == _MAX_STRICT_STARTS:
            break
        for candidate in (region, swapped):
            if candidate is None:
                continue
            try:
                value, _ = _STRICT_DECODER.raw_decode(candidate, brace.start())
            except (ValueError, RecursionError):
                continue
            if isinstance(value, dict):
                return value
    return None


# --------------------------------------------------------------------------- decodings

# How the rewards read the answer's object. "released": as the released rewards do (the first
# `{[^}]+}` of the whole reply, `json.loads`), the default, so a run optimises the paper's
# objective (writing valid JSON, although the prompt's own example uses single quotes, is part
# of it). "tolerant": the first object of the answer region, decoded forgivingly (single quotes,
# trailing commas, Python literals), an explicit switch for people who want it.
DECODINGS: tuple[str, ...] = ("released", "tolerant")
DEFAULT_DECODING = "released"
_RELEASED_OBJECT = re.compile(r"\{[^}]+\}")


def check_decoding(decoding: object) -> str:
    """`decoding` if it names one of `DECODINGS`; ValueError listing them otherwise."""
    if not isinstance(decoding, str) or decoding not in DECODINGS:
        raise ValueError(f"unknown JSON decoding {decoding!r}; valid: {list(DECODINGS)}")
    return decoding


def released_object_text(text: str) -> str | None:
    """The text the released rewards decode: the first ``{[^}]+}`` anywhere in the reply (the
    thinking included), or None."""
    match = _RELEASED_OBJECT.search(text)
    return None if match is None else match.group(0)


def released_first_object(text: str) -> dict | None:
    """The released rewards' reading of a reply: `released_object_text` decoded by
    ``json.loads`` (which accepts NaN and Infinity); None when there is none or ``json.loads``
    raises (single quotes, a trailing comma, True/None)."""
    span = released_object_text(text)
    if span is None:
        return None
    try:
        value = json.loads(span)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def reply_object(text: str, decoding: str = DEFAULT_DECODING) -> dict | None:
    """The object the rewards read in `text`: `released_first_object`, or with "tolerant" the
    first object of the answer region decoded forgivingly (`first_json_object`)."""
    if check_decoding(decoding) == "released":
        return released_first_object(text)
    return first_json_object(answer_region(text))


def sized_list(value: object, count: int) -> bool:
    """The released strict format's test of a value: a list of `count` items (any items)."""
    return isinstance(value, list) and len(value) == count


def is_strict_format(
    text: str, answer: str = DEFAULT_VARIANT, decoding: str = DEFAULT_DECODING
) -> bool:
    """Whether the object the rewards read (`reply_object`) carries every key of the `answer`
    variant (exact key names; other keys may stand beside them).

    "released": each a list of that many items, as the released strict format reward checks.
    "tolerant": the answer region's first object must also be real JSON (double or single
    quotes), each value that many finite numbers."""
    if check_decoding(decoding) == "released":
        obj = released_first_object(text)
        return obj is not None and all(
            sized_list(obj.get(key), count) for key, count in STRICT_KEYS[answer]
        )
    region = answer_region(text)
    obj = first_json_object(region)
    if obj is None or strict_first_object(region) != obj:
        return False
    return all(
        isinstance(obj.get(key), list) and finite_numbers(obj[key], count) is not None
        for key, count in STRICT_KEYS[answer]
    )
