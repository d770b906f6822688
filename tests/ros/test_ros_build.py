"""The ROS 2 package: package.xml against CMakeLists.txt, and the interfaces colcon generated.

The interface checks import the messages from the colcon install tree (built by
scripts/ros_setup.sh). The generated libraries there are found through LD_LIBRARY_PATH, which only
`source install/setup.bash` sets and which a running process cannot change for itself, so those
checks run in a child Python under the sourced environment.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INSTALL = ROOT / "install"

# Keywords of rosidl_generate_interfaces() that end its DEPENDENCIES list.
_ROSIDL_KEYWORDS = {
    "DEPENDENCIES",
    "LIBRARY_NAME",
    "ADD_LINTER_TESTS",
    "SKIP_INSTALL",
    "SKIP_GROUP_MEMBERSHIP_CHECK",
}


# --- package.xml and CMakeLists.txt ------------------------------------------------------------


def _strip_cmake_comments(text: str) -> str:
    """CMake source without its line comments (a `#` outside a quoted argument)."""
    lines = []
    for line in text.splitlines():
        quoted = False
        for i, char in enumerate(line):
            if char == '"' and (i == 0 or line[i - 1] != "\\"):
                quoted = not quoted
            elif char == "#" and not quoted:
                line = line[:i]
                break
        lines.append(line)
    return "\n".join(lines)


def _cmake_args(text: str) -> list[str]:
    return [arg.strip('"') for arg in text.split()]


def cmake_rosidl_dependencies() -> set[str]:
    """The DEPENDENCIES that CMakeLists.txt passes to rosidl_generate_interfaces()."""
    source = _strip_cmake_comments((ROOT / "CMakeLists.txt").read_text(encoding="utf-8"))
    variables = {
        m.group(1): _cmake_args(m.group(2))
        for m in re.finditer(r"\bset\s*\(\s*(\w+)([^)]*)\)", source, re.IGNORECASE)
    }
    calls = re.findall(r"\brosidl_generate_interfaces\s*\(([^)]*)\)", source, re.IGNORECASE)
    assert len(calls) == 1, "expected exactly one rosidl_generate_interfaces() call"
    args: list[str] = []
    for arg in _cmake_args(calls[0]):
        ref = re.fullmatch(r"\$\{(\w+)\}", arg)
        args.extend(variables.get(ref.group(1), []) if ref else [arg])
    assert "DEPENDENCIES" in args, "rosidl_generate_interfaces() has no DEPENDENCIES"
    deps = set()
    for arg in args[args.index("DEPENDENCIES") + 1 :]:
        if arg in _ROSIDL_KEYWORDS:
            break
        deps.add(arg)
    return deps


def test_package_xml_matches_cmake_interface_dependencies():
    catkin_package = pytest.importorskip(
        "catkin_pkg.package", reason="catkin_pkg is not installed (scripts/ros_setup.sh does)"
    )
    package = catkin_package.parse_package(str(ROOT / "package.xml"))
    package.validate()
    assert package.name == "segzero_ros"
    assert package.package_format == 3
    assert package.get_build_type() == "ament_cmake"
    assert [str(license) for license in package.licenses] == ["Apache-2.0"]
    assert [group.name for group in package.member_of_groups] == ["rosidl_interface_packages"]
    buildtool = {dep.name for dep in package.buildtool_depends}
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= buildtool
    exec_deps = {dep.name for dep in package.exec_depends}
    assert {"rclpy", "launch", "launch_ros", "rosidl_default_runtime"} <= exec_deps

    rosidl_deps = cmake_rosidl_dependencies()
    assert "action_msgs" in rosidl_deps  # the .action file needs it
    # <depend> puts a dependency into build, build_export and exec dependencies alike.
    assert {dep.name for dep in package.build_depends} == rosidl_deps
    assert rosidl_deps <= {dep.name for dep in package.build_export_depends}
    assert rosidl_deps <= exec_deps


def test_interface_files_are_the_ones_cmake_generates():
    source = _strip_cmake_comments((ROOT / "CMakeLists.txt").read_text(encoding="utf-8"))
    call = re.search(r"\brosidl_generate_interfaces\s*\(([^)]*)\)", source).group(1)
    listed = {arg for arg in _cmake_args(call) if arg.endswith((".msg", ".action", ".srv"))}
    on_disk = {
        str(path.relative_to(ROOT))
        for pattern in ("msg/*.msg", "srv/*.srv", "action/*.action")
        for path in ROOT.glob(pattern)
    }
    assert listed == on_disk


# --- the generated interfaces (colcon install tree) --------------------------------------------


def run_in_ros_env(code: str) -> str:
    """Run Python `code` in a child under `source install/setup.bash`; return its stdout."""
    if not INSTALL.is_dir():
        pytest.skip("install/ does not exist: run scripts/ros_setup.sh to build the ROS package")
    site_packages = sorted(INSTALL.glob("segzero_ros/lib/python3*/site-packages/segzero_ros"))
    assert site_packages, "install/ has no segzero_ros Python package: rerun scripts/ros_setup.sh"
    script = (
        f"source {shlex.quote(str(INSTALL / 'setup.bash'))} && "
        f'exec {shlex.quote(sys.executable)} -c "$SEGZERO_TEST_CODE"'
    )
    env = dict(os.environ, SEGZERO_TEST_CODE=textwrap.dedent(code))
    proc = subprocess.run(
        ["bash", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"child failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_segmentation_result_constants_and_fields():
    out = run_in_ros_env(
        """
        from segzero_ros.msg import SegmentationResult as R

        expected = dict(
            OK=0, INVALID_QUERY=1, INVALID_IMAGE=2, UNPARSEABLE_ANSWER=3, CANCELLED=4,
            OUT_OF_MEMORY=5, ERROR=6, NO_IMAGE=7, STALE_IMAGE=8, DROPPED=9, NOT_FOUND=10,
        )
        for name, value in expected.items():
            assert getattr(R, name) == value, (name, getattr(R, name))
        fields = R.get_fields_and_field_types()
        assert fields == {
            "header": "std_msgs/Header",
            "query_id": "string",
            "query": "string",
            "status": "uint8",
            "status_name": "string",
            "error": "string",
            "reasoning": "string",
            "raw_output": "string",
            "has_bbox": "boolean",
            "bbox": "float[4]",
            "points": "sequence<geometry_msgs/Point>",
            "mask": "sensor_msgs/Image",
            "score": "float",
            "timings": "sequence<segzero_ros/StageTiming>",
            "generated_tokens": "uint32",
            "objects": "sequence<segzero_ros/SegmentedObject>",
            "track_id": "uint32",
            "depth_status": "uint8",
            "depth_status_name": "string",
            "depth_error": "string",
            "has_position": "boolean",
            "position": "geometry_msgs/PointStamped",
            "size": "geometry_msgs/Vector3",
            "valid_depth_ratio": "float",
            "depth_points": "uint32",
            "position_in_target": "geometry_msgs/PointStamped",
        }, fields
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_segmented_object_fields():
    out = run_in_ros_env(
        """
        from segzero_ros.msg import SegmentedObject as O

        assert O.get_fields_and_field_types() == {
            "has_bbox": "boolean",
            "bbox": "float[4]",
            "points": "sequence<geometry_msgs/Point>",
            "score": "float",
            "area": "uint32",
            "instance_id": "uint16",
            "has_position": "boolean",
            "position": "geometry_msgs/Point",
            "size": "geometry_msgs/Vector3",
        }, O.get_fields_and_field_types()
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_depth_status_constants_and_tracked_object_fields():
    out = run_in_ros_env(
        """
        from segzero_ros.msg import SegmentationResult as R, TrackedObject as T

        depth = dict(
            DEPTH_OFF=0, DEPTH_OK=1, NO_CAMERA_INFO=2, NO_DEPTH=3, BAD_DEPTH=4,
            RESOLUTION_MISMATCH=5, NO_VALID_DEPTH=6,
        )
        for name, value in depth.items():
            assert getattr(R, name) == getattr(T, name) == value, name
        assert T.get_fields_and_field_types() == {
            "track_id": "uint32",
            "query": "string",
            "state": "uint8",
            "state_name": "string",
            "bbox": "float[4]",
            "has_bbox": "boolean",
            "score": "float",
            "area": "uint32",
            "reason": "string",
            "depth_status": "uint8",
            "depth_status_name": "string",
            "has_position": "boolean",
            "position": "geometry_msgs/Point",
            "size": "geometry_msgs/Vector3",
        }, T.get_fields_and_field_types()
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_segment_action_types():
    out = run_in_ros_env(
        """
        from segzero_ros.action import Segment
        from segzero_ros.msg import SegmentationResult

        goal = Segment.Goal(query="the red cup")
        assert goal.image.height == 0  # height 0: use the latest camera frame
        assert Segment.Goal.get_fields_and_field_types() == {
            "query": "string", "image": "sensor_msgs/Image", "track": "uint8"}
        assert goal.track == Segment.Goal.TRACK_DEFAULT == 0  # default: the node's `track`
        assert Segment.Result.get_fields_and_field_types() == {
            "result": "segzero_ros/SegmentationResult"}
        assert isinstance(Segment.Result().result, SegmentationResult)
        assert Segment.Feedback.get_fields_and_field_types() == {
            "stage": "string", "reasoning": "string", "queue_position": "uint32"}
        feedback = Segment.Feedback(stage="reasoning", reasoning="<think>", queue_position=2)
        assert feedback.queue_position == 2
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_segmentation_result_serialization_round_trip():
    out = run_in_ros_env(
        """
        from geometry_msgs.msg import Point
        from rclpy.serialization import deserialize_message, serialize_message
        from sensor_msgs.msg import Image
        from std_msgs.msg import Header
        from builtin_interfaces.msg import Time

        from segzero_ros.msg import SegmentationResult, StageTiming

        mask = Image(
            header=Header(stamp=Time(sec=12, nanosec=345), frame_id="camera"),
            height=2, width=3, encoding="mono8", is_bigendian=0, step=3,
            data=bytes([0, 255, 0, 255, 255, 0]),
        )
        msg = SegmentationResult(
            header=Header(stamp=Time(sec=12, nanosec=345), frame_id="camera"),
            query_id="q-1",
            query="the thing I can drink from",
            status=SegmentationResult.OK,
            status_name="OK",
            error="",
            reasoning="The cup is on the table.",
            raw_output='<think>The cup</think><answer>{"bbox": [1, 0, 2, 1]}</answer>',
            has_bbox=True,
            bbox=[1.0, 0.0, 2.5, 1.0],
            points=[Point(x=1.5, y=0.5, z=0.0), Point(x=2.0, y=0.25, z=0.0)],
            mask=mask,
            score=0.875,
            timings=[StageTiming(stage="reasoning", seconds=1.25),
                     StageTiming(stage="segmentation", seconds=0.5)],
            generated_tokens=42,
        )
        data = serialize_message(msg)
        assert isinstance(data, bytes) and len(data) > 100
        back = deserialize_message(data, SegmentationResult)
        assert back == msg
        assert back.mask.data.tobytes() == bytes([0, 255, 0, 255, 255, 0])
        assert list(back.bbox) == [1.0, 0.0, 2.5, 1.0]
        assert [t.stage for t in back.timings] == ["reasoning", "segmentation"]
        print(len(data))
        """
    )
    assert int(out) > 100


def test_generated_messages_not_shadowed_by_source_package():
    """With the repository root first on sys.path (as an editable install puts it), importing
    segzero_ros finds the source package, whose __path__ still reaches the generated msg/."""
    out = run_in_ros_env(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        import segzero_ros
        from segzero_ros.action import Segment
        from segzero_ros.msg import SegmentationResult
        import segzero_ros.msg as msg_package

        print(segzero_ros.__file__)
        print(msg_package.__file__)
        """
    )
    package_file, msg_file = out.split()
    assert Path(package_file) == ROOT / "segzero_ros" / "__init__.py"
    assert Path(msg_file).is_relative_to(INSTALL)


@pytest.mark.parametrize(
    "name, module",
    [("segzero_perception", "segzero_ros.main"), ("segzero_query", "segzero_ros.client")],
)
def test_ros2_run_executables_installed(name, module):
    if not INSTALL.is_dir():
        pytest.skip("install/ does not exist: run scripts/ros_setup.sh to build the ROS package")
    script = INSTALL / "segzero_ros" / "lib" / "segzero_ros" / name
    assert script.is_file() and os.access(script, os.X_OK)
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!") and f"from {module} import main" in text
    compile(text, str(script), "exec")
