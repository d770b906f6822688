"""Follow segmented objects through a stream of frames with SAM2's video memory.

sam2's `SAM2VideoPredictor` wants every frame of a video up front and keeps every frame's
outputs. A camera is a stream: `StreamingTracker` takes frames one at a time, runs the same
per-frame step on the package's model (`SAM2Base.track_step`: memory attention, mask decoder,
memory encoder), and keeps only what that step can still read: each track's conditioning
frame plus its last `keep_frames` frames. The model reads at most the last
`num_maskmem - 1` frames' mask memories and the last `max_obj_ptrs_in_encoder - 1` frames' object
pointers, so pruning older frames changes nothing and memory stays flat however long it runs.

Each track is prompted on one frame (a box and points, or a mask) and then stepped on every
frame given to `track`. Frames are resized and normalised as the video predictor loads them, and
its settings are used (`fill_hole_area`, masks from prompts binarised for the memory), so a
track reproduces the video predictor on the same frames and prompts
(tests/model/segmentation/test_streaming_tracker.py).
No ROS here: the node's tracking layer drives it.
"""

from __future__ import annotations

import itertools
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from segzero_model.device import inference_mode

# The video predictor's ImageNet normalisation (sam2.utils.misc.load_video_frames).
_IMAGE_MEAN = (0.485, 0.456, 0.406)
_IMAGE_STD = (0.229, 0.224, 0.225)
# The object pointers' temporal encoding is normalised by min(video length, max pointers); a
# stream has no length, so it counts as longer than any pointer window.
_STREAM_LENGTH = sys.maxsize


def _has_sam2_extension() -> bool:
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def check_track_prompts(box, points, mask) -> None:
    """What every tracker's `add` accepts: a mask, or a box and/or points, never both."""
    if mask is not None and (box is not None or points is not None):
        raise ValueError("a track starts from a mask or from a box/points, not both")
    if mask is None and box is None and not points:
        raise ValueError("a track needs a box, points or a mask to start from")


def check_frame(image) -> None:
    """What every tracker takes as a frame: an HxWx3 uint8 RGB array."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ValueError(f"a frame must be an HxWx3 RGB array, got {shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"a frame must be uint8 RGB, got {image.dtype}")


@dataclass(frozen=True)
class TrackedMask:
    """One track on one frame: the mask at the frame's size and what it says."""

    track_id: int
    mask: np.ndarray  # bool (H, W)
    score: float  # SAM2's object presence probability (sigmoid of its object score)

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def box(self) -> tuple[int, int, int, int] | None:
        """XYXY box around the mask (inclusive-exclusive pixels), None when it is empty."""
        rows, cols = np.any(self.mask, axis=1), np.any(self.mask, axis=0)
        if not rows.any():
            return None
        y0, y1 = np.flatnonzero(rows)[[0, -1]]
        x0, x1 = np.flatnonzero(cols)[[0, -1]]
        return int(x0), int(y0), int(x1) + 1, int(y1) + 1


@dataclass
class _Track:
    """One object's SAM2 memory: its conditioning frame and its recent frames' outputs,
    keyed by the track's own frame count (0 is the prompted frame)."""

    track_id: int
    frame_index: int = 0
    outputs: dict = field(
        default_factory=lambda: {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
    )

    @property
    def stored_frames(self) -> int:
        return len(self.outputs["cond_frame_outputs"]) + len(self.outputs["non_cond_frame_outputs"])


@dataclass
class _Features:
    """A frame's backbone features, computed once and used by every track."""

    vision_feats: list
    vision_pos_embeds: list
    feat_sizes: list
    height: int
    width: int


class StreamingTracker:
    """SAM2 video tracking over a stream of RGB frames, with a bounded memory per track.

    Build it on a loaded SAM2 model (`StreamingTracker(segmenter.model, device=...)`: the
    weights are shared with the image predictor, which never runs the memory modules).
    `add` starts a track on a frame from prompts or a mask; `track` steps every track on the
    next frame. Not thread-safe: one caller at a time (the node runs it on its worker).
    """

    def __init__(self, model, *, device: str, fill_hole_area: int = 8):
        self.model = model
        self.device = device
        self.fill_hole_area = fill_hole_area
        # As sam2's build_sam2_video_predictor sets it: the prompted frame's mask goes into the
        # memory binarised. The image predictor does not read this flag.
        model.binarize_mask_from_pts_for_mem_enc = True
        stride = max(1, int(model.memory_temporal_stride_for_eval))
        self.keep_frames = max(
            (model.num_maskmem - 1) * stride + 1,
            model.max_obj_ptrs_in_encoder - 1 if model.use_obj_ptrs_in_encoder else 0,
        )
        self._can_fill_holes = device.startswith("cuda") and _has_sam2_extension()
        self._tracks: dict[int, _Track] = {}
        self._ids = itertools.count(1)
        self._maskmem_pos_enc = None  # the same for every frame and track: one copy

    # -- tracks -------------------------------------------------------------------------------

    @property
    def track_ids(self) -> list[int]:
        return list(self._tracks)

    def stored_frames(self, track_id: int) -> int:
        """How many frames' outputs the track holds (at most 1 + keep_frames)."""
        return self._tracks[track_id].stored_frames

    def remove(self, track_id: int) -> bool:
        """End a track and free its memory; False when there was no such track."""
        return self._tracks.pop(track_id, None) is not None

    def clear(self) -> None:
        """End every track."""
        self._tracks.clear()

    # -- frames -------------------------------------------------------------------------------

    def add(
        self,
        image: np.ndarray,
        *,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        mask: np.ndarray | None = None,
        track_id: int | None = None,
    ) -> TrackedMask:
        """Start a track on `image` (HxWx3 uint8 RGB) from an XYXY `box` and/or positive
        `points` in the image's pixels, or from a bool `mask` of the image's size, as the video
        predictor's add_new_points_or_box / add_new_mask would on the first frame. Returns the
        track's mask on this frame. `track_id` replaces that track (new id when None)."""
        import torch

        check_track_prompts(box, points, mask)
        features = self._features(image)
        with inference_mode(self.device):
            point_inputs = mask_inputs = None
            if mask is None:
                point_inputs = self._point_inputs(box, points, features)
            else:
                mask_inputs = self._mask_inputs(mask, features)
            track = _Track(track_id if track_id is not None else next(self._ids))
            out = self.model.track_step(
                frame_idx=0,
                is_init_cond_frame=True,
                current_vision_feats=features.vision_feats,
                current_vision_pos_embeds=features.vision_pos_embeds,
                feat_sizes=features.feat_sizes,
                point_inputs=point_inputs,
                mask_inputs=mask_inputs,
                output_dict=track.outputs,
                num_frames=_STREAM_LENGTH,
                track_in_reverse=False,
                run_mem_encoder=False,  # encoded below, as the video predictor's preflight does
            )
            pred_masks = self._fill_holes(out["pred_masks"])
            high_res = torch.nn.functional.interpolate(
                pred_masks,
                size=(self.model.image_size, self.model.image_size),
                mode="bilinear",
                align_corners=False,
            )
            maskmem_features, maskmem_pos_enc = self.model._encode_new_memory(
                current_vision_feats=features.vision_feats,
                feat_sizes=features.feat_sizes,
                pred_masks_high_res=high_res,
                object_score_logits=out["object_score_logits"],
                is_mask_from_pts=True,
            )
            out = dict(
                out, pred_masks=pred_masks, maskmem_features=maskmem_features,
                maskmem_pos_enc=maskmem_pos_enc,
            )  # fmt: skip
            track.outputs["cond_frame_outputs"][0] = self._compact(out)
            self._tracks.pop(track.track_id, None)
            self._tracks[track.track_id] = track
            return self._result(track.track_id, pred_masks, out, features)

    def track(self, image: np.ndarray) -> list[TrackedMask]:
        """Step every track on the next frame (HxWx3 uint8 RGB, any size): one backbone pass,
        then each track's memory attention, decoder and memory encoder. Frames a caller skips
        are simply not part of the tracks' history."""
        if not self._tracks:
            return []
        features = self._features(image)
        results = []
        with inference_mode(self.device):
            for track in self._tracks.values():
                track.frame_index += 1
                out = self.model.track_step(
                    frame_idx=track.frame_index,
                    is_init_cond_frame=False,
                    current_vision_feats=features.vision_feats,
                    current_vision_pos_embeds=features.vision_pos_embeds,
                    feat_sizes=features.feat_sizes,
                    point_inputs=None,
                    mask_inputs=None,
                    output_dict=track.outputs,
                    num_frames=_STREAM_LENGTH,
                    track_in_reverse=False,
                    run_mem_encoder=True,
                )
                pred_masks = self._fill_holes(out["pred_masks"])
                recent = track.outputs["non_cond_frame_outputs"]
                recent[track.frame_index] = self._compact(dict(out, pred_masks=pred_masks))
                recent.pop(track.frame_index - self.keep_frames, None)  # no longer read
                results.append(self._result(track.track_id, pred_masks, out, features))
        return results

    # -- internals ----------------------------------------------------------------------------

    def _features(self, image: np.ndarray) -> _Features:
        """The frame as the video predictor loads one (PIL resize to the model's square input,
        /255, ImageNet normalisation, float32), through the backbone."""
        import torch
        from PIL import Image

        check_frame(image)
        height, width = image.shape[:2]
        size = self.model.image_size
        resized = np.array(Image.fromarray(image).resize((size, size))) / 255.0
        pixels = torch.from_numpy(resized).permute(2, 0, 1).to(torch.float32)
        pixels -= torch.tensor(_IMAGE_MEAN, dtype=torch.float32)[:, None, None]
        pixels /= torch.tensor(_IMAGE_STD, dtype=torch.float32)[:, None, None]
        with inference_mode(self.device):
            backbone = self.model.forward_image(pixels.to(self.device).float().unsqueeze(0))
            _, vision_feats, vision_pos_embeds, feat_sizes = self.model._prepare_backbone_features(
                backbone
            )
        return _Features(vision_feats, vision_pos_embeds, feat_sizes, height, width)

    def _point_inputs(self, box, points, features: _Features) -> dict:
        """Box corners (labels 2, 3) then positive points (label 1), scaled from the frame's
        pixels to the model's input, as add_new_points_or_box builds them."""
        import torch

        coords, labels = [], []
        if box is not None:
            x0, y0, x1, y1 = (float(v) for v in box)
            coords += [(x0, y0), (x1, y1)]
            labels += [2, 3]
        for x, y in points or ():
            coords.append((float(x), float(y)))
            labels.append(1)
        scale = torch.tensor([features.width, features.height], dtype=torch.float32)
        coords_t = torch.tensor(coords, dtype=torch.float32)[None] / scale * self.model.image_size
        return {
            "point_coords": coords_t.to(self.device),
            "point_labels": torch.tensor([labels], dtype=torch.int32, device=self.device),
        }

    def _mask_inputs(self, mask: np.ndarray, features: _Features):
        """The mask resized to the model's input as add_new_mask does (antialiased, >= 0.5)."""
        import torch

        mask = np.asarray(mask)
        if mask.shape != (features.height, features.width):
            raise ValueError(
                f"the mask is {mask.shape[1]}x{mask.shape[0]}, the frame "
                f"{features.width}x{features.height}"
            )
        tensor = torch.from_numpy(mask.astype(bool))[None, None].float().to(self.device)
        size = self.model.image_size
        if tensor.shape[-2:] != (size, size):
            tensor = torch.nn.functional.interpolate(
                tensor, size=(size, size), mode="bilinear", align_corners=False, antialias=True
            )
            tensor = (tensor >= 0.5).float()
        return tensor

    def _fill_holes(self, pred_masks):
        """sam2's hole filling, as the video predictor applies it. It runs a CUDA kernel of
        sam2's compiled extension; without one (a CPU, a pip install that built none) the
        predictor warns and skips it on every frame, and so this skips it, silently."""
        if self.fill_hole_area <= 0 or not self._can_fill_holes:
            return pred_masks
        from sam2.utils.misc import fill_holes_in_mask_scores

        return fill_holes_in_mask_scores(pred_masks, self.fill_hole_area)

    def _compact(self, out: dict) -> dict:
        """What later frames read of a frame's output, as the video predictor stores it:
        memory features in bfloat16, one shared copy of the memory's position encoding."""
        import torch

        maskmem_features = out["maskmem_features"]
        if maskmem_features is not None:
            maskmem_features = maskmem_features.to(torch.bfloat16)
        if out["maskmem_pos_enc"] is not None and self._maskmem_pos_enc is None:
            self._maskmem_pos_enc = [x[0:1].clone() for x in out["maskmem_pos_enc"]]
        return {
            "maskmem_features": maskmem_features,
            "maskmem_pos_enc": self._maskmem_pos_enc,
            "pred_masks": out["pred_masks"],
            "obj_ptr": out["obj_ptr"],
            "object_score_logits": out["object_score_logits"],
        }

    def _result(self, track_id: int, pred_masks, out: dict, features: _Features) -> TrackedMask:
        """The low-resolution mask logits resized to the frame (bilinear) and thresholded at 0,
        as the video predictor's outputs are read."""
        import torch

        logits = torch.nn.functional.interpolate(
            pred_masks.float(),
            size=(features.height, features.width),
            mode="bilinear",
            align_corners=False,
        )
        mask = (logits[0, 0] > 0.0).cpu().numpy()
        score = float(torch.sigmoid(out["object_score_logits"].float()).flatten()[0])
        return TrackedMask(track_id=track_id, mask=mask, score=score)
