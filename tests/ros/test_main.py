"""The `segzero-perception` console script (segzero_ros/main.py) in child processes: start-up
failures exit 2 with one line; and its `spin` survives rclpy's wait-set race. (`--tiny` with the
shipped parameter file starting, serving and exiting 0 on SIGINT with a clean output is checked
by tests/ros/test_client.py's node, which is that process.)"""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from conftest import ros_importorskip

ros_importorskip(
    "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
)

import rclpy  # noqa: E402
from rclpy.exceptions import InvalidHandle  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy  # noqa: E402
from ros_harness import DOMAIN_ID, ROOT, ros_env  # noqa: E402

from segzero_ros.main import spin  # noqa: E402

pytestmark = pytest.mark.slow


def run_node(args: list[str], timeout: float = 120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "segzero_ros.main", *args],
        cwd=ROOT,
        env=env or ros_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_a_model_that_fails_to_load_stops_the_node_with_one_line():
    proc = run_node(
        ["--ros-args", "-p", "reasoning_model:=/nonexistent/seg-zero", "-p", "device:=cpu"]
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if "cannot load the models" in line]
    assert len(lines) == 1 and "/nonexistent/seg-zero" in lines[0], output
    assert sum("ERROR" in line for line in output.splitlines()) == 1, output


def test_bad_parameter_file_and_bad_parameter_value(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("segzero_perception:\n  ros__parameters:\n    queue_sise: 3\n")
    proc = run_node(["--params-file", str(bad)])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "unknown parameter 'queue_sise' (did you mean 'queue_size'?)" in proc.stderr

    proc = run_node(["--ros-args", "--params-file", str(bad)])
    assert proc.returncode == 2 and "unknown parameter 'queue_sise'" in proc.stderr

    proc = run_node(["--ros-args", "-p", "queue_size:=0"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "queue_size" in proc.stderr


@pytest.mark.parametrize(
    "error",
    [
        InvalidHandle("cannot use Destroyable because destruction was requested"),
        # seen in CI from the action server destroyed at deactivate
        _rclpy.RCLError(
            "Failed to add 'rcl_action_server_t' to wait set: action server pointer is invalid"
        ),
    ],
    ids=["InvalidHandle", "RCLError"],
)
def test_spin_goes_on_after_the_wait_set_race(capfd, error):
    """rclpy can raise from building a wait set while another thread destroys an entity
    (ros2/rclpy#1284); the node's spin logs it and keeps serving."""

    class RacingExecutor(SingleThreadedExecutor):
        raced = False

        def spin_once(self, timeout_sec=None):
            if not self.raced:
                self.raced = True
                raise error
            super().spin_once(timeout_sec)

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(DOMAIN_ID))
    node = rclpy.create_node("segzero_spin_race", context=context)
    ticks = threading.Event()
    node.create_timer(0.01, ticks.set)
    executor = RacingExecutor(context=context)
    executor.add_node(node)
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(executor, node.get_logger(), stop), daemon=True)
    try:
        spinner.start()
        assert ticks.wait(10), "the timer never ran after the race"
        assert executor.raced
    finally:
        stop.set()
        executor.shutdown(timeout_sec=5)
        spinner.join(timeout=10)
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert not spinner.is_alive()
    assert f"{error}; spinning on" in capfd.readouterr().err


def test_spin_raises_other_rcl_errors():
    class FailingExecutor(SingleThreadedExecutor):
        def spin_once(self, timeout_sec=None):
            raise _rclpy.RCLError("Failed to wait on wait set: some other failure")

    context = rclpy.Context()
    rclpy.init(context=context, domain_id=int(DOMAIN_ID))
    try:
        executor = FailingExecutor(context=context)
        with pytest.raises(_rclpy.RCLError, match="some other failure"):
            spin(executor, rclpy.logging.get_logger("test_spin"), threading.Event())
    finally:
        executor.shutdown(timeout_sec=5)
        rclpy.shutdown(context=context)
