"""Build Seg-Zero training data in the layout of the released ``refCOCOg_9k_840`` dataset.

Each row is one referring expression and the answer the reasoning model should give for it:

    id          str, unique per row
    problem     the referring text
    solution    "<box>(x1,y1),(x2,y2)</box><points>(x1,y1),(x2,y2)</points>", 840x840 frame
    image       the image resized to 840x840 (PIL bilinear), stored losslessly (PNG)
    img_height  the original image's height in pixels
    img_width   the original image's width in pixels

Targets: `segzero_model.targets.mask_to_target` runs on the ORIGINAL mask (bbox of the extreme
foreground pixels, centres of the two largest inscribed circles, all inclusive pixel indices);
each coordinate is then mapped to the 840 frame by `segzero_model.reasoning.frames.to_frame_xy`
(x * 840 / width, y * 840 / height: the inverse of the mapping inference applies to answers),
rounded half up to an integer and clamped to 0..839. So a target computed on the full-resolution
mask is off by at most half a frame pixel, instead of inheriting the resize's blur.

Sources:

- RefCOCOg: ``--coco-images DIR --refcoco DIR [--split train] [--split-by umd]``. The refcoco
  directory is the refer toolkit's: ``refs(umd).p`` (a pickle: only use a trusted copy) and
  ``instances.json``; images are ``<coco-images>/<file_name from instances.json>`` (COCO
  train2014). One row per sentence, id ``<ref_id>_<sent_id>``, problem the sentence's ``sent``
  (its ``raw`` text when ``sent`` is missing). Polygon and RLE masks are decoded with pycocotools
  (``pip install -e .[training]``), imported only for this source.
- A folder: ``--folder DIR``, either with ``DIR/annotations.jsonl``, one JSON object a line::

      {"image": "photos/a.jpg", "mask": "masks/a.png", "text": "the red cup", "id": "a-1"}

  (paths relative to DIR; "id" is optional and defaults to the line number), or else with
  ``DIR/images/NAME.<ext>``, ``DIR/masks/NAME.<ext>`` and ``DIR/texts/NAME.txt`` (the whole
  text file, stripped, is the problem; id NAME). A mask is an image of the same size as its
  image; any nonzero colour channel is foreground (alpha is ignored), so store masks losslessly
  (PNG): JPEG noise would turn stray background pixels into foreground.

A bad sample never stops a run: an image or mask that cannot be read, that disagree in size, or
a missing mask or text is skipped as "corrupt", a mask with no foreground pixel as "empty"; each
skip is logged and the counts are printed at the end. ``--limit N`` stops once N rows are kept;
``--seed S`` shuffles the candidates first (so ``--limit`` takes a random subset).

A model family of another image size (`segzero_model.reasoning.families`: Qwen3-VL's 896) needs its
images and solutions in that size: ``--image-size 896`` for a new dataset, or
``--resize DATASET --image-size 896`` to rewrite one already made (the released one included;
its solutions, one object or VisionReasoner's list, are scaled and rounded half up).

Usage:
    python training/prepare_data.py --folder DIR --output OUT [--limit N] [--seed S]
    python training/prepare_data.py --coco-images DIR --refcoco DIR --split train --output OUT
    python training/prepare_data.py --resize refCOCOg_9k_840 --image-size 896 --output OUT

The output is ``DatasetDict({split: Dataset}).save_to_disk(OUT)``, as the released data, so
`load_training_dataset(OUT)` or ``datasets.load_from_disk(OUT)["train"]`` reads it back.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import random
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segzero_model.errors import ImageLoadError
from segzero_model.reasoning.families import QWEN3_VL_IMAGE_SIZE
from segzero_model.reasoning.frames import REASONING_SIZE, to_frame_xy
from segzero_model.targets import (
    EmptyMaskError,
    ObjectTruth,
    Target,
    format_objects_solution,
    format_solution,
    is_objects_solution,
    mask_to_target,
    parse_objects_solution,
    parse_solution,
)

logger = logging.getLogger(__name__)

COLUMNS = ("id", "problem", "solution", "image", "img_height", "img_width")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

EXIT_NO_SAMPLES = 1
EXIT_USAGE = 2


class SampleError(ValueError):
    """One sample cannot be used (unreadable file, sizes disagree, no text): it is skipped."""


@dataclass(frozen=True)
class RawSample:
    """One candidate row before it is read: `load_mask()` returns its HxW mask (or raises)."""

    id: str
    text: str
    image_path: Path
    load_mask: Callable[[], np.ndarray] = field(repr=False)


@dataclass
class PrepareStats:
    """What a run kept and skipped."""

    kept: int = 0
    skipped_corrupt: int = 0
    skipped_empty: int = 0

    def __str__(self) -> str:
        return (
            f"kept {self.kept}, skipped-corrupt {self.skipped_corrupt}, "
            f"skipped-empty {self.skipped_empty}"
        )


def features():
    """The `datasets.Features` of the released training data."""
    from datasets import Features, Image, Value

    return Features(
        {
            "id": Value("string"),
            "problem": Value("string"),
            "solution": Value("string"),
            "image": Image(),
            "img_height": Value("int64"),
            "img_width": Value("int64"),
        }
    )


# --------------------------------------------------------------------------- targets and rows


def frame_coordinate(value: float, size: int = REASONING_SIZE) -> int:
    """A frame coordinate as the integer pixel stored in `solution`: round half up, clamp."""
    return min(max(math.floor(value + 0.5), 0), size - 1)


def frame_target(
    target: Target, width: int, height: int, size: int = REASONING_SIZE
) -> tuple[tuple[int, int, int, int], tuple[tuple[int, int], tuple[int, int]]]:
    """`target` (pixels of a `width` x `height` mask) as integer (bbox, points) in the `size`
    square frame (840: Seg-Zero's)."""

    def xy(x: float, y: float) -> tuple[int, int]:
        fx, fy = to_frame_xy(x, y, width, height, size)
        return frame_coordinate(fx, size), frame_coordinate(fy, size)

    x1, y1 = xy(target.bbox[0], target.bbox[1])
    x2, y2 = xy(target.bbox[2], target.bbox[3])
    p1, p2 = (xy(x, y) for x, y in target.points)
    return (x1, y1, x2, y2), (p1, p2)


def make_row(sample: RawSample, size: int = REASONING_SIZE) -> dict:
    """Read one sample and build its dataset row, the image and solution at `size` x `size`.

    Raises:
        SampleError: no text, an unreadable image or mask, or image and mask sizes differ.
        EmptyMaskError: the mask has no foreground pixel.
    """
    from PIL import Image

    from segzero_model.images import load_image

    text = sample.text.strip() if isinstance(sample.text, str) else ""
    if not text:
        raise SampleError(f"sample {sample.id!r} has no referring text")
    try:
        image = load_image(sample.image_path)
    except ImageLoadError as error:
        raise SampleError(str(error)) from error
    mask = sample.load_mask()
    if mask.shape != image.shape[:2]:
        raise SampleError(
            f"mask of sample {sample.id!r} is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{sample.image_path} is {image.shape[1]}x{image.shape[0]}"
        )
    height, width = mask.shape
    bbox, points = frame_target(mask_to_target(mask), width, height, size)
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
    return {
        "id": sample.id,
        "problem": text,
        "solution": format_solution(bbox, points),
        "image": resized,
        "img_height": height,
        "img_width": width,
    }


# --------------------------------------------------------------------------- folder source


def read_mask_file(path: Path) -> np.ndarray:
    """A mask image as HxW bool: any nonzero colour channel is foreground (alpha ignored).

    Raises:
        SampleError: the file is missing or cannot be decoded.
    """
    import cv2

    if not path.is_file():
        raise SampleError(f"mask file not found: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if decoded is None:
        raise SampleError(f"cannot decode mask file {path} (not an image, or corrupt)")
    if decoded.ndim == 3:
        decoded = decoded[:, :, :3].any(axis=2)
    return decoded != 0


def _mask_file_loader(path: Path) -> Callable[[], np.ndarray]:
    return lambda: read_mask_file(path)


def folder_samples(folder: str | os.PathLike) -> list[RawSample]:
    """Candidates from a folder (see the module docstring for the two layouts).

    Raises:
        ValueError: the folder has neither layout, or annotations.jsonl is malformed.
    """
    folder = Path(folder)
    annotations = folder / "annotations.jsonl"
    if annotations.is_file():
        return _jsonl_samples(folder, annotations)
    images = folder / "images"
    if not images.is_dir():
        raise ValueError(
            f"{folder} has neither annotations.jsonl nor images/: expected annotations.jsonl "
            'lines {"image": ..., "mask": ..., "text": ...} or images/NAME.jpg, '
            "masks/NAME.png and texts/NAME.txt"
        )
    masks = {p.stem: p for p in sorted((folder / "masks").glob("*")) if p.is_file()}
    samples = []
    for image in sorted(images.iterdir()):
        if image.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        text_file = folder / "texts" / f"{image.stem}.txt"
        text = text_file.read_text(encoding="utf-8") if text_file.is_file() else ""
        mask = masks.get(image.stem, folder / "masks" / f"{image.stem}.png")
        samples.append(RawSample(image.stem, text, image, _mask_file_loader(mask)))
    return samples


def _jsonl_samples(folder: Path, annotations: Path) -> list[RawSample]:
    samples = []
    with annotations.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as error:
                raise ValueError(f"{annotations}:{number}: not JSON ({error})") from error
            missing = [key for key in ("image", "mask", "text") if key not in record]
            if not isinstance(record, dict) or missing:
                raise ValueError(
                    f"{annotations}:{number}: need keys 'image', 'mask' and 'text', missing "
                    f"{missing or 'all (not an object)'}"
                )
            sample_id = str(record.get("id", number))
            text = record["text"] if isinstance(record["text"], str) else ""
            samples.append(
                RawSample(
                    sample_id,
                    text,
                    folder / record["image"],
                    _mask_file_loader(folder / record["mask"]),
                )
            )
    return samples


# --------------------------------------------------------------------------- RefCOCOg source


def _pycocotools_mask():
    try:
        from pycocotools import mask
    except ImportError as error:
        raise ImportError(
            "reading RefCOCOg masks needs pycocotools: pip install pycocotools "
            "(or pip install -e '.[training]')"
        ) from error
    return mask


def decode_coco_segmentation(segmentation, height: int, width: int) -> np.ndarray:
    """A COCO annotation's polygons / RLE as an HxW bool mask (polygons are merged).

    Raises:
        SampleError: the segmentation cannot be decoded.
    """
    mask_utils = _pycocotools_mask()
    try:
        if isinstance(segmentation, list):
            if not segmentation:
                return np.zeros((height, width), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            rle = segmentation
        decoded = mask_utils.decode(rle)
    except Exception as error:  # noqa: BLE001 - pycocotools raises many types for bad input
        raise SampleError(f"cannot decode COCO segmentation: {error}") from error
    if decoded.ndim == 3:
        decoded = decoded.any(axis=2)
    return decoded.astype(bool)


def _coco_mask_loader(segmentation, height: int, width: int) -> Callable[[], np.ndarray]:
    return lambda: decode_coco_segmentation(segmentation, height, width)


def refcoco_samples(
    coco_images: str | os.PathLike,
    refcoco_dir: str | os.PathLike,
    split: str = "train",
    split_by: str = "umd",
) -> list[RawSample]:
    """Candidates from RefCOCOg (refer toolkit layout), one per sentence of the split's refs.

    Raises:
        ImportError: pycocotools is not installed.
        FileNotFoundError: refs(<split_by>).p or instances.json is missing.
        ValueError: no ref has that split (the message lists the splits found).
    """
    import pickle

    _pycocotools_mask()  # fail before reading large files
    refcoco_dir = Path(refcoco_dir)
    refs_file = refcoco_dir / f"refs({split_by}).p"
    instances_file = refcoco_dir / "instances.json"
    for path in (refs_file, instances_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (the refer toolkit's RefCOCOg layout)")
    with refs_file.open("rb") as file:
        refs = pickle.load(file, encoding="latin1")  # written by Python 2
    instances = json.loads(instances_file.read_text(encoding="utf-8"))
    images = {image["id"]: image for image in instances["images"]}
    annotations = {annotation["id"]: annotation for annotation in instances["annotations"]}

    samples = []
    for ref in refs:
        if ref["split"] != split:
            continue
        image = images[ref["image_id"]]
        loader = _coco_mask_loader(
            annotations[ref["ann_id"]]["segmentation"], image["height"], image["width"]
        )
        for sentence in ref["sentences"]:
            samples.append(
                RawSample(
                    f"{ref['ref_id']}_{sentence['sent_id']}",
                    sentence.get("sent") or sentence.get("raw") or "",
                    Path(coco_images) / image["file_name"],
                    loader,
                )
            )
    if not samples:
        found = sorted({str(ref["split"]) for ref in refs})
        raise ValueError(f"no ref in {refs_file} has split {split!r}; splits found: {found}")
    return samples


# --------------------------------------------------------------------------- building


def _rows(samples: Sequence[RawSample], stats: PrepareStats, limit: int | None, size: int):
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    bar = tqdm(total=len(samples), unit="sample", desc="preparing")
    with bar, logging_redirect_tqdm():  # skip warnings print above the bar
        for sample in samples:
            if limit is not None and stats.kept >= limit:
                break
            try:
                row = make_row(sample, size)
            except EmptyMaskError as error:
                stats.skipped_empty += 1
                logger.warning("skipped sample %r (empty mask): %s", sample.id, error)
            except SampleError as error:
                stats.skipped_corrupt += 1
                logger.warning("skipped sample %r (corrupt): %s", sample.id, error)
            else:
                stats.kept += 1
                yield row
            bar.update()
            bar.set_postfix(kept=stats.kept, skipped=stats.skipped_corrupt + stats.skipped_empty)


def build_dataset(
    samples: Sequence[RawSample],
    output: str | os.PathLike,
    *,
    split: str = "train",
    limit: int | None = None,
    overwrite: bool = False,
    image_size: int = REASONING_SIZE,
) -> PrepareStats:
    """Write the rows of `samples` to `output` as `DatasetDict({split: ...}).save_to_disk`,
    images and solutions at `image_size` (a model family's; 840 for Seg-Zero).

    Rows are streamed to Arrow files (never all images in memory), in a temporary directory
    beside `output` that is renamed into place at the end, so an interrupted run leaves no
    half-written dataset behind.

    Raises:
        FileExistsError: `output` exists and is not empty, and `overwrite` is False.
        ValueError: no sample could be used (the counts are in the message).
    """
    import shutil

    import datasets
    from datasets import Dataset, DatasetDict

    output = Path(output)
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if output.exists() and not output.is_dir():
        raise FileExistsError(f"{output} exists and is not a directory")
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty (pass overwrite to replace it)")
    output.parent.mkdir(parents=True, exist_ok=True)
    stats = PrepareStats()
    finished = []

    def rows():  # a closure: datasets copies its config, but functions are copied by reference
        yield from _rows(samples, stats, limit, image_size)
        finished.append(True)

    quiet = not datasets.are_progress_bars_disabled()
    with tempfile.TemporaryDirectory(prefix=f".{output.name}-", dir=output.parent) as work:
        if quiet:  # our bar counts the samples; datasets' own would print through it
            datasets.disable_progress_bars()
        try:
            dataset = Dataset.from_generator(
                rows,
                features=features(),
                cache_dir=str(Path(work) / "cache"),
                fingerprint=uuid.uuid4().hex,  # a fresh build: never hash or reuse a cache
                writer_batch_size=64,
            )
        except Exception as error:  # datasets refuses to build a dataset of no rows
            if finished and stats.kept == 0:
                raise ValueError(f"no usable sample ({stats})") from error
            raise
        finally:
            if quiet:
                datasets.enable_progress_bars()
        staged = Path(work) / "dataset"
        DatasetDict({split: dataset}).save_to_disk(str(staged))
        del dataset
        if output.exists():
            shutil.rmtree(output)
        staged.rename(output)
    return stats


def resized_solution(solution: object, scale: float, size: int) -> str:
    """`solution` (Seg-Zero's one object or VisionReasoner's list) with every coordinate
    multiplied by `scale`, rounded half up and clamped into the `size` frame."""

    def xy(x: float, y: float) -> tuple[int, int]:
        return frame_coordinate(x * scale, size), frame_coordinate(y * scale, size)

    if is_objects_solution(solution):
        return format_objects_solution(
            [
                ObjectTruth((*xy(*o.bbox[:2]), *xy(*o.bbox[2:])), xy(*o.point))
                for o in parse_objects_solution(solution)
            ]
        )
    box, (p1, p2) = parse_solution(solution)
    return format_solution((*xy(*box[:2]), *xy(*box[2:])), (xy(*p1), xy(*p2)))


def resize_dataset(
    source: str | os.PathLike,
    output: str | os.PathLike,
    image_size: int,
    *,
    split: str = "train",
    overwrite: bool = False,
) -> int:
    """Write `source` (training data, e.g. the released ``refCOCOg_9k_840``) to `output` with
    its images resized to `image_size` squares (PIL bilinear) and its solutions scaled to
    match, so a model family of another image size (Qwen3-VL: 896) trains on it. The rounding
    costs at most half a pixel. Returns the number of rows.

    Raises:
        FileExistsError: `output` exists and is not empty, and `overwrite` is False.
        ValueError / FileNotFoundError: as `load_training_dataset`.
    """
    import shutil

    from datasets import DatasetDict
    from PIL import Image

    output = Path(output)
    if output.exists() and any(output.iterdir()) and not overwrite:
        raise FileExistsError(f"{output} exists and is not empty (pass overwrite to replace it)")
    dataset = load_training_dataset(source, split)

    def resize(image, solution: str) -> dict:
        scale = image_size / image.size[0]  # the stored images are square
        return {
            "image": image.convert("RGB").resize(
                (image_size, image_size), Image.Resampling.BILINEAR
            ),
            "solution": resized_solution(solution, scale, image_size),
        }

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.name}-", dir=output.parent) as work:
        resized = dataset.map(
            resize,
            input_columns=["image", "solution"],
            cache_file_name=str(Path(work) / "resized.arrow"),
            desc=f"resizing to {image_size}",
        )
        staged = Path(work) / "dataset"
        DatasetDict({split: resized}).save_to_disk(str(staged))
        rows = len(resized)
        del resized
        if output.exists():
            shutil.rmtree(output)
        staged.rename(output)
    return rows


def load_saved_split(path: Path, split: str):
    """The `split` of a directory written by ``save_to_disk`` (a saved `Dataset` is used as it
    is). ValueError when it is no saved dataset or has no such split."""
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except FileNotFoundError as error:
        raise ValueError(f"{path} is not a dataset saved with save_to_disk: {error}") from error
    if isinstance(loaded, DatasetDict):
        if split not in loaded:
            raise ValueError(f"{path} has no split {split!r}; splits: {sorted(loaded)}")
        loaded = loaded[split]
    return loaded


def load_training_dataset(path: str | os.PathLike, split: str = "train"):
    """Load training data saved with `save_to_disk` (the released ones or `build_dataset`'s).

    A saved `DatasetDict` gives its `split`; a saved `Dataset` is used as it is.

    Raises:
        FileNotFoundError: `path` is not a directory.
        ValueError: not a saved dataset, no such split, or a column of `COLUMNS` is missing or
            its first `solution` does not parse.
    """
    from datasets import Image

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"training dataset directory not found: {path}")
    loaded = load_saved_split(path, split)
    missing = [column for column in COLUMNS if column not in loaded.column_names]
    if missing:
        raise ValueError(
            f"{path} is not Seg-Zero training data: missing column(s) {missing}; it has "
            f"{loaded.column_names}, expected {list(COLUMNS)}"
        )
    if not isinstance(loaded.features["image"], Image):
        raise ValueError(
            f"{path}: column 'image' must be a datasets.Image, got {loaded.features['image']}"
        )
    if len(loaded):
        parse_objects_solution(loaded[0]["solution"])  # Seg-Zero's one object, or a list
    return loaded


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare_data.py",
        description="Build Seg-Zero training data (refCOCOg_9k_840 layout) from masks and texts.",
    )
    source = parser.add_argument_group(
        "source (--folder, or --coco-images with --refcoco, or --resize)"
    )
    source.add_argument("--folder", type=Path, help="folder of images, masks and texts")
    source.add_argument(
        "--resize",
        type=Path,
        metavar="DATASET",
        help="training data already made (e.g. the released refCOCOg_9k_840) to rewrite at "
        "--image-size, solutions scaled",
    )
    source.add_argument("--coco-images", type=Path, help="COCO train2014 image folder")
    source.add_argument("--refcoco", type=Path, help="folder with refs(umd).p, instances.json")
    source.add_argument("--split", default="train", help="RefCOCOg split to read (train)")
    source.add_argument("--split-by", default="umd", help="refs(<split-by>).p to read (umd)")
    parser.add_argument("--output", type=Path, required=True, help="dataset directory to write")
    parser.add_argument(
        "--image-size",
        type=int,
        default=REASONING_SIZE,
        help="square side of the images and the solutions' frame: the model family's "
        f"image size ({REASONING_SIZE} for Seg-Zero and VisionReasoner, {QWEN3_VL_IMAGE_SIZE} "
        "for qwen3_vl)",
    )
    parser.add_argument("--limit", type=int, help="stop once this many rows are kept")
    parser.add_argument("--seed", type=int, help="shuffle the candidates with this seed first")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 written, 1 no usable sample, 2 bad arguments or inputs."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    from_coco = args.coco_images is not None or args.refcoco is not None
    sources = (args.folder is not None) + from_coco + (args.resize is not None)
    if sources != 1 or (from_coco and (args.coco_images is None or args.refcoco is None)):
        parser.print_usage(sys.stderr)
        print(
            "error: give --folder, or both --coco-images and --refcoco, or --resize",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be at least 1, got {args.limit}", file=sys.stderr)
        return EXIT_USAGE
    if args.image_size < 1:
        print(f"error: --image-size must be at least 1, got {args.image_size}", file=sys.stderr)
        return EXIT_USAGE
    if args.resize is not None:
        try:
            rows = resize_dataset(
                args.resize, args.output, args.image_size, overwrite=args.overwrite
            )
        except (FileExistsError, FileNotFoundError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
        print(f"wrote {args.output}: {rows} rows at {args.image_size}x{args.image_size}")
        return 0
    try:
        if args.folder is not None:
            samples, split = folder_samples(args.folder), "train"
        else:
            samples = refcoco_samples(args.coco_images, args.refcoco, args.split, args.split_by)
            split = args.split
    except (ImportError, OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    if args.seed is not None:
        random.Random(args.seed).shuffle(samples)
    print(f"{len(samples)} candidate samples")
    try:
        stats = build_dataset(
            samples,
            args.output,
            split=split,
            limit=args.limit,
            overwrite=args.overwrite,
            image_size=args.image_size,
        )
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_NO_SAMPLES
    print(f"wrote {args.output} (split {split!r}): {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
