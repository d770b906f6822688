"""segzero_ros.params: the one parameter table, its YAML and its checks (no ROS)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from segzero_ros.params import (
    PARAM_NAMES,
    PARAMS,
    ParamsError,
    PerceptionParams,
    check_value,
    load_params_file,
    parse_params_yaml,
    render_params_yaml,
    yaml_value,
)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config" / "perception.yaml"


def section(body: str, key: str = "segzero_perception") -> str:
    indented = "\n".join(f"    {line}" for line in body.splitlines())
    return f"{key}:\n  ros__parameters:\n{indented}\n"


def test_defaults_match_the_brief():
    p = PerceptionParams()
    assert p.reasoning_model == "Ricky06662/Seg-Zero-7B"
    assert (p.reasoning_url, p.reasoning_api_key_env, p.reasoning_timeout) == (
        "",
        "SEGZERO_REASONING_API_KEY",
        60.0,
    )
    assert p.segmentation_model == "facebook/sam2.1-hiera-large"
    assert (p.device, p.dtype, p.max_new_tokens) == ("auto", "auto", 1024)
    assert (p.prefix_cache_size, p.compile) == (2, False)
    assert (p.image_topic, p.compressed, p.max_image_age) == ("camera/image_raw", False, 2.0)
    assert (p.publish_overlay, p.queue_size, p.autostart) == (True, 8, True)
    assert p.diagnostics_period == 1.0
    assert p.action_name == "segzero/segment" and p.query_topic == "segzero/query"
    assert (p.track, p.max_tracking_rate, p.max_tracked_objects) == (True, 0.0, 4)
    assert (p.lost_score, p.lost_min_area, p.lost_frames, p.requery_on_loss) == (0.5, 16, 5, False)
    assert (p.tracking_mask_topic, p.tracking_state_topic, p.stop_tracking_service) == (
        "segzero/tracking/mask",
        "segzero/tracking/state",
        "segzero/stop_tracking",
    )
    assert (p.use_depth, p.depth_topic, p.camera_info_topic, p.depth_info_topic) == (
        False,
        "camera/depth/image_raw",
        "camera/camera_info",
        "",
    )
    assert (p.depth_sync_tolerance, p.depth_scale, p.min_depth, p.max_depth) == (
        0.05,
        0.001,
        0.1,
        20.0,
    )
    assert (p.publish_cloud, p.cloud_max_points, p.target_frame) == (False, 5000, "")
    assert (p.position_topic, p.markers_topic, p.cloud_topic) == (
        "segzero/position",
        "segzero/markers",
        "segzero/cloud",
    )


def test_table_rows_are_complete():
    assert len(PARAMS) == len(set(PARAM_NAMES)) == 54
    for param in PARAMS:
        assert param.type in (str, int, float, bool)
        assert isinstance(param.default, param.type), param.name
        assert len(param.description) > 20, param.name
        check_value(param.name, param.default)
    read_only = {p.name for p in PARAMS if p.read_only}
    assert {"queue_size", "autostart", "query_topic", "action_name"} <= read_only
    assert not read_only & {"max_image_age", "publish_overlay", "reasoning_model"}
    assert {"tracking_mask_topic", "tracking_state_topic", "stop_tracking_service"} <= read_only
    assert {"mask_topic", "instances_topic"} <= read_only
    assert not read_only & {"track", "lost_score", "lost_frames", "max_tracking_rate"}
    depth_topics = {"depth_topic", "camera_info_topic", "depth_info_topic", "position_topic"}
    assert depth_topics | {"markers_topic", "cloud_topic"} <= read_only
    assert not read_only & {"use_depth", "depth_sync_tolerance", "depth_scale", "target_frame"}


def test_config_file_is_the_rendered_table():
    assert CONFIG.read_text(encoding="utf-8") == render_params_yaml(), (
        "config/perception.yaml is out of date: python -m segzero_ros.params > "
        "config/perception.yaml"
    )
    assert load_params_file(CONFIG) == PerceptionParams().as_dict()
    document = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    assert list(document["segzero_perception"]["ros__parameters"]) == list(PARAM_NAMES)


def test_every_parameter_has_a_comment_in_the_config_file():
    lines = CONFIG.read_text(encoding="utf-8").splitlines()
    for name in PARAM_NAMES:
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
        assert lines[index - 1].strip().startswith("#"), name


def test_module_renders_the_yaml():
    out = subprocess.run(
        [sys.executable, "-m", "segzero_ros.params"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out == render_params_yaml()


@pytest.mark.parametrize("key", ["segzero_perception", "/segzero_perception", "/**", "/*/**"])
def test_section_keys_for_this_node(key):
    assert parse_params_yaml(section("queue_size: 3", key)) == {"queue_size": 3}


def test_namespaced_node_and_other_nodes_sections():
    text = section("queue_size: 3", "/robot/segzero_perception") + section(
        "anything: 1", "other_node"
    )
    assert parse_params_yaml(text, namespace="/robot") == {"queue_size": 3}
    with pytest.raises(ParamsError, match="no section for node '/segzero_perception'"):
        parse_params_yaml(text)
    assert parse_params_yaml(section("x: 1", "other"), require_section=False) == {}


def test_later_sections_override_earlier_ones():
    text = section("queue_size: 3", "/**") + section("queue_size: 5")
    assert parse_params_yaml(text) == {"queue_size": 5}


def test_unknown_parameter_is_a_clear_error():
    with pytest.raises(ParamsError) as error:
        parse_params_yaml(section("queue_sise: 3"), source="my.yaml")
    text = str(error.value)
    assert text.startswith("my.yaml: unknown parameter 'queue_sise'")
    assert "did you mean 'queue_size'" in text and "reasoning_model" in text


def test_ros_builtin_parameters_are_allowed():
    text = section(
        "use_sim_time: true\nqos_overrides:\n  /camera:\n    subscription:\n"
        "      depth: 1\nqueue_size: 2"
    )
    assert parse_params_yaml(text) == {"queue_size": 2}


@pytest.mark.parametrize(
    "body, message",
    [
        ("max_image_age: 3", r"must be a float, got 3 \(int\) \(write 3.0, not 3\)"),
        ("queue_size: 2.0", "must be an integer"),
        ("queue_size: true", "must be an integer"),
        ("compressed: 1", "must be a boolean"),
        ("reasoning_model: 7", "must be a string"),
        ("queue_size: 0", "at least 1"),
        ("max_image_age: -1.0", "at least 0.0"),
        ("device: gpu", "'device' must be one of"),
        ("dtype: half", "'dtype' must be one of"),
        ('query_topic: " "', "must not be empty"),
        ("lost_score: 1.5", "'lost_score' must be at most 1.0"),
        ("lost_frames: 0", "at least 1"),
        ("max_tracked_objects: 0", "at least 1"),
        ('stop_tracking_service: ""', "must not be empty"),
        ('depth_topic: ""', "must not be empty"),
        ("depth_scale: 0.0", "'depth_scale' must be above 0"),
        ("max_depth: 0.0", "'max_depth' must be above 0"),
        ("min_depth: -0.5", "at least 0.0"),
        ("cloud_max_points: 0", "at least 1"),
        ('reasoning_url: "localhost:8000"', "'reasoning_url' must be empty or an http"),
        ('reasoning_url: "ftp://h/v1"', "'reasoning_url' must be empty or an http"),
        ('reasoning_api_key_env: "MY-KEY"', "must be an environment variable name"),
        ("reasoning_timeout: 0.0", "at least 0.001"),
    ],
)
def test_bad_values(body, message):
    with pytest.raises(ParamsError, match=message):
        parse_params_yaml(section(body))


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected a ROS 2 parameter file"),
        ("[1, 2]", "expected a ROS 2 parameter file"),
        ("segzero_perception: {", "not valid YAML"),
        ("segzero_perception:\n  queue_size: 3\n", "exactly one key, ros__parameters"),
        ("segzero_perception:\n  ros__parameters: [1]\n", "must be a mapping"),
        ("segzero_perceptoin:\n  ros__parameters: {}\n", "no section for node"),
    ],
)
def test_malformed_files(text, message):
    with pytest.raises(ParamsError, match=message):
        parse_params_yaml(text)


def test_missing_file(tmp_path):
    with pytest.raises(ParamsError, match="cannot read parameter file .*nope.yaml"):
        load_params_file(tmp_path / "nope.yaml")


def test_from_mapping():
    params = PerceptionParams.from_mapping({"queue_size": 2, "device": "cuda:1"})
    assert params.queue_size == 2 and params.device == "cuda:1" and params.autostart
    with pytest.raises(ParamsError, match="unknown parameter 'bogus'"):
        PerceptionParams.from_mapping({"bogus": 1})
    with pytest.raises(ParamsError, match="missing parameters: "):
        PerceptionParams.from_mapping({"queue_size": 2}, partial=False)


def test_render_round_trips_any_values(tmp_path):
    custom = PerceptionParams.from_mapping(
        {
            "reasoning_model": 'dir with "quotes" and \\ backslash',
            "max_image_age": 0.0,
            "compressed": True,
            "dtype": "",
        }
    )
    path = tmp_path / "p.yaml"
    path.write_text(render_params_yaml(custom), encoding="utf-8")
    assert load_params_file(path) == custom.as_dict()
    for value in ["", "yes", "1.5", "null", True, 3, 2.5]:
        assert yaml.safe_load(yaml_value(value)) == value


def test_the_docs_parameter_table_is_the_generated_one():
    """docs/ros.md's table (names, types, defaults, descriptions) is exactly what the params
    table renders; regenerate it with `python -m segzero_ros.params --markdown`."""
    from segzero_ros.params import render_params_markdown

    text = (Path(__file__).resolve().parents[2] / "docs" / "ros.md").read_text(encoding="utf-8")
    begin = text.index("<!-- parameters:")
    begin = text.index("\n", begin) + 1
    end = text.index("<!-- end of parameters -->")
    assert text[begin:end] == render_params_markdown()


def test_the_markdown_table_has_every_parameter_with_its_default():
    from segzero_ros.params import render_params_markdown, yaml_value

    rows = render_params_markdown().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(PARAM_NAMES)
    defaults = PerceptionParams().as_dict()
    for row in rows:
        name = row.split("`")[1]
        assert f"| `{yaml_value(defaults[name])}` |" in row, row


def test_depth_info_topic_may_be_empty():
    assert parse_params_yaml(section('depth_info_topic: ""')) == {"depth_info_topic": ""}


def test_the_pipeline_rows_are_the_pipeline_options():
    """The node's model parameters are `segzero_model.config.PipelineOptions`, default for
    default, and its tracking defaults `TrackSettings`'s: one definition each."""
    from segzero_model.config import OPTION_NAMES, PipelineOptions, option_help
    from segzero_model.segmentation.tracks import TrackSettings

    p, options = PerceptionParams(), PipelineOptions()
    rows = {f.name: f for f in dataclasses.fields(PerceptionParams)}
    for name in OPTION_NAMES:
        assert getattr(p, name) == getattr(options, name), name
        assert rows[name].metadata["description"].startswith(option_help(name, str)), name
    tracking = TrackSettings()
    assert p.max_tracked_objects == tracking.max_tracks
    assert (p.lost_score, p.lost_min_area, p.lost_frames) == (
        tracking.lost_score,
        tracking.lost_min_area,
        tracking.lost_frames,
    )


def test_the_node_opens_its_pipeline_from_its_parameters():
    """Every model parameter reaches `SegZeroPipeline.from_options` (the URL stripped)."""
    from segzero_model.config import PipelineOptions

    values = {
        "reasoning_model": "me/reasoner", "model_family": "qwen3_vl",
        "reasoning_url": "  http://gpu:8000/v1 ", "reasoning_api_key_env": "KEY",
        "reasoning_timeout": 7.5, "segmentation_model": "me/sam2", "device": "cuda:1",
        "dtype": "bfloat16", "max_new_tokens": 99, "prefix_cache_size": 3, "compile": True,
    }  # fmt: skip
    options = PerceptionParams.from_mapping(values).pipeline_options()
    assert options == PipelineOptions(**{**values, "reasoning_url": "http://gpu:8000/v1"})
