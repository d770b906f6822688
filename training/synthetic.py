"""A small synthetic training set in the released layout: coloured shapes on a plain background.

    python training/synthetic.py --output data/synthetic [--rows 8] [--test-rows 4] [--seed 0]
    python training/grpo.py --config training/configs/smoke.yaml   # trains and validates on it

Each row shows one to three shapes of different colours; the problem names one of them ("the
red disk") and the solution is `mask_to_target` of its mask, so every reward can be computed
exactly. Tests and benchmarks train on it in seconds; it is also a quick way to smoke-test a
recipe (``training/grpo.py --dataset_path DIR``) before spending GPU hours on real data. The
output is ``DatasetDict({"train": ..., "test": ...}).save_to_disk(DIR)``: the train split as
`prepare_data.py` writes it, and a held-out test split of other scenes (seed + 1), which the
smoke recipe validates on (``eval_dataset_path``) and ``training/evaluate.py`` scores.

Exit codes: 0 written; 2 bad arguments or an output directory that is not empty.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

from segzero_model.reasoning.frames import REASONING_SIZE

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 70, 220)}
SHAPES = ("square", "disk")
BACKGROUND = (128, 128, 128)


def _shape_mask(shape: str, centre: tuple[int, int], radius: int, side: int) -> np.ndarray:
    import cv2

    mask = np.zeros((side, side), np.uint8)
    if shape == "disk":
        cv2.circle(mask, centre, radius, 1, thickness=-1)
    else:
        (cx, cy), r = centre, radius
        cv2.rectangle(mask, (cx - r, cy - r), (cx + r, cy + r), 1, thickness=-1)
    return mask.astype(bool)


def synthetic_row(index: int, rng: random.Random, side: int = REASONING_SIZE) -> dict:
    """One row: an image with 1-3 non-overlapping shapes, the problem naming one of them."""
    from PIL import Image

    from segzero_model.targets import format_solution, mask_to_target

    image = np.empty((side, side, 3), np.uint8)
    image[:] = BACKGROUND
    colours = rng.sample(list(COLOURS), rng.randint(1, len(COLOURS)))
    cells = rng.sample(range(4), len(colours))  # one shape per quadrant: they never overlap
    masks = []
    for colour, cell in zip(colours, cells, strict=True):
        radius = rng.randint(side // 16, side // 6)
        cx = (cell % 2) * side // 2 + rng.randint(radius, side // 2 - radius - 1)
        cy = (cell // 2) * side // 2 + rng.randint(radius, side // 2 - radius - 1)
        shape = rng.choice(SHAPES)
        mask = _shape_mask(shape, (cx, cy), radius, side)
        image[mask] = COLOURS[colour]
        masks.append((f"the {colour} {shape}", mask))
    problem, mask = rng.choice(masks)
    target = mask_to_target(mask)
    bbox = tuple(round(v) for v in target.bbox)
    points = tuple(tuple(round(v) for v in point) for point in target.points)
    return {
        "id": f"synthetic-{index}",
        "problem": problem,
        "solution": format_solution(bbox, points),
        "image": Image.fromarray(image),
        "img_height": side,
        "img_width": side,
    }


def synthetic_dataset(count: int, seed: int = 0):
    """`count` rows (deterministic for a seed) as a `datasets.Dataset` with the released
    features (`segzero_training.prepare_data.features`)."""
    from datasets import Dataset

    from segzero_training.prepare_data import features

    rng = random.Random(seed)
    rows = [synthetic_row(index, rng) for index in range(count)]
    return Dataset.from_list(rows, features=features())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="synthetic.py",
        description="Write a synthetic Seg-Zero training set (coloured shapes, released layout).",
    )
    parser.add_argument("--output", type=Path, required=True, help="dataset directory to write")
    parser.add_argument("--rows", type=int, default=8, help="number of rows (default 8)")
    parser.add_argument(
        "--test-rows", type=int, default=4, help="rows of the held-out 'test' split (4; 0: none)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed of the scenes (0)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rows < 1 or args.test_rows < 0:
        print(
            f"error: --rows must be at least 1 and --test-rows at least 0, got {args.rows} and "
            f"{args.test_rows}",
            file=sys.stderr,
        )
        return 2
    output = args.output
    if output.exists() and (not output.is_dir() or any(output.iterdir())) and not args.overwrite:
        print(f"error: {output} exists and is not empty (--overwrite replaces it)", file=sys.stderr)
        return 2
    from datasets import DatasetDict

    splits = {"train": synthetic_dataset(args.rows, seed=args.seed)}
    if args.test_rows:  # other scenes: a held-out split
        splits["test"] = synthetic_dataset(args.test_rows, seed=args.seed + 1)
    if output.is_dir():
        import shutil

        shutil.rmtree(output)
    elif output.exists():
        output.unlink()
    DatasetDict(splits).save_to_disk(str(output))
    counts = ", ".join(f"{len(rows)} {name}" for name, rows in splits.items())
    print(f"wrote {output}: {counts} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
