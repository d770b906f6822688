"""Start the Seg-Zero perception node with config/perception.yaml (or your own parameter file).

    ros2 launch segzero_ros perception.launch.py
    ros2 launch segzero_ros perception.launch.py image_topic:=/camera/color/image_raw \
        reasoning_model:=/models/Seg-Zero-7B device:=cuda:0
    ros2 launch segzero_ros perception.launch.py params_file:=/path/to/my_perception.yaml
    ros2 launch segzero_ros perception.launch.py tiny:=true namespace:=left
    ros2 launch segzero_ros perception.launch.py tiny:=true model_family:=qwen3_vl
    ros2 launch segzero_ros perception.launch.py reasoning_url:=http://gpu-host:8000/v1

Arguments:
- The node parameters in OVERRIDABLE (see segzero_ros/params.py, whose descriptions they show).
  Left empty (the default) one does not override the parameter file, so the file's value is
  used.
- `params_file`: the node's parameter file. It is checked before the node starts, as the console
  script checks its --params-file: a missing file, bad YAML or an unknown or mistyped parameter
  stops the launch with an error naming the file.
- `tiny`: true runs the node with `--tiny`, the built-in tiny random models (plumbing tests; the
  output is meaningless), whatever reasoning_model and segmentation_model say; with
  `model_family:=qwen3_vl` the reasoner is the tiny Qwen3-VL (two objects for a query with
  "all", none for "unicorn", else one).
- `namespace`: the node's namespace; its topics and action (relative names) move with it, so
  `namespace:=left` serves /left/segzero/query, /left/segzero/segment, ... In a namespace the
  parameter file's section named by the bare node name (`segzero_perception:`, as in
  config/perception.yaml) still applies: ROS applies such a section only in the root namespace,
  so the node gets a copy re-keyed `/**/segzero_perception`.

When the node exits, the launch shuts down. An exit status other than 0 (2: the node could not
start, e.g. a bad parameter or a model not found; its last log line says why) is raised as an
error, so `ros2 launch` logs the reason and exits with status 1 (launch's only failure status).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    LogInfo,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare
from launch_ros.utilities import make_namespace_absolute, prefix_namespace

from segzero_ros.params import NODE_NAME, PARAMS, ParamsError, parse_params_yaml

# Node parameters that can be set on the command line of this launch file.
OVERRIDABLE = (
    "reasoning_model",
    "reasoning_url",
    "model_family",
    "segmentation_model",
    "segmentation_family",
    "device",
    "image_topic",
    "compressed",
    "track",
    "use_depth",
    "publish_detections",
)
_TABLE = {param.name: param for param in PARAMS}


class NodeExitError(RuntimeError):
    """The node process ended with a non-zero status while the launch was running."""


def _bool(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("true", "false"):
        raise ParamsError(f"launch argument {name} must be true or false, got {text!r}")
    return lowered == "true"


def _to_value(name: str, text: str):
    """A launch argument's text as the parameter's type (bools: true/false)."""
    if _TABLE[name].type is bool:
        return _bool(name, text)
    return text


def _params_file(path: str, namespace: str) -> str:
    """The parameter file to give the node: `path`, checked; in a namespace other than `/`, a
    temporary copy with the bare-node-name section re-keyed `/**/segzero_perception`.
    Raises ParamsError naming `path`."""
    source = f"params_file {path}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise ParamsError(f"{source}: cannot read it: {error.strerror}") from None
    parse_params_yaml(text, source=source, require_section=False)  # YAML, names, types
    if namespace != "/":
        document = yaml.safe_load(text)
        rekeyed = {
            (f"/**/{NODE_NAME}" if key in (NODE_NAME, f"/{NODE_NAME}") else key): section
            for key, section in document.items()
        }
        if rekeyed != document:
            text = yaml.safe_dump(rekeyed, sort_keys=False)
            with tempfile.NamedTemporaryFile(
                "w", prefix="segzero_params_", suffix=".yaml", delete=False, encoding="utf-8"
            ) as copy:
                copy.write(text)
            path = copy.name
    parse_params_yaml(text, source=source, namespace=namespace)  # a section for this node
    return path


def _on_node_exit(event, context):
    """Shut the launch down when the node exits; a non-zero status is an error."""
    code = event.returncode
    if context.is_shutdown:  # Ctrl-C or another shutdown is under way: nothing to add
        return None
    if code != 0:
        raise NodeExitError(
            f"{event.process_name} exited with code {code}"
            + (" (it could not start: see its last error above)" if code == 2 else "")
            + "; shutting down"
        )
    reason = f"{event.process_name} exited with code 0"
    return [LogInfo(msg=f"{reason}; shutting down"), EmitEvent(event=Shutdown(reason=reason))]


def _node(context):
    def argument(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    for name in OVERRIDABLE:
        text = argument(name)
        if text != "":
            overrides[name] = _to_value(name, text)
    namespace = argument("namespace")
    full_namespace = make_namespace_absolute(
        prefix_namespace(context.launch_configurations.get("ros_namespace"), namespace or None)
    )
    params_file = _params_file(argument("params_file"), full_namespace or "/")
    node = Node(
        package="segzero_ros",
        executable="segzero_perception",
        name=NODE_NAME,
        namespace=namespace or None,
        arguments=["--tiny"] if _bool("tiny", argument("tiny")) else [],
        output="screen",
        emulate_tty=True,
        parameters=[params_file, overrides],
    )
    return [node, RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_on_node_exit))]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution(
                [FindPackageShare("segzero_ros"), "config", "perception.yaml"]
            ),
            description="ROS 2 parameter file of the node (all parameters, commented); checked "
            "before start-up",
        ),
        DeclareLaunchArgument(
            "tiny",
            default_value="false",
            choices=["true", "false"],
            description="true: the built-in tiny random models (--tiny; plumbing tests, the "
            "output is meaningless), instead of reasoning_model and segmentation_model; with "
            "model_family:=qwen3_vl the tiny Qwen3-VL (two objects for a query with 'all', "
            "none for 'unicorn')",
        ),
        DeclareLaunchArgument(
            "namespace",
            default_value="",
            description="Namespace of the node, its topics and its action (e.g. left: "
            "/left/segzero/query). Empty: the root namespace.",
        ),
    ]
    for name in OVERRIDABLE:
        param = _TABLE[name]
        arguments.append(
            DeclareLaunchArgument(
                name,
                default_value="",
                description=f"{param.description} Empty: the parameter file's value "
                f"(default {param.default!r}).",
            )
        )
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
