"""segzero_ros.depth_sync: depth frames matched to colour frames by stamp (plain unit tests)."""

from __future__ import annotations

import pytest

from segzero_ros.depth_sync import DepthMatcher

MS = 1_000_000  # nanoseconds


def filled(stamps_ms, capacity: int = 10) -> DepthMatcher:
    matcher = DepthMatcher(capacity)
    for stamp in stamps_ms:
        matcher.add_depth(f"depth@{stamp}", stamp * MS)
    return matcher


def test_nothing_received_says_so():
    match = DepthMatcher().nearest(5 * MS, 0.05)
    assert match.msg is None and match.reason == "no depth frame received yet"


@pytest.mark.parametrize(
    ("stamp_ms", "expected"),
    [
        (100, "depth@100"),
        (112, "depth@100"),
        (118, "depth@133"),
        (133, "depth@133"),
        (60, "depth@66"),
        (210, "depth@200"),
    ],
)
def test_nearest_in_stamp(stamp_ms, expected):
    matcher = filled([66, 100, 133, 166, 200])
    assert matcher.nearest(stamp_ms * MS, 0.05).msg == expected


def test_outside_the_tolerance_is_none_with_the_offset():
    matcher = filled([100, 133])
    assert matcher.nearest(160 * MS, 0.03).msg == "depth@133"  # 27 ms off
    match = matcher.nearest(200 * MS, 0.05)  # 67 ms off
    assert match.msg is None
    assert "within 0.05 s" in match.reason and "nearest 0.067 s off" in match.reason
    assert "2 kept, stamps 0.100..0.133" in match.reason
    assert matcher.nearest(100 * MS, 0.0).msg == "depth@100"  # exact stamps need no tolerance


def test_the_buffer_keeps_the_newest_stamps_only():
    matcher = filled(range(0, 200, 10), capacity=5)
    assert len(matcher) == 5 and matcher.received == 20
    assert matcher.nearest(150 * MS, 0.001).msg == "depth@150"
    assert matcher.nearest(140 * MS, 0.001).msg is None  # dropped: older than the newest 5
    assert matcher.nearest(0, 1.0).msg == "depth@150"  # the oldest kept


def test_out_of_order_stamps_are_sorted_and_a_late_old_one_is_dropped():
    matcher = filled([30, 10, 20, 50, 40], capacity=4)
    assert len(matcher) == 4
    for stamp in (20, 30, 40, 50):
        assert matcher.nearest(stamp * MS, 0.001).msg == f"depth@{stamp}"
    assert matcher.nearest(10 * MS, 0.001).msg is None
    matcher.add_depth("late", 5 * MS)  # older than everything kept: in, then out again
    assert len(matcher) == 4 and matcher.nearest(5 * MS, 0.001).msg is None


def test_the_same_stamp_replaces():
    matcher = filled([10, 20])
    matcher.add_depth("again", 20 * MS)
    assert len(matcher) == 2 and matcher.nearest(20 * MS, 0.0).msg == "again"


def test_clear_forgets_frames_and_camera_info():
    matcher = filled([10])
    matcher.camera_info, matcher.depth_info = "info", "depth info"
    matcher.clear()
    assert len(matcher) == 0 and matcher.camera_info is None and matcher.depth_info is None
    assert matcher.nearest(10 * MS, 1.0).msg is None


def test_capacity_must_be_positive():
    with pytest.raises(ValueError, match="capacity must be at least 1, got 0"):
        DepthMatcher(0)
