"""segzero_model.segmentation.families and the transformers segmenter families (sam2_hf,
edgetam, sam3_tracker): picked from the checkpoint, loaded through `from_pretrained` from tiny
random checkpoints in the released format, masks as the library's own model gives them, and
streaming tracks equal to the library's own streaming propagation with a bounded memory."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from segzero_model.errors import ModelNotFoundError
from segzero_model.segmentation.families import (
    SEGMENTER_FAMILIES,
    family_for_segmenter,
    segmenter_family,
)
from segzero_model.segmentation.loading import load_segmenter
from segzero_model.segmentation.segmenter import Segmenter
from segzero_model.segmentation.transformers_segmenter import TransformersSegmenter
from segzero_model.tiny import ensure_tiny_segmenter
from segzero_model.tiny.segmenters import TINY_SEGMENTER_FAMILIES

HEIGHT, WIDTH = 120, 160
BOX = (20.0, 20.0, 90.0, 80.0)
POINTS = [(40.0, 40.0), (60.0, 50.0)]
FRAMES = 6  # past the tiny models' memory window (keep_frames 3), so pruning is exercised


def frames(count: int = FRAMES) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(count)]


@pytest.fixture(scope="module", params=TINY_SEGMENTER_FAMILIES)
def family_dir(request, tiny_cache):
    return request.param, ensure_tiny_segmenter(request.param, tiny_cache)


@pytest.fixture(scope="module")
def segmenter(family_dir):
    family, directory = family_dir
    with load_segmenter(directory, device="cpu") as loaded:
        yield loaded


def test_the_family_is_read_from_the_checkpoint(family_dir, tiny_sam2_dir):
    family, directory = family_dir
    assert json.loads((directory / "config.json").read_text())["model_type"].endswith("_video")
    assert family_for_segmenter(directory).name == family
    assert family_for_segmenter(tiny_sam2_dir).name == "sam2"  # a .yaml + .pt directory
    assert family_for_segmenter("facebook/sam2.1-hiera-large").name == "sam2"
    assert family_for_segmenter(tiny_sam2_dir, "edgetam").name == "edgetam"  # named wins


def test_the_sam2_family_is_the_sam2_package(tiny_sam2_dir):
    segmenter = load_segmenter(tiny_sam2_dir, device="cpu")
    assert isinstance(segmenter, Segmenter)
    assert type(segmenter.new_tracker()).__name__ == "StreamingTracker"


def test_unknown_families_and_model_types_are_refused(tmp_path, tiny_sam2_dir):
    with pytest.raises(ValueError, match="unknown segmentation family 'sam9'.*edgetam"):
        segmenter_family("sam9")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelNotFoundError, match="'bert'.*segmentation family"):
        family_for_segmenter(tmp_path)


def test_a_checkpoint_of_another_family_is_refused_at_load_time(family_dir):
    family, directory = family_dir
    other = next(f for f in TINY_SEGMENTER_FAMILIES if f != family)
    with pytest.raises(ValueError, match=f"is a {family} checkpoint.*not {other}"):
        load_segmenter(directory, family=other, device="cpu")


def test_a_missing_library_is_named_at_load_time(monkeypatch, tiny_cache):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "timm" else real(name, *a)
    )
    with pytest.raises(ModelNotFoundError, match="'edgetam' needs timm.*pip install timm"):
        load_segmenter(ensure_tiny_segmenter("edgetam", tiny_cache), device="cpu")


def test_the_image_and_video_models_hold_the_weights_once(segmenter):
    assert isinstance(segmenter, TransformersSegmenter)
    video = {p.data_ptr() for p in segmenter.video_model.parameters()}
    image = {p.data_ptr() for p in segmenter.image_model.parameters()}
    assert image <= video


def test_only_modules_of_the_same_parameters_are_shared():
    """A module whose twin has other parameter names or shapes keeps its own weights."""
    import torch

    from segzero_model.segmentation.transformers_segmenter import share_modules

    image, video = torch.nn.Module(), torch.nn.Module()
    image.same, video.same = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3)
    image.shape, video.shape = torch.nn.Linear(2, 3), torch.nn.Linear(2, 4)
    image.names, video.names = torch.nn.Linear(2, 3), torch.nn.Linear(2, 3, bias=False)
    image.names.weight = torch.nn.Parameter(torch.zeros(3, 2))
    image.alone = torch.nn.Linear(2, 2)
    share_modules(image, video)
    assert image.same is video.same
    assert image.shape is not video.shape and image.names is not video.names
    assert isinstance(image.alone, torch.nn.Linear)


def test_masks_are_the_librarys_best_of_three_at_the_images_size(segmenter):
    """The library's image model asked directly (three masks, the best predicted IoU) gives the
    same mask as the segmenter; a box, points or both are prompts."""
    import torch

    image = frames(1)[0]
    assert segmenter.set_image(image) is True
    assert segmenter.set_image(image) is False  # the embedding is reused
    mask, score = segmenter.predict(BOX, POINTS)
    assert mask.shape == (HEIGHT, WIDTH) and mask.dtype == bool

    import transformers

    # A fresh image model (its own weights, not the video model's): sharing changes nothing.
    processor = segmenter.processor
    model = (
        getattr(transformers, segmenter.family.image_model)
        .from_pretrained(segmenter.model_id)
        .eval()
    )
    inputs = processor(
        images=image, input_boxes=[[list(BOX)]], input_points=[[[list(p) for p in POINTS]]],
        input_labels=[[[1, 1]]], return_tensors="pt",
    )  # fmt: skip
    with torch.inference_mode():
        out = model(**{k: v for k, v in inputs.items() if k != "original_sizes"})
    masks = processor.post_process_masks(out.pred_masks, inputs["original_sizes"])[0][0]
    best = int(out.iou_scores[0, 0].argmax())
    assert out.pred_masks.shape[2] == 3  # multimask
    assert np.array_equal(mask, masks[best].numpy())
    assert score == pytest.approx(float(out.iou_scores[0, 0, best]))

    for box, points in ((BOX, None), (None, POINTS)):
        alone, _ = segmenter.predict(box, points)
        assert alone.shape == (HEIGHT, WIDTH)
    with pytest.raises(ValueError, match="neither"):
        segmenter.predict(None, None)


def library_streaming_masks(segmenter, clip) -> list[np.ndarray]:
    """transformers' own streaming propagation (one session, every frame kept), as its docs
    show it: the reference the bounded tracker must equal."""
    import torch

    processor, model = segmenter.processor, segmenter.video_model
    session = processor.init_video_session(inference_device="cpu", dtype=torch.float32)
    masks = []
    with torch.inference_mode():
        for index, frame in enumerate(clip):
            inputs = processor(images=frame, return_tensors="pt")
            if index == 0:
                processor.add_inputs_to_inference_session(
                    session, frame_idx=0, obj_ids=1, input_boxes=[[list(BOX)]],
                    input_points=[[[list(p) for p in POINTS]]], input_labels=[[[1, 1]]],
                    original_size=inputs["original_sizes"][0],
                )  # fmt: skip
            out = model(inference_session=session, frame=inputs["pixel_values"][0])
            logits = processor.post_process_masks(
                [out.pred_masks], original_sizes=[[HEIGHT, WIDTH]], binarize=False
            )[0]
            masks.append((logits[0, 0] > 0).numpy())
    return masks


def test_the_tracker_gives_the_librarys_streaming_masks_with_a_bounded_memory(segmenter):
    clip = frames()
    tracker = segmenter.new_tracker()
    assert tracker.keep_frames == 3  # the tiny models read 2 mask memories, 3 pointers back
    ours = [tracker.add(clip[0], box=BOX, points=POINTS)]
    for frame in clip[1:]:
        (step,) = tracker.track(frame)
        ours.append(step)
        assert tracker.stored_frames(step.track_id) <= 1 + tracker.keep_frames
    assert tracker.stored_frames(ours[0].track_id) == 1 + tracker.keep_frames
    reference = library_streaming_masks(segmenter, clip)
    for index, (step, expected) in enumerate(zip(ours, reference, strict=True)):
        assert np.array_equal(step.mask, expected), f"frame {index}"
        assert 0.0 <= step.score <= 1.0
    assert tracker.remove(ours[0].track_id) and tracker.track(clip[0]) == []


def test_two_tracks_share_a_frame_and_start_from_a_mask(segmenter):
    clip = frames(3)
    tracker = segmenter.new_tracker()
    first = tracker.add(clip[0], box=BOX)
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[60:100, 90:140] = True
    second = tracker.add(clip[1], mask=mask)
    assert first.track_id != second.track_id and second.mask.shape == (HEIGHT, WIDTH)
    steps = tracker.track(clip[2])
    assert [s.track_id for s in steps] == [first.track_id, second.track_id]
    with pytest.raises(ValueError, match="not both"):
        tracker.add(clip[0], box=BOX, mask=mask)
    with pytest.raises(ValueError, match="160x120"):
        tracker.add(clip[0], mask=mask[:10])


def test_every_registered_family_has_a_tiny_checkpoint_or_is_the_package():
    assert set(SEGMENTER_FAMILIES) == {"sam2", *TINY_SEGMENTER_FAMILIES}


def test_a_copied_checkpoint_loads_from_its_new_place(family_dir, tmp_path):
    family, directory = family_dir
    copy = shutil.copytree(directory, tmp_path / "copy")
    assert load_segmenter(copy, family=family, device="cpu").family.name == family
