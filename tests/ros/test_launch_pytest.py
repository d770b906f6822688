"""The installed launch file under launch_pytest, the ecosystem's in-process launch testing: each
launch fixture includes `<share>/segzero_ros/launch/perception.launch.py` as `ros2 launch` would
run it, and the tests watch its node process through launch events while the launch runs, then
again (`shutdown=True`) after it shut down.

- tiny:=true device:=cpu: the node starts and becomes active, `segzero-query --image` gets OK
  from it, and after the launch's shutdown it has exited 0 with no traceback and no log line
  lost on the way to /rosout.
- device:=cuda:99 (a GPU index no machine has, so the case holds on GPU machines too): the node
  exits 2 saying to use `device:=cpu`, and the launch file's OnProcessExit handler ends the launch
  by itself, with launch's failure status.

The node is created inside the included launch file, so no test holds its action: NodeProcess
gathers what it did from launch events, and stands in for the action in
launch_pytest.tools.process's waits. The two launches need one LaunchService each (a service that
has run once stays shut down: a second launch on it would start no process), so the failing case
is a class with launch_service and launch_context fixtures of its own.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest
from conftest import require_ros2_cli, ros_domain_id, ros_importorskip, ros_process_env

require_ros2_cli()
launch_pytest = ros_importorskip("launch_pytest", reason="the ROS 2 command-line wheels")
ros_importorskip("segzero_ros.action", reason="run under `source install/setup.bash`")

import launch  # noqa: E402
from launch.actions import IncludeLaunchDescription, RegisterEventHandler  # noqa: E402
from launch.event_handlers import OnProcessIO, OnProcessStart  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_pytest.fixture import finalize_launch_service  # noqa: E402
from launch_pytest.tools import process  # noqa: E402
from launch_ros.actions import Node  # noqa: E402

from segzero_model.tiny import TINY_WARNING  # noqa: E402

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCENE = ROOT / "segzero_model" / "assets" / "kitchen.png"
QUERY = Path(sys.executable).parent / "segzero-query"
DOMAIN_ID = ros_domain_id("launch_pytest")
EXECUTABLE = "segzero_perception"
START_TIMEOUT = 180.0  # seconds for the tiny node to be active (~8 s on an idle machine)
QUERY_TIMEOUT = 120.0  # seconds for segzero-query (a tiny query takes 1-8 s)
EXIT_TIMEOUT = 60.0  # seconds for the failing launch to end (~3 s)
NO_GPU = "cuda:99"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def perception_launch_file() -> Path:
    """The installed launch file: from the ament index when it knows segzero_ros, else from this
    checkout's install/ folder."""
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory("segzero_ros"))
    except (ImportError, LookupError):  # PackageNotFoundError is a KeyError
        share = ROOT / "install" / "segzero_ros" / "share" / "segzero_ros"
    return share / "launch" / "perception.launch.py"


class NodeProcess:
    """What the included launch file's node process did, gathered from launch events (handlers()
    go in the test's launch description): its action once started, its output, its exit code.

    Instances are also what launch_pytest.tools.process's waits need in place of the process
    action: a callable matching it (launch's event handlers take one as `target_action`) with
    get_stdout / get_stderr (what the output waits read; here without colour codes)."""

    def __init__(self) -> None:
        self.action: Node | None = None
        self._stdout: list[str] = []
        self._stderr: list[str] = []

    def __call__(self, action) -> bool:
        return isinstance(action, Node) and action.node_executable == EXECUTABLE

    def handlers(self) -> list[RegisterEventHandler]:
        return [
            RegisterEventHandler(OnProcessStart(target_action=self, on_start=self._on_start)),
            RegisterEventHandler(
                OnProcessIO(
                    target_action=self, on_stdout=self._on_stdout, on_stderr=self._on_stderr
                )
            ),
        ]

    def _on_start(self, event, context) -> None:
        self.action = event.action

    def _on_stdout(self, event) -> None:
        self._stdout.append(event.text.decode(errors="replace"))

    def _on_stderr(self, event) -> None:
        self._stderr.append(event.text.decode(errors="replace"))

    @property
    def started(self) -> bool:
        return self.action is not None

    @property
    def returncode(self) -> int | None:
        """From the action, not from a ProcessExited handler: the launch file's own handler
        raises on a non-zero exit, and the handlers after it (newest run first) never see it."""
        return None if self.action is None else self.action.return_code

    def get_stdout(self) -> str:
        return ANSI.sub("", "".join(self._stdout))

    def get_stderr(self) -> str:
        return ANSI.sub("", "".join(self._stderr))

    @property
    def text(self) -> str:
        return f"--- stdout:\n{self.get_stdout()}\n--- stderr:\n{self.get_stderr()}"


def perception_launch(node: NodeProcess, **arguments: str) -> launch.LaunchDescription:
    """The installed launch file with these launch arguments, `node` recording its node."""
    return launch.LaunchDescription(
        [
            *node.handlers(),
            IncludeLaunchDescription(
                PythonLaunchDescriptionSource(str(perception_launch_file())),
                launch_arguments=arguments.items(),
            ),
            launch_pytest.actions.ReadyToTest(),
        ]
    )


async def wait_for_start(service, node: NodeProcess, timeout: float) -> None:
    if not node.started:  # wait_for_start only sees a start still to come
        await process.wait_for_start(service.context, node, timeout=timeout)
    assert node.started, f"the node process did not start in {timeout:.0f} s"


async def wait_for_stderr(service, node: NodeProcess, pattern: str, timeout: float) -> re.Match:
    """launch_pytest's wait_for_stderr for the regex `pattern` (multiline) in the node's stderr,
    given up as soon as the launch ends (as it does when the node exits); the match."""

    def found(text: str):
        return re.search(pattern, text, flags=re.M)

    if not found(node.get_stderr()) and not service.task.done():
        output = asyncio.ensure_future(
            process.wait_for_stderr(service.context, node, found, timeout=timeout)
        )
        await asyncio.wait([output, service.task], return_when=asyncio.FIRST_COMPLETED)
        output.cancel()
        await asyncio.gather(output, return_exceptions=True)  # its handler unregistered
    match = found(node.get_stderr())
    assert match, (
        f"no {pattern!r} in the node's stderr "
        + ("(the launch ended" if service.task.done() else "(in time")
        + f"; node exit code {node.returncode}):\n{node.text}"
    )
    return match


@pytest.fixture(scope="module")
def ros_env(tiny_cache):
    """This module's ROS environment in os.environ while its launches run (a launch's processes
    inherit os.environ): its own DDS domain, discovery on localhost, no hub access, node logs on
    stderr (ROS's default, which the waits read); restored afterwards. The tiny models are built
    first (tiny_cache), not by the node."""
    wanted = ros_process_env(DOMAIN_ID, RCUTILS_LOGGING_USE_STDOUT="0")
    saved = {name: os.environ.get(name) for name in wanted if os.environ.get(name) != wanted[name]}
    os.environ.update(wanted)
    yield wanted
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@launch_pytest.fixture(scope="module")
def tiny_launch(ros_env):
    node = NodeProcess()
    return perception_launch(node, tiny="true", device="cpu"), node


@pytest.mark.launch(fixture=tiny_launch)
async def test_tiny_node_becomes_active_and_answers(tiny_launch, launch_service, ros_env):
    node = tiny_launch[1]
    await wait_for_start(launch_service, node, timeout=60.0)
    await wait_for_stderr(launch_service, node, r"\[segzero_perception\]: active: ", START_TIMEOUT)
    assert TINY_WARNING in node.get_stderr(), node.text

    # While the launch runs (this coroutine shares its event loop, so it waits without blocking).
    query = await asyncio.create_subprocess_exec(
        str(QUERY),
        "the red cup",
        "--image",
        str(SCENE),
        "--quiet",
        "--timeout",
        str(QUERY_TIMEOUT),
        env=ros_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(query.communicate(), QUERY_TIMEOUT + 30)
    finally:
        if query.returncode is None:
            query.kill()
            await query.wait()
    answer = out.decode(errors="replace")
    assert query.returncode == 0, f"segzero-query exited {query.returncode}:\n{answer}\n{node.text}"
    assert re.search(r"^status:\s+OK$", answer, flags=re.M), answer
    assert node.returncode is None, node.text  # still running until the launch shuts down


@pytest.mark.launch(fixture=tiny_launch, shutdown=True)
def test_tiny_node_exits_cleanly_when_the_launch_shuts_down(tiny_launch):
    node = tiny_launch[1]
    assert node.started
    assert node.returncode == 0, node.text
    assert "Traceback" not in node.text, node.text
    assert "Failed to publish log message to rosout" not in node.text, node.text


class TestNodeThatCannotStart:
    """tiny:=true device:=cuda:99: the node exits 2 and the launch ends by itself."""

    # Fixtures of this class's own (a LaunchService runs once): they override the module's.
    @pytest.fixture(scope="class")
    def launch_service(self, event_loop):
        service = launch.LaunchService()
        yield service
        finalize_launch_service(service, eprefix="When tearing down the class's launch_service")

    @pytest.fixture(scope="class")
    def launch_context(self, launch_service):
        return launch_service.context

    @launch_pytest.fixture(scope="class")
    def no_gpu_launch(self, ros_env):
        node = NodeProcess()
        return perception_launch(node, tiny="true", device=NO_GPU), node

    @pytest.mark.launch(fixture=no_gpu_launch)
    async def test_node_says_why_and_the_launch_ends(self, no_gpu_launch, launch_service):
        node = no_gpu_launch[1]
        await wait_for_start(launch_service, node, timeout=60.0)
        line = await wait_for_stderr(
            launch_service, node, rf"\[segzero_perception\]: .*'{NO_GPU}'.*$", EXIT_TIMEOUT
        )
        assert "device:=cpu" in line.group(0), node.text  # the parameter, as the launch takes it
        # The launch file's OnProcessExit handler ends the launch (an error: failure status 1),
        # with no shutdown from this side.
        try:
            code = await asyncio.wait_for(asyncio.shield(launch_service.task), EXIT_TIMEOUT)
        except asyncio.TimeoutError:
            pytest.fail(f"the launch still runs {EXIT_TIMEOUT:.0f} s on:\n{node.text}")
        assert code == 1, node.text
        assert launch_service.event_loop is None  # done: the shutdown stage has nothing to stop

    @pytest.mark.launch(fixture=no_gpu_launch, shutdown=True)
    def test_node_exited_with_code_2(self, no_gpu_launch):
        node = no_gpu_launch[1]
        assert node.returncode == 2, node.text
        assert "Traceback" not in node.text, node.text
