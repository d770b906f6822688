"""Segmenter families, in one registry like the reasoning model families: which library turns
the reasoner's box and points into a mask and follows it, and how a checkpoint names it.

- `sam2`: the `sam2` package (hydra config + .pt; the paper's segmenter, the default);
- `sam2_hf`: SAM2 / SAM2.1 checkpoints in transformers' format (`Sam2Model`, `Sam2VideoModel`);
- `edgetam`: EdgeTAM (RepViT backbone, a perceiver memory; `EdgeTamModel`), for CPUs and small
  GPUs;
- `sam3_tracker`: SAM3's promptable tracker (`Sam3TrackerModel`), boxes and points like SAM2.

"auto" reads the family from the checkpoint: `config.json`'s `model_type` for the transformers
families, a `.yaml` + `.pt` directory, a `.pt` file or one of the sam2 package's hub ids for
`sam2`. Every family's segmenter has the same interface (`set_image`, `predict`, `new_tracker`,
`close`) and its tracker the same as `StreamingTracker` (`add`, `track`, `remove`, `clear`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from segzero_model.errors import ModelNotFoundError


@dataclass(frozen=True)
class SegmenterFamily:
    """One segmenter family: its name, the library it runs on and, for the transformers
    families, the model classes and the `model_type`s their checkpoints declare."""

    name: str
    library: str  # "sam2" (the package) or "transformers"
    image_model: str = ""  # transformers class names
    video_model: str = ""
    model_types: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()  # extra importable modules (EdgeTAM's backbone is timm's)


SEGMENTER_FAMILIES: dict[str, SegmenterFamily] = {
    family.name: family
    for family in (
        SegmenterFamily("sam2", "sam2"),
        SegmenterFamily(
            "sam2_hf", "transformers", "Sam2Model", "Sam2VideoModel", ("sam2", "sam2_video")
        ),
        SegmenterFamily(
            "edgetam",
            "transformers",
            "EdgeTamModel",
            "EdgeTamVideoModel",
            ("edgetam", "edgetam_video"),
            requires=("timm",),
        ),
        SegmenterFamily(
            "sam3_tracker",
            "transformers",
            "Sam3TrackerModel",
            "Sam3TrackerVideoModel",
            # facebook/sam3 holds the whole SAM3 (detector + tracker); its tracker loads from it.
            ("sam3_tracker", "sam3_tracker_video", "sam3_video", "sam3"),
        ),
    )
}
SEGMENTER_FAMILY_NAMES = ("auto", *SEGMENTER_FAMILIES)


def segmenter_family(name: str) -> SegmenterFamily:
    """The family called `name` (ValueError naming the known ones otherwise)."""
    if name not in SEGMENTER_FAMILIES:
        known = ", ".join(SEGMENTER_FAMILY_NAMES)
        raise ValueError(f"unknown segmentation family {name!r}; choose one of {known}")
    return SEGMENTER_FAMILIES[name]


def family_of_model_type(model_type: str) -> SegmenterFamily | None:
    """The transformers family whose checkpoints declare `model_type`, or None."""
    for family in SEGMENTER_FAMILIES.values():
        if model_type in family.model_types:
            return family
    return None


def family_for_segmenter(model: str | os.PathLike, family: str = "auto") -> SegmenterFamily:
    """The family that loads `model`: `family` when named, else read from the checkpoint (a
    directory's config.json `model_type`; anything else — a .yaml + .pt directory, a .pt file,
    a sam2 package hub id — is the sam2 package's)."""
    if family != "auto":
        return segmenter_family(family)
    config = Path(model).expanduser() / "config.json"
    if config.is_file():
        try:
            model_type = json.loads(config.read_text()).get("model_type", "")
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"cannot read {config}: {exc}") from exc
        found = family_of_model_type(model_type)
        if found is None:
            known = sorted(t for f in SEGMENTER_FAMILIES.values() for t in f.model_types)
            raise ModelNotFoundError(
                f"{config} declares model_type {model_type!r}, which no segmentation family "
                f"reads ({', '.join(known)}); name one with the segmentation family option"
            )
        return found
    return SEGMENTER_FAMILIES["sam2"]
