"""Streamed reasoning -> throttled action feedback (segzero_ros/progress.py; no ROS)."""

from __future__ import annotations

from segzero_ros.progress import REASONING, SEGMENTING, ReasoningStream, reasoning_so_far


def test_reasoning_so_far_hides_unfinished_tags():
    assert reasoning_so_far("") == ""
    assert reasoning_so_far("<think>The cu") == "The cu"
    assert reasoning_so_far("<think>The cup</thi") == "The cup"
    assert reasoning_so_far("<think>The cup</think><ans") == "The cup"
    assert reasoning_so_far("<think>The cup</think><answer>{}") == "The cup"
    assert reasoning_so_far("no tags yet") == ""


def test_reasoning_stream_throttles_and_flags_segmenting():
    now = [0.0]
    stream = ReasoningStream(min_period=0.05, clock=lambda: now[0])
    first = stream.add("<think>The")
    assert first is not None and (first.stage, first.reasoning) == (REASONING, "The")
    assert stream.add(" cup") is None  # within 50 ms
    now[0] = 0.06
    assert stream.add(" is").reasoning == "The cup is"
    now[0] = 0.07
    assert stream.add(" red.</think>") is None
    changed = stream.add('<answer>{"bbox": [1, 2, 3, 4]}</answer>')  # stage change: at once
    assert changed.stage == SEGMENTING and changed.reasoning == "The cup is red."
    assert stream.text.startswith("<think>The cup is red.</think><answer>")


def test_reasoning_stream_rate_is_bounded():
    """A chunk every millisecond for one (simulated) second: one update per 50 ms period."""
    now = [0.0]
    stream = ReasoningStream(min_period=0.05, clock=lambda: now[0])
    sent = 0
    for step in range(1000):
        now[0] = step / 1000
        sent += stream.add("x") is not None
    assert sent == 20
