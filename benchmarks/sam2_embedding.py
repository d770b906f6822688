"""SAM2's image embedding (the image encoder, the segmenter's cost per new frame), eager and
with `torch.compile` of the image encoder; one JSON object.

    python -m benchmarks.sam2_embedding --device cuda                 # hiera-large, compiled too
    python -m benchmarks.sam2_embedding --config sam2.1_hiera_t --no-compile   # a quick CPU run

The model is built from the sam2 package's config with random weights (nothing downloads) and
loaded through `Segmenter.from_config`, as users can load a checkpoint; each timed call embeds a
new frame (no embedding cache hit; SAM2 resizes every frame to 1024x1024). `compile_s` is the
first compiled call (compilation included).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import provenance
from benchmarks.pipeline import describe_device, synchronize, timed, write_random_sam2
from segzero_model.config import add_pipeline_arguments


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="sam2.1_hiera_l", help="a sam2 package config name")
    add_pipeline_arguments(parser, ("device",))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--no-compile", action="store_true", help="eager only")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)

    import torch

    from segzero_model.device import resolve_device
    from segzero_model.segmentation.segmenter import Segmenter

    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    frames = [
        rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
        for _ in range(args.repeats + 1)
    ]
    with tempfile.TemporaryDirectory(prefix="segzero-sam2-") as scratch:
        config = f"configs/sam2.1/{args.config}.yaml"
        checkpoint = write_random_sam2(config, Path(scratch) / f"{args.config}.pt")
        segmenter = Segmenter.from_config(config, checkpoint, device=device)

    def embed_all() -> list[float]:
        segmenter.set_image(frames[0])  # warm-up
        return [timed(device, segmenter.set_image, frame)[1] for frame in frames[1:]]

    with torch.inference_mode():
        eager = embed_all()
        report = {
            "benchmark": "sam2_embedding",
            "config": args.config,
            "device": describe_device(device),
            "image": [args.width, args.height],
            "eager_s_median": statistics.median(eager),
        }
        if not args.no_compile:
            encoder = segmenter.model.image_encoder
            segmenter.model.image_encoder = torch.compile(encoder)
            synchronize(device)
            report["compile_s"] = timed(device, segmenter.set_image, frames[0])[1]
            report["compiled_s_median"] = statistics.median(embed_all())
    provenance.publish(report, args.output)


if __name__ == "__main__":
    main()
