"""The benchmark scripts run and print what they promise (numbers are not checked here)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from benchmark_scripts import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def test_pipeline_benchmark_prints_every_stage(tiny_cache):
    completed = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "pipeline.py"),
            "--repeats",
            "1",
            "--new-tokens",
            "4",
            "--device",
            "cpu",
            "--width",
            "64",
            "--height",
            "48",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={"SEGZERO_CACHE": str(tiny_cache), "PATH": "/usr/bin:/bin"},
    )
    assert completed.returncode == 0, completed.stderr
    report = json.loads(completed.stdout)
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


@pytest.mark.parametrize("arch, billions", [("3b", 3.75), ("7b", 8.29)])
def test_real_size_architectures_have_the_released_parameter_counts(tiny_qwen_dir, arch, billions):
    """Built on the meta device: the configs match Qwen2.5-VL-3B/7B without allocating them."""
    import torch
    from transformers import AutoModelForImageTextToText

    real_size_config = load_benchmark("pipeline").real_size_config
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(real_size_config(arch, tiny_qwen_dir))
    unique = {id(p): p.numel() for p in model.parameters()}
    assert sum(unique.values()) / 1e9 == pytest.approx(billions, rel=0.01)
