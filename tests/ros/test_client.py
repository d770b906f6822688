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

ROOT = Path(__file__).resolve().parents[2]
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


# --- printing a result (no node: `_report` on a hand-built message) -----------------------------


def _printed(result, capsys) -> tuple[int, str]:
    from types import SimpleNamespace

    from segzero_ros.client import _report

    args = SimpleNamespace(quiet=True, save_mask=None, save_overlay=None)
    code = _report(result, args, None, printed_reasoning=False)
    return code, capsys.readouterr().out


def test_report_prints_every_object(capsys):
    import numpy as np
    from std_msgs.msg import Header

    from segzero_model.result import ObjectResult, SegmentationResult, Status
    from segzero_ros.client import EXIT_OK
    from segzero_ros.convert import result_to_msg

    left = np.zeros((4, 6), bool)
    left[:, :3] = True
    objects = [
        ObjectResult((0.0, 0.0, 3.0, 4.0), ((1.0, 2.0),), left, 0.75),
        ObjectResult(None, ((4.0, 1.0), (5.0, 2.0)), ~left, 0.5),
    ]
    result = SegmentationResult(
        status=Status.OK,
        query="the two halves",
        image_size=(6, 4),
        mask=left | ~left,
        bbox=objects[0].bbox,
        points=objects[0].points,
        score=0.75,
        reasoning="two",
        objects=objects,
    )
    code, out = _printed(result_to_msg(result, Header()), capsys)
    assert code == EXIT_OK
    assert "objects:   2" in out
    assert "  #1: bbox [0.0, 0.0, 3.0, 4.0], points (1.0, 2.0), score 0.750, area 12" in out
    assert "  #2: bbox -, points (4.0, 1.0), (5.0, 2.0), score 0.500, area 12" in out
    assert "mask:      24 pixels, score 0.750" in out


def test_report_of_a_single_object_lists_no_objects(capsys):
    import numpy as np
    from std_msgs.msg import Header

    from segzero_model.result import SegmentationResult, Status
    from segzero_ros.convert import result_to_msg

    mask = np.zeros((4, 6), bool)
    mask[1:3, 1:3] = True
    result = SegmentationResult(
        status=Status.OK,
        query="the cup",
        image_size=(6, 4),
        mask=mask,
        bbox=(1.0, 1.0, 3.0, 3.0),
        points=((2.0, 2.0), (2.5, 2.5)),
        score=0.5,
    )
    code, out = _printed(result_to_msg(result, Header()), capsys)
    assert code == 0 and "objects:" not in out
    assert "bbox:      [1.0, 1.0, 3.0, 3.0]" in out and "mask:      4 pixels" in out


def test_report_of_not_found(capsys):
    from std_msgs.msg import Header

    from segzero_model.result import SegmentationResult, Status
    from segzero_ros.client import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_OK
    from segzero_ros.convert import result_to_msg

    result = SegmentationResult(
        status=Status.NOT_FOUND,
        query="the unicorn",
        image_size=(6, 4),
        reason="no such object in view",
        reasoning="No unicorn here.",
    )
    code, out = _printed(result_to_msg(result, Header()), capsys)
    assert code == EXIT_NOT_FOUND and EXIT_NOT_FOUND not in (EXIT_OK, EXIT_FAILED, 2, 130)
    assert "status:    NOT_FOUND (no such object in view)" in out
    assert "reasoning: No unicorn here." in out and "not found:" in out
    assert "bbox:" not in out and "mask:" not in out
