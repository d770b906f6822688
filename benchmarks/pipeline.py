"""Per-stage latency of the Seg-Zero pipeline, printed as one JSON object.

    python -m benchmarks.pipeline                      # tiny checkpoints (CPU or GPU)
    python -m benchmarks.pipeline --arch 3b --device cuda --new-tokens 256
    python -m benchmarks.pipeline --arch 3b --layers 2 --new-tokens 4   # a quick CPU check

`--arch tiny` uses the built-in tiny checkpoints. `--arch 3b` / `--arch 7b` build the released
Qwen2.5-VL-3B / -7B architectures (`segzero_model.tiny.real_size`; the released Seg-Zero models
are 3B and 7B) and SAM2 hiera-large with random weights (nothing can be downloaded), save them in
the on-disk formats and load them through the same code users call, so `load` includes reading
the weights. `--layers N` cuts the reasoner to N text layers and N vision blocks (widths as
released): a quick check that the real-size path runs, not a latency to report. Random weights
never emit EOS on purpose, so every generation is forced to exactly `--new-tokens` tokens.

Stages: load (reasoner, segmenter), vision + prefill (time to the first generated token),
decode (tokens per second after the first), SAM2 image embedding and SAM2 mask decoding.

`--compile` also measures the compiled decode (a static KV cache and torch.compile, meant for
CUDA) on the same model and images: the first compiled round (the compilation), then the
same stages as eager, and whether it generated the eager tokens. `--prefix-cache-size N` sets
the reasoner's same-frame prefix cache (0: off); each round here has a new image, so every
query computes its prefix (benchmarks/prefix_reuse.py measures the follow-up queries).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.provenance import publish
from segzero_model.config import add_pipeline_arguments
from segzero_model.reasoning.local import Reasoner
from segzero_model.segmentation.segmenter import Segmenter
from segzero_model.tiny.real_size import ARCHES, write_real_size_reasoner

SAM2_LARGE_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"
COMPILE_WARMUP_ROUNDS = 2


def write_random_sam2(config_name: str, out_path: Path) -> Path:
    import torch
    from sam2.build_sam import build_sam2

    model = build_sam2(config_name, ckpt_path=None, device="cpu")
    torch.save({"model": model.state_dict()}, out_path)
    return out_path


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(sync_device, function, /, *args, **kwargs):
    """Call `function(*args, **kwargs)`; return its value and wall seconds (GPU synchronised)."""
    synchronize(sync_device)
    started = time.perf_counter()
    value = function(*args, **kwargs)
    synchronize(sync_device)
    return value, time.perf_counter() - started


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def measure_compiled(reasoner: Reasoner, device: str, args) -> dict:
    """Generation with the compiled decode, by a twin of `reasoner` on the same model: the
    time of the first two rounds (they compile: the second call still does on the CPU), then
    `args.repeats` rounds as in main()."""
    compiled = reasoner.twin(compile=True)
    rng = np.random.default_rng(1)
    options = {"max_new_tokens": args.new_tokens, "min_new_tokens": args.new_tokens}
    prefill, decode_rate, same_tokens, warmup = [], [], True, 0.0
    for repeat in range(args.repeats + COMPILE_WARMUP_ROUNDS):
        images = [
            rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
            for _ in range(args.batch)
        ]
        queries = ["the red cup"] * args.batch
        generations, seconds = timed(device, compiled.generate, images, queries, **options)
        eager = reasoner.generate(images, queries, **options)
        same_tokens &= [g.text for g in generations] == [g.text for g in eager]
        if repeat < COMPILE_WARMUP_ROUNDS:
            warmup += seconds
            continue
        prefill.append(generations[0].prefill_seconds)
        decode_rate.append(
            args.batch * max(generations[0].num_tokens - 1, 1) / generations[0].decode_seconds
        )
    return {
        "compile_warmup_s": round(warmup, 3),
        "compiled_vision_prefill_s_median": round(statistics.median(prefill), 4),
        "compiled_decode_tokens_per_s_median": round(statistics.median(decode_rate), 2),
        "compiled_tokens_match_eager": same_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=["tiny", *ARCHES], default="tiny")
    parser.add_argument(
        "--layers",
        type=int,
        help="real-size reasoner only: cut to this many text layers and vision blocks",
    )
    add_pipeline_arguments(parser, ("device",))
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="queries per generate call")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    parser.add_argument("--compile", action="store_true", help="also measure compiled decoding")
    add_pipeline_arguments(parser, ("prefix_cache_size",))
    args = parser.parse_args()
    if args.layers is not None and args.arch == "tiny":
        parser.error("--layers applies to --arch 3b or 7b")

    import torch

    from segzero_model.device import resolve_device, resolve_dtype
    from segzero_model.tiny import ensure_tiny_models

    device = resolve_device(args.device)
    tiny_reasoner, tiny_segmenter = ensure_tiny_models()
    with tempfile.TemporaryDirectory(prefix="segzero-bench-") as scratch:
        if args.arch == "tiny":
            reasoner_source, segmenter_args = tiny_reasoner, (tiny_segmenter,)
        else:
            dtype = resolve_dtype(device)
            reasoner_source = write_real_size_reasoner(
                args.arch,
                tiny_reasoner,
                Path(scratch) / "reasoner",
                dtype=dtype,
                text_layers=args.layers,
                vision_depth=args.layers,
            )
            segmenter_args = (
                SAM2_LARGE_CONFIG,
                write_random_sam2(SAM2_LARGE_CONFIG, Path(scratch) / "sam2_large.pt"),
            )

        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        reasoner, load_reasoner = timed(
            device,
            Reasoner.from_pretrained,
            reasoner_source,
            device=device,
            prefix_cache_size=args.prefix_cache_size,
        )
        if len(segmenter_args) == 1:
            segmenter, load_segmenter = timed(
                device, Segmenter.from_pretrained, segmenter_args[0], device=device
            )
        else:
            segmenter, load_segmenter = timed(
                device, Segmenter.from_config, *segmenter_args, device=device
            )

        rng = np.random.default_rng(0)
        prefill, decode_rate, embed, mask = [], [], [], []
        for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
            images = [
                rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
                for _ in range(args.batch)
            ]
            generations, _ = timed(
                device,
                reasoner.generate,
                images,
                ["the red cup"] * args.batch,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
            )
            _, embed_seconds = timed(device, segmenter.set_image, images[0])
            box = (10, 10, args.width // 2, args.height // 2)
            points = [(args.width // 4, args.height // 4)] * 2
            _, mask_seconds = timed(device, segmenter.predict, box, points)
            if repeat == 0:
                continue
            generation = generations[0]
            prefill.append(generation.prefill_seconds)
            decode_rate.append(
                args.batch * max(generation.num_tokens - 1, 1) / generation.decode_seconds
            )
            embed.append(embed_seconds)
            mask.append(mask_seconds)

    report = {
        "benchmark": "pipeline",
        "date": datetime.date.today().isoformat(),
        "arch": args.arch,
        "layers": args.layers,  # null: the depth as released (or the tiny model's)
        "device": describe_device(device),
        "dtype": str(reasoner.dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "image": f"{args.width}x{args.height}",
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "generated_tokens": generations[0].num_tokens,
        "load_reasoner_s": round(load_reasoner, 3),
        "load_segmenter_s": round(load_segmenter, 3),
        "vision_prefill_s_median": round(statistics.median(prefill), 4),
        "decode_tokens_per_s_median": round(statistics.median(decode_rate), 2),
        "sam2_embedding_s_median": round(statistics.median(embed), 4),
        "sam2_decode_s_median": round(statistics.median(mask), 4),
    }
    report["prefix_cache_size"] = reasoner.prefixes.size if reasoner.prefixes else 0
    if args.compile:
        report |= measure_compiled(reasoner, device, args)
    if device.startswith("cuda"):
        report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    publish(report, args.output)


if __name__ == "__main__":
    main()
