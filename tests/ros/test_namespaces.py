"""Two perception nodes side by side: `ros2 launch ... tiny:=true namespace:=left` and the same
with `namespace:=right`. Each answers the queries of its own namespace and nothing crosses;
`segzero-query --ros-args -r __ns:=/left` reaches the left one.

`ros2 launch` runs as users run it (tests/ros/test_launch_pytest.py drives the launch file with
launch_pytest).
"""

from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import (
    OutputProcess,
    require_ros2_cli,
    ros_domain_id,
    ros_importorskip,
    ros_process_env,
    stop_process_groups,
)

msgs = ros_importorskip("segzero_ros.msg", reason="run under `source install/setup.bash`")
ROS2 = require_ros2_cli()

import rclpy  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from std_msgs.msg import String  # noqa: E402

from segzero_ros.params import PerceptionParams, render_params_yaml  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "segzero_model" / "assets" / "kitchen.png"
DOMAIN_ID = ros_domain_id("namespaces")
SIDES = ("left", "right")
START_TIMEOUT = 180.0  # seconds for both nodes to be active (~15 s on an idle 2-core machine)
WAIT = 60.0


def env() -> dict[str, str]:
    return ros_process_env(DOMAIN_ID)


@pytest.fixture(scope="module")
def two_nodes(tiny_cache, tmp_path_factory):
    """Both launches, active. The left one has a parameter file whose section is keyed by the
    bare node name, as config/perception.yaml is (queue_size 3 instead of 8)."""
    left_params = tmp_path_factory.mktemp("namespaces") / "left.yaml"
    left_params.write_text(
        render_params_yaml(dataclasses.replace(PerceptionParams(), queue_size=3)),
        encoding="utf-8",
    )
    extra = {"left": [f"params_file:={left_params}"], "right": []}
    launches = {
        side: OutputProcess(
            [
                str(ROS2),
                "launch",
                "segzero_ros",
                "perception.launch.py",
                "tiny:=true",
                f"namespace:={side}",
                *extra[side],
            ],
            env(),
        )
        for side in SIDES
    }
    try:
        for side, launch in launches.items():
            launch.wait_for(rf"\]: active: .* action /{side}/segzero/segment", START_TIMEOUT)
        yield launches
    finally:
        stop_process_groups([launch.process for launch in launches.values()])


@pytest.fixture(scope="module")
def probe(two_nodes):
    """Publishers on /<side>/segzero/query, the results of /<side>/segzero/result by side, and
    the probe node (spinning on a thread of its own)."""
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    node = rclpy.create_node("namespaces_probe", context=context)
    results: dict[str, list] = {side: [] for side in SIDES}
    latched = QoSProfile(
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    queries = {}
    for side in SIDES:
        node.create_subscription(
            msgs.SegmentationResult, f"/{side}/segzero/result", results[side].append, latched
        )
        queries[side] = node.create_publisher(String, f"/{side}/segzero/query", 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield queries, results, node
    finally:
        executor.shutdown(timeout_sec=5)
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        thread.join(timeout=5)


def wait_for_result(results: list, query: str):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        for result in list(results):
            if result.query == query:
                return result
        time.sleep(0.05)
    raise AssertionError(f"no result for {query!r} in {WAIT:.0f} s: {results}")


def test_a_bare_node_name_section_applies_in_a_namespace(probe):
    """rcl applies `segzero_perception:` only in the root namespace; the launch file re-keys it."""
    node = probe[2]
    for side, expected in (("left", 3), ("right", 8)):  # right: the package's config
        client = node.create_client(GetParameters, f"/{side}/segzero_perception/get_parameters")
        assert client.wait_for_service(timeout_sec=WAIT)
        response = call_with_retries(client, GetParameters.Request(names=["queue_size"]))
        assert response is not None, f"no answer from /{side}/segzero_perception"
        assert response.values[0].integer_value == expected, side
        node.destroy_client(client)


def call_with_retries(client, request, attempt_s: float = 5.0):
    """The response, or None after WAIT. A request sent just after discovery can be lost (the
    server's reply writer has not matched our reader yet: wait_for_service does not wait for
    that), so an idempotent call is sent again every `attempt_s` seconds."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        future = client.call_async(request)
        attempt_end = min(deadline, time.monotonic() + attempt_s)
        while not future.done() and time.monotonic() < attempt_end:
            time.sleep(0.05)
        if future.done():
            return future.result()
        client.remove_pending_request(future)
    return None


def test_each_node_answers_its_own_topic_queries(probe):
    queries, results, _ = probe
    for side in SIDES:
        publisher = queries[side]
        deadline = time.monotonic() + WAIT
        while publisher.get_subscription_count() == 0:
            assert time.monotonic() < deadline, f"/{side}/segzero/query has no subscriber"
            time.sleep(0.05)
        publisher.publish(String(data=f"the {side} cup"))
    for side in SIDES:
        result = wait_for_result(results[side], f"the {side} cup")
        assert result.status_name == "NO_IMAGE", result  # no camera in these namespaces
        assert f"/{side}/camera/image_raw" in result.error, result.error
    time.sleep(0.5)  # time for a stray answer to arrive on the other side
    assert [r.query for r in results["left"]] == ["the left cup"]
    assert [r.query for r in results["right"]] == ["the right cup"]


def test_segzero_query_reaches_the_namespace_given_with_ros_args(probe):
    _, results, _ = probe
    before = {side: len(results[side]) for side in SIDES}
    completed = subprocess.run(
        ["segzero-query", "the red cup", "--image", str(SCENE), "--quiet", "--timeout", "120"]
        + ["--ros-args", "-r", "__ns:=/left"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=180,
        start_new_session=True,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "status:    OK" in completed.stdout
    result = wait_for_result(results["left"][before["left"] :], "the red cup")
    assert result.status_name == "OK"
    assert len(results["right"]) == before["right"]  # nothing crossed


def test_segzero_query_without_the_namespace_finds_no_server(two_nodes):
    completed = subprocess.run(
        ["segzero-query", "the red cup", "--timeout", "2"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert completed.returncode == 2
    assert "no action server /segzero/segment" in completed.stderr
