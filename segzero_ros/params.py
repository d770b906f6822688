"""The perception node's parameters: ONE table (`PerceptionParams`: name, type, default,
description) from which the node declares its ROS parameters, `config/perception.yaml` is
rendered, parameter files are validated and the launch file is checked. No rclpy import here.

Regenerate the YAML and the docs' table after changing the table (tests compare both):

    python -m segzero_ros.params > config/perception.yaml
    python -m segzero_ros.params --markdown   # paste between the markers in docs/ros.md
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import textwrap
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segzero_model.config import OPTION_NAMES, PipelineOptions, option_field, option_help
from segzero_model.segmentation.tracks import TrackSettings

NODE_NAME = "segzero_perception"

# Parameters every rclpy node has; allowed in a parameter file although the table lacks them.
ROS_BUILTIN_PARAMS = ("use_sim_time", "start_type_description_service")
ROS_BUILTIN_PREFIXES = ("qos_overrides.",)

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
_DTYPES = ("", "auto", "bfloat16", "float16", "float32")
_OPTIONAL_NAMES = ("depth_info_topic",)  # topic names that may be "" (meaning: not used)
_URL = re.compile(r"https?://[^\s/?#]+[^\s]*")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ParamsError(ValueError):
    """A parameter value or parameter file that the node cannot use; the message says why."""


def _param(
    default: str | int | float | bool,
    description: str,
    *,
    read_only: bool = False,
    minimum: int | float | None = None,
    choices: str = "",
):
    """One row of the table (a dataclass field carrying its description)."""
    metadata = {
        "description": description,
        "read_only": read_only,
        "minimum": minimum,
        "choices": choices,
    }
    return field(default=default, metadata=metadata)


def _pipeline_param(name: str):
    """The row of pipeline option `name`: default, help and bounds from
    `segzero_model.config.PipelineOptions`, the one definition the commands use too."""
    option = option_field(name)
    return _param(
        option.default,
        option_help(name, str) + " Applied at the next activate.",
        minimum=option.metadata["minimum"],
        choices=option.metadata["choices"],
    )


def _tracking_default(name: str):
    """A tracking row's default, from `segzero_model.segmentation.tracks.TrackSettings`."""
    return getattr(TrackSettings(), name)


@dataclass(frozen=True)
class PerceptionParams:
    """Every parameter of the perception node, with its default. When each one takes effect:
    model parameters at every activate; `max_image_age` and `publish_overlay` at once (they may
    be changed while the node runs); the read-only ones only at start-up.

    Topic and action names are relative, so they resolve in the node's namespace: in the root
    namespace `segzero/query` is `/segzero/query`; started with `__ns:=/left` (or the launch
    file's `namespace:=left`) it is `/left/segzero/query`. An absolute name (leading `/`)
    ignores the namespace."""

    # The options that open the pipeline: declared once, in segzero_model.config.
    reasoning_model: str = _pipeline_param("reasoning_model")
    model_family: str = _pipeline_param("model_family")
    reasoning_url: str = _pipeline_param("reasoning_url")
    reasoning_api_key_env: str = _pipeline_param("reasoning_api_key_env")
    reasoning_timeout: float = _pipeline_param("reasoning_timeout")
    segmentation_model: str = _pipeline_param("segmentation_model")
    segmentation_family: str = _pipeline_param("segmentation_family")
    device: str = _pipeline_param("device")
    dtype: str = _pipeline_param("dtype")
    max_new_tokens: int = _pipeline_param("max_new_tokens")
    prefix_cache_size: int = _pipeline_param("prefix_cache_size")
    compile: bool = _pipeline_param("compile")
    image_topic: str = _param(
        "camera/image_raw",
        "Camera topic (sensor_msgs/Image). With compressed: true the node subscribes to "
        "<image_topic>/compressed (sensor_msgs/CompressedImage) instead.",
        read_only=True,
    )
    compressed: bool = _param(
        False,
        "Subscribe to <image_topic>/compressed (jpeg/png sensor_msgs/CompressedImage).",
        read_only=True,
    )
    max_image_age: float = _param(
        2.0,
        "Seconds: a query is answered STALE_IMAGE when the latest camera frame is older than "
        "this (node clock minus header.stamp); 0 disables the check. Changeable at runtime.",
        minimum=0.0,
    )
    publish_overlay: bool = _param(
        True,
        "Publish the overlay image (mask tinted, box and points drawn) for every OK result. "
        "Changeable at runtime.",
    )
    queue_size: int = _param(
        8,
        "Queries (topic and action goals together) waiting to be served; one more that does "
        "not fit is answered DROPPED at once.",
        read_only=True,
        minimum=1,
    )
    autostart: bool = _param(
        True,
        "Configure and activate at start-up (no lifecycle manager needed). false: wait in "
        "the unconfigured state for a lifecycle manager.",
        read_only=True,
    )
    query_topic: str = _param("segzero/query", "Text queries in (std_msgs/String).", read_only=True)
    result_topic: str = _param(
        "segzero/result",
        "One segzero_ros/SegmentationResult per query, OK or not.",
        read_only=True,
    )
    mask_topic: str = _param(
        "segzero/mask",
        "Mask of each OK result (sensor_msgs/Image, mono8; the union of all its objects).",
        read_only=True,
    )
    instances_topic: str = _param(
        "segzero/instances",
        "Instance labels of each OK result (sensor_msgs/Image, mono16: 0 background, object k "
        "= k, as in SegmentationResult.objects[k-1].instance_id).",
        read_only=True,
    )
    reasoning_topic: str = _param(
        "segzero/reasoning", "Reasoning text of each result (std_msgs/String).", read_only=True
    )
    overlay_topic: str = _param(
        "segzero/overlay",
        "Overlay of each OK result (sensor_msgs/Image, rgb8), see publish_overlay.",
        read_only=True,
    )
    action_name: str = _param(
        "segzero/segment", "Action server name (segzero_ros/action/Segment).", read_only=True
    )
    diagnostics_period: float = _param(
        1.0, "Seconds between /diagnostics messages.", read_only=True, minimum=0.001
    )
    track: bool = _param(
        True,
        "Follow the object of every OK answer on the following camera frames (SAM2 video "
        "memory, no reasoning) until it is lost or stopped. An action goal's track field "
        "overrides it. Changeable at runtime (applies to the next answer).",
    )
    max_tracking_rate: float = _param(
        0.0,
        "Hz: most camera frames tracked per second; 0 tracks each newest frame as fast as frames "
        "come and tracking keeps up (it never queues frames: a slower tracker skips to the "
        "newest). A cap leaves the device idle between frames for other work. Changeable at "
        "runtime.",
        minimum=0.0,
    )
    max_tracked_objects: int = _param(
        _tracking_default("max_tracks"),
        "Tracks followed at once (each costs its own memory step per frame); a new one beyond "
        "it ends the oldest. A new answer to a tracked query replaces that query's track. "
        "Changeable at runtime (applies to the next answer).",
        minimum=1,
    )
    lost_score: float = _param(
        _tracking_default("lost_score"),
        "A tracked frame counts as missed when SAM2's object presence probability is below "
        "this (0..1). Changeable at runtime.",
        minimum=0.0,
    )
    lost_min_area: int = _param(
        _tracking_default("lost_min_area"),
        "A tracked frame counts as missed when the object's mask has fewer pixels than this. "
        "Changeable at runtime.",
        minimum=0,
    )
    lost_frames: int = _param(
        _tracking_default("lost_frames"),
        "Missed frames in a row after which a track is reported LOST (once) and ended. "
        "Changeable at runtime.",
        minimum=1,
    )
    requery_on_loss: bool = _param(
        False,
        "When a track is lost, ask its query again (a normal query, reasoning included); an OK "
        "answer starts a new track. Changeable at runtime.",
    )
    tracking_mask_topic: str = _param(
        "segzero/tracking/mask",
        "Union of the tracked objects' masks on every tracked frame (sensor_msgs/Image, mono8, "
        "camera resolution, the frame's header).",
        read_only=True,
    )
    tracking_state_topic: str = _param(
        "segzero/tracking/state",
        "The tracked objects on every tracked frame (segzero_ros/TrackingState).",
        read_only=True,
    )
    stop_tracking_service: str = _param(
        "segzero/stop_tracking",
        "Service that stops one track or all (segzero_ros/srv/StopTracking).",
        read_only=True,
    )

    use_depth: bool = _param(
        False,
        "Locate every OK answer (and every tracked object) in 3D from a depth camera: position "
        "and size in the colour camera's optical frame, metres (docs/ros.md, 3D position from "
        "depth). Changeable at runtime (subscribes or unsubscribes at once).",
    )
    depth_topic: str = _param(
        "camera/depth/image_raw",
        "Depth image (sensor_msgs/Image, 16UC1/mono16 in depth_scale units or 32FC1 in metres), "
        "matched to the colour frame by stamp.",
        read_only=True,
    )
    camera_info_topic: str = _param(
        "camera/camera_info",
        "The colour camera's sensor_msgs/CameraInfo (its K gives the intrinsics).",
        read_only=True,
    )
    depth_info_topic: str = _param(
        "",
        'The depth camera\'s own CameraInfo; "" means the depth image is aligned to the colour '
        "image (its intrinsics are the colour CameraInfo scaled to the depth resolution).",
        read_only=True,
    )
    depth_sync_tolerance: float = _param(
        0.05,
        "Seconds: the depth frame nearest in stamp to the colour frame is used when it is at "
        "most this far off; else the result has no position (NO_DEPTH). Changeable at runtime.",
        minimum=0.0,
    )
    depth_scale: float = _param(
        0.001,
        "Metres per unit of a 16-bit depth image (0.001: millimetres). Changeable at runtime.",
        minimum=0.0,
    )
    min_depth: float = _param(
        0.1, "Metres: nearer depth readings are ignored. Changeable at runtime.", minimum=0.0
    )
    max_depth: float = _param(
        20.0, "Metres: farther depth readings are ignored. Changeable at runtime.", minimum=0.0
    )
    publish_cloud: bool = _param(
        False,
        "Also publish the object's depth points (sensor_msgs/PointCloud2 on cloud_topic). "
        "Changeable at runtime.",
    )
    cloud_max_points: int = _param(
        5000,
        "Most points per object in the published cloud (evenly subsampled). Changeable at runtime.",
        minimum=1,
    )
    target_frame: str = _param(
        "",
        "A tf2 frame (e.g. base_link or map) to express each position in as well "
        '(SegmentationResult.position_in_target); needs ROS 2\'s tf2_ros. "": camera frame '
        "only. Changeable at runtime.",
    )
    position_topic: str = _param(
        "segzero/position",
        "Position of each located OK answer (geometry_msgs/PointStamped, camera optical frame).",
        read_only=True,
    )
    markers_topic: str = _param(
        "segzero/markers",
        "A box and a label per located answer and tracked object (visualization_msgs/"
        "MarkerArray, for rviz).",
        read_only=True,
    )
    cloud_topic: str = _param(
        "segzero/cloud",
        "The located objects' depth points (sensor_msgs/PointCloud2), see publish_cloud.",
        read_only=True,
    )

    publish_detections: bool = _param(
        True,
        "Publish every answer and tracked frame as vision_msgs detections (where vision_msgs "
        "is installed: ros-<distro>-vision-msgs): Detection2DArray, and with use_depth "
        "Detection3DArray (docs/ros.md, Detections). Changeable at runtime.",
    )
    detections_topic: str = _param(
        "segzero/detections",
        "One vision_msgs/Detection2D per object of each answer and tracked frame (box in pixels,"
        " the query as class_id); an empty array for NOT_FOUND.",
        read_only=True,
    )
    detections_3d_topic: str = _param(
        "segzero/detections_3d",
        "With use_depth: one vision_msgs/Detection3D per located object (centre and size in the "
        "colour optical frame, metres); an empty array for NOT_FOUND.",
        read_only=True,
    )
    detections_3d_target_topic: str = _param(
        "segzero/detections_3d/target",
        "With use_depth and target_frame: the 3D detections in target_frame (needs tf2_ros and "
        "a transform at the frame's stamp).",
        read_only=True,
    )

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], *, partial: bool = True) -> PerceptionParams:
        """Parameters from `values` (missing names keep their defaults unless `partial` is
        False); raises ParamsError naming unknown names and bad values."""
        unknown = [name for name in values if name not in PARAM_NAMES]
        if unknown:
            raise ParamsError(_unknown_message(unknown))
        if not partial:
            missing = [name for name in PARAM_NAMES if name not in values]
            if missing:
                raise ParamsError(f"missing parameters: {', '.join(missing)}")
        checked = {name: check_value(name, value) for name, value in values.items()}
        return dataclasses.replace(cls(), **checked)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def pipeline_options(self) -> PipelineOptions:
        """The options that open this node's pipeline (`SegZeroPipeline.from_options`)."""
        values = {name: getattr(self, name) for name in OPTION_NAMES}
        return PipelineOptions(**{**values, "reasoning_url": self.reasoning_url.strip()})


@dataclass(frozen=True)
class Param:
    """A row of the table as plain data (for declaring, rendering and documenting)."""

    name: str
    type: type
    default: str | int | float | bool
    description: str
    read_only: bool
    minimum: int | float | None
    choices: str


PARAMS: tuple[Param, ...] = tuple(
    Param(
        name=f.name,
        type=type(f.default),
        default=f.default,
        description=f.metadata["description"],
        read_only=f.metadata["read_only"],
        minimum=f.metadata["minimum"],
        choices=f.metadata["choices"],
    )
    for f in dataclasses.fields(PerceptionParams)
)
PARAM_NAMES: tuple[str, ...] = tuple(p.name for p in PARAMS)
_BY_NAME = {p.name: p for p in PARAMS}


def _unknown_message(unknown: Iterable[str]) -> str:
    parts = []
    for name in unknown:
        close = difflib.get_close_matches(name, PARAM_NAMES, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (
        f"unknown parameter{'s' if len(parts) > 1 else ''} {', '.join(parts)}; "
        f"the {NODE_NAME} node knows: {', '.join(PARAM_NAMES)}"
    )


def _type_name(kind: type) -> str:
    return {str: "a string", int: "an integer", float: "a float", bool: "a boolean"}[kind]


def check_value(name: str, value: Any) -> Any:
    """Return `value` if it is valid for parameter `name`, else raise ParamsError.

    Types are strict, as ROS parameters are: an integer for a float parameter is rejected (ROS
    would refuse it too), with a hint to write 2.0 rather than 2.
    """
    param = _BY_NAME.get(name)
    if param is None:
        raise ParamsError(_unknown_message([name]))
    kind = param.type
    is_bool = isinstance(value, bool)
    ok = is_bool if kind is bool else isinstance(value, kind) and not is_bool
    if not ok:
        hint = ""
        if kind is float and isinstance(value, int) and not is_bool:
            hint = f" (write {float(value)!r}, not {value!r})"
        raise ParamsError(
            f"parameter {name!r} must be {_type_name(kind)}, got {value!r} "
            f"({type(value).__name__}){hint}"
        )
    if param.minimum is not None and value < param.minimum:
        raise ParamsError(f"parameter {name!r} must be at least {param.minimum}, got {value!r}")
    if name == "device" and not _DEVICE.fullmatch(value):
        raise ParamsError(f"parameter 'device' must be one of {param.choices}, got {value!r}")
    if name == "lost_score" and value > 1.0:
        raise ParamsError(f"parameter 'lost_score' must be at most 1.0, got {value!r}")
    if name == "dtype" and value not in _DTYPES:
        raise ParamsError(f"parameter 'dtype' must be one of {param.choices}, got {value!r}")
    if name.endswith(("_topic", "_name", "_service")) and name not in _OPTIONAL_NAMES:
        if not value.strip():
            raise ParamsError(f"parameter {name!r} must not be empty")
    if name in ("max_depth", "depth_scale") and value <= 0.0:
        raise ParamsError(f"parameter {name!r} must be above 0, got {value!r}")
    if name == "reasoning_url" and value and not _URL.fullmatch(value.strip()):
        raise ParamsError(
            f"parameter 'reasoning_url' must be empty or an http(s) URL such as "
            f"http://localhost:8000/v1, got {value!r}"
        )
    if name == "reasoning_api_key_env" and value and not _ENV_NAME.fullmatch(value):
        raise ParamsError(
            f"parameter 'reasoning_api_key_env' must be an environment variable name "
            f"(letters, digits, _), got {value!r}"
        )
    return value


# --------------------------------------------------------------------------- parameter files


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """ROS parameter files nest dotted names as mappings: {"a": {"b": 1}} → {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _section_matches(key: str, fully_qualified_name: str) -> bool:
    """Whether a parameter-file section key (`/**`, `name`, `/ns/name`, `/*/name`, ...)
    applies to the node `fully_qualified_name` ("/ns/name")."""
    pattern = key if key.startswith("/") else f"/{key}"
    regex = ""
    for token in pattern.strip("/").split("/"):
        if token == "**":
            regex += r"(/[^/]+)*"
        else:
            regex += "/" + re.escape(token).replace(r"\*", "[^/]*")
    return re.fullmatch(regex, fully_qualified_name) is not None


def parse_params_yaml(
    text: str,
    *,
    source: str = "<yaml>",
    node_name: str = NODE_NAME,
    namespace: str = "/",
    require_section: bool = True,
) -> dict[str, Any]:
    """Parameters for this node from a ROS 2 parameter file's text.

    Sections (`segzero_perception:`, `/**:`, `/ns/segzero_perception:` ...) that name other
    nodes are ignored, so one file may serve several nodes; but (with `require_section`) the
    file must hold at least one section for this node, and every name in those sections must be
    a parameter of the table (or one every rclpy node has, e.g. use_sim_time).
    Raises ParamsError.
    """
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ParamsError(f"{source}: not valid YAML: {error}") from None
    if not isinstance(document, Mapping) or not document:
        raise ParamsError(
            f"{source}: expected a ROS 2 parameter file ({node_name}: ros__parameters: ...)"
        )
    fqn = f"{namespace.rstrip('/')}/{node_name}"
    values: dict[str, Any] = {}
    matched = False
    for key, section in document.items():
        if not isinstance(key, str) or not _section_matches(key, fqn):
            continue
        matched = True
        if not isinstance(section, Mapping) or set(section) != {"ros__parameters"}:
            raise ParamsError(
                f"{source}: section {key!r} must hold exactly one key, ros__parameters"
            )
        parameters = section["ros__parameters"] or {}
        if not isinstance(parameters, Mapping):
            raise ParamsError(f"{source}: {key}.ros__parameters must be a mapping")
        values.update(_flatten(parameters))
    if not matched and require_section:
        raise ParamsError(
            f"{source}: no section for node {fqn!r}; expected a top-level key "
            f"{node_name!r} or '/**' (found: {', '.join(map(str, document))})"
        )
    ours = {}
    for name, value in values.items():
        if name in ROS_BUILTIN_PARAMS or name.startswith(ROS_BUILTIN_PREFIXES):
            continue
        if name not in PARAM_NAMES:
            raise ParamsError(f"{source}: {_unknown_message([name])}")
        try:
            ours[name] = check_value(name, value)
        except ParamsError as error:
            raise ParamsError(f"{source}: {error}") from None
    return ours


def load_params_file(path: str | Path, **kwargs) -> dict[str, Any]:
    """`parse_params_yaml` of a file; a missing file is a ParamsError too."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ParamsError(f"cannot read parameter file {path}: {error.strerror}") from None
    return parse_params_yaml(text, source=str(path), **kwargs)


def yaml_value(value: str | int | float | bool) -> str:
    """A YAML scalar that reads back as the same Python value and type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_params_yaml(params: PerceptionParams | None = None, node_name: str = NODE_NAME) -> str:
    """The parameter file for `params` (defaults when None), one comment per parameter."""
    values = (params or PerceptionParams()).as_dict()
    lines = [
        "# Parameters of the Seg-Zero perception node (segzero_ros). Used by",
        "# launch/perception.launch.py and by `segzero-perception --params-file`.",
        "# Generated from segzero_ros/params.py: python -m segzero_ros.params > this file",
        f"{node_name}:",
        "  ros__parameters:",
    ]
    for param in PARAMS:
        note = " Read-only at runtime." if param.read_only else ""
        for line in textwrap.wrap(param.description + note, width=100 - len("    # ")):
            lines.append(f"    # {line}")
        lines.append(f"    {param.name}: {yaml_value(values[param.name])}")
    return "\n".join(lines) + "\n"


_TYPE_NAMES = {str: "string", int: "integer", float: "double", bool: "bool"}


def render_params_markdown() -> str:
    """The parameter table of docs/ros.md (name, type, default, when it applies, description),
    generated from the same table as the YAML so the docs cannot drift from the code."""
    rows = [
        "| Parameter | Type | Default | Description |",
        "|---|---|---|---|",
    ]
    for param in PARAMS:
        default = yaml_value(param.default)
        note = " Read-only at runtime." if param.read_only else ""
        description = (param.description + note).replace("|", "\\|").replace("<", "&lt;")
        rows.append(f"| `{param.name}` | {_TYPE_NAMES[param.type]} | `{default}` | {description} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the parameter file (default) or, with --markdown, the docs' parameter table."""
    argv = sys.argv[1:] if argv is None else argv
    if argv not in ([], ["--markdown"]):
        sys.stderr.write("usage: python -m segzero_ros.params [--markdown]\n")
        return 2
    sys.stdout.write(render_params_markdown() if argv else render_params_yaml())
    return 0


if __name__ == "__main__":
    sys.exit(main())
