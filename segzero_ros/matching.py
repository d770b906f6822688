"""Which publishers on the node's input topics never reach its readers (no rclpy here).

The graph lists every publisher on a topic; a reader matches only those with compatible QoS.
The difference, seen on two checks in a row (one check can fall between discovery and
matching), is what the node reports: almost always incompatible QoS, e.g. best-effort queries
sent to its reliable reader.
"""

from __future__ import annotations


class UnmatchedPublishers:
    """Per topic: the confirmed count of publishers that the reader has not matched."""

    def __init__(self) -> None:
        self._last_seen: dict[str, int] = {}
        self._reported: dict[str, int] = {}

    def update(self, topic: str, in_graph: int, matched: int) -> tuple[int, bool]:
        """Record one check; returns (confirmed unmatched publishers, whether that count is new
        and larger than what was last reported, i.e. worth one log line)."""
        missing = max(0, in_graph - matched)
        confirmed = min(self._last_seen.get(topic, 0), missing)
        self._last_seen[topic] = missing
        worth_saying = confirmed > self._reported.get(topic, 0)
        self._reported[topic] = confirmed
        return confirmed, worth_saying
