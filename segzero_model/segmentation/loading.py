"""Open the segmenter a checkpoint (or a named family) calls for: the one place that knows
which class each segmenter family's library is behind (`families.SEGMENTER_FAMILIES`)."""

from __future__ import annotations

import os

from segzero_model.segmentation.families import family_for_segmenter


def load_segmenter(model: str | os.PathLike, *, family: str = "auto", device: str = "auto"):
    """The segmenter for `model` in `family` ("auto": from the checkpoint), on `device`."""
    chosen = family_for_segmenter(model, family)
    if chosen.library == "sam2":
        from segzero_model.segmentation.segmenter import Segmenter

        return Segmenter.from_pretrained(model, device=device)
    from segzero_model.segmentation.transformers_segmenter import TransformersSegmenter

    return TransformersSegmenter.from_pretrained(model, family=chosen, device=device)
