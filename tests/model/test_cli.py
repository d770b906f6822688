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
    assert result["model_family"] == "seg_zero"  # the family the answer was read in
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


def test_compile_reaches_the_reasoner_and_is_refused_for_a_server(tiny_env, capsys):
    argv = ["infer", "--tiny", "--image", str(SCENE), "--query", "cup", "--compile"]
    code = main([*argv, "--reasoning-url", "http://127.0.0.1:9/v1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "compile applies to a reasoning model loaded here" in err and "Traceback" not in err


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


# -- segzero track ----------------------------------------------------------------------------

CLIP_FRAMES, CLIP_SIZE = 12, (160, 120)  # frames, (width, height)


def moving_square(index: int) -> np.ndarray:
    """BGR (as cv2 writes it): a red square moving right over a fixed noise background."""
    width, height = CLIP_SIZE
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    image[40:80, 20 + 3 * index : 60 + 3 * index] = (40, 40, 255)
    return image


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The clip as an mp4 at 10 fps and as a folder of JPEGs."""
    import cv2

    root = tmp_path_factory.mktemp("clip")
    video = cv2.VideoWriter(
        str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, CLIP_SIZE
    )
    (root / "frames").mkdir()
    for index in range(CLIP_FRAMES):
        video.write(moving_square(index))
        cv2.imwrite(str(root / "frames" / f"frame{index:02d}.jpg"), moving_square(index))
    video.release()
    return root / "clip.mp4", root / "frames"


def track(*args: str) -> int:
    return main(["track", "--query", "the red cup", "--device", "cpu", *args])


def test_track_a_video_writes_one_line_and_one_overlay_frame_per_frame(
    tiny_env, clip, tmp_path, capsys
):
    import cv2

    video, _ = clip
    code = track("--tiny", "--video", str(video), "--output", str(tmp_path))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "MEANINGLESS" in captured.err
    assert "status:    ok" in captured.out
    assert f"frames:    {CLIP_FRAMES} read" in captured.out
    assert "ms per frame" in captured.out
    lines = [json.loads(line) for line in (tmp_path / "frames.jsonl").read_text().splitlines()]
    assert [line["frame"] for line in lines] == list(range(CLIP_FRAMES))
    for line in lines:
        assert {"frame", "state", "box", "score", "area", "track_ms"} <= line.keys()
        assert line["state"] in ("TRACKING", "LOST", "NOT_TRACKED")
    assert lines[0]["state"] == "TRACKING" and lines[0]["query"] == "the red cup"
    assert {"status", "bbox", "points", "reasoning"} <= lines[0]["result"].keys()
    assert lines[1]["track_ms"] > 0 and lines[0]["track_ms"] is None
    capture = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)
    read = 0
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        assert frame.shape == (CLIP_SIZE[1], CLIP_SIZE[0], 3)
        read += 1
    assert read == CLIP_FRAMES


def test_track_a_folder_until_lost_writes_png_overlays(tiny_env, clip, tmp_path, capsys):
    _, folder = clip
    code = track(
        "--tiny",
        "--frames",
        str(folder),
        "--output",
        str(tmp_path),
        "--max-frames",
        "6",
        "--lost-score",
        "1",
        "--lost-frames",
        "2",
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "LOST at frame 2 (object score below 1 for 2 frames)" in out
    states = [json.loads(line)["state"] for line in (tmp_path / "frames.jsonl").open()]
    assert states == ["TRACKING", "TRACKING", "LOST", "NOT_TRACKED", "NOT_TRACKED", "NOT_TRACKED"]
    overlays = sorted((tmp_path / "overlay").glob("*.png"))
    assert len(overlays) == 6 and load_image(overlays[0]).shape == (120, 160, 3)


def test_track_a_failed_first_answer_exits_1(tiny_env, clip, tmp_path, capsys):
    video, _ = clip
    code = main(
        ["track", "--tiny", "--video", str(video), "--query", " ", "--output", str(tmp_path)]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "status:    invalid_query (query is empty)" in out and "not tracked" in out
    (line,) = (tmp_path / "frames.jsonl").read_text().splitlines()
    assert json.loads(line)["result"]["status"] == "invalid_query"


def test_track_a_not_found_first_answer_exits_0(tiny_env, clip, tmp_path, capsys):
    """docs/inference.md: `segzero track` exits 0 when the first frame's answer is not_found
    (a valid answer: nothing to track), unlike a failed query (1). The tiny Qwen3-VL answers
    none for a query with the word "unicorn"."""
    video, _ = clip
    argv = ["track", "--tiny", "--model-family", "qwen3_vl", "--video", str(video)]
    code = main([*argv, "--query", "the unicorn", "--device", "cpu", "--output", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "status:    not_found" in out
    assert "not tracked: the first frame's answer is not_found" in out
    (line,) = (tmp_path / "frames.jsonl").read_text().splitlines()
    assert json.loads(line)["result"]["status"] == "not_found"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--video", "{tmp}/none.mp4"], "video not found: {tmp}/none.mp4"),
        (["--video", "{tmp}/junk.mp4"], "cannot read video {tmp}/junk.mp4"),
        (["--frames", "{tmp}/none"], "frames folder not found: {tmp}/none"),
        (["--frames", "{tmp}/empty"], "frames folder {tmp}/empty holds no .jpg/.jpeg/.png"),
        (["--video", "{tmp}/junk.mp4", "--frames", "{tmp}/empty"], "not both"),
        ([], "give the clip to track: --video FILE or --frames DIR"),
        (["--frames", "{tmp}/empty", "--lost-score", "2"], "--lost-score must be in [0, 1]"),
        (["--frames", "{tmp}/empty", "--max-frames", "0"], "--max-frames must be at least 1"),
    ],
)
def test_track_bad_input_exits_2_with_one_clear_line(tmp_path, capsys, args, message):
    (tmp_path / "junk.mp4").write_bytes(b"not a video")
    (tmp_path / "empty").mkdir()
    code = track(*(arg.format(tmp=tmp_path) for arg in args))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("segzero: error: ") and err.count("\n") == 1, err
    assert message.format(tmp=tmp_path) in err
    assert "Traceback" not in err


# --- infer --depth -----------------------------------------------------------------------------

INTRINSICS = "600,600,319.5,239.5"  # of the 640x480 kitchen scene


def write_depth_png(path: Path, array: np.ndarray) -> Path:
    import cv2

    assert cv2.imwrite(str(path), array)
    return path


def infer_with_depth(*args: str) -> int:
    return main(
        ["infer", "--image", str(SCENE), "--query", "the red cup", "--device", "cpu", *args]
    )


@pytest.mark.parametrize("size", [(480, 640), (240, 320)], ids=["aligned", "half-res"])
def test_infer_with_depth_prints_and_writes_the_3d_position(tiny_env, tmp_path, capsys, size):
    depth = write_depth_png(tmp_path / "depth.png", np.full(size, 1234, np.uint16))  # 1.234 m

    code = infer_with_depth(
        "--tiny",
        *("--depth", str(depth), "--intrinsics", INTRINSICS, "--json", str(tmp_path / "r.json")),
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "depth:     OK" in out and "z 1.234 m (camera optical frame)" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["status"] == "ok" and result["depth_status"] == "OK"
    assert result["position_m"][2] == pytest.approx(1.234, abs=1e-4)
    assert result["size_m"][0] > 0 and result["size_m"][2] == pytest.approx(0.0, abs=1e-4)
    assert result["valid_depth_ratio"] == 1.0 and result["depth_points"] > 0


def test_a_depth_problem_is_a_status_line_not_a_failure(tiny_env, tmp_path, capsys):
    depth = tmp_path / "depth.npy"
    np.save(depth, np.ones((360, 640), np.float32))  # 16:9 depth for a 4:3 image

    code = infer_with_depth(
        "--tiny",
        *("--depth", str(depth), "--intrinsics", INTRINSICS, "--json", str(tmp_path / "r.json")),
    )

    out = capsys.readouterr().out
    assert code == 0
    assert "depth:     RESOLUTION_MISMATCH (depth 640x360 and colour 640x480" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["status"] == "ok" and result["depth_status"] == "RESOLUTION_MISMATCH"
    assert result["position_m"] is None and result["depth_points"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--depth", "{tmp}/none.png", "--intrinsics", INTRINSICS], "depth file not found"),
        (["--depth", "{tmp}/d8.png", "--intrinsics", INTRINSICS], "is a 8-bit image with 1"),
        (["--depth", "{tmp}/rgb.png", "--intrinsics", INTRINSICS], "with 3 channel(s)"),
        (["--depth", "{tmp}/int.npy", "--intrinsics", INTRINSICS], "float metres, got int32"),
        (["--depth", "{tmp}/d16.png", "--intrinsics", "600,600,320"], "expected 4 numbers"),
        (["--depth", "{tmp}/d16.png", "--intrinsics", "0,600,320,240"], "fx > 0 and fy > 0"),
        (["--depth", "{tmp}/d16.png"], "--depth and --intrinsics go together"),
        (["--intrinsics", INTRINSICS], "--depth and --intrinsics go together"),
        (
            ["--depth", "{tmp}/d16.png", "--intrinsics", INTRINSICS, "--depth-scale", "0"],
            "--depth-scale must be > 0",
        ),
    ],
)
def test_infer_bad_depth_input_exits_2_with_one_clear_line(tmp_path, capsys, args, message):
    """Checked before any model loads (no --tiny cache needed)."""
    write_depth_png(tmp_path / "d8.png", np.full((48, 64), 9, np.uint8))
    write_depth_png(tmp_path / "rgb.png", np.full((48, 64, 3), 9, np.uint16))
    write_depth_png(tmp_path / "d16.png", np.full((48, 64), 900, np.uint16))
    np.save(tmp_path / "int.npy", np.ones((48, 64), np.int32))

    code = infer_with_depth(*(arg.format(tmp=tmp_path) for arg in args))

    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("segzero: error: ") and err.count("\n") == 1, err
    assert message in err and "Traceback" not in err


# --------------------------------------------------------------------------- several objects


def _infer_qwen3(tmp_path, query: str) -> tuple[int, dict]:
    """`segzero infer --tiny --model-family qwen3_vl`: the tiny Qwen3-VL (taught to answer by
    the query's words) through the real loading code, with the tiny SAM2."""
    json_path = tmp_path / "r.json"
    argv = ["infer", "--tiny", "--model-family", "qwen3_vl", "--image", str(SCENE)]
    argv += ["--query", query, "--device", "cpu", "--json", str(json_path)]
    code = main([*argv, "--output", str(tmp_path / "o.png")])
    return code, json.loads(json_path.read_text())


@pytest.mark.slow
def test_infer_tiny_qwen3_vl_prints_every_object(tiny_env, tmp_path, capsys):
    code, result = _infer_qwen3(tmp_path, "all the cups")
    out = capsys.readouterr().out
    assert code == 0, out
    assert result["status"] == "ok" and len(result["objects"]) == 2
    # the canned boxes, 0..1000 of the 640x480 scene
    boxes = [[100, 200, 600, 800], [650, 100, 900, 400]]
    expected = [[x1 * 0.64, y1 * 0.48, x2 * 0.64, y2 * 0.48] for x1, y1, x2, y2 in boxes]
    for got, want in zip(result["objects"], expected, strict=True):
        assert got["bbox"] == pytest.approx(want)
        assert len(got["points"]) == 1 and got["mask_area"] > 0
    assert result["bbox"] == result["objects"][0]["bbox"]
    assert "objects:   2" in out and "object 1:" in out and "object 2:" in out
    assert "(union of the 2 objects)" in out
    assert not np.array_equal(load_image(tmp_path / "o.png"), load_image(SCENE))


@pytest.mark.slow
def test_infer_tiny_qwen3_vl_not_found_exits_0(tiny_env, tmp_path, capsys):
    code, result = _infer_qwen3(tmp_path, "the unicorn")
    out = capsys.readouterr().out
    assert code == 0, out
    assert result["status"] == "not_found" and result["objects"] == []
    assert result["mask_area"] == 0 and result["reasoning"] == "none here"
    assert "status:    not_found" in out and "objects:   none" in out
    assert np.array_equal(load_image(tmp_path / "o.png"), load_image(SCENE))  # nothing drawn


@pytest.mark.slow
def test_infer_tiny_qwen3_vl_one_object(tiny_env, tmp_path, capsys):
    code, result = _infer_qwen3(tmp_path, "the red cup")
    out = capsys.readouterr().out
    assert code == 0, out
    (only,) = result["objects"]
    assert only["bbox"] == pytest.approx([64, 96, 384, 384])
    assert result["bbox"] == only["bbox"] and "object 1:" not in out


@pytest.mark.parametrize("family", ["edgetam", "sam3_tracker"])
def test_infer_and_track_with_a_transformers_segmenter_family(
    family, tiny_env, clip, tmp_path, capsys
):
    """--tiny --segmentation-family F: the tiny checkpoint of that family segments the answer
    (`segzero infer`) and tracks it (`segzero track`), through the same commands."""
    from segzero_model.tiny import ensure_tiny_segmenter

    code = main(
        ["infer", "--tiny", "--segmentation-family", family, "--image", str(SCENE)]
        + ["--query", "the red cup", "--device", "cpu", "--json", str(tmp_path / "r.json")]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert str(ensure_tiny_segmenter(family)) in captured.err  # the model it loaded
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["status"] == "ok" and result["mask_area"] >= 0

    _, frames = clip
    code = track(
        "--tiny", "--segmentation-family", family, "--frames", str(frames),
        "--output", str(tmp_path / "tracked"),
    )  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert f"frames:    {CLIP_FRAMES} read" in captured.out
