"""The perception node's lifecycle, end to end: deactivate frees the models and activate reloads
them, cleanup undoes configure, and a separate process waits unconfigured for a lifecycle
manager. The shared tiny node (tests/ros_harness.py) is active again after each test."""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
import time
import weakref

import pytest
from conftest import ros_importorskip

ros_importorskip(
    "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
)

from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_harness import (  # noqa: E402
    CAMERA,
    LATCHED,
    MAX_NEW_TOKENS,
    NODE_NAME,
    ROOT,
    WAIT,
    R,
    ros_env,
    wait_until,
)
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402

pytestmark = pytest.mark.slow


def call(client, request, timeout: float = WAIT, retry_every: float = 15.0):
    """A service call, sent again while unanswered: with DDS a request sent just after
    discovery can lose its response (the server's reply writer has not matched the client
    yet). Only for requests that are safe to repeat."""
    assert client.wait_for_service(timeout_sec=timeout), f"no service {client.srv_name}"
    deadline = time.monotonic() + timeout
    while True:
        future = client.call_async(request)
        try:
            wait_until(future.done, min(retry_every, deadline - time.monotonic()))
            return future.result()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise AssertionError(f"no response from {client.srv_name}") from None


def change_lifecycle_state(change_state, get_state, transition: int, goal: int) -> None:
    """A transition, seen done by its response or, should that response be lost, by get_state
    (sending it again would be refused once it has happened)."""
    future = change_state.call_async(ChangeState.Request(transition=Transition(id=transition)))
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            wait_until(future.done, 10.0)
            assert future.result().success, f"transition {transition} failed"
            return
        except AssertionError:
            if future.done():
                raise
        if call(get_state, GetState.Request()).current_state.id == goal:
            return
    raise AssertionError(f"transition {transition} never finished")


def test_lifecycle_frees_and_reloads_models(harness):
    node, probe = harness.node, harness.probe
    pipeline = weakref.ref(node.pipeline)
    reasoner = weakref.ref(node.pipeline.reasoner)
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    try:
        gc.collect()
        assert node.pipeline is None and pipeline() is None and reasoner() is None
        assert not node.active and node.latest_frame is None
        wait_until(lambda: probe.query_pub.get_subscription_count() == 0, 10, "unsubscribed")
        wait_until(lambda: not probe.action.server_is_ready(), 10, "action server gone")

        # Model parameters apply at the next activate: 8 tokens cannot hold the answer.
        node.set_parameters([Parameter("max_new_tokens", value=8)])
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        harness.wait_query_matched()
        result = probe.ask("a cup before any frame")
        assert result.status == R.NO_IMAGE and CAMERA in result.error
        harness.fresh_frame()
        result = probe.ask("a cup, 8 tokens")
        assert result.status == R.UNPARSEABLE_ANSWER and result.generated_tokens <= 8
        assert result.error and not result.has_bbox and result.mask.height == 0

        assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    finally:
        node.set_parameters([Parameter("max_new_tokens", value=MAX_NEW_TOKENS)])
        if not node.active:
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    harness.wait_ready()
    harness.fresh_frame()
    assert probe.ask("the red cup after reactivation").status == R.OK


def test_cleanup_undoes_configure_and_configure_serves_again(harness):
    node, probe = harness.node, harness.probe
    get_state = probe.node.create_client(GetState, f"/{NODE_NAME}/get_state")
    worker = node.worker
    before = node.stats.snapshot()
    assert node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
    try:
        assert node.trigger_cleanup() == TransitionCallbackReturn.SUCCESS
        state = call(get_state, GetState.Request()).current_state
        assert state.id == State.PRIMARY_STATE_UNCONFIGURED
        assert node.worker is None and not worker.alive  # the worker thread ended
        assert node.pipeline is None and node._pubs == {}
        # Publishers destroyed: the graph shows none of the node's outputs, nor its
        # diagnostics; nothing takes queries or goals.
        for topic in ["/segzero/result", "/segzero/mask", "/segzero/overlay", "/diagnostics"]:
            wait_until(
                lambda topic=topic: (
                    not any(
                        info.node_name == NODE_NAME
                        for info in probe.node.get_publishers_info_by_topic(topic)
                    )
                ),
                10,
                f"{topic} publisher gone",
            )
        wait_until(lambda: probe.query_pub.get_subscription_count() == 0, 10, "unsubscribed")
        assert not probe.action.server_is_ready()
        # A query sent now reaches nobody: it is never answered, not even after the node is
        # back (its query reader is volatile), which the next query's answer shows, as the
        # node answers queries in order.
        probe.query("the red cup, while unconfigured")

        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.worker is not None and node.worker is not worker
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
    finally:
        probe.node.destroy_client(get_state)
        if node.worker is None:
            node.trigger_configure()
        if not node.active:
            node.trigger_activate()
    harness.wait_ready()
    harness.fresh_frame()
    result = probe.ask("the red cup after cleanup")
    assert result.status == R.OK, result.error
    results = [m.query for m in probe.messages("result")]
    assert "the red cup, while unconfigured" not in results
    assert node.stats.snapshot().total == before.total + 1


def test_a_lifecycle_manager_drives_a_node_without_autostart(harness, tiny_qwen_dir, tiny_sam2_dir):
    """A separate process with autostart false waits unconfigured; the lifecycle services
    configure and activate it (as nav2's lifecycle manager or `ros2 lifecycle set` would)."""
    name = "managed_perception"
    overrides = {
        "autostart": "false",
        "reasoning_model": str(tiny_qwen_dir),
        "segmentation_model": str(tiny_sam2_dir),
        "device": "cpu",
        "max_new_tokens": "96",
        "max_image_age": "0.0",
        "image_topic": "/managed/image",
        "query_topic": "/managed/query",
        "result_topic": "/managed/result",
        "action_name": "/managed/segment",
    }
    args = ["--ros-args", "-r", f"__node:={name}"]
    for key, value in overrides.items():
        args += ["-p", f"{key}:={value}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "segzero_ros.main", *args],
        cwd=ROOT,
        env=ros_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    probe = harness.probe.node
    get_state = probe.create_client(GetState, f"/{name}/get_state")
    change_state = probe.create_client(ChangeState, f"/{name}/change_state")
    results: list = []
    subscription = probe.create_subscription(R, "/managed/result", results.append, LATCHED)
    queries = probe.create_publisher(String, "/managed/query", LATCHED)
    camera = probe.create_publisher(Image, "/managed/image", 5)
    try:
        state = call(get_state, GetState.Request()).current_state
        assert state.id == State.PRIMARY_STATE_UNCONFIGURED
        assert change_state.wait_for_service(timeout_sec=WAIT)
        for transition, goal in (
            (Transition.TRANSITION_CONFIGURE, State.PRIMARY_STATE_INACTIVE),
            (Transition.TRANSITION_ACTIVATE, State.PRIMARY_STATE_ACTIVE),
        ):
            change_lifecycle_state(change_state, get_state, transition, goal)
        state = call(get_state, GetState.Request()).current_state
        assert state.id == State.PRIMARY_STATE_ACTIVE

        wait_until(lambda: camera.get_subscription_count() and queries.get_subscription_count())
        frame = harness.image_msg()

        # Frame and query again until a result comes on a frame: the other process may not
        # have matched our writers yet (and the camera is best effort anyway).
        deadline = time.monotonic() + WAIT
        result = None
        while result is None and time.monotonic() < deadline:
            for _ in range(5):
                camera.publish(frame)
                time.sleep(0.05)
            queries.publish(String(data="the red cup, managed"))
            try:
                result = wait_until(
                    lambda: next((r for r in results if r.status != R.NO_IMAGE), None), 15.0
                )
            except AssertionError:
                continue
        assert result is not None, "no managed result"
        assert result.status == R.OK and result.header == frame.header, result.error
    finally:
        proc.send_signal(signal.SIGINT)
        output = proc.communicate(timeout=30)[0]
        probe.destroy_client(get_state)
        probe.destroy_client(change_state)
        probe.destroy_subscription(subscription)
        probe.destroy_publisher(queries)
        probe.destroy_publisher(camera)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
