"""`segzero-perception --tiny --ros-args -p model_family:=qwen3_vl` runs the tiny Qwen3-VL
(segzero_model/tiny: two objects for a query with "all", `[]` for "unicorn", else one), and
`segzero-query` prints both objects (exit 0) or "not found" (exit 3, NOT_FOUND) end to end; and
`ros2 launch ... tiny:=true model_family:=qwen3_vl` passes the family on to the node."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    OutputProcess,
    require_ros2_cli,
    ros_domain_id,
    ros_importorskip,
    ros_process_env,
)

ros_importorskip("segzero_ros.msg", reason="run under `source install/setup.bash`")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "segzero_model" / "assets" / "kitchen.png"
DOMAIN_ID = ros_domain_id("node_families")
NAMESPACE = "/families"
START_TIMEOUT = 180.0  # seconds for the node to be active once the tiny models are built


def env() -> dict[str, str]:
    return ros_process_env(DOMAIN_ID)


@pytest.fixture(scope="module")
def qwen3_node(tiny_cache):
    from segzero_model.tiny import ensure_tiny_qwen3_vl

    reasoner = ensure_tiny_qwen3_vl()  # built once per machine (minutes), then cached
    node = OutputProcess(
        [sys.executable, "-m", "segzero_ros.main", "--tiny", "--ros-args"]
        + ["-p", "model_family:=qwen3_vl", "-r", f"__ns:={NAMESPACE}"],
        env(),
    )
    try:
        node.wait_for(r"\]: active: ", START_TIMEOUT)
        yield node, reasoner
    finally:
        node.stop()


def query(text: str, namespace: str = NAMESPACE) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["segzero-query", text, "--image", str(SCENE), "--quiet", "--timeout", "120"]
        + ["--ros-args", "-r", f"__ns:={namespace}"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=180,
        start_new_session=True,
    )


def test_the_node_loads_the_tiny_qwen3_vl(qwen3_node):
    node, reasoner = qwen3_node
    said = f"--tiny, model_family qwen3_vl, segmentation_family auto: the tiny models {reasoner},"
    assert said in node.text


def test_a_query_with_all_prints_two_objects(qwen3_node):
    completed = query("all the cups")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    assert "status:    OK" in completed.stdout, output
    assert "objects:   2 " in completed.stdout, output


def test_a_unicorn_is_not_found(qwen3_node):
    completed = query("the unicorn")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 3, output
    assert "status:    NOT_FOUND" in completed.stdout, output
    assert "not found" in completed.stdout, output


def test_the_launch_argument_reaches_the_tiny_node(qwen3_node):
    """After the console-script tests (the module's node still runs, in another namespace)."""
    ros2 = require_ros2_cli()
    _, reasoner = qwen3_node
    launch = OutputProcess(
        [str(ros2), "launch", "segzero_ros", "perception.launch.py", "tiny:=true"]
        + ["model_family:=qwen3_vl", "namespace:=families_launch"],
        env(),
    )
    try:
        launch.wait_for(r"\]: active: ", START_TIMEOUT)
        assert f"the tiny models {reasoner}" in launch.text
        completed = query("all the cups", namespace="/families_launch")
        assert completed.returncode == 0, completed.stdout + completed.stderr
        assert "objects:   2 " in completed.stdout, completed.stdout
    finally:
        launch.stop()
