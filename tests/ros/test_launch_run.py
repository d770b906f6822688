"""`ros2 launch segzero_ros perception.launch.py` when it cannot run: it stops with a clear
message and a non-zero exit status (launch's only failure status is 1), and no node outlives
it. Each case fails at start, in a few seconds."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
from conftest import require_ros2_cli, ros_domain_id, ros_importorskip, ros_process_env

ros_importorskip("segzero_ros.msg", reason="run under `source install/setup.bash`")
ROS2 = require_ros2_cli()

pytestmark = pytest.mark.slow

DOMAIN_ID = ros_domain_id("launch_run")
TIMEOUT = 120.0  # seconds; each case ends within ~5 s on an idle machine


def launch(*arguments: str) -> subprocess.CompletedProcess:
    process = subprocess.Popen(
        [str(ROS2), "launch", "segzero_ros", "perception.launch.py", *arguments],
        env=ros_process_env(DOMAIN_ID),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = process.communicate(timeout=TIMEOUT)
    finally:
        try:
            os.killpg(
                process.pid, signal.SIGKILL
            )  # a node left behind, if any (there should be none)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
    return subprocess.CompletedProcess(process.args, process.returncode, out, "")


def test_missing_params_file_stops_the_launch(tmp_path):
    missing = tmp_path / "no_such_perception.yaml"
    completed = launch(f"params_file:={missing}")
    assert completed.returncode == 1, completed.stdout
    assert f"params_file {missing}: cannot read it: No such file or directory" in completed.stdout
    assert "process started" not in completed.stdout  # stopped before the node


def test_unknown_parameter_in_params_file_stops_the_launch(tmp_path):
    params = tmp_path / "typo.yaml"
    params.write_text("segzero_perception:\n  ros__parameters:\n    queue_sise: 3\n")
    completed = launch(f"params_file:={params}", "namespace:=left")
    assert completed.returncode == 1, completed.stdout
    assert f"params_file {params}" in completed.stdout and "queue_sise" in completed.stdout
    assert "queue_size" in completed.stdout  # the suggestion
    assert "process started" not in completed.stdout


def test_bad_tiny_value_stops_the_launch():
    completed = launch("tiny:=yes")
    assert completed.returncode == 1, completed.stdout
    assert 'Argument "tiny" provided value "yes" is not valid' in completed.stdout
    assert "process started" not in completed.stdout


def test_node_that_cannot_start_shuts_the_launch_down_and_says_why(tmp_path, tiny_sam2_dir):
    """A reasoning model directory that does not exist: the node exits 2, the launch says so
    and exits 1 (a device that is not there, e.g. device:=cuda on a CPU machine, the same)."""
    missing = tmp_path / "no_such_model"
    completed = launch(
        f"reasoning_model:={missing}", f"segmentation_model:={tiny_sam2_dir}", "device:=cpu"
    )
    assert completed.returncode == 1, completed.stdout
    assert str(missing) in completed.stdout  # the node's own error line
    assert "segzero_perception-1 exited with code 2" in completed.stdout
    assert "it could not start" in completed.stdout and "shutting down" in completed.stdout
