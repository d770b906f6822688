"""Frames and requests as the node's callbacks keep them (segzero_ros/inputs.py; no node)."""

from __future__ import annotations

import pytest
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from segzero_ros.inputs import Frame, Request, frame_age, frame_key, stamp_ns


def frame(sec: int, nanosec: int, *, seq: int = 1, received_ns: int = 0, frame_id: str = "cam"):
    header = Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)
    return Frame(Image(header=header), seq, received_ns)


def test_stamp_ns():
    assert stamp_ns(frame(3, 250_000_000).msg.header) == 3_250_000_000


def test_age_counts_from_the_stamp():
    assert frame_age(frame(10, 0, received_ns=99 * 10**9), now_ns=12_500_000_000) == 2.5


def test_a_zero_stamp_is_aged_from_its_arrival():
    """A driver that sets no stamp: the frame is as old as the time since it arrived."""
    assert frame_age(frame(0, 0, received_ns=4 * 10**9), now_ns=5 * 10**9) == 1.0


def test_key_of_stamped_frames_is_stamp_and_frame_id():
    assert frame_key(frame(1, 2)) == ("camera", "cam", 1, 2)
    assert frame_key(frame(1, 2)) == frame_key(frame(1, 2, seq=7))  # same image, same key
    assert frame_key(frame(1, 2)) != frame_key(frame(1, 3))
    assert frame_key(frame(1, 2)) != frame_key(frame(1, 2, frame_id="other"))


def test_stampless_frames_never_share_a_key():
    assert frame_key(frame(0, 0, seq=1)) != frame_key(frame(0, 0, seq=2))
    assert frame_key(frame(0, 0, seq=5)) == ("camera-seq", 5)


def test_a_request_starts_waiting():
    request = Request(query="the cup", query_id="q1")
    assert (request.image, request.goal_handle) == (None, None)
    assert not request.executing and not request.client_cancelled
    with pytest.raises(AttributeError):
        frame(1, 1).seq = 2  # frames are frozen: the node swaps them, never edits one
