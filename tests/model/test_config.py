"""segzero_model.config: the one definition of the options that open a pipeline, and the
surfaces that declare their options from it (the `segzero` command, training/evaluate.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import pytest

from segzero_model.config import (
    OPTION_NAMES,
    PipelineOptions,
    add_pipeline_arguments,
    flag,
    option_help,
    options_from_args,
)


def test_every_option_has_a_help_text_that_names_others_by_their_spelling():
    for name in OPTION_NAMES:
        assert option_help(name, flag)
    assert "--reasoning-url" in option_help("reasoning_timeout", flag)
    assert "reasoning_url" in option_help("reasoning_timeout", str)
    assert "{" not in option_help("prefix_cache_size", flag)


def test_a_parser_declared_from_the_options_parses_back_to_the_defaults():
    parser = argparse.ArgumentParser()
    add_pipeline_arguments(parser)
    assert options_from_args(parser.parse_args([])) == PipelineOptions()


def test_values_and_types_from_the_command_line():
    parser = argparse.ArgumentParser()
    add_pipeline_arguments(parser)
    args = parser.parse_args(
        ["--reasoning-timeout", "2.5", "--max-new-tokens", "7", "--compile", "--device", "cpu"]
    )
    options = options_from_args(args)
    assert (options.reasoning_timeout, options.max_new_tokens) == (2.5, 7)
    assert options.compile is True and options.device == "cpu"


def test_a_subset_with_its_own_default_and_unknown_defaults_refused():
    parser = argparse.ArgumentParser()
    add_pipeline_arguments(parser, ("device",), device="cpu")
    args = parser.parse_args([])
    assert args.device == "cpu" and not hasattr(args, "reasoning_model")
    assert options_from_args(args) == dataclasses.replace(PipelineOptions(), device="cpu")
    with pytest.raises(ValueError, match="not declared"):
        add_pipeline_arguments(argparse.ArgumentParser(), ("device",), dtype="float32")


@pytest.mark.parametrize("command", ["infer", "track"])
def test_the_segzero_command_declares_the_options_with_their_defaults(command):
    from segzero_model.cli import build_parser

    extra = ["--image", "x.png"] if command == "infer" else ["--video", "x.mp4"]
    args = build_parser().parse_args([command, "--query", "q", *extra])
    assert options_from_args(args) == PipelineOptions()


def test_evaluate_declares_the_options_with_their_defaults():
    from segzero_training.evaluate import build_parser

    args = build_parser().parse_args(["--dataset", "d", "--output-dir", "o"])
    assert options_from_args(args) == PipelineOptions()


@pytest.mark.parametrize(
    ("family", "model_type"),
    [("auto", "qwen2_5_vl"), ("seg_zero", "qwen2_5_vl"), ("qwen3_vl", "qwen3_vl")],
)
def test_the_tiny_models_follow_the_family(family, model_type, tiny_cache):
    """Every --tiny path asks `tiny_models(family)`: the tiny Qwen3-VL for qwen3_vl (not the
    tiny Qwen2.5-VL asked as Qwen3-VL), the tiny Qwen2.5-VL otherwise; always the tiny SAM2."""
    from segzero_model.tiny import ensure_tiny_models

    options = dataclasses.replace(PipelineOptions(), model_family=family).with_tiny_models()
    config = json.loads((Path(options.reasoning_model) / "config.json").read_text())
    assert config["model_type"] == model_type
    assert options.segmentation_model == str(ensure_tiny_models()[1])
