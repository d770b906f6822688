"""Start the Seg-Zero perception node with config/perception.yaml (or your own parameter file).

    ros2 launch segzero_ros perception.launch.py
    ros2 launch segzero_ros perception.launch.py image_topic:=/camera/color/image_raw \
        reasoning_model:=/models/Seg-Zero-7B device:=cuda:0
    ros2 launch segzero_ros perception.launch.py params_file:=/path/to/my_perception.yaml

Every launch argument but params_file is a node parameter (see segzero_ros/params.py, whose
descriptions it shows). Left empty (the default) it does not override the parameter file, so
the file's value is used.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from segzero_ros.params import PARAMS

# Node parameters that can be set on the command line of this launch file.
OVERRIDABLE = (
    "reasoning_model",
    "segmentation_model",
    "device",
    "image_topic",
    "compressed",
)
_TABLE = {param.name: param for param in PARAMS}


def _to_value(name: str, text: str):
    """A launch argument's text as the parameter's type (bools: true/false)."""
    if _TABLE[name].type is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise ValueError(f"launch argument {name} must be true or false, got {text!r}")
        return lowered == "true"
    return text


def _node(context):
    overrides = {}
    for name in OVERRIDABLE:
        text = LaunchConfiguration(name).perform(context)
        if text != "":
            overrides[name] = _to_value(name, text)
    params_file = LaunchConfiguration("params_file").perform(context)
    return [
        Node(
            package="segzero_ros",
            executable="segzero_perception",
            name="segzero_perception",
            output="screen",
            emulate_tty=True,
            parameters=[params_file, overrides],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution(
                [FindPackageShare("segzero_ros"), "config", "perception.yaml"]
            ),
            description="ROS 2 parameter file of the node (all parameters, commented)",
        )
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
