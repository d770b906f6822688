"""The transformers segmenter families (sam2_hf, edgetam, sam3_tracker) behind the interface of
the sam2 package's `Segmenter`: embed an image once, then box + points → one bool mask.

A checkpoint of these families holds the video model (`config.json` `model_type`
`sam2_video`, `edgetam_video`, ...), whose weights include the image model's. Both are loaded
from it and the image model's modules are the video model's, so the weights are in memory once:
the image model answers queries, the video model tracks (`TransformersTracker`).

Masks are chosen as the released code does: three masks per prompt (`multimask_output`), the
one with the highest predicted IoU, thresholded at 0 at the image's size.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Hashable, Sequence

import numpy as np

from segzero_model.device import inference_mode, resolve_device
from segzero_model.errors import ModelNotFoundError
from segzero_model.segmentation.families import SegmenterFamily, family_of_model_type
from segzero_model.segmentation.segmenter import as_box, as_points, check_image, image_digest

logger = logging.getLogger(__name__)


def _check_requirements(family: SegmenterFamily) -> None:
    import transformers

    absent = [c for c in (family.image_model, family.video_model) if not hasattr(transformers, c)]
    if absent:
        raise ModelNotFoundError(
            f"segmentation family {family.name!r} needs {', '.join(absent)}, which transformers "
            f"{transformers.__version__} does not have: upgrade transformers"
        )
    missing = [name for name in family.requires if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelNotFoundError(
            f"segmentation family {family.name!r} needs {', '.join(missing)} "
            f"(pip install {' '.join(missing)})"
        )


def _check_checkpoint_family(model: str | os.PathLike, family: SegmenterFamily) -> None:
    """A local checkpoint of another family is refused at load time, never read as this one."""
    import json
    from pathlib import Path

    config = Path(model).expanduser() / "config.json"
    if not config.is_file():
        return
    model_type = json.loads(config.read_text()).get("model_type", "")
    declared = family_of_model_type(model_type)
    if declared is not None and declared.name != family.name:
        raise ValueError(
            f"{model} is a {declared.name} checkpoint (model_type {model_type!r}), not "
            f"{family.name}: set the segmentation family to {declared.name} or auto"
        )


def share_modules(image_model, video_model) -> None:
    """Point the image model's modules at the video model's twins (same names, same parameter
    names and shapes: transformers generates both from one definition), so the shared weights
    are stored once; a module whose twin differs keeps its own weights."""
    import torch

    for name, module in list(image_model.named_children()):
        twin = getattr(video_model, name, None)
        if not isinstance(twin, torch.nn.Module):
            continue
        mine, theirs = module.state_dict(), twin.state_dict()
        if mine.keys() == theirs.keys() and all(mine[k].shape == theirs[k].shape for k in mine):
            setattr(image_model, name, twin)
    if hasattr(image_model, "no_memory_embedding") and hasattr(video_model, "no_memory_embedding"):
        image_model.no_memory_embedding = video_model.no_memory_embedding


class TransformersSegmenter:
    """A transformers SAM-family image predictor with a one-image embedding cache, and the
    factory of its streaming trackers. Build it with `from_pretrained`."""

    def __init__(self, image_model, video_model, processor, *, family, device: str, model_id: str):
        self.image_model = image_model
        self.video_model = video_model
        self.processor = processor
        self.family = family
        self.device = device
        self.model_id = model_id
        self._image_key: tuple | None = None
        self._embeddings = None
        self._original_size: tuple[int, int] | None = None

    @classmethod
    def from_pretrained(
        cls, model: str | os.PathLike, *, family: SegmenterFamily, device: str = "auto"
    ) -> TransformersSegmenter:
        """Load a local directory or a hub id (from the local cache when offline) as `family`."""
        import torch
        import transformers

        _check_requirements(family)
        _check_checkpoint_family(model, family)
        device = resolve_device(device)
        start = time.perf_counter()
        try:
            video = getattr(transformers, family.video_model).from_pretrained(
                str(model), dtype=torch.float32
            )
            image = getattr(transformers, family.image_model).from_pretrained(
                str(model), dtype=torch.float32
            )
            processor = transformers.AutoProcessor.from_pretrained(str(model))
        except OSError as exc:  # not found locally nor on the hub
            raise ModelNotFoundError(
                f"{family.name} segmentation model {str(model)!r} could not be loaded: {exc}"
            ) from exc
        share_modules(image, video)
        video, image = video.to(device).eval(), image.to(device).eval()
        logger.info(
            "loaded %s %s on %s in %.1f s", family.name, model, device, time.perf_counter() - start
        )
        return cls(image, video, processor, family=family, device=device, model_id=str(model))

    @property
    def model(self):
        """The video model (its weights are the image model's too)."""
        return self._open()

    def new_tracker(self):
        """A `TransformersTracker` on these weights."""
        from segzero_model.segmentation.transformers_tracker import TransformersTracker

        return TransformersTracker(self._open(), self.processor, device=self.device)

    def set_image(self, image: np.ndarray, key: Hashable | None = None) -> bool:
        """Embed `image` (HxWx3 uint8 RGB) unless it is the image embedded last (`key`, else
        its content); True when an embedding was computed."""
        self._open()
        check_image(image)
        cache_key = ("key", key) if key is not None else ("digest", image_digest(image))
        if cache_key == self._image_key:
            return False
        self._image_key = self._embeddings = None
        inputs = self.processor(images=image, return_tensors="pt")
        with inference_mode(self.device):
            self._embeddings = self.image_model.get_image_embeddings(
                inputs["pixel_values"].to(self.device)
            )
        self._original_size = tuple(int(v) for v in image.shape[:2])
        self._image_key = cache_key
        return True

    def predict(
        self,
        box: tuple[float, float, float, float] | None,
        points: Sequence[tuple[float, float]] | None,
    ) -> tuple[np.ndarray, float]:
        """Mask for an XYXY `box` and/or positive `points` in the image's pixels: the best of
        three by predicted IoU, as a bool (H, W) array at the image's size, and that score."""
        import torch

        self._open()
        if self._image_key is None:
            raise RuntimeError("predict needs an image: call set_image(image) first")
        box_array, point_array = as_box(box), as_points(points)
        if box_array is None and point_array is None:
            raise ValueError("predict needs a box, points or both; got neither")
        prompts = {"original_sizes": [list(self._original_size)], "return_tensors": "pt"}
        if box_array is not None:
            prompts["input_boxes"] = [[box_array.tolist()]]
        if point_array is not None:
            prompts["input_points"] = [[point_array.tolist()]]
            prompts["input_labels"] = [[[1] * len(point_array)]]
        inputs = self.processor(**prompts)
        tensors = {
            k: inputs[k].to(self.device)
            for k in ("input_boxes", "input_points", "input_labels")
            if k in inputs
        }
        with inference_mode(self.device):
            out = self.image_model(
                image_embeddings=self._embeddings, multimask_output=True, **tensors
            )
        masks = self.processor.post_process_masks(
            out.pred_masks.float().cpu(), inputs["original_sizes"], binarize=True
        )[0][0]
        scores = out.iou_scores.float().cpu()[0, 0]
        best = int(torch.argmax(scores))
        return masks[best].numpy().astype(bool), float(scores[best])

    def close(self) -> None:
        """Free the models and the cached embedding (and the CUDA cache on a GPU)."""
        self.image_model = self.video_model = None
        self._image_key = self._embeddings = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def __enter__(self) -> TransformersSegmenter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _open(self):
        if self.video_model is None:
            raise RuntimeError(f"segmenter for {self.model_id} is closed")
        return self.video_model
