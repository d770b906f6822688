"""What comes into the node: the newest camera frame and one query request (topic query or
action goal), as the callbacks store them and the worker thread uses them (no rclpy here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Frame:
    """The newest camera message, kept as received (converted only when a query uses it)."""

    msg: Any  # sensor_msgs Image or CompressedImage
    seq: int  # 1 for the first frame since the node started
    received_ns: int  # node clock


@dataclass
class Request:
    """What a job carries: the query and, for action goals, the goal handle and its image."""

    query: str
    query_id: str
    image: Any = None  # the goal's own sensor_msgs/Image; None: the newest camera frame
    goal_handle: Any = None
    executing: bool = False  # goal_handle.execute() was called
    client_cancelled: bool = False


def stamp_ns(header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


def frame_age(frame: Frame, now_ns: int) -> float:
    """Seconds since the frame's stamp (since its arrival when it has no stamp: a zero stamp
    means the driver did not set one)."""
    return (now_ns - (stamp_ns(frame.msg.header) or frame.received_ns)) / 1e9


def frame_key(frame: Frame) -> tuple:
    """SAM2 embedding-cache key: the frame's stamp and frame_id (a stampless camera gets its
    frame number, so two different frames never share a key)."""
    header = frame.msg.header
    if stamp_ns(header) == 0:
        return ("camera-seq", frame.seq)
    return ("camera", header.frame_id, header.stamp.sec, header.stamp.nanosec)
