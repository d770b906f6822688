"""The benchmark scripts run and print what they promise (numbers are not checked here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A benchmark runs in a bare environment, as from a fresh shell, except for the worker's share
# of the cores (tests/conftest.py), which it keeps so it does not fight the other test worker.
BARE_ENV = {"PATH": "/usr/bin:/bin"} | {
    key: os.environ[key] for key in ("OMP_NUM_THREADS",) if key in os.environ
}


@pytest.fixture(scope="module")
def smoke_suite(tiny_cache, tmp_path_factory):
    """benchmarks/gpu_suite.sh --smoke, run once: the suite a lent GPU runs, every step reduced
    on the CPU, into one JSON. Its steps are the pipeline, prefix-reuse and tracking benchmarks
    at the small sizes their own tests below check, so each benchmark runs once."""
    output = tmp_path_factory.mktemp("suite") / "suite.json"
    env = dict(os.environ, PYTHON=sys.executable, SEGZERO_CACHE=str(tiny_cache))
    completed = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_suite.sh"), "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        timeout=900,
        env=env,
        cwd=output.parent,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(output.read_text())


def step_report(suite: dict, name: str) -> dict:
    """One step's JSON report from the suite, failing with the step's log when it failed."""
    step = suite["steps"][name]
    assert step["exit_code"] == 0, step
    return step["result"]


def test_pipeline_benchmark_prints_every_stage(smoke_suite):
    report = step_report(smoke_suite, "pipeline_tiny")
    assert report["generated_tokens"] == 4  # forced: exactly --new-tokens
    for key in (
        "load_reasoner_s",
        "load_segmenter_s",
        "vision_prefill_s_median",
        "decode_tokens_per_s_median",
        "sam2_embedding_s_median",
        "sam2_decode_s_median",
    ):
        assert report[key] > 0, key


@pytest.mark.slow
def test_pipeline_benchmark_compares_the_compiled_decode(tiny_cache):
    """--compile compiles on the CPU too (the test's ~20-40 s): the compiled numbers and the
    eager tokens."""
    argv = ["--repeats", "1", "--new-tokens", "4", "--device", "cpu", "--compile"]
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.pipeline", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={"SEGZERO_CACHE": str(tiny_cache), **BARE_ENV},
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    for key in ("compile_warmup_s", "compiled_vision_prefill_s_median"):
        assert report[key] > 0, key
    assert report["compiled_decode_tokens_per_s_median"] > 0
    assert report["compiled_tokens_match_eager"] is True
    assert report["prefix_cache_size"] == 2


def test_prefix_reuse_benchmark_reports_first_and_followup_queries(smoke_suite):
    report = step_report(smoke_suite, "prefix_tiny")
    for key in (
        "first_query_vision_prefill_s_median",
        "followup_vision_prefill_s_median",
        "no_reuse_vision_prefill_s_median",
        "followup_to_first_ratio",
        "first_query_generate_s_median",
        "followup_generate_s_median",
    ):
        assert report[key] > 0, key
    assert report["answers_compared"] == 2 and report["answers_identical"] is True
    # The warm-up frame and the measured one: each computed once, then reused once.
    assert report["prefix_cache"] == {"size": 2, "hits": 2, "misses": 2}
    assert report["command"].startswith("python -m benchmarks.prefix_reuse --arch tiny")


def test_tracking_benchmark_prints_latency_ratio_and_flat_memory(smoke_suite):
    report = step_report(smoke_suite, "tracking")
    assert report["tracked_frames"] == 20 and report["image"] == "160x120"
    for key in (
        "pipeline_ms_median",
        "track_ms_median",
        "track_ms_p95",
        "track_to_pipeline_ratio",
        "tracking_fps",
        "track_ms_median_first_tenth",
        "track_ms_median_last_tenth",
        "rss_mib_at_checkpoint",
        "rss_mib_at_last_frame",
    ):
        assert report[key] > 0, key
    assert "rss_growth_mib" in report and report["rss_checkpoint_frame"] == 20
    # 20 frames pass the tiny model's window: the stored frames stop at 1 + keep_frames.
    assert report["stored_frames_per_track_last"] == report["keep_frames"] + 1
    assert report["stored_frames_per_track_max"] == report["keep_frames"] + 1


def test_depth_benchmark_prints_the_3d_stage_latency():
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.depth",
            "--repeats",
            "3",
            "--sizes",
            "320x240",
            "640x480",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
    assert [r["size"] for r in report["results"]] == ["320x240", "640x480"]
    for result in report["results"]:
        assert result["status"] == "OK"
        assert result["mask_fraction"] == pytest.approx(0.10, abs=0.01)
        assert result["position_m"][2] == pytest.approx(0.7, abs=0.005)
        for key in ("stage_ms", "locate_object_ms"):
            assert 0 < result[key]["median"] <= result[key]["p95"], key
    assert report["command"] == "python -m benchmarks.depth --repeats 3 --sizes 320x240 640x480"


def test_the_gpu_suite_runs_every_step_reduced_on_the_cpu(smoke_suite):
    report = smoke_suite
    assert report["mode"] == "smoke" and report["git_commit"]
    steps = report["steps"]
    assert list(steps) == [
        "pipeline_tiny", "prefix_tiny", "sam2_tiny", "tracking", "remote", "segmenters",
    ]  # fmt: skip
    assert steps["pipeline_tiny"]["result"]["generated_tokens"] == 4
    assert steps["sam2_tiny"]["result"]["eager_s_median"] > 0
    assert steps["remote"]["result"]["same_answers"] == 2


def test_grpo_throughput_reports_completions_per_second(tiny_cache):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.grpo_throughput",
            "--steps",
            "1",
            "--generations",
            "2",
            "--completion-tokens",
            "8",
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={"SEGZERO_CACHE": str(tiny_cache), **BARE_ENV},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout)
    assert report["completions_per_step"] == 2 and len(report["step_s"]) == 1
    assert report["completions_per_s"] == pytest.approx(2 / report["step_s_median"], rel=0.01)


def test_segmenters_benchmark_reports_every_family_against_hiera_large(smoke_suite):
    """benchmarks/segmenters.py (the suite's step, on the tiny checkpoints): every stage of
    every model timed, the ratios to hiera-large from the same run, the RESULTS.md table."""
    report = step_report(smoke_suite, "segmenters")
    assert report["benchmark"] == "segmenters" and report["tiny"] is True
    assert list(report["results"]) == ["hiera_t", "hiera_l", "edgetam", "sam3_tracker"]
    for name, result in report["results"].items():
        for stage in ("embed_s", "decode_s", "track_step_s"):
            assert result[stage] > 0, (name, stage)
        assert result["params_m"] > 0
        ratio = report["ratio_to_hiera_l"][name]["track_step_s"]
        expected = result["track_step_s"] / report["results"]["hiera_l"]["track_step_s"]
        assert ratio == pytest.approx(expected)
    assert report["ratio_to_hiera_l"]["hiera_l"]["embed_s"] == 1.0
    rows = report["table"].splitlines()
    assert rows[0].startswith("| model | params (M) |") and len(rows) == 2 + 4
    assert rows[4].startswith("| edgetam |")


def test_a_segmenter_that_cannot_load_is_recorded_and_the_others_run(tiny_cache, tmp_path):
    """EdgeTAM without timm (the GPU image has none unless carried): its row says why."""
    blocker = tmp_path / "no_timm"
    blocker.mkdir()
    (blocker / "timm.py").write_text("raise ImportError('timm is not installed here')\n")
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.segmenters", "--tiny", "--repeats", "1"]
        + ["--models", "hiera_t,edgetam"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env={"SEGZERO_CACHE": str(tiny_cache), "PYTHONPATH": str(blocker), **BARE_ENV},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout)
    assert report["results"]["hiera_t"]["embed_s"] > 0
    assert "timm" in report["results"]["edgetam"]["error"]
    assert "| edgetam | cannot load:" in report["table"]
