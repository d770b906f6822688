"""`segzero-query` against a real `segzero-perception --tiny` process over real DDS."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import ros_domain_id, ros_importorskip

from segzero_ros.client import split_ros_args

ros_importorskip("rclpy")
ros_importorskip("segzero_ros.action", reason="build the interfaces: scripts/ros_setup.sh")

from segzero_model.images import load_image  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SCENE = ROOT / "segzero_model" / "assets" / "kitchen.png"


def _env(tiny_cache) -> dict[str, str]:
    return dict(
        os.environ,
        ROS_DOMAIN_ID=str(ros_domain_id("client")),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        SEGZERO_CACHE=str(tiny_cache),
    )


@pytest.fixture(scope="module")
def perception_node(tiny_cache):
    """A tiny perception node in its own process (the console script with the shipped parameter
    file), answering on the default action name. At the end it is stopped as Ctrl-C stops it and
    must exit 0 with a clean output (no traceback, no rosout error: it is released while its
    context is still valid)."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "segzero_ros.main",
            "--tiny",
            "--params-file",
            str(ROOT / "config" / "perception.yaml"),
            "--ros-args",
            "-p",
            "device:=cpu",
            "-p",
            "max_new_tokens:=128",
        ],
        cwd=ROOT,
        env=_env(tiny_cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    try:
        while not any("active:" in line for line in lines):
            assert process.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "node did not become active:\n" + "".join(lines)
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=30)
        reader.join(timeout=5)
    output = "".join(lines)
    assert process.returncode == 0, output
    assert "building the tiny checkpoints" not in output  # the session's copy was used
    assert "TINY RANDOM models" in output and "MEANINGLESS" in output
    assert "Traceback" not in output and "Failed to publish log message" not in output, output


def run_client(tiny_cache, *args, timeout=180):
    return subprocess.run(
        [sys.executable, "-m", "segzero_ros.client", *args],
        cwd=ROOT,
        env=_env(tiny_cache),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_query_with_an_image_prints_the_answer_and_saves_mask_and_overlay(
    perception_node, tiny_cache, tmp_path
):
    completed = run_client(
        tiny_cache,
        "the red cup",
        "--image",
        str(SCENE),
        "--timeout",
        "120",
        "--save-mask",
        str(tmp_path / "mask.png"),
        "--save-overlay",
        str(tmp_path / "over.png"),
    )
    assert completed.returncode in (0, 1), completed.stderr
    assert "status:" in completed.stdout and "timings:" in completed.stdout
    if completed.returncode == 0:  # the tiny model answered in format: everything was printed
        assert "bbox:" in completed.stdout and "points:" in completed.stdout
        assert load_image(tmp_path / "mask.png").shape == (480, 640, 3)
        assert load_image(tmp_path / "over.png").shape == (480, 640, 3)
        assert "[reasoning]" in completed.stderr  # feedback streamed


def test_query_without_a_camera_frame_reports_no_image(perception_node, tiny_cache):
    completed = run_client(tiny_cache, "the red cup", "--timeout", "60")
    assert completed.returncode == 1, completed.stderr
    assert "NO_IMAGE" in completed.stdout


@pytest.mark.parametrize(
    ("argv", "ours", "ros"),
    [
        (["cup"], ["cup"], []),
        (
            ["cup", "--timeout", "5", "--ros-args", "-r", "__ns:=/left"],
            ["cup", "--timeout", "5"],
            ["--ros-args", "-r", "__ns:=/left"],
        ),
        (
            ["--ros-args", "-r", "__ns:=/a", "--ros-args"],
            [],
            ["--ros-args", "-r", "__ns:=/a", "--ros-args"],
        ),
    ],
)
def test_split_ros_args(argv, ours, ros):
    assert split_ros_args(argv) == (ours, ros)


def test_ros_args_namespace_the_action_name(tiny_cache):
    """The relative default action name resolves in the namespace given after --ros-args."""
    completed = run_client(
        tiny_cache, "cup", "--timeout", "1", "--ros-args", "-r", "__ns:=/nowhere"
    )
    assert completed.returncode == 2
    assert "no action server /nowhere/segzero/segment" in completed.stderr


def test_bad_ros_args_are_a_short_error(tiny_cache):
    completed = run_client(tiny_cache, "cup", "--ros-args", "-r", "no-rule-here")
    assert completed.returncode == 2
    assert "bad ROS arguments" in completed.stderr and "Traceback" not in completed.stderr


def test_missing_server_is_a_short_error(tiny_cache):
    completed = run_client(tiny_cache, "cup", "--action", "/nobody/here", "--timeout", "2")
    assert completed.returncode == 2
    assert "no action server /nobody/here" in completed.stderr
    assert "Traceback" not in completed.stderr


def test_bad_image_file_is_a_short_error(tiny_cache, tmp_path):
    completed = run_client(tiny_cache, "cup", "--image", str(tmp_path / "missing.png"))
    assert completed.returncode == 2
    assert "not found" in completed.stderr and "Traceback" not in completed.stderr


def test_ctrl_c_cancels_the_goal(perception_node, tiny_cache):
    """SIGINT as soon as the goal is accepted (the tiny model needs seconds to answer)."""
    import signal

    process = subprocess.Popen(
        [sys.executable, "-m", "segzero_ros.client", "the red cup", "--image", str(SCENE)],
        cwd=ROOT,
        env=_env(tiny_cache),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = process.stderr.readline()  # "[queued (position 0)]" once the goal is accepted
    assert first.startswith("[queued"), first
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "cancelling the goal" in err and "Traceback" not in err
    # the node survived and serves the next goal
    completed = run_client(tiny_cache, "the cup", "--image", str(SCENE), "--timeout", "120")
    assert completed.returncode in (0, 1) and "status:" in completed.stdout, completed.stderr
