"""draw_overlay (segzero_model/overlay.py): mask tinted, box and points drawn, input untouched."""

from __future__ import annotations

import numpy as np

from segzero_model.overlay import BOX_COLOR, MASK_COLOR, POINT_COLOR, draw_overlay
from segzero_model.result import SegmentationResult, Status


def scene() -> np.ndarray:
    return np.full((40, 60, 3), 100, np.uint8)


def test_mask_box_and_points_are_drawn_on_a_copy():
    image = scene()
    mask = np.zeros((40, 60), bool)
    mask[10:20, 10:30] = True
    result = SegmentationResult(
        Status.OK, "q", (60, 40), mask=mask, bbox=(5, 5, 50, 35), points=((20, 15), (45, 30))
    )
    drawn = draw_overlay(image, result, alpha=0.5)
    assert (image == 100).all()  # the input is left untouched
    assert drawn.shape == image.shape and drawn.dtype == np.uint8
    tinted = (np.array([100, 100, 100]) * 0.5 + np.array(MASK_COLOR) * 0.5).astype(np.uint8)
    assert (drawn[12, 12] == tinted).all()  # inside the mask, away from box and points
    assert (drawn[25, 40] == 100).all()  # outside everything
    assert tuple(drawn[5, 25]) == BOX_COLOR and tuple(drawn[35, 25]) == BOX_COLOR  # the edges
    assert tuple(drawn[15, 20]) == POINT_COLOR and tuple(drawn[30, 45]) == POINT_COLOR


def test_a_failed_result_draws_nothing_and_a_wrong_size_mask_is_ignored():
    image = scene()
    failed = SegmentationResult(Status.ERROR, "q", (60, 40), reason="boom")
    assert (draw_overlay(image, failed) == image).all()
    wrong = SegmentationResult(Status.OK, "q", (60, 40), mask=np.ones((4, 4), bool))
    assert (draw_overlay(image, wrong) == image).all()
