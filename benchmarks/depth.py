"""Cost of the 3D stage: `locate_object` on a `RawDepth` per frame (as the node runs it), on the
CPU.

    python -m benchmarks.depth                     # 640x480 and 1280x720, 200 repeats each
    python -m benchmarks.depth --repeats 20 --sizes 320x240

For each size: a synthetic 16UC1 frame (a wall at 1.5 m, an elliptical object at 0.7 m covering
about 10% of the frame, 2 mm noise, 1% of pixels missing) and that object's mask, aligned to
colour at the same resolution. Times the full 3D stage (locate on the raw 16UC1 frame, which
converts only the window under the mask to metres) and `locate_object` on a frame converted
beforehand, each after warm-up; prints one JSON object with the medians and p95s
in milliseconds, the result, versions, the machine and the command. Target: under 2 ms median.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np

from benchmarks.provenance import git_commit, publish
from segzero_model.spatial.depth import Intrinsics, RawDepth, depth_to_metres, locate_object

MASK_FRACTION = 0.10


def scene(width: int, height: int) -> tuple[np.ndarray, np.ndarray, Intrinsics]:
    """(16UC1 depth in mm, bool mask, intrinsics) of the synthetic frame."""
    rng = np.random.default_rng(0)
    camera = Intrinsics(
        fx=0.9 * width, fy=0.9 * width, cx=width / 2 - 0.5, cy=height / 2 - 0.5, width=width,
        height=height,
    )  # fmt: skip
    # An ellipse of area pi*a*b = MASK_FRACTION * width * height, aspect 4:3.
    b = np.sqrt(MASK_FRACTION * width * height / (np.pi * 4 / 3))
    a = 4 / 3 * b
    v, u = np.mgrid[0:height, 0:width]
    mask = ((u - 0.45 * width) / a) ** 2 + ((v - 0.55 * height) / b) ** 2 <= 1.0
    depth = np.where(mask, 0.7, 1.5) + rng.normal(0.0, 0.002, mask.shape)
    depth[rng.random(mask.shape) < 0.01] = 0.0
    return np.round(depth * 1000).astype(np.uint16), mask, camera


def time_ms(call, repeats: int) -> list[float]:
    for _ in range(5):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def summary(times: list[float]) -> dict:
    return {
        "median": round(float(np.median(times)), 3),
        "p95": round(float(np.percentile(times, 95)), 3),
    }


def measure(width: int, height: int, repeats: int) -> dict:
    raw, mask, camera = scene(width, height)
    depth_m = depth_to_metres(raw, "16UC1")
    geometry = locate_object(mask, depth_m, camera)
    stage = time_ms(lambda: locate_object(mask, RawDepth(raw, "16UC1"), camera), repeats)
    locate = time_ms(lambda: locate_object(mask, depth_m, camera), repeats)
    return {
        "size": f"{width}x{height}",
        "mask_fraction": round(float(mask.mean()), 4),
        "stage_ms": summary(stage),
        "locate_object_ms": summary(locate),
        "status": geometry.status.value,
        "position_m": [round(v, 4) for v in geometry.position],
        "size_m": [round(v, 4) for v in geometry.size],
        "depth_points": geometry.valid_points,
    }


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--sizes", nargs="+", default=["640x480", "1280x720"], metavar="WxH")
    args = parser.parse_args(argv)
    import cv2

    report = {
        "results": [measure(*parse_size(size), args.repeats) for size in args.sizes],
        "repeats": args.repeats,
        "target_ms_median": 2.0,
        "command": " ".join(["python", "-m", "benchmarks.depth", *(argv or sys.argv[1:])]),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    publish(report)


if __name__ == "__main__":
    main()
