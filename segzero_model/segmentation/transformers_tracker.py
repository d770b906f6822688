"""Follow segmented objects through a stream with a transformers video model (sam2_hf, edgetam,
sam3_tracker), with a bounded memory: the interface and rules of `StreamingTracker`.

transformers' own streaming mode (an inference session fed one frame at a time) keeps every
frame's pixels and outputs. Each track here is one such session, started on its own frame 0,
and after each step the session forgets what the model can no longer read: frames older than
`num_maskmem - 1` (mask memories) and `max_object_pointers_in_encoder - 1` (object pointers),
and every stored frame but the current one. A frame's vision features are computed once and
handed to every track's session. The masks are the library's own propagation's
(tests/model/segmentation/test_transformers_tracker.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from segzero_model.device import inference_mode
from segzero_model.segmentation.segmenter import as_box, as_points
from segzero_model.segmentation.streaming_tracker import (
    TrackedMask,
    check_frame,
    check_track_prompts,
)


@dataclass
class _Track:
    track_id: int
    session: object  # the library's video inference session, holding this track only
    frame_index: int = 0


@dataclass
class _Frame:
    pixels: object  # the processed frame, (3, S, S)
    features: dict  # what the session's vision-feature cache holds for a frame
    height: int
    width: int


class TransformersTracker:
    """Streaming tracking on a transformers SAM-family video model. Not thread-safe."""

    def __init__(self, model, processor, *, device: str):
        self.model = model
        self.processor = processor
        self.device = device
        config = model.config
        self.keep_frames = max(config.num_maskmem - 1, config.max_object_pointers_in_encoder - 1, 1)
        self._tracks: dict[int, _Track] = {}
        self._ids = itertools.count(1)

    @property
    def track_ids(self) -> list[int]:
        return list(self._tracks)

    def stored_frames(self, track_id: int) -> int:
        """How many frames' outputs the track holds (at most 1 + keep_frames)."""
        outputs = self._tracks[track_id].session.output_dict_per_obj[0]
        return len(outputs["cond_frame_outputs"]) + len(outputs["non_cond_frame_outputs"])

    def remove(self, track_id: int) -> bool:
        """End a track and free its memory; False when there was no such track."""
        return self._tracks.pop(track_id, None) is not None

    def clear(self) -> None:
        """End every track."""
        self._tracks.clear()

    def add(
        self,
        image: np.ndarray,
        *,
        box: Sequence[float] | None = None,
        points: Sequence[Sequence[float]] | None = None,
        mask: np.ndarray | None = None,
        track_id: int | None = None,
    ) -> TrackedMask:
        """Start a track on `image` from an XYXY `box` and/or positive `points` (pixels), or a
        bool `mask` of the image's size; its mask on this frame. `track_id` replaces that track."""
        import torch

        check_track_prompts(box, points, mask)
        frame = self._frame(image)
        track = _Track(track_id if track_id is not None else next(self._ids), self._session())
        prompts: dict = {}
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != (frame.height, frame.width):
                raise ValueError(
                    f"the mask is {mask.shape[1]}x{mask.shape[0]}, the frame "
                    f"{frame.width}x{frame.height}"
                )
            prompts["input_masks"] = torch.from_numpy(mask)
        else:
            box_array, point_array = as_box(box), as_points(points)
            if box_array is not None:
                prompts["input_boxes"] = [[box_array.tolist()]]
            if point_array is not None:
                prompts["input_points"] = [[point_array.tolist()]]
                prompts["input_labels"] = [[[1] * len(point_array)]]
            prompts["original_size"] = (frame.height, frame.width)
        self.processor.add_inputs_to_inference_session(
            track.session, frame_idx=0, obj_ids=track.track_id, **prompts
        )
        result = self._step(track, frame)
        self._tracks.pop(track.track_id, None)
        self._tracks[track.track_id] = track
        return result

    def track(self, image: np.ndarray) -> list[TrackedMask]:
        """Step every track on the next frame (one vision pass for all of them)."""
        if not self._tracks:
            return []
        frame = self._frame(image)
        results = []
        for track in self._tracks.values():
            track.frame_index += 1
            results.append(self._step(track, frame))
        return results

    # -- internals ----------------------------------------------------------------------------

    def _session(self):
        import torch

        return self.processor.init_video_session(inference_device=self.device, dtype=torch.float32)

    def _frame(self, image: np.ndarray) -> _Frame:
        check_frame(image)
        inputs = self.processor(images=image, return_tensors="pt")
        pixels = inputs["pixel_values"][0].to(self.device)
        with inference_mode(self.device):
            vision = self.model.get_image_features(pixels[None], return_dict=True)
        features = {
            "vision_feats": vision.fpn_hidden_states,
            "vision_pos_embeds": vision.fpn_position_encoding,
        }
        return _Frame(pixels, features, int(image.shape[0]), int(image.shape[1]))

    def _step(self, track: _Track, frame: _Frame) -> TrackedMask:
        import torch

        session, index = track.session, track.frame_index
        session.cache.cache_vision_features(index, frame.features)
        with inference_mode(self.device):
            out = self.model(inference_session=session, frame_idx=index, frame=frame.pixels)
        self._forget(session, index)
        logits = self.processor.post_process_masks(
            [out.pred_masks.float().cpu()], original_sizes=[[frame.height, frame.width]],
            binarize=False,
        )[0]  # fmt: skip
        mask = (logits[0, 0] > 0.0).numpy()
        score = float(torch.sigmoid(out.object_score_logits.float()).flatten()[0])
        return TrackedMask(track_id=track.track_id, mask=mask, score=score)

    def _forget(self, session, index: int) -> None:
        """Drop what no later step reads: older frames' pixels, the outputs past the window."""
        for stored in [i for i in session.processed_frames if i != index]:
            del session.processed_frames[stored]
        session.output_dict_per_obj[0]["non_cond_frame_outputs"].pop(index - self.keep_frames, None)
        session.frames_tracked_per_obj[0].pop(index - self.keep_frames, None)
