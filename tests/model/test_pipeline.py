"""End to end on the tiny checkpoints: the real Qwen2.5-VL and SAM2 code paths, with a tiny
reasoner that was trained to repeat `CANNED_ANSWER` and a random one that answers garbage.
Failures (out of memory, errors) are injected at the model boundary of the real models."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from conftest import count_embeddings

from segzero_model.pipeline import MAX_QUERY_CHARS, SegZeroPipeline, validate_query
from segzero_model.reasoning.answer_parser import parse_answer
from segzero_model.result import Status
from segzero_model.tiny.qwen import CANNED_ANSWER

# CANNED_ANSWER's box and points in the 840 frame, and the reasoning it carries.
CANNED_BOX = (84, 168, 420, 630)
CANNED_POINTS = ((210, 336), (294, 462))
CANNED_THINKING = "A tiny random model has no idea; this answer was trained in for tests."


@pytest.fixture(scope="module")
def pipeline(tiny_reasoner, tiny_segmenter):
    return SegZeroPipeline(tiny_reasoner, tiny_segmenter)


@pytest.fixture(scope="module")
def scene():
    from pathlib import Path

    import segzero_model
    from segzero_model.images import load_image

    return load_image(Path(segzero_model.__file__).parent / "assets" / "kitchen.png")


def expected_box(width, height, raw_output=None):
    """The answer's box scaled from the 840 frame to width x height: of `raw_output` when given
    (the tiny model repeats its canned answer only approximately on unseen images)."""
    x1, y1, x2, y2 = CANNED_BOX if raw_output is None else parse_answer(raw_output).bbox
    return (x1 * width / 840, y1 * height / 840, x2 * width / 840, y2 * height / 840)


def test_canned_answer_matches_the_constants_used_here():
    assert str(list(CANNED_BOX)).replace(" ", "") in CANNED_ANSWER.replace(" ", "")
    assert CANNED_THINKING in CANNED_ANSWER


def test_segment_returns_mask_box_points_and_reasoning(pipeline, scene):
    result = pipeline.segment(scene, "the red cup")
    assert result.status is Status.OK, result.reason
    assert result.mask.dtype == np.bool_ and result.mask.shape == (480, 640)
    answer = parse_answer(result.raw_output)
    assert result.bbox == pytest.approx(expected_box(640, 480, result.raw_output))
    (ax, ay), (bx, by) = answer.points
    flat = [coordinate for point in result.points for coordinate in point]
    assert flat == pytest.approx([ax * 640 / 840, ay * 480 / 840, bx * 640 / 840, by * 480 / 840])
    assert result.reasoning == answer.thinking
    assert result.raw_output.startswith("<think>")
    assert isinstance(result.score, float)
    assert result.num_generated_tokens > 10
    for stage in (
        "reasoning_prefill",
        "reasoning_decode",
        "parse",
        "sam_embedding",
        "sam_mask",
        "total",
    ):
        assert result.timings[stage] >= 0.0
    assert result.timings["total"] >= result.timings["reasoning_decode"]
    summary = result.to_json_dict()
    assert summary["mask_area"] == int(result.mask.sum())
    assert summary["status"] == "ok"


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.full((60, 80), 128, np.uint8),  # grayscale
        np.full((60, 80, 4), 200, np.uint8),  # RGBA
        np.full((60, 80, 3), 40000, np.uint16),  # 16-bit
    ],
    ids=["1x1", "gray", "rgba", "16bit"],
)
def test_unusual_images_are_converted(pipeline, image):
    result = pipeline.segment(image, "the red cup")
    assert result.status is Status.OK, result.reason
    assert result.mask.shape == image.shape[:2]
    assert result.image_size == (image.shape[1], image.shape[0])


def test_very_large_image(pipeline):
    image = np.zeros((6000, 8000, 3), np.uint8)
    result = pipeline.segment(image, "the red cup")
    assert result.status is Status.OK, result.reason
    assert result.mask.shape == (6000, 8000)
    assert result.bbox == pytest.approx(expected_box(8000, 6000, result.raw_output))


@pytest.mark.parametrize(
    "query, reason",
    [("", "empty"), ("  . ", "empty"), ("x" * 10_000, "10000 characters"), (None, "string")],
)
def test_bad_queries_are_reported_not_raised(pipeline, scene, query, reason):
    result = pipeline.segment(scene, query)
    assert result.status is Status.INVALID_QUERY
    assert reason in result.reason
    assert result.mask is None and result.image_size == (640, 480)


def test_bad_image_is_reported_not_raised(pipeline):
    result = pipeline.segment(np.zeros((4, 4, 2), np.uint8), "the red cup")
    assert result.status is Status.INVALID_IMAGE
    assert "shape" in result.reason


def test_batch_keeps_order_and_isolates_failures(pipeline, scene):
    images = [scene, np.zeros((0, 3, 3), np.uint8), scene[:100, :200]]
    results = pipeline.segment_batch(images, ["the red cup", "the cup", "the bottle"])
    assert [r.status for r in results] == [Status.OK, Status.INVALID_IMAGE, Status.OK]
    assert results[2].mask.shape == (100, 200)
    assert results[0].bbox == pytest.approx(expected_box(640, 480, results[0].raw_output))
    with pytest.raises(ValueError, match="2 images but 1 queries"):
        pipeline.segment_batch([scene, scene], ["a"])
    assert pipeline.segment_batch([], []) == []


def test_streaming_and_cancel(pipeline, scene):
    chunks = []
    result = pipeline.segment(scene, "the red cup", on_text=chunks.append)
    assert "".join(chunks) == result.raw_output

    cancel = threading.Event()
    cancel.set()
    cancelled = pipeline.segment(scene, "the red cup", cancel=cancel)
    assert cancelled.status is Status.CANCELLED
    assert cancelled.mask is None


def test_same_image_key_reuses_the_embedding(pipeline, scene, tiny_segmenter, monkeypatch):
    embeddings = count_embeddings(tiny_segmenter, monkeypatch)
    first = pipeline.segment(scene, "the red cup", image_key=("reuse-test", 7))
    second = pipeline.segment(scene, "the blue bottle", image_key=("reuse-test", 7))
    assert first.status is second.status is Status.OK
    assert len(embeddings) == 1
    assert second.mask is not None


def test_different_image_keys_embed_again(pipeline, scene, tiny_segmenter, monkeypatch):
    embeddings = count_embeddings(tiny_segmenter, monkeypatch)
    pipeline.segment(scene, "the red cup", image_key=("reuse-test", 8))
    pipeline.segment(scene, "the red cup", image_key=("reuse-test", 9))
    assert len(embeddings) == 2


def test_unparseable_answer_from_a_random_model(tmp_path_factory, tiny_segmenter, scene):
    from segzero_model.reasoning.local import Reasoner
    from segzero_model.tiny.qwen import write_tiny_qwen

    directory = write_tiny_qwen(tmp_path_factory.mktemp("random-qwen"), canned_answer=None)
    reasoner = Reasoner.from_pretrained(directory, device="cpu", max_new_tokens=12)
    result = SegZeroPipeline(reasoner, tiny_segmenter).segment(scene, "the red cup")
    assert result.status is Status.UNPARSEABLE_ANSWER
    assert result.reason and result.raw_output
    assert result.mask is None


def _raise(error: BaseException):
    def fail(*args, **kwargs):
        raise error

    return fail


def test_out_of_memory_frees_the_cuda_cache_and_the_next_query_works(
    pipeline, tiny_reasoner, scene, monkeypatch
):
    # A real CUDA OOM cannot be produced on the CPU: the real model's generate raises it, and
    # torch reports a GPU whose cache can be emptied (counted, not run).
    emptied = []
    with monkeypatch.context() as patch:
        oom = torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        patch.setattr(tiny_reasoner.model, "generate", _raise(oom))
        patch.setattr(torch.cuda, "is_available", lambda: True)
        patch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
        result = pipeline.segment(scene, "the red cup")
    assert result.status is Status.OUT_OF_MEMORY
    assert result.reason == "reasoning failed: CUDA out of memory. Tried to allocate 20.00 GiB"
    assert result.mask is None
    assert len(emptied) == 1
    assert pipeline.segment(scene, "the red cup").status is Status.OK


def test_out_of_memory_in_sam2_without_a_gpu_empties_no_cache(
    pipeline, tiny_segmenter, scene, monkeypatch
):
    emptied = []
    with monkeypatch.context() as patch:
        oom = torch.OutOfMemoryError("out of memory in the mask decoder")
        patch.setattr(tiny_segmenter._predictor, "predict", _raise(oom))
        patch.setattr(torch.cuda, "is_available", lambda: False)
        patch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
        result = pipeline.segment(scene, "the red cup")
    assert result.status is Status.OUT_OF_MEMORY
    assert result.reason == "segmentation failed: out of memory in the mask decoder"
    assert emptied == []
    assert pipeline.segment(scene, "the red cup").status is Status.OK


def test_a_reasoning_error_carries_the_exceptions_message(
    pipeline, tiny_reasoner, scene, monkeypatch
):
    monkeypatch.setattr(tiny_reasoner.model, "generate", _raise(RuntimeError("boom")))
    results = pipeline.segment_batch([scene, scene], ["the red cup", "the bottle"])
    for result in results:  # one failure of the batch, reported for each query
        assert result.status is Status.ERROR
        assert result.reason == "reasoning failed: boom"
        assert result.mask is None and result.raw_output == ""


@pytest.mark.parametrize("stage", ["set_image", "predict"])
def test_a_segmentation_error_keeps_the_answer(pipeline, tiny_segmenter, scene, monkeypatch, stage):
    monkeypatch.setattr(tiny_segmenter._predictor, stage, _raise(RuntimeError("boom")))
    result = pipeline.segment(scene, "the red cup", image_key=("segmentation-error", stage))
    assert result.status is Status.ERROR
    assert result.reason == "segmentation failed: boom"
    assert result.mask is None and result.score is None
    # What came before the failure is still reported: the reasoning and the scaled answer.
    assert result.bbox == pytest.approx(expected_box(640, 480, result.raw_output))
    assert result.reasoning == parse_answer(result.raw_output).thinking
    monkeypatch.undo()
    assert pipeline.segment(scene, "the red cup").status is Status.OK


def test_query_length_limit(pipeline, scene):
    assert MAX_QUERY_CHARS == 2000
    assert validate_query("x" * 2000) is None
    assert validate_query("x" * 2001) == "query is 2001 characters long; the limit is 2000"
    refused = pipeline.segment(scene, "x" * 2001)
    assert refused.status is Status.INVALID_QUERY
    assert refused.reason == "query is 2001 characters long; the limit is 2000"
    # A set cancel event stops generation at once: a CANCELLED result passed validation.
    cancel = threading.Event()
    cancel.set()
    accepted = pipeline.segment(scene, "x" * 2000, cancel=cancel)
    assert accepted.status is Status.CANCELLED, accepted.reason


class ScriptedReasoner:
    """A reasoner double in a model family that answers each query with a set reply; the
    parsing, scaling and the real tiny SAM2 behind it are the pipeline's own."""

    def __init__(self, family_name: str, replies: dict[str, str]):
        from segzero_model.reasoning.families import FAMILIES

        self.family = FAMILIES[family_name]
        self.replies = replies

    def generate(self, images, queries, image_keys=None, on_text=None, cancel=None):
        from segzero_model.reasoning.backend import Generation

        return [Generation(self.replies[q], 12, 0.01, 0.02, False) for q in queries]

    def close(self):
        pass


TWO_OBJECTS = (
    '<think>two cups</think><answer>[{"bbox_2d": [100,200,300,500], "point_2d": [200,350]}, '
    '{"bbox_2d": [600,100,900,400], "point_2d": [750,250]}]</answer>'
)
NO_OBJECT = "<think>nothing like it here</think><answer>[]</answer>"


@pytest.fixture()
def scripted(tiny_segmenter):
    replies = {"all cups": TWO_OBJECTS, "a unicorn": NO_OBJECT, "garbage": "<answer>[{]</answer>"}
    return SegZeroPipeline(ScriptedReasoner("qwen3_vl", replies), tiny_segmenter)


def test_several_objects_are_masked_from_one_embedding(
    scripted, scene, tiny_segmenter, monkeypatch
):
    embeddings = count_embeddings(tiny_segmenter, monkeypatch)
    predictions = []
    predict = tiny_segmenter._predictor.predict
    monkeypatch.setattr(
        tiny_segmenter._predictor, "predict", lambda **kw: predictions.append(kw) or predict(**kw)
    )
    result = scripted.segment(scene, "all cups", image_key=("multi", 1))
    assert result.status is Status.OK, result.reason
    assert len(embeddings) == 1 and len(predictions) == 2
    first, second = result.objects
    # relative_1000 frame: pixel = v * W / 1000 on the 640x480 scene
    assert first.bbox == pytest.approx((64, 96, 192, 240))
    assert first.points[0] == pytest.approx((128, 168))
    assert second.bbox == pytest.approx((384, 48, 576, 192))
    for obj, prompt in zip(result.objects, predictions, strict=True):
        assert prompt["box"] == pytest.approx(obj.bbox)
        assert obj.mask.shape == (480, 640) and isinstance(obj.score, float)
    assert (result.bbox, result.points, result.score) == (first.bbox, first.points, first.score)
    assert np.array_equal(result.mask, first.mask | second.mask)
    assert result.reasoning == "two cups"
    summary = result.to_json_dict()
    assert [o["bbox"] for o in summary["objects"]] == [[64, 96, 192, 240], [384, 48, 576, 192]]
    assert [o["mask_area"] for o in summary["objects"]] == [first.mask_area, second.mask_area]
    assert summary["mask_area"] == int(result.mask.sum())


def test_an_empty_list_is_not_found_with_the_reasoning(
    scripted, scene, tiny_segmenter, monkeypatch
):
    embeddings = count_embeddings(tiny_segmenter, monkeypatch)
    result = scripted.segment(scene, "a unicorn")
    assert result.status is Status.NOT_FOUND and not result.ok
    assert result.reason == "the model found no such object"
    assert result.reasoning == "nothing like it here"
    assert result.mask is None and result.bbox is None and result.objects == []
    assert embeddings == []  # nothing to segment, no embedding
    assert result.to_json_dict()["status"] == "not_found"
    assert result.to_json_dict()["objects"] == []


def test_batch_answers_several_objects_none_and_garbage(scripted, scene):
    results = scripted.segment_batch([scene] * 3, ["all cups", "a unicorn", "garbage"])
    assert [r.status for r in results] == [Status.OK, Status.NOT_FOUND, Status.UNPARSEABLE_ANSWER]
    assert len(results[0].objects) == 2 and results[0].mask is not None


def test_a_single_object_answer_has_one_object(pipeline, scene):
    result = pipeline.segment(scene, "the red cup")
    assert result.status is Status.OK, result.reason
    (only,) = result.objects
    assert (only.bbox, only.points, only.score) == (result.bbox, result.points, result.score)
    assert np.array_equal(only.mask, result.mask)
