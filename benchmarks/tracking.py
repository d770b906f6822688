"""SAM2 tracking between queries: per-frame cost against the full pipeline, and flat memory.

    python -m benchmarks.tracking                                   # tiny models, CPU
    python -m benchmarks.tracking --sam2-config sam2.1_hiera_l --device cuda

One run, one synthetic clip (a square moving over noise, generated frame by frame at
--width x --height). The full pipeline (reasoner + SAM2) answers "the red cup" on
--pipeline-frames frames of the clip, each a new image (so each pays for the SAM2 embedding
too); then the answer's mask on frame 0 starts a track that `TrackSession.step` follows for
--frames frames, with loss switched off so every frame is tracked. Printed as one JSON object:
median and p95 tracking step, its ratio to the median full-pipeline frame, tracking frames per
second, and memory: process RSS (and CUDA memory allocated) after frame 100 and after the last
frame, with the frames each track stores, which must not grow past 1 + keep_frames.

Models: the tiny checkpoints by default. `--sam2-config NAME` (a sam2 package config such as
sam2.1_hiera_l, sam2.1_hiera_b+) builds SAM2 at that real size with random weights (nothing is
downloaded; tracking cost does not depend on the weights' values). The reasoner stays the tiny
one in every mode: the real reasoner's cost is benchmarks/pipeline.py's, so with real SAM2 the
ratio here understates how much tracking saves.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.pipeline import describe_device, synchronize
from benchmarks.provenance import git_commit, publish
from segzero_model.config import add_pipeline_arguments

QUERY = "the red cup"
RSS_CHECKPOINT = 100  # the frame whose memory the last frame's is compared with


def moving_square(index: int, width: int, height: int) -> np.ndarray:
    """RGB frame `index`: a red square (a quarter of the height) moving right over fixed noise."""
    image = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    side = height // 4
    x = (width // 8 + 3 * index) % max(1, width - side)
    image[height // 3 : height // 3 + side, x : x + side] = (255, 40, 40)
    return image


def rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def cuda_mib(device: str) -> float | None:
    import torch

    return torch.cuda.memory_allocated(device) / 2**20 if device.startswith("cuda") else None


def load_pipeline(sam2_config: str | None, device: str):
    """The tiny reasoner with the tiny SAM2, or with `sam2_config`'s SAM2 at random weights."""
    import torch

    from segzero_model.pipeline import SegZeroPipeline
    from segzero_model.reasoning.local import Reasoner
    from segzero_model.segmentation.segmenter import Segmenter, build_sam2_model
    from segzero_model.tiny import ensure_tiny_models

    tiny_reasoner, tiny_segmenter = ensure_tiny_models()
    reasoner = Reasoner.from_pretrained(tiny_reasoner, device=device)
    if sam2_config is None:
        return SegZeroPipeline(reasoner, Segmenter.from_pretrained(tiny_segmenter, device=device))
    torch.manual_seed(0)
    config = sam2_config if sam2_config.endswith(".yaml") else f"configs/sam2.1/{sam2_config}.yaml"
    model = build_sam2_model(config, None, device=device)
    segmenter = Segmenter(model, device=device, model_id=f"{sam2_config} (random weights)")
    return SegZeroPipeline(reasoner, segmenter)


def time_pipeline(pipeline, frames: int, width: int, height: int, device: str) -> list[float]:
    """Seconds per full-pipeline frame on frames 1..`frames` (one untimed warm-up on frame 0)."""
    pipeline.segment(moving_square(0, width, height), QUERY)
    seconds = []
    for index in range(1, frames + 1):
        image = moving_square(index, width, height)
        synchronize(device)
        started = time.perf_counter()
        result = pipeline.segment(image, QUERY)
        synchronize(device)
        seconds.append(time.perf_counter() - started)
        if not result.ok:
            raise RuntimeError(f"the pipeline did not answer frame {index}: {result.reason}")
    return seconds


def track(pipeline, frames: int, width: int, height: int, device: str) -> dict:
    """Start a track from frame 0's answer and step it on frames 1..`frames`."""
    from segzero_model.segmentation.tracks import LOST, TrackSession, TrackSettings

    first = moving_square(0, width, height)
    result = pipeline.segment(first, QUERY)
    if not result.ok:
        raise RuntimeError(f"the pipeline did not answer frame 0: {result.reason}")
    tracker = pipeline.segmenter.new_tracker()
    never_lost = TrackSettings(lost_score=0.0, lost_min_area=0)
    session = TrackSession(tracker, never_lost)
    status, _ = session.start(first, QUERY, mask=result.mask)
    seconds, stored, memory = [], [], {}
    for index in range(1, frames + 1):
        image = moving_square(index, width, height)
        synchronize(device)
        started = time.perf_counter()
        (step,) = session.step(image)
        synchronize(device)
        seconds.append(time.perf_counter() - started)
        if step.state == LOST:
            raise RuntimeError(f"the track was lost at frame {index} with loss switched off")
        stored.append(tracker.stored_frames(status.track_id))
        if index in (RSS_CHECKPOINT, frames):
            memory[index] = (rss_mib(), cuda_mib(device))
    return {
        "seconds": seconds,
        "stored": stored,
        "memory": memory,
        "keep_frames": tracker.keep_frames,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sam2-config",
        help="real-size SAM2 with random weights, e.g. sam2.1_hiera_l (default: the tiny SAM2)",
    )
    add_pipeline_arguments(parser, ("device",), device="cpu")
    parser.add_argument("--frames", type=int, default=1000, help="tracked frames after frame 0")
    parser.add_argument(
        "--pipeline-frames", type=int, default=5, help="frames the full pipeline answers"
    )
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.frames < 1 or args.pipeline_frames < 1:
        parser.error("--frames and --pipeline-frames must be at least 1")

    import torch

    from segzero_model.device import resolve_device

    device = resolve_device(args.device)
    pipeline = load_pipeline(args.sam2_config, device)
    size = (args.width, args.height)
    pipeline_seconds = time_pipeline(pipeline, args.pipeline_frames, *size, device)
    tracked = track(pipeline, args.frames, *size, device)

    seconds = tracked["seconds"]
    track_ms = statistics.median(seconds) * 1000
    pipeline_ms = statistics.median(pipeline_seconds) * 1000
    tenth = max(1, len(seconds) // 10)
    checkpoint = min(RSS_CHECKPOINT, args.frames)
    rss_early, cuda_early = tracked["memory"][checkpoint]
    rss_last, cuda_last = tracked["memory"][args.frames]
    report = {
        "benchmark": "tracking",
        "date": datetime.date.today().isoformat(),
        "command": " ".join(["python", "-m", "benchmarks.tracking", *(argv or sys.argv[1:])]),
        "git_commit": git_commit(),
        "device": describe_device(device),
        "torch": torch.__version__,
        "reasoner": "tiny",
        "sam2": args.sam2_config or "tiny",
        "image": f"{args.width}x{args.height}",
        "pipeline_frames": args.pipeline_frames,
        "tracked_frames": args.frames,
        "pipeline_ms_median": round(pipeline_ms, 2),
        "track_ms_median": round(track_ms, 2),
        "track_ms_p95": round(float(np.percentile(seconds, 95)) * 1000, 2),
        "track_to_pipeline_ratio": round(track_ms / pipeline_ms, 4),
        "tracking_fps": round(len(seconds) / sum(seconds), 2),
        # Per-frame time over the run: the first and the last tenth of the frames.
        "track_ms_median_first_tenth": round(statistics.median(seconds[:tenth]) * 1000, 2),
        "track_ms_median_last_tenth": round(statistics.median(seconds[-tenth:]) * 1000, 2),
        "keep_frames": tracked["keep_frames"],
        "stored_frames_per_track_max": max(tracked["stored"]),
        "stored_frames_per_track_last": tracked["stored"][-1],
        "rss_checkpoint_frame": checkpoint,
        "rss_mib_at_checkpoint": round(rss_early, 1),
        "rss_mib_at_last_frame": round(rss_last, 1),
        "rss_growth_mib": round(rss_last - rss_early, 1),
    }
    if cuda_early is not None:
        report["cuda_allocated_mib_at_checkpoint"] = round(cuda_early, 1)
        report["cuda_allocated_mib_at_last_frame"] = round(cuda_last, 1)
    publish(report, args.output)


if __name__ == "__main__":
    main()
