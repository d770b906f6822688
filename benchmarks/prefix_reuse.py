"""Same-frame prefix reuse: the vision + prefill time of the first query on a frame and of the
follow-up queries, with and without reuse, and whether the answers are the same; one JSON
object.

    python -m benchmarks.prefix_reuse                        # random tiny Qwen2.5-VL
    python -m benchmarks.prefix_reuse --arch tiny-qwen3      # random tiny Qwen3-VL
    python -m benchmarks.prefix_reuse --arch 7b --device cuda --new-tokens 32

Target (issue 12): a follow-up query's vision + prefill at most 20% of the first query's, with
the answers of generation without reuse. The reasoners have random weights, so their greedy
answers depend on every prompt token, its position and the pixels: equal answers are a real
check. `tiny` / `tiny-qwen3` are random tiny checkpoints (segzero_model.tiny); `3b` / `7b` the
released Qwen2.5-VL architectures with random weights (segzero_model.tiny.real_size; `--layers N`
cuts them to N text layers and vision blocks, for a quick CPU run).

Each of `--frames` frames (after one warm-up frame, not counted) is asked `--queries` different
queries by a reasoner with prefix reuse (the first query of a frame computes the prefix, the
others reuse it) and, query by query, by a twin reasoner on the same model without reuse.
`vision_prefill` is `Generation.prefill_seconds`: the time to the first generated token (vision
encoder and prefill; on a frame's first query the prefix's forward too); `generate` is the whole
call, image preprocessing and tokenising included. Every generation is forced to exactly
`--new-tokens` tokens, so the answers compared have the same length.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.pipeline import describe_device, synchronize, timed
from benchmarks.provenance import git_commit, publish
from segzero_model.config import add_pipeline_arguments
from segzero_model.reasoning.local import Reasoner

TARGET_RATIO = 0.20
QUERIES = (
    "the red cup",
    "Which object would you use to open a wine bottle?",
    "the chair nearest to the window",
    '"the blue mug" on the left',
    "something to sit on",
    "the largest plant in the room",
    "what keeps the food cold",
    "the person holding an umbrella",
)


def write_reasoner(arch: str, layers: int | None, scratch: Path, device: str) -> Path:
    """A random-weight checkpoint of `arch` in `scratch`, in the on-disk format."""
    if arch == "tiny":
        from segzero_model.tiny.qwen import write_tiny_qwen

        return write_tiny_qwen(scratch / "reasoner", canned_answer=None)
    if arch == "tiny-qwen3":
        from segzero_model.tiny.qwen3 import write_tiny_qwen3_vl

        return write_tiny_qwen3_vl(scratch / "reasoner", taught=False)
    from segzero_model.device import resolve_dtype
    from segzero_model.tiny import ensure_tiny_models
    from segzero_model.tiny.real_size import write_real_size_reasoner

    tiny_reasoner, _ = ensure_tiny_models()
    return write_real_size_reasoner(
        arch,
        tiny_reasoner,
        scratch / "reasoner",
        dtype=resolve_dtype(device),
        text_layers=layers,
        vision_depth=layers,
    )


def median(values: list[float]) -> float:
    return round(statistics.median(values), 5)


def main(argv: list[str] | None = None) -> None:
    # stdout carries the JSON alone: what libraries print while building and loading the
    # model (DeepSpeed's accelerator notice, imported by transformers) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr):
        report = measure(argv)
    publish(report)


def measure(argv: list[str] | None) -> dict:
    from segzero_model.tiny.real_size import ARCHES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=["tiny", "tiny-qwen3", *ARCHES], default="tiny")
    parser.add_argument("--layers", type=int, help="3b / 7b only: text layers and vision blocks")
    add_pipeline_arguments(parser, ("device",))
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--queries", type=int, default=4, help=f"per frame, 2..{len(QUERIES)}")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args(argv)
    if args.layers is not None and args.arch not in ARCHES:
        parser.error("--layers applies to --arch 3b or 7b")
    if not 2 <= args.queries <= len(QUERIES):
        parser.error(f"--queries must be 2..{len(QUERIES)}")

    import torch
    import transformers

    from segzero_model.device import resolve_device

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="segzero-prefix-") as scratch:
        source = write_reasoner(args.arch, args.layers, Path(scratch), device)
        reusing = Reasoner.from_pretrained(source, device=device)
    plain = reusing.twin()  # the same model without reuse

    rng = np.random.default_rng(0)
    timings = {name: [] for name in ("first", "followup", "plain")}
    generate_s = {name: [] for name in timings}
    compared = differing = 0
    for index in range(args.frames + 1):  # frame 0 warms up and is not counted
        image = rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
        for number, query in enumerate(QUERIES[: args.queries]):
            runs = {}
            for name, reasoner in (("reuse", reusing), ("plain", plain)):
                generations, seconds = timed(
                    device,
                    reasoner.generate,
                    [image],
                    [query],
                    image_keys=[("frame", index)],
                    max_new_tokens=args.new_tokens,
                    min_new_tokens=args.new_tokens,
                )
                runs[name] = (generations[0], seconds)
            if index == 0:
                continue
            kind = "first" if number == 0 else "followup"
            for name, (generation, seconds) in runs.items():
                bucket = kind if name == "reuse" else "plain"
                timings[bucket].append(generation.prefill_seconds)
                generate_s[bucket].append(seconds)
            reused, expected = runs["reuse"][0], runs["plain"][0]
            compared += 1
            differing += (reused.text, reused.num_tokens) != (expected.text, expected.num_tokens)
    synchronize(device)

    first, followup = median(timings["first"]), median(timings["followup"])
    ratio = followup / first
    report = {
        "benchmark": "prefix_reuse",
        "date": datetime.date.today().isoformat(),
        "arch": args.arch,
        "layers": args.layers,
        "model_type": reusing.model.config.model_type,
        "device": describe_device(device),
        "dtype": str(reusing.dtype).replace("torch.", ""),
        "image": f"{args.width}x{args.height}",
        "frames": args.frames,
        "queries_per_frame": args.queries,
        "new_tokens": args.new_tokens,
        "first_query_vision_prefill_s_median": first,
        "followup_vision_prefill_s_median": followup,
        "no_reuse_vision_prefill_s_median": median(timings["plain"]),
        "followup_to_first_ratio": round(ratio, 4),
        "target_ratio": TARGET_RATIO,
        "target_met": ratio <= TARGET_RATIO,
        "first_query_generate_s_median": median(generate_s["first"]),
        "followup_generate_s_median": median(generate_s["followup"]),
        "no_reuse_generate_s_median": median(generate_s["plain"]),
        "answers_compared": compared,
        "answers_identical": differing == 0,
        "prefix_cache": {
            "size": reusing.prefixes.size,
            "hits": reusing.prefixes.hits,
            "misses": reusing.prefixes.misses,
        },
        "command": " ".join(["python", "-m", "benchmarks.prefix_reuse", *(argv or sys.argv[1:])]),
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    return report


if __name__ == "__main__":
    main()
