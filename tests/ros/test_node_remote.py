"""The node with `reasoning_url`, over real rclpy pub/sub on the shared tiny node
(tests/ros_harness.py): the tiny model served by a real `transformers serve` (conftest.py
`reasoning_server`) answers queries and action goals with streamed feedback as the local model
does; cancelling a goal closes the server's stream (a slow stub server of
tests/model/reasoning/test_remote_reasoner.py sees the client go); a server that is down makes each
query one
ERROR result that says why, a WARN on /diagnostics, and the node stays active and keeps
answering."""

from __future__ import annotations

import contextlib
import socket
import time

import pytest
from conftest import ros_importorskip

ros_importorskip(
    "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
)

from action_msgs.msg import GoalStatus  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from ros_harness import R, restored_parameters, wait_until  # noqa: E402
from stub_server import StubServer  # noqa: E402
from test_node_diagnostics import values, wait_status  # noqa: E402

from segzero_model.reasoning.answer_parser import extract_thinking  # noqa: E402
from segzero_model.tiny.qwen import CANNED_ANSWER  # noqa: E402

pytestmark = pytest.mark.slow

WARN = b"\x01"


def reactivate(node) -> None:
    """Model parameters apply at activate."""
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS


@contextlib.contextmanager
def remote_reasoning(harness, url: str):
    """The shared node reasoning at `url` within the block; on its own model again after."""
    node = harness.node
    try:
        with restored_parameters(node) as set_params:
            set_params(reasoning_url=url, reasoning_timeout=30.0)
            reactivate(node)
            harness.wait_ready()
            yield node
    finally:
        reactivate(node)  # the parameters are back: the local model again
        harness.wait_ready()


def dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/v1"


def test_the_node_reasons_on_a_server_with_streamed_feedback(harness, reasoning_server):
    with remote_reasoning(harness, reasoning_server) as node:
        assert node.pipeline.reasoner.device == "remote"
        assert node.device == "cpu"  # SAM2's
        harness.fresh_frame(width=96, height=72)
        result = harness.probe.ask("the red cup")
        assert result.status == R.OK, result.error
        assert result.reasoning == extract_thinking(CANNED_ANSWER)
        assert (result.mask.height, result.mask.width) == (72, 96)

        feedback: list = []
        handle = harness.send_goal("the thing I can drink from", None, feedback)
        status, goal_result = harness.goal_result(handle)
        assert status == GoalStatus.STATUS_SUCCEEDED and goal_result.status == R.OK
        texts = [f.reasoning for f in feedback if f.stage == "reasoning"]
        assert texts, [f.stage for f in feedback]  # streamed from the server as it came
        assert all(goal_result.reasoning.startswith(text) for text in texts)

        mark = harness.probe.mark("diagnostics")
        ok = wait_status(harness.probe, lambda s, v: v["reasoning_server"] == "ok", mark, "ok")
        assert values(ok)["reasoning_url"] == reasoning_server


def test_a_server_that_is_down_is_one_error_per_query_and_a_warning(harness, capfd):
    url = dead_url()
    with remote_reasoning(harness, url) as node:
        assert "queries are answered ERROR until it answers" in capfd.readouterr().err
        harness.fresh_frame()
        for query in ("the red cup", "the blue cup"):  # the node stays up, answering
            result = harness.probe.ask(query)
            assert result.status == R.ERROR, result.status_name
            assert result.error.startswith("reasoning failed: reasoning server"), result.error
            assert url in result.error and "ConnectError" in result.error
            assert node.active
        mark = harness.probe.mark("diagnostics")
        failing = lambda s, v: s.level == WARN and "ConnectError" in s.message  # noqa: E731
        status = wait_status(harness.probe, failing, mark, "WARN")
        assert status.message.startswith("the reasoning server is failing: reasoning server")
        assert "ConnectError" in values(status)["reasoning_server"]


def test_cancelling_a_goal_closes_the_servers_stream(harness):
    stub = StubServer()  # streams a piece every 50 ms for 10 s
    try:
        with remote_reasoning(harness, stub.url("slow")):
            harness.fresh_frame()
            feedback: list = []
            handle = harness.send_goal("the red cup", None, feedback)
            wait_until(lambda: any(f.stage == "reasoning" for f in feedback), what="reasoning")
            cancel = handle.cancel_goal_async()
            wait_until(cancel.done, 20, "cancel response")
            status, result = harness.goal_result(handle, timeout=20)
            ended = time.monotonic()
            assert status == GoalStatus.STATUS_CANCELED and result.status == R.CANCELLED
            assert result.mask.height == 0
            wait_until(lambda: "slow" in stub.disconnected, 5, "the stub seeing the client go")
            assert stub.disconnected["slow"] - ended < 1.0
            assert stub.counts["slow"] == 1
    finally:
        stub.close()
