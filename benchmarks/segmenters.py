"""The segmenter families side by side, in one run on the same frames: image embedding, mask
decoding (box + two points) and one tracking step, for a 640x480 camera frame (each model resizes
it to its input: 1024, the SAM3 tracker 1008); one JSON object, ratios to hiera-large.

    python -m benchmarks.segmenters --device cpu                      # all, released sizes
    python -m benchmarks.segmenters --models hiera_t,edgetam --threads 2 --channels-last
    python -m benchmarks.segmenters --tiny --repeats 1                # the tiny checkpoints

The real-size architectures are built with random weights (nothing downloads): the sam2
package's SAM2.1 configs (hiera t / s / b+ / l) and transformers' EdgeTAM and SAM3 tracker
(`segzero_model.tiny.segmenters`, written in the released on-disk format and loaded through
`load_segmenter`, as a user loads a checkpoint). Each timed call is on a new frame, so no
embedding is reused. A tracking step embeds the frame too (it is what the node pays per camera
frame). CPU options: --threads, --bf16 (autocast; fast only where the CPU has bfloat16
arithmetic, e.g. AMX or AVX512-BF16), --channels-last, --compile (the image encoder).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import provenance
from benchmarks.pipeline import describe_device, timed
from segzero_model.config import add_pipeline_arguments

SAM2_CONFIGS = {
    "hiera_t": "sam2.1_hiera_t",
    "hiera_s": "sam2.1_hiera_s",
    "hiera_b+": "sam2.1_hiera_b+",
    "hiera_l": "sam2.1_hiera_l",
}
TRANSFORMERS_MODELS = ("edgetam", "sam3_tracker", "sam2_hf")
DEFAULT_MODELS = ("hiera_t", "hiera_s", "hiera_b+", "hiera_l", "edgetam", "sam3_tracker")
REFERENCE = "hiera_l"
BOX = (200.0, 150.0, 420.0, 330.0)  # pixels of the 640x480 frame
POINTS = [(280.0, 220.0), (340.0, 260.0)]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    names = (*SAM2_CONFIGS, *TRANSFORMERS_MODELS)
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=f"comma-separated, of {', '.join(names)} (default: {','.join(DEFAULT_MODELS)})",
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny checkpoints instead")
    add_pipeline_arguments(parser, ("device",))
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per stage (median)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    parser.add_argument("--channels-last", action="store_true", help="channels-last weights")
    parser.add_argument("--compile", action="store_true", help="torch.compile the image encoder")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(args.models) - set(names))
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(names)}")
    return args


def open_segmenter(name: str, scratch: Path, *, tiny: bool, device: str):
    """The segmenter `name` at random weights: the sam2 package's config, or a transformers
    family written in its released format (tiny with `tiny`) and loaded as a checkpoint."""
    from segzero_model.segmentation.loading import load_segmenter

    if name in SAM2_CONFIGS:
        if tiny:
            from segzero_model.tiny import ensure_tiny_models

            return load_segmenter(ensure_tiny_models()[1], device=device)
        from segzero_model.segmentation.segmenter import Segmenter, build_sam2_model

        config = f"configs/sam2.1/{SAM2_CONFIGS[name]}.yaml"
        model = build_sam2_model(config, None, device=device)
        return Segmenter(model, device=device, model_id=f"{config} (random weights)")
    from segzero_model.tiny.segmenters import write_tiny_segmenter

    directory = write_tiny_segmenter(scratch / name, name, real_size=not tiny)
    return load_segmenter(directory, family=name, device=device)


def image_encoder(segmenter):
    """(owner, attribute) of the segmenter's image encoder, for channels-last and compile."""
    if hasattr(segmenter, "image_model"):
        return segmenter.image_model, "vision_encoder"
    return segmenter.model, "image_encoder"


def parameters_m(segmenter) -> float:
    model = getattr(segmenter, "video_model", None) or segmenter.model
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 2)


def measure(segmenter, frames: list[np.ndarray], device: str, autocast) -> dict:
    """Median seconds of an embedding, a decode and a tracking step (each after a warm-up)."""
    with autocast():
        segmenter.set_image(frames[0])  # warm-up
        embed = [timed(device, segmenter.set_image, f)[1] for f in frames[1:]]
        segmenter.predict(BOX, POINTS)  # warm-up
        decode = [timed(device, segmenter.predict, BOX, POINTS)[1] for _ in frames[1:]]
        tracker = segmenter.new_tracker()
        tracker.add(frames[0], box=BOX, points=POINTS)
        tracker.track(frames[0])  # warm-up
        step = [timed(device, tracker.track, f)[1] for f in frames[1:]]
        tracker.clear()
    return {
        "embed_s": statistics.median(embed),
        "decode_s": statistics.median(decode),
        "track_step_s": statistics.median(step),
    }


def table(results: dict) -> str:
    """The markdown table RESULTS.md holds: seconds and ratios to hiera-large."""
    reference = results.get(REFERENCE)
    if reference is not None and "error" in reference:
        reference = None
    lines = [
        "| model | params (M) | embed s | decode ms | track step s | embed / hiera-l | "
        "track step / hiera-l |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        if "error" in r:
            lines.append(f"| {name} | cannot load: {r['error']} | | | | | |")
            continue
        ratios = ["", ""]
        if reference:
            ratios = [
                f"{r['embed_s'] / reference['embed_s']:.3f}",
                f"{r['track_step_s'] / reference['track_step_s']:.3f}",
            ]
        lines.append(
            f"| {name} | {r['params_m']} | {r['embed_s']:.3f} | {1000 * r['decode_s']:.1f} | "
            f"{r['track_step_s']:.3f} | {ratios[0]} | {ratios[1]} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    import torch

    from segzero_model.device import resolve_device
    from segzero_model.errors import ModelNotFoundError

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    frames = [
        rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
        for _ in range(args.repeats + 1)
    ]

    def autocast():
        if not args.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)

    results = {}
    # Libraries print to stdout as they load (DeepSpeed's accelerator notice, via transformers):
    # stdout holds the JSON only.
    with (
        tempfile.TemporaryDirectory(prefix="segzero-segmenters-") as scratch,
        contextlib.redirect_stdout(sys.stderr),
    ):
        for name in args.models:
            try:
                segmenter = open_segmenter(name, Path(scratch), tiny=args.tiny, device=device)
            except (ImportError, ValueError, ModelNotFoundError) as error:  # e.g. no timm
                results[name] = {"error": f"{type(error).__name__}: {error}"}
                print(f"{name}: cannot load: {error}", file=sys.stderr, flush=True)
                continue
            owner, attribute = image_encoder(segmenter)
            if args.channels_last:
                owner.to(memory_format=torch.channels_last)
            if args.compile:
                setattr(owner, attribute, torch.compile(getattr(owner, attribute)))
            results[name] = {"params_m": parameters_m(segmenter)}
            results[name].update(measure(segmenter, frames, device, autocast))
            print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
            segmenter.close()
    report = {
        "benchmark": "segmenters",
        "device": describe_device(device),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "tiny": args.tiny,
        "frame": [args.width, args.height],
        "repeats": args.repeats,
        "options": {
            "threads": torch.get_num_threads(),
            "bf16": args.bf16,
            "channels_last": args.channels_last,
            "compile": args.compile,
        },
        "results": results,
        "table": table(results),
    }
    if "error" not in results.get(REFERENCE, {"error": "not run"}):
        reference = results[REFERENCE]
        report["ratio_to_hiera_l"] = {
            name: {
                stage: r[stage] / reference[stage]
                for stage in ("embed_s", "decode_s", "track_step_s")
            }
            for name, r in results.items()
            if "error" not in r
        }
    provenance.publish(report, args.output)


if __name__ == "__main__":
    main()
