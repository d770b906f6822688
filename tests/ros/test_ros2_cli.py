"""The real ROS 2 command line against the real launch file and the tiny models.

One `ros2 launch segzero_ros perception.launch.py tiny:=true ...` for the whole module (in a DDS
domain of its own, on localhost), with launch arguments that must reach the node (a custom
`params_file`, `image_topic`); this process publishes the bundled kitchen image on that camera
topic. Then the README's `ros2` commands run as written (README_COMMANDS: the one list of them),
and `segzero-query` gets OK. The daemon the verbs start is stopped at the end, and the launch's
process group killed, so nothing outlives the module.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
import subprocess
import threading
import time
from pathlib import Path

import cv2
import pytest
import yaml
from conftest import (
    OutputProcess,
    require_ros2_cli,
    ros_domain_id,
    ros_importorskip,
    ros_process_env,
)

msgs = ros_importorskip("segzero_ros.msg", reason="run under `source install/setup.bash`")
ROS2 = require_ros2_cli()

import rclpy  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.qos import (  # noqa: E402
    DurabilityPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from segzero_model.images import load_image  # noqa: E402
from segzero_ros.convert import rgb_to_image_msg  # noqa: E402
from segzero_ros.params import PerceptionParams, render_params_yaml  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCUMENTS = (README, ROOT / "docs" / "ros.md")  # where users read ros2 commands
SCENE = ROOT / "segzero_model" / "assets" / "kitchen.png"
FRAME_SIZE = (160, 120)  # width, height of the camera frames the probe publishes
DOMAIN_ID = ros_domain_id("ros2_cli")
CAMERA = "/cli_test/camera/image_raw"  # image_topic:=, so the default one stays silent
QUEUE_SIZE = 5  # from the custom params_file (the default is 8)
START_TIMEOUT = 180.0  # seconds for the launch to report the node active (7-9 s when idle)
CALL_TIMEOUT = 120.0  # seconds for one ros2 command (a tiny query takes 1-8 s)

# The README's `ros2` commands, exactly as a user types them; each is run against the node
# below. Every `ros2 topic|action|param|lifecycle|service|node` command in the README's bash
# blocks must be one of these (test_readme_ros2_commands_are_tested), so a README edit that
# changes one fails here until it is added (and so tested).
README_COMMANDS = {
    # --keep-alive 1: `--once` waits for a matching reader, publishes and exits 0.1 s later by
    # default, which under load can be before the node's reader has matched the writer: the
    # query was lost (seen in a full run). A second lets the reliable writer deliver it.
    "query": "ros2 topic pub --once --keep-alive 1 /segzero/query std_msgs/msg/String "
    "\"{data: 'the red cup'}\"",
    "echo": "ros2 topic echo /segzero/result --field status_name",
    "goal": "ros2 action send_goal --feedback /segzero/segment segzero_ros/action/Segment "
    "\"{query: 'the red cup'}\"",
    "tracking": "ros2 topic echo --once /segzero/tracking/state",
    "stop": 'ros2 service call /segzero/stop_tracking segzero_ros/srv/StopTracking "{track_id: 0}"',
    "describe": "ros2 param describe /segzero_perception queue_size",
    "state": "ros2 lifecycle get /segzero_perception",
    "deactivate": "ros2 lifecycle set /segzero_perception deactivate",
    "activate": "ros2 lifecycle set /segzero_perception activate",
}
QUERY_TEXT = "the red cup"  # what README_COMMANDS["query"] publishes


def readme_commands() -> list[str]:
    """The `ros2 ...` command lines of the bash blocks of README.md and docs/ros.md,
    continuation lines joined and trailing comments dropped."""
    text = "\n".join(path.read_text(encoding="utf-8") for path in DOCUMENTS)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["ros2"]:
                commands.append(shlex.join(words))
    return commands


def declared_launch_arguments() -> set[str]:
    completed = ros2_run("launch", "segzero_ros", "perception.launch.py", "--show-args")
    assert completed.returncode == 0, completed.stdout + completed.stderr
    return set(re.findall(r"^\s+'(\w+)':", completed.stdout, flags=re.M))


def env() -> dict[str, str]:
    return ros_process_env(DOMAIN_ID)


def ros2_run(*args: str, timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ROS2), *args],
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        start_new_session=True,
    )


def run_command(key: str, timeout: float = CALL_TIMEOUT) -> subprocess.CompletedProcess:
    """README_COMMANDS[key], as a shell would split it."""
    words = shlex.split(README_COMMANDS[key])
    return ros2_run(*words[1:], timeout=timeout)


class Probe:
    """This process's side: publishes the kitchen image on CAMERA (5 Hz, stamped now) and
    records the results on /segzero/result."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.node = rclpy.create_node("cli_test_probe", context=self.context)
        self.results = []
        self.node.create_subscription(
            msgs.SegmentationResult,
            "/segzero/result",
            self.results.append,
            QoSProfile(
                depth=10,
                reliability=ReliabilityPolicy.RELIABLE,
                durability=DurabilityPolicy.TRANSIENT_LOCAL,
            ),
        )
        camera = self.node.create_publisher(Image, CAMERA, qos_profile_sensor_data)
        # A small frame: a full 640x480 one (900 KB) exceeds Fast DDS's shared-memory segment
        # and goes out as best-effort UDP fragments, which a loaded machine loses (the node then
        # answered STALE_IMAGE in CI-like runs).
        rgb = cv2.resize(load_image(SCENE), FRAME_SIZE, interpolation=cv2.INTER_AREA)

        def publish_frame():
            header = Header(stamp=self.node.get_clock().now().to_msg(), frame_id="cli_test")
            camera.publish(rgb_to_image_msg(rgb, header))

        self.node.create_timer(0.2, publish_frame)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)
        self.thread.join(timeout=5)


@dataclasses.dataclass
class Launched:
    launch: OutputProcess
    probe: Probe


@pytest.fixture(scope="module")
def launched(tiny_cache, tmp_path_factory):
    """`ros2 launch ... tiny:=true image_topic:=CAMERA params_file:=<queue_size QUEUE_SIZE>`,
    active, with the daemon knowing the node, and the Probe publishing camera frames."""
    params_file = tmp_path_factory.mktemp("cli") / "custom_perception.yaml"
    # lost_score 0: the tiny SAM2's object scores hover near the default 0.5 (its masks are
    # noise), so the README's tracking commands would race a LOST track.
    # compressed: true and track: false in the file, overridden by the launch arguments below
    # (compressed:=false, track:=true): both booleans' spellings reach the node.
    custom = dataclasses.replace(
        PerceptionParams(),
        queue_size=QUEUE_SIZE,
        device="cpu",
        lost_score=0.0,
        compressed=True,
        track=False,
    )
    params_file.write_text(render_params_yaml(custom), encoding="utf-8")
    launch = OutputProcess(
        [
            str(ROS2),
            "launch",
            "segzero_ros",
            "perception.launch.py",
            "tiny:=true",
            f"image_topic:={CAMERA}",
            f"params_file:={params_file}",
            "compressed:=false",
            "track:=true",
        ],
        env(),
    )
    probe = None
    try:
        launch.wait_for(r"\]: active: ", START_TIMEOUT)
        probe = Probe()
        assert ros2_run("daemon", "start").returncode == 0
        deadline = time.monotonic() + 60
        while "/segzero_perception" not in ros2_run("node", "list").stdout.split():
            assert time.monotonic() < deadline, "the ros2 daemon does not see the node"
            time.sleep(0.5)
        yield Launched(launch, probe)
    finally:
        if probe is not None:
            probe.close()
        launch.stop()
        ros2_run("daemon", "stop", timeout=30)


def test_readme_ros2_commands_are_tested():
    documented = readme_commands()
    assert documented, "README.md documents no ros2 command"
    arguments = declared_launch_arguments()
    assert {"tiny", "namespace", "params_file", "image_topic"} <= arguments, arguments
    tested = {shlex.join(shlex.split(command)) for command in README_COMMANDS.values()}
    for command in documented:
        words = shlex.split(command)
        if words[1] in ("launch", "run"):  # the launch file runs below, with tiny:=true
            assert words[2:4] in (
                ["segzero_ros", "perception.launch.py"],
                ["segzero_ros", "segzero_perception"],
            ), command
            given = {word.split(":=")[0] for word in words[4:] if ":=" in word}
            # ros2 launch silently drops undeclared arguments: a typo would do nothing
            assert given <= arguments, f"{command}: {given - arguments} not declared"
        else:
            assert command in tested, (
                f"README.md or docs/ros.md documents `{command}`, which "
                f"{Path(__file__).name} does not run: add it to README_COMMANDS"
            )


def test_launch_starts_the_tiny_node(launched):
    assert "TINY RANDOM models" in launched.launch.text  # the node's own --tiny warning
    assert launched.launch.process.poll() is None


def test_launch_arguments_reach_the_node(launched):
    """image_topic:=, compressed:=false and track:=true (launch arguments over the file's
    true and false) and queue_size (from params_file:=)."""
    completed = ros2_run("param", "dump", "/segzero_perception")
    assert completed.returncode == 0, completed.stderr
    values = yaml.safe_load(completed.stdout)["/segzero_perception"]["ros__parameters"]
    assert (values["image_topic"], values["queue_size"]) == (CAMERA, QUEUE_SIZE), values
    assert (values["compressed"], values["track"]) == (False, True), values


def test_readme_topic_query_and_echo(launched):
    """The module's first query, answered OK on the camera frame (not NO_IMAGE: image_topic
    reached the node); the echo (transient local, so started before or after) shows its status."""
    echo = OutputProcess([str(ROS2), *shlex.split(README_COMMANDS["echo"])[1:]], env())
    try:
        completed = run_command("query")
        assert completed.returncode == 0, completed.stdout + completed.stderr
        echo.wait_for(r"^OK$", CALL_TIMEOUT)
    finally:
        echo.stop()
    deadline = time.monotonic() + 10
    while not launched.probe.results and time.monotonic() < deadline:
        time.sleep(0.05)
    (result,) = launched.probe.results
    assert (result.query, result.status_name) == (QUERY_TEXT, "OK"), result
    assert result.header.frame_id == "cli_test"  # the probe's camera frame


def test_readme_tracking_state_and_stop(launched):
    """The first query's OK answer started a track (`track` is true by default): its state
    comes on every tracked camera frame until the stop service ends every track."""
    completed = run_command("tracking")
    assert completed.returncode == 0, completed.stderr
    assert f"query: {QUERY_TEXT}" in completed.stdout, completed.stdout
    assert "state_name: TRACKING" in completed.stdout, completed.stdout
    assert "frame_id: cli_test" in completed.stdout  # the tracked camera frame's header
    completed = run_command("stop")
    assert completed.returncode == 0, completed.stderr
    assert "success=True" in completed.stdout and "stopped_ids=[" in completed.stdout, (
        completed.stdout
    )
    again = run_command("stop")  # nothing left to stop: still a success, no ids
    assert "success=True" in again.stdout and "stopped_ids=[]" in again.stdout, again.stdout


def test_readme_action_goal(launched):
    completed = run_command("goal")
    assert completed.returncode == 0, completed.stderr
    assert "Goal accepted" in completed.stdout
    assert "Feedback:" in completed.stdout and "stage: reasoning" in completed.stdout
    assert "status_name: OK" in completed.stdout
    assert "Goal finished with status: SUCCEEDED" in completed.stdout, completed.stdout


def test_segzero_query_gets_ok(launched):
    completed = subprocess.run(
        ["segzero-query", "the red cup", "--timeout", "120", "--quiet"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=CALL_TIMEOUT + 30,
        start_new_session=True,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "status:    OK" in completed.stdout


def test_readme_param_describe(launched):
    completed = run_command("describe")
    assert completed.returncode == 0, completed.stderr
    lines = [line.strip() for line in completed.stdout.splitlines()]
    assert "Parameter name: queue_size" in lines and "Type: integer" in lines
    assert "Read only: true" in lines and "Min value: 1" in lines
    assert any(line.startswith("Description: Queries") for line in lines), completed.stdout


def test_readme_lifecycle_deactivate_and_activate(launched):
    assert run_command("state").stdout.strip() == "active [3]"
    completed = run_command("deactivate")
    assert completed.stdout.strip() == "Transitioning successful", completed
    assert run_command("state").stdout.strip() == "inactive [2]"
    completed = run_command("activate")  # loads the models again
    assert completed.stdout.strip() == "Transitioning successful", completed
    assert run_command("state").stdout.strip() == "active [3]"
