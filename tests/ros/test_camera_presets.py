"""The camera presets in config/ (realsense.yaml, zed.yaml): valid parameter files for the node
(every name in the table, every value accepted), with depth on; and every `params_file:=config/...`
the docs show names a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from segzero_ros.params import load_params_file

ROOT = Path(__file__).resolve().parents[2]
PRESETS = ("realsense.yaml", "zed.yaml")


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_is_a_valid_parameter_file_with_depth_on(name):
    values = load_params_file(ROOT / "config" / name)
    assert values["use_depth"] is True
    for key in ("image_topic", "depth_topic", "camera_info_topic"):
        assert values[key].startswith("/"), (key, values[key])  # the camera driver's names


def test_every_params_file_the_docs_show_exists():
    text = "\n".join(
        path.read_text(encoding="utf-8") for path in (ROOT / "README.md", ROOT / "docs" / "ros.md")
    )
    shown = set(re.findall(r"params_file:=(config/[\w.]+)", text))
    assert {f"config/{name}" for name in PRESETS} <= shown
    for relative in shown:
        assert (ROOT / relative).is_file(), relative


# The drivers' own topic names (realsense2_camera 4.51+ with align_depth.enable, zed-ros2-wrapper
# 4.x) and the depth unit each publishes: a typo here is a node that waits for frames forever.
DRIVER_TOPICS = {
    "realsense.yaml": {
        "image_topic": "/camera/camera/color/image_raw",
        "depth_topic": "/camera/camera/aligned_depth_to_color/image_raw",
        "camera_info_topic": "/camera/camera/color/camera_info",
        "depth_scale": 0.001,  # 16UC1 millimetres
    },
    "zed.yaml": {
        "image_topic": "/zed/zed_node/rgb/image_rect_color",
        "depth_topic": "/zed/zed_node/depth/depth_registered",
        "camera_info_topic": "/zed/zed_node/rgb/camera_info",
    },
}


@pytest.mark.parametrize("name", PRESETS)
def test_a_preset_names_its_drivers_topics(name):
    values = load_params_file(ROOT / "config" / name)
    expected = DRIVER_TOPICS[name]
    assert {key: values[key] for key in expected} == expected
    if "depth_scale" not in expected:  # 32FC1 metres: the node's default scale of 1.0
        assert "depth_scale" not in values


def test_the_edge_recipe_is_a_valid_parameter_file_for_a_server_and_edgetam():
    """config/edge.yaml: the reasoner on a server, EdgeTAM (transformers' format) on the robot."""
    values = load_params_file(ROOT / "config" / "edge.yaml")
    assert values["reasoning_url"].startswith("http") and values["reasoning_url"].endswith("/v1")
    assert values["segmentation_family"] == "edgetam"
    assert values["segmentation_model"] == "yonigozlan/EdgeTAM-hf"
    assert values["track"] is True
