"""segzero_model.segmentation.streaming_tracker: the streaming tracker against the sam2 package's
own video predictor.

Both run the tiny SAM2 checkpoint (random weights: its masks are noise, but deterministic noise
that any difference in preprocessing, prompts, memory or pruning changes) on the same JPEG clip
with the same prompts on frame 0.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from segzero_model.segmentation.segmenter import Segmenter
from segzero_model.segmentation.streaming_tracker import StreamingTracker
from segzero_model.tiny.sam2 import CHECKPOINT_NAME, CONFIG_NAME

FRAMES = 24  # past the 16 frames the model reads back (1 + max_obj_ptrs_in_encoder - 1)
SIZE = (160, 120)  # width, height
BOX = (20, 40, 60, 80)
POINTS = [(40, 60), (30, 50)]


def moving_square(index: int, rng_seed: int = 0) -> np.ndarray:
    """A red square moving right over a fixed noise background."""
    width, height = SIZE
    frame = np.random.default_rng(rng_seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    x = 20 + 3 * index
    frame[40:80, x : x + 40] = (255, 40, 40)
    return frame


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The clip as a JPEG folder (what SAM2VideoPredictor reads) and its decoded frames."""
    folder = tmp_path_factory.mktemp("clip")
    for index in range(FRAMES):
        Image.fromarray(moving_square(index)).save(folder / f"{index:05d}.jpg", quality=95)
    frames = [np.array(Image.open(folder / f"{i:05d}.jpg").convert("RGB")) for i in range(FRAMES)]
    return folder, frames


def package_video_predictor(sam2_dir):
    """sam2's SAM2VideoPredictor on the tiny checkpoint, with the overrides the package's
    build_sam2_video_predictor applies (that function only reads configs packaged in sam2)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(sam2_dir / CONFIG_NAME)
    cfg.model._target_ = "sam2.sam2_video_predictor.SAM2VideoPredictor"
    OmegaConf.update(
        cfg,
        "model.sam_mask_decoder_extra_args",
        {
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        },
        merge=True,
    )
    cfg.model.binarize_mask_from_pts_for_mem_enc = True
    cfg.model.fill_hole_area = 8
    model = instantiate(cfg.model, _recursive_=True)
    state = torch.load(sam2_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"], strict=True)
    return model.to("cpu").eval()


@pytest.fixture(scope="module")
def package_run(tiny_sam2_dir, clip):
    """The package's masks (logits > 0) and object scores on every frame of the clip."""
    import torch

    folder, _ = clip
    predictor = package_video_predictor(tiny_sam2_dir)
    state = predictor.init_state(str(folder))
    predictor.add_new_points_or_box(
        state, frame_idx=0, obj_id=1, box=BOX, points=POINTS, labels=[1] * len(POINTS)
    )
    masks = {}
    for frame_index, _, logits in predictor.propagate_in_video(state):
        masks[frame_index] = (logits[0, 0] > 0.0).numpy()
    outputs = state["output_dict_per_obj"][0]
    scores = {}
    for key in ("cond_frame_outputs", "non_cond_frame_outputs"):
        for frame_index, out in outputs[key].items():
            scores[frame_index] = float(torch.sigmoid(out["object_score_logits"]).flatten()[0])
    return masks, scores


@pytest.fixture
def tracker(tiny_sam2_dir):
    return StreamingTracker(
        Segmenter.from_pretrained(tiny_sam2_dir, device="cpu").model, device="cpu"
    )


def test_same_masks_as_the_packages_video_predictor_frame_for_frame(tracker, clip, package_run):
    _, frames = clip
    expected_masks, expected_scores = package_run
    assert sorted(expected_masks) == list(range(FRAMES))
    first = tracker.add(frames[0], box=BOX, points=POINTS)
    ours = [first] + [tracker.track(frame)[0] for frame in frames[1:]]
    areas = set()
    for index, tracked in enumerate(ours):
        assert tracked.track_id == first.track_id
        assert tracked.mask.shape == (SIZE[1], SIZE[0])
        assert np.array_equal(tracked.mask, expected_masks[index]), f"frame {index}"
        assert tracked.score == pytest.approx(expected_scores[index], abs=1e-6), f"frame {index}"
        areas.add(tracked.area)
    assert len(areas) > FRAMES // 2  # the masks differ from frame to frame: a real comparison


def test_memory_stays_bounded_past_the_window_and_tracks_keep_going(tracker, clip):
    _, frames = clip
    first = tracker.add(frames[0], box=BOX, points=POINTS)
    window = 1 + tracker.keep_frames
    assert window == 16  # the cond frame + max_obj_ptrs_in_encoder - 1 of the tiny config
    stored = []
    for step in range(3 * window):
        (tracked,) = tracker.track(frames[1 + step % (FRAMES - 1)])
        stored.append(tracker.stored_frames(first.track_id))
        assert tracked.mask.shape == (SIZE[1], SIZE[0])
    assert stored[: window - 1] == list(range(2, window + 1))
    assert set(stored[window - 1 :]) == {window}  # flat once the window is full


def test_several_tracks_each_with_its_id_replace_and_remove(tracker, clip):
    _, frames = clip
    a = tracker.add(frames[0], box=BOX)
    b = tracker.add(frames[0], mask=np.pad(np.ones((20, 20), bool), ((10, 90), (100, 40))))
    assert a.track_id != b.track_id and tracker.track_ids == [a.track_id, b.track_id]
    results = tracker.track(frames[1])
    assert [r.track_id for r in results] == [a.track_id, b.track_id]
    replaced = tracker.add(frames[1], points=[(40, 60)], track_id=a.track_id)
    assert replaced.track_id == a.track_id and tracker.stored_frames(a.track_id) == 1
    assert tracker.remove(b.track_id) and not tracker.remove(b.track_id)
    assert [r.track_id for r in tracker.track(frames[2])] == [a.track_id]
    tracker.clear()
    assert tracker.track_ids == [] and tracker.track(frames[3]) == []


def test_a_track_from_a_mask_starts_on_that_mask(tracker, clip):
    _, frames = clip
    mask = np.zeros((SIZE[1], SIZE[0]), bool)
    mask[40:80, 20:60] = True
    start = tracker.add(frames[0], mask=mask)
    # SAM2 takes a mask prompt as the frame's output (use_mask_input_as_output_without_sam),
    # through its low-resolution mask (a quarter of the model's input side).
    iou = (start.mask & mask).sum() / (start.mask | mask).sum()
    assert iou > 0.9, iou


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "needs a box, points or a mask"),
        ({"box": BOX, "mask": np.ones((120, 160), bool)}, "not both"),
        ({"mask": np.ones((10, 10), bool)}, "the mask is 10x10, the frame 160x120"),
    ],
)
def test_bad_prompts_are_clear_errors(tracker, clip, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tracker.add(clip[1][0], **kwargs)
    assert tracker.track_ids == []


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((120, 160), np.uint8), r"HxWx3 RGB array, got \(120, 160\)"),
        (np.zeros((120, 160, 3), np.float32), "uint8 RGB, got float32"),
    ],
)
def test_bad_frames_are_clear_errors_and_the_track_survives(tracker, clip, frame, message):
    tracker.add(clip[1][0], box=BOX)
    with pytest.raises(ValueError, match=message):
        tracker.track(frame)
    assert len(tracker.track(clip[1][1])) == 1
