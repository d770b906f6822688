"""GRPO throughput: completions per second per optimizer step (sampling, rewards, the policy
update), through training/grpo.py's own trainer; one JSON object.

    python -m benchmarks.grpo_throughput                           # tiny Qwen2.5-VL, CPU
    python -m benchmarks.grpo_throughput --arch 3b --device cuda --steps 3
    python -m benchmarks.grpo_throughput --arch 3b --device cuda --use-vllm   # vLLM colocated

Each step samples `--prompts` prompts x `--generations` completions of exactly
`--completion-tokens` tokens at most (random weights rarely stop early) from synthetic scenes
(training/synthetic.py), scores them with the paper's rewards and takes one optimizer step. The
first step (warm-up: allocation, compilation, vLLM start) is not counted. `3b` / `7b` are the
released Qwen2.5-VL architectures with random weights (segzero_model.tiny.real_size).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import provenance


def write_base_model(arch: str, layers: int | None, scratch: Path, device: str) -> Path:
    """The tiny checkpoint, or a random real-size one beside it in `scratch`."""
    from segzero_model.tiny import ensure_tiny_models

    tiny = ensure_tiny_models()[0]
    if arch == "tiny":
        return tiny
    import torch

    from segzero_model.tiny.real_size import write_real_size_reasoner

    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    return write_real_size_reasoner(
        arch, tiny, scratch / arch, dtype=dtype, text_layers=layers, vision_depth=layers
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=["tiny", "3b", "7b"], default="tiny")
    parser.add_argument("--layers", type=int, help="3b / 7b: text layers and vision blocks")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one process)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps after the warm-up")
    parser.add_argument("--prompts", type=int, default=1, help="prompts per step")
    parser.add_argument("--generations", type=int, default=4, help="completions per prompt")
    parser.add_argument("--completion-tokens", type=int, default=32)
    parser.add_argument("--use-vllm", action="store_true", help="TRL's vLLM, colocated (CUDA)")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.prompts < 1 or args.generations < 2:
        parser.error("--steps and --prompts must be at least 1, --generations at least 2")

    from datasets import DatasetDict
    from transformers import TrainerCallback

    from segzero_training import grpo
    from segzero_training.synthetic import synthetic_dataset

    cpu = not args.device.startswith("cuda")
    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, *_, **__):
            step_ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="segzero-throughput-") as scratch:
        scratch = Path(scratch)
        with contextlib.redirect_stdout(sys.stderr):  # keep stdout for the JSON
            rows = synthetic_dataset(args.prompts * (args.steps + 1), seed=0)
            DatasetDict({"train": rows}).save_to_disk(str(scratch / "data"))
            base = write_base_model(args.arch, args.layers, scratch, args.device)
            recipe = [
                f"model_name_or_path={base}",
                f"dataset_path={scratch / 'data'}",
                f"output_dir={scratch / 'run'}",
                f"global_batch_size={args.prompts}",
                f"num_generations={args.generations}",
                f"per_device_train_batch_size={args.prompts * args.generations}",
                "gradient_accumulation_steps=1",
                f"max_completion_length={args.completion_tokens}",
                f"max_steps={args.steps + 1}",
                f"dtype={'float32' if cpu else 'bfloat16'}",
                f"bf16={'false' if cpu else 'true'}",
                f"use_cpu={'true' if cpu else 'false'}",
                f"use_vllm={'true' if args.use_vllm else 'false'}",
                "save_strategy=no",
                "report_to=none",
            ]
            run, config, _ = grpo.parse_and_check(recipe)
            trainer = grpo.build_trainer(run, config)
            trainer.add_callback(StepClock())
            started = time.perf_counter()
            trainer.train()
    steps = [b - a for a, b in zip([started, *step_ends], step_ends, strict=False)][1:]
    completions = args.prompts * args.generations
    median = statistics.median(steps)
    report = {
        "benchmark": "grpo_throughput",
        "arch": args.arch,
        "layers": args.layers,
        "device": args.device,
        "vllm": args.use_vllm,
        "completions_per_step": completions,
        "max_completion_tokens": args.completion_tokens,
        "step_s": [round(s, 3) for s in steps],
        "step_s_median": round(median, 3),
        "completions_per_s": round(completions / median, 3),
    }
    provenance.publish(report, args.output)


if __name__ == "__main__":
    main()
