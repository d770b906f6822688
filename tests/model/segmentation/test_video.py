"""segzero_model.segmentation.video: reading clips, the per-frame records and overlay, and a run's
states (TRACKING, LOST once, then NOT_TRACKED) on the tiny models."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from segzero_model.pipeline import SegZeroPipeline
from segzero_model.segmentation.tracks import LOST, TRACKING, TrackSettings, TrackStatus
from segzero_model.segmentation.video import (
    FolderFrames,
    TrackInputError,
    VideoFrames,
    draw_frame,
    open_frames,
    track_video,
)

FRAMES = 12
WIDTH, HEIGHT = 160, 120


def moving_square(index: int) -> np.ndarray:
    """RGB: a red square moving right over a fixed noise background."""
    image = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    image[40:80, 20 + 3 * index : 60 + 3 * index] = (255, 40, 40)
    return image


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """The clip as an mp4 (10 fps) and as a folder of PNGs."""
    root = tmp_path_factory.mktemp("clip")
    video = cv2.VideoWriter(
        str(root / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (WIDTH, HEIGHT)
    )
    (root / "frames").mkdir()
    for index in range(FRAMES):
        bgr = cv2.cvtColor(moving_square(index), cv2.COLOR_RGB2BGR)
        video.write(bgr)
        cv2.imwrite(str(root / "frames" / f"{index:03d}.png"), bgr)
    video.release()
    return root / "clip.mp4", root / "frames"


@pytest.fixture(scope="module")
def pipeline(tiny_reasoner, tiny_segmenter):
    return SegZeroPipeline(tiny_reasoner, tiny_segmenter)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_video_is_read_frame_by_frame_as_rgb_with_its_fps(clip):
    video, _ = clip
    frames = VideoFrames(video)
    assert frames.fps == pytest.approx(10.0)
    images = list(frames)
    assert len(images) == FRAMES and images[0].shape == (HEIGHT, WIDTH, 3)
    assert images[0][60, 40, 0] > 200 > images[0][60, 40, 2]  # red stays red (RGB, not BGR)


def test_a_folder_is_read_in_name_order_keeping_only_images(tmp_path):
    for name in ("b.PNG", "a.jpg", "c.jpeg"):
        cv2.imwrite(str(tmp_path / name), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "sub.png").mkdir()
    frames = open_frames(frames=tmp_path)
    assert isinstance(frames, FolderFrames) and frames.fps is None
    assert [p.name for p in frames.files] == ["a.jpg", "b.PNG", "c.jpeg"]
    assert [image.shape for image in frames] == [(8, 8, 3)] * 3


def bad_input(tmp_path, case: str):
    """(keyword for open_frames, path) for one kind of unreadable input."""
    if case == "junk video":
        (tmp_path / "junk.mp4").write_bytes(b"not a video")
        return "video", tmp_path / "junk.mp4"
    if case == "file as folder":
        (tmp_path / "f.png").write_bytes(b"")
        return "frames", tmp_path / "f.png"
    return {
        "missing video": ("video", tmp_path / "none.mp4"),
        "folder as video": ("video", tmp_path),
        "missing folder": ("frames", tmp_path / "none"),
        "empty folder": ("frames", tmp_path),
    }[case]


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing video", "video not found"),
        ("folder as video", "video is not a file"),
        ("junk video", "cannot read video"),
        ("missing folder", "frames folder not found"),
        ("file as folder", "is not a folder"),
        ("empty folder", "holds no .jpg/.jpeg/.png images"),
    ],
)
def test_unreadable_inputs_name_the_path_and_the_problem(tmp_path, case, message):
    kind, path = bad_input(tmp_path, case)
    with pytest.raises(TrackInputError, match=message) as raised:
        open_frames(**{kind: path})
    assert str(path) in str(raised.value)


def test_exactly_one_source(clip):
    video, folder = clip
    with pytest.raises(TrackInputError, match="exactly one"):
        open_frames(video, folder)
    with pytest.raises(TrackInputError, match="exactly one"):
        open_frames()


def test_a_corrupt_image_in_a_folder_fails_when_it_is_reached(tmp_path):
    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((8, 8, 3), np.uint8))
    (tmp_path / "1.png").write_bytes(b"not an image")
    frames = iter(open_frames(frames=tmp_path))
    assert next(frames).shape == (8, 8, 3)
    with pytest.raises(TrackInputError, match="1.png"):
        next(frames)


def test_the_overlay_tints_the_tracked_mask_and_leaves_the_frame_alone():
    image = moving_square(0)
    mask = np.zeros((HEIGHT, WIDTH), bool)
    mask[50:70, 100:140] = True
    status = TrackStatus(1, "q", TRACKING, mask, (100, 50, 140, 70), 0.9)
    drawn = draw_frame(image, TRACKING, status)
    assert drawn.shape == image.shape and np.array_equal(image, moving_square(0))
    assert not np.array_equal(drawn[55:65, 105:135], image[55:65, 105:135])  # tinted
    untracked = draw_frame(image, "NOT_TRACKED", None)
    assert np.array_equal(untracked[HEIGHT // 2 :], image[HEIGHT // 2 :])  # only the label


def test_a_lost_track_is_reported_once_then_the_frames_pass_untracked(pipeline, clip, tmp_path):
    _, folder = clip
    # A presence threshold no score reaches: the 2nd missed frame in a row is LOST.
    settings = TrackSettings(lost_score=1.0, lost_frames=2)
    run = track_video(
        pipeline, open_frames(frames=folder), "the red cup", tmp_path, settings=settings
    )
    assert run.result.ok and run.frames == FRAMES
    assert run.lost_at == 2 and run.tracked == 1 and len(run.track_seconds) == 2
    assert run.lost_reason == "object score below 1 for 2 frames"
    lines = read_jsonl(tmp_path / "frames.jsonl")
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    assert [line["state"] for line in lines] == [TRACKING, TRACKING, LOST] + ["NOT_TRACKED"] * 9
    assert lines[2]["reason"] == run.lost_reason
    assert lines[3] == {
        "frame": 3,
        "state": "NOT_TRACKED",
        "box": None,
        "score": None,
        "area": 0,
        "track_ms": None,
    }
    first = lines[0]
    assert first["query"] == "the red cup" and first["result"]["status"] == "ok"
    assert len(first["result"]["bbox"]) == 4 and len(first["result"]["points"]) == 2
    overlay = sorted((tmp_path / "overlay").iterdir())
    assert [p.name for p in overlay] == [f"{i:05d}.png" for i in range(FRAMES)]
    assert cv2.imread(str(overlay[-1])).shape == (HEIGHT, WIDTH, 3)


def test_max_frames_stops_the_run(pipeline, clip, tmp_path):
    video, _ = clip
    run = track_video(pipeline, open_frames(video), "the red cup", tmp_path, max_frames=4)
    assert run.frames == 4 and len(read_jsonl(tmp_path / "frames.jsonl")) == 4
    capture = cv2.VideoCapture(str(run.overlay))
    assert run.overlay.name == "overlay.mp4"
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 4
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(10.0)


def test_a_failed_answer_writes_its_line_and_tracks_nothing(pipeline, clip, tmp_path):
    video, _ = clip
    run = track_video(pipeline, open_frames(video), " ", tmp_path)
    assert not run.result.ok and run.frames == 1 and run.overlay is None
    (line,) = read_jsonl(tmp_path / "frames.jsonl")
    assert line["state"] == "NOT_TRACKED" and line["result"]["status"] == "invalid_query"
    assert line["result"]["reason"] == "query is empty"
    assert not (tmp_path / "overlay.mp4").exists()


class ListReasoner:
    """A reasoner double in the Qwen3-VL family that gives one set reply; the parsing and the
    tiny SAM2 and tracker behind it are real."""

    def __init__(self, reply: str):
        from segzero_model.reasoning.families import FAMILIES

        self.family, self.reply = FAMILIES["qwen3_vl"], reply

    def generate(self, images, queries, image_keys=None, on_text=None, cancel=None):
        from segzero_model.reasoning.backend import Generation

        return [Generation(self.reply, 9, 0.01, 0.01, False) for _ in queries]


def test_each_object_starts_its_own_track(tiny_segmenter, clip, tmp_path):
    _, folder = clip
    reply = (
        '<think>two</think><answer>[{"bbox_2d": [120,330,380,670], "point_2d": [250,500]}, '
        '{"bbox_2d": [600,100,900,300], "point_2d": [750,200]}]</answer>'
    )
    pipeline = SegZeroPipeline(ListReasoner(reply), tiny_segmenter)
    run = track_video(pipeline, open_frames(frames=folder), "the squares", tmp_path, max_frames=3)
    assert run.result.ok and len(run.result.objects) == 2 and run.frames == 3
    lines = read_jsonl(tmp_path / "frames.jsonl")
    assert [line["state"] for line in lines] == [TRACKING] * 3
    for line in lines:
        assert [t["query"] for t in line["tracks"]] == ["the squares", "the squares #2"]
        assert line["box"] == line["tracks"][0]["box"]
    assert len(lines[0]["result"]["objects"]) == 2


def test_a_not_found_answer_tracks_nothing(tiny_segmenter, clip, tmp_path):
    video, _ = clip
    pipeline = SegZeroPipeline(ListReasoner("<think>no</think><answer>[]</answer>"), tiny_segmenter)
    run = track_video(pipeline, open_frames(video), "a unicorn", tmp_path)
    assert run.result.status.value == "not_found" and run.frames == 1 and run.overlay is None
    (line,) = read_jsonl(tmp_path / "frames.jsonl")
    assert line["state"] == "NOT_TRACKED" and line["result"]["status"] == "not_found"
    assert line["result"]["objects"] == [] and line["result"]["reasoning"] == "no"
