"""segzero_model.segmentation.tracks: queries' tracks (replace, cap, stop) and loss, on the real
tracker with the tiny SAM2 checkpoint."""

from __future__ import annotations

import numpy as np
import pytest

from segzero_model.segmentation.segmenter import Segmenter
from segzero_model.segmentation.streaming_tracker import StreamingTracker
from segzero_model.segmentation.tracks import (
    LOST,
    TRACKING,
    TrackSession,
    TrackSettings,
    union_mask,
)

BOX = (20, 40, 60, 80)


def frame(index: int = 0) -> np.ndarray:
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    image[40:80, 20 + 3 * index : 60 + 3 * index] = (255, 40, 40)
    return image


@pytest.fixture(scope="module")
def sam2_model(tiny_sam2_dir):
    return Segmenter.from_pretrained(tiny_sam2_dir, device="cpu").model


def session(sam2_model, **settings) -> TrackSession:
    return TrackSession(StreamingTracker(sam2_model, device="cpu"), TrackSettings(**settings))


def test_a_new_answer_to_the_same_query_replaces_its_track(sam2_model):
    tracks = session(sam2_model)
    first, ended = tracks.start(frame(0), "the cup", box=BOX)
    assert ended == [] and first.state == TRACKING and first.query == "the cup"
    other, _ = tracks.start(frame(0), "the bowl", box=(100, 10, 140, 50))
    again, ended = tracks.start(frame(1), "the cup", box=BOX)
    assert again.track_id == first.track_id and ended == [first.track_id]
    assert tracks.queries == {other.track_id: "the bowl", first.track_id: "the cup"}
    assert tracks.tracker.stored_frames(first.track_id) == 1  # its memory started again


def test_past_max_tracks_the_oldest_ends(sam2_model):
    tracks = session(sam2_model, max_tracks=2)
    a, _ = tracks.start(frame(), "a", box=BOX)
    b, _ = tracks.start(frame(), "b", box=BOX)
    c, ended = tracks.start(frame(), "c", box=BOX)
    assert ended == [a.track_id] and list(tracks.queries) == [b.track_id, c.track_id]
    assert tracks.tracker.track_ids == [b.track_id, c.track_id]


def test_stop_one_or_all(sam2_model):
    tracks = session(sam2_model)
    a, _ = tracks.start(frame(), "a", box=BOX)
    b, _ = tracks.start(frame(), "b", box=BOX)
    assert tracks.stop(a.track_id) == [a.track_id] and tracks.stop(a.track_id) == []
    assert [s.track_id for s in tracks.step(frame(1))] == [b.track_id]
    assert tracks.stop() == [b.track_id] and tracks.step(frame(2)) == []


def test_missed_frames_in_a_row_make_one_lost_status_then_the_track_ends(sam2_model):
    # A presence threshold no score reaches: every frame is missed.
    tracks = session(sam2_model, lost_score=1.0, lost_frames=3)
    start, _ = tracks.start(frame(), "the cup", box=BOX)
    states = [tracks.step(frame(i)) for i in range(1, 5)]
    assert [[s.state for s in step] for step in states] == [[TRACKING], [TRACKING], [LOST], []]
    lost = states[2][0]
    assert lost.track_id == start.track_id and lost.query == "the cup"
    assert lost.reason == "object score below 1 for 3 frames"
    assert tracks.queries == {} and tracks.tracker.track_ids == []


def test_a_hit_resets_the_count_of_missed_frames(sam2_model):
    tracks = session(sam2_model, lost_min_area=10**9, lost_frames=2)  # every area is too small
    tracks.start(frame(), "the cup", box=BOX)
    assert tracks.step(frame(1))[0].state == TRACKING
    tracks.settings = TrackSettings(lost_frames=2, lost_score=0.0, lost_min_area=0)  # a hit
    assert tracks.step(frame(2))[0].state == TRACKING
    tracks.settings = TrackSettings(lost_min_area=10**9, lost_frames=2)
    assert tracks.step(frame(3))[0].state == TRACKING  # one miss again, not two
    (lost,) = tracks.step(frame(4))
    assert lost.state == LOST and lost.reason == f"mask area below {10**9} pixels for 2 frames"


def test_union_mask_covers_tracking_masks_only(sam2_model):
    tracks = session(sam2_model)
    status, _ = tracks.start(frame(), "the cup", box=BOX)
    union = union_mask([status], (120, 160))
    assert np.array_equal(union, status.mask)
    lost = type(status)(**{**status.__dict__, "state": LOST})
    assert not union_mask([lost], (120, 160)).any()


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_tracks": 0}, "max_tracks must be at least 1"),
        ({"lost_score": 1.5}, r"lost_score must be in \[0, 1\]"),
        ({"lost_min_area": -1}, "lost_min_area must be >= 0"),
        ({"lost_frames": 0}, "lost_frames must be at least 1"),
    ],
)
def test_bad_settings_are_clear_errors(settings, message):
    with pytest.raises(ValueError, match=message):
        TrackSettings(**settings)
