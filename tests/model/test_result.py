"""SegmentationResult (segzero_model/result.py): the one result type, and its JSON summary."""

from __future__ import annotations

import json

import numpy as np

from segzero_model.result import SegmentationResult, Status


def test_an_ok_result_summarises_to_json():
    mask = np.zeros((4, 6), bool)
    mask[1:3, 2:5] = True
    result = SegmentationResult(
        status=Status.OK,
        query="the red cup",
        image_size=(6, 4),
        mask=mask,
        bbox=(2.0, 1.004, 4.996, 3.0),
        points=((3.333, 2.0), (4.0, 1.5)),
        score=0.9,
        reasoning="It is red.",
        raw_output="<think>It is red.</think><answer>{}</answer>",
        timings={"reasoning": 0.123456, "total": 0.5},
        num_generated_tokens=12,
    )
    assert result.ok and result.mask_area == 6
    summary = result.to_json_dict()
    assert json.loads(json.dumps(summary)) == summary  # serialisable as it is
    assert summary == {
        "status": "ok",
        "reason": "",
        "query": "the red cup",
        "image_size": [6, 4],
        "bbox": [2.0, 1.0, 5.0, 3.0],
        "points": [[3.33, 2.0], [4.0, 1.5]],
        "score": 0.9,
        "reasoning": "It is red.",
        "raw_output": "<think>It is red.</think><answer>{}</answer>",
        "mask_area": 6,
        "num_generated_tokens": 12,
        "timings": {"reasoning": 0.1235, "total": 0.5},
        "objects": [],  # built by hand here; the pipeline lists one entry per object
    }


def test_a_failed_result_has_no_geometry_and_says_why():
    result = SegmentationResult(Status.UNPARSEABLE_ANSWER, "the cup", (8, 8), reason="no box")
    assert not result.ok and result.mask_area == 0
    summary = result.to_json_dict()
    assert (summary["status"], summary["reason"]) == ("unparseable_answer", "no box")
    assert summary["bbox"] is None and summary["points"] is None and summary["mask_area"] == 0


def test_status_values_are_the_json_spelling():
    assert [status.value for status in Status] == [
        "ok",
        "not_found",
        "invalid_query",
        "invalid_image",
        "unparseable_answer",
        "cancelled",
        "out_of_memory",
        "error",
        "no_image",
        "stale_image",
        "dropped",
    ]
