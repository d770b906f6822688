"""Turning the reasoner's text stream into throttled progress updates (no rclpy here): the
action server's feedback is built from these."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from segzero_model.reasoning.answer_parser import extract_thinking
from segzero_model.reasoning.reply_format import ANSWER_CLOSE

QUEUED, REASONING, SEGMENTING = "queued", "reasoning", "segmenting"
_OPEN_TAG_AT_END = re.compile(r"<[^<>]*$")


@dataclass(frozen=True)
class Progress:
    stage: str
    reasoning: str


def reasoning_so_far(text: str) -> str:
    """The <think> text of a partial output, without a tag that is still being written
    (so "…cup</thi" reads "…cup", not "…cup</thi")."""
    complete = _OPEN_TAG_AT_END.sub("", text)
    return extract_thinking(complete) or ""


class ReasoningStream:
    """Collects streamed text chunks; `add` returns a `Progress` at most every `min_period`
    seconds (and whenever the stage changes), else None.

    The stage is "reasoning" until the answer is complete (`</answer>` seen), then
    "segmenting" (parsing and SAM2 remain).
    """

    def __init__(self, min_period: float = 0.05, clock: Callable[[], float] = time.monotonic):
        self.min_period = min_period
        self._clock = clock
        self._chunks: list[str] = []
        self._stage = REASONING
        self._last_sent: float | None = None

    @property
    def text(self) -> str:
        return "".join(self._chunks)

    @property
    def stage(self) -> str:
        return self._stage

    def add(self, chunk: str) -> Progress | None:
        self._chunks.append(chunk)
        text = self.text
        stage_changed = False
        if self._stage == REASONING and ANSWER_CLOSE.search(text):
            self._stage, stage_changed = SEGMENTING, True
        now = self._clock()
        if (
            not stage_changed
            and self._last_sent is not None
            and now - self._last_sent < self.min_period
        ):
            return None
        self._last_sent = now
        return Progress(self._stage, reasoning_so_far(text))
