"""The `segzero` command, in-process (fast) and once as a real subprocess (entry point)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import segzero_model
from segzero_model.cli import main
from segzero_model.images import load_image

SCENE = Path(segzero_model.__file__).parent / "assets" / "kitchen.png"


@pytest.fixture
def tiny_env(tiny_cache, monkeypatch):
    """Point the CLI's tiny-model cache at the session's prebuilt checkpoints."""
    monkeypatch.setenv("SEGZERO_CACHE", str(tiny_cache))
    return tiny_cache


def test_infer_tiny_writes_json_and_overlay(tiny_env, tmp_path, capsys):
    code = main(
        [
            "infer",
            "--tiny",
            "--image",
            str(SCENE),
            "--query",
            "the red cup",
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "r.json"),
            "--output",
            str(tmp_path / "o.png"),
        ]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "MEANINGLESS" in captured.err
    assert "reasoning:" in captured.out and "bbox:" in captured.out and "timings:" in captured.out
    result = json.loads((tmp_path / "r.json").read_text())
    assert {"bbox", "points", "reasoning", "status", "mask_area", "timings"} <= result.keys()
    assert result["status"] == "ok" and result["mask_area"] >= 0
    assert len(result["bbox"]) == 4 and len(result["points"]) == 2
    overlay = load_image(tmp_path / "o.png")
    assert overlay.shape == (480, 640, 3)
    assert not np.array_equal(overlay, load_image(SCENE))  # something was drawn


def test_failed_query_exits_1_and_reports_status(tiny_env, tmp_path, capsys):
    code = main(
        [
            "infer",
            "--tiny",
            "--image",
            str(SCENE),
            "--query",
            " ",
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    assert code == 1
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["status"] == "invalid_query" and result["reason"] == "query is empty"


@pytest.mark.parametrize("name", ["missing.png", "junk.png"])
def test_bad_image_exits_2_with_a_short_message(tmp_path, capsys, name):
    (tmp_path / "junk.png").write_bytes(b"not an image")
    code = main(["infer", "--image", str(tmp_path / name), "--query", "the cup"])
    err = capsys.readouterr().err
    assert code == 2
    assert name in err and "Traceback" not in err


def test_missing_models_exit_2_naming_what_is_missing(tmp_path, capsys):
    missing = tmp_path / "no-such-model"
    code = main(
        [
            "infer",
            "--image",
            str(SCENE),
            "--query",
            "the cup",
            "--device",
            "cpu",
            "--reasoning-model",
            str(missing),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert str(missing) in err and "Traceback" not in err


def test_missing_segmentation_model_exits_2(tiny_cache, tmp_path, capsys):
    reasoner_dir = next(tiny_cache.glob("tiny-*/reasoner"))
    code = main(
        [
            "infer",
            "--image",
            str(SCENE),
            "--query",
            "the cup",
            "--device",
            "cpu",
            "--reasoning-model",
            str(reasoner_dir),
            "--segmentation-model",
            "facebook/sam2.1-hiera-typo",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "sam2.1-hiera-typo" in err and "Traceback" not in err


def test_unknown_device_exits_2(tiny_env, capsys):
    code = main(["infer", "--tiny", "--image", str(SCENE), "--query", "cup", "--device", "tpu"])
    assert code == 2
    assert "tpu" in capsys.readouterr().err


def test_a_missing_gpu_is_explained_in_the_clis_own_words(tiny_env, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a GPU machine
    code = main(["infer", "--tiny", "--image", str(SCENE), "--query", "cup", "--device", "cuda"])
    err = capsys.readouterr().err
    assert code == 2
    assert (
        "segzero: error: device 'cuda' was requested but no CUDA GPU is visible; use --device cpu"
    ) in err
    assert "Traceback" not in err


def test_make_tiny_copies_loadable_directories(tiny_env, tmp_path):
    assert main(["make-tiny", str(tmp_path / "tiny")]) == 0
    assert (tmp_path / "tiny" / "reasoner" / "config.json").is_file()
    assert any((tmp_path / "tiny" / "segmenter").glob("*.pt"))


def test_console_script_end_to_end(tiny_cache, tmp_path):
    """The installed entry point, as a user runs it (falls back to -m without an install)."""
    script = Path(sys.executable).with_name("segzero")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "segzero_model.cli"]
    completed = subprocess.run(
        [
            *command,
            "infer",
            "--tiny",
            "--image",
            str(SCENE),
            "--query",
            "the red cup",
            "--device",
            "cpu",
            "--json",
            str(tmp_path / "r.json"),
            "--output",
            str(tmp_path / "o.png"),
        ],
        env={**os.environ, "SEGZERO_CACHE": str(tiny_cache)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "o.png").is_file() and (tmp_path / "r.json").is_file()
