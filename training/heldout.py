"""Held-out samples in any of the three layouts users have, read the same way by validation
during training (`segzero_training.validation`) and by `training/evaluate.py`:

- the evaluation layout (the released ReasonSeg / RefCOCO sets): ``image``, ``text``, ``mask``;
- the training layout (`prepare_data.py`'s and the released training data): ``image``,
  ``problem``, ``solution``: boxes only, no mask;
- a folder, as `prepare_data.py --folder` reads it (``annotations.jsonl``, or ``images/``,
  ``masks/`` and ``texts/``).

A dataset directory (``save_to_disk``; a DatasetDict gives `split`) or a folder; a name that is
neither is a hub id for ``datasets.load_dataset``. Each sample gives the image, the query, the
ground-truth boxes in the image's pixels (from the mask when there is one) and the mask or None.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EVAL_COLUMNS = ("image", "text", "mask")
TRAINING_COLUMNS = ("image", "problem", "solution")
LAYOUTS = ("evaluation", "training", "folder")

Box = tuple[float, float, float, float]


@dataclass
class HeldOutSample:
    """One held-out query: the image (RGB array), the query, the true boxes (XYXY, the image's
    pixels; empty when nothing is there) and the mask (HxW bool) when the layout has one."""

    image: np.ndarray
    query: str
    boxes: list[Box]
    mask: np.ndarray | None
    ids: dict = field(default_factory=dict)  # image_id / ann_id / id, when the layout has them


def ground_truth_mask(value) -> np.ndarray:
    """A ``mask`` cell (PIL image, array or nested lists) as an HxW bool array, nonzero = object.

    Raises:
        ValueError: the value is not a 2-D mask (a 3-D one with channels is reduced by "any").
    """
    array = np.asarray(value)
    if array.ndim == 3:
        array = array.any(axis=2)
    if array.ndim != 2 or array.size == 0 or array.dtype.kind not in "biuf":
        raise ValueError(f"mask must be a non-empty 2-D array, got {array.dtype} {array.shape}")
    return array != 0


def mask_boxes(mask: np.ndarray) -> list[Box]:
    """The box of the mask's foreground (one, as the released evaluation counts one target per
    mask), or none for an empty mask."""
    from segzero_model.targets import EmptyMaskError, mask_to_target

    try:
        return [tuple(float(v) for v in mask_to_target(mask).bbox)]  # type: ignore[list-item]
    except EmptyMaskError:
        return []


class HeldOut(Sequence):
    """The samples of one held-out set, read lazily; `layout` names which of `LAYOUTS`."""

    def __init__(self, rows, layout: str, description: str):
        self.rows = rows  # a datasets.Dataset, or prepare_data.RawSample list for a folder
        self.layout = layout
        self.description = description
        self._id_rows = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if self.layout == "folder":
            return _folder_sample(self.rows[index])
        return _row_sample(self.rows[index], self.layout)

    @property
    def fingerprint(self) -> str | None:
        return getattr(self.rows, "_fingerprint", None)

    def ids(self, index: int) -> dict:
        """The sample's ids (``image_id`` / ``ann_id`` / ``id``) without reading its image, so a
        resumed evaluation can check that its stored rows are this set's."""
        if self.layout == "folder":
            return {"id": self.rows[index].id}
        if self._id_rows is None:
            columns = [c for c in ("id", "image_id", "ann_id") if c in self.rows.column_names]
            self._id_rows = self.rows.select_columns(columns)
        return dict(self._id_rows[index])


def _rgb(image) -> np.ndarray:
    from segzero_model.images import to_rgb8

    return to_rgb8(image)


def _row_sample(row: dict, layout: str) -> HeldOutSample:
    ids = {k: row[k] for k in ("id", "image_id", "ann_id") if k in row}
    image = _rgb(row["image"])
    if layout == "evaluation":
        mask = ground_truth_mask(row["mask"])
        return HeldOutSample(image, row["text"], mask_boxes(mask), mask, ids)
    from segzero_model.targets import parse_objects_solution

    boxes = [truth.bbox for truth in parse_objects_solution(row["solution"])]
    return HeldOutSample(image, row["problem"], boxes, None, ids)


def _folder_sample(sample) -> HeldOutSample:
    from segzero_model.images import load_image

    image = load_image(sample.image_path)
    mask = sample.load_mask()
    if mask.shape != image.shape[:2]:
        raise ValueError(
            f"mask of sample {sample.id!r} is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{sample.image_path} is {image.shape[1]}x{image.shape[0]}"
        )
    return HeldOutSample(image, sample.text.strip(), mask_boxes(mask), mask, {"id": sample.id})


def _layout_of(columns: Sequence[str]) -> str | None:
    if all(c in columns for c in EVAL_COLUMNS):
        return "evaluation"
    if all(c in columns for c in TRAINING_COLUMNS):
        return "training"
    return None


def open_heldout(name: str | os.PathLike, split: str = "test") -> HeldOut:
    """The held-out set at `name` (see the module docstring).

    Raises:
        FileNotFoundError / OSError: not found (or a hub id that cannot be reached).
        ValueError: no such split, a file instead of a directory, or columns of no layout.
    """
    from datasets import load_dataset

    from segzero_training.prepare_data import folder_samples, load_saved_split

    path = Path(name).expanduser()
    if path.is_dir() and not (path / "dataset_dict.json").exists() and _is_folder(path):
        return HeldOut(folder_samples(path), "folder", str(path))
    if path.is_dir():
        dataset = load_saved_split(path, split)
    elif path.exists():
        raise ValueError(f"{path} is a file; expected a dataset directory, a folder or a hub id")
    else:
        dataset = load_dataset(str(name), split=split)
    layout = _layout_of(dataset.column_names)
    if layout is None:
        raise ValueError(
            f"{name} is no held-out set: it has columns {dataset.column_names}; expected "
            f"{list(EVAL_COLUMNS)} (evaluation layout) or {list(TRAINING_COLUMNS)} (training "
            "layout), or a folder as prepare_data.py --folder reads"
        )
    return HeldOut(dataset, layout, f"{name} ({split})")


def _is_folder(path: Path) -> bool:
    return (path / "annotations.jsonl").is_file() or (path / "images").is_dir()
