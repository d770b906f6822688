"""Evaluation metrics on hand-computed examples (the arithmetic is written out in comments)."""

from __future__ import annotations

import numpy as np
import pytest

from segzero_model.metrics import IoUAccumulator, box_iou, intersection_and_union, mask_iou


def block(shape, y0, y1, x0, x1, dtype=bool):
    m = np.zeros(shape, dtype)
    m[y0:y1, x0:x1] = 1
    return m


# pred: rows 0-1, cols 0-2 (6 px); gt: rows 1-2, cols 1-3 (6 px).
# Overlap: row 1, cols 1-2 = 2 px. Union: 6 + 6 - 2 = 10 px. IoU = 2 / 10 = 0.2.
PRED_A = block((4, 4), 0, 2, 0, 3)
GT_A = block((4, 4), 1, 3, 1, 4)


def test_intersection_and_union_hand_example():
    assert intersection_and_union(PRED_A, GT_A) == (2, 10)
    assert mask_iou(PRED_A, GT_A) == pytest.approx(0.2)
    i, u = intersection_and_union(PRED_A, GT_A)
    assert type(i) is int and type(u) is int


def test_numeric_masks_match_bool():
    # nonzero = foreground, whatever the dtype (0/255 PNG masks, float probabilities > 0, ...)
    assert intersection_and_union(PRED_A.astype(np.uint8) * 255, GT_A.astype(np.float32)) == (2, 10)
    assert mask_iou(PRED_A.astype(np.int64), GT_A) == pytest.approx(0.2)


def test_perfect_and_disjoint():
    assert mask_iou(GT_A, GT_A) == 1.0
    assert mask_iou(block((4, 4), 3, 4, 0, 1), block((4, 4), 0, 1, 3, 4)) == 0.0


def test_empty_masks():
    empty = np.zeros((4, 4), bool)
    assert intersection_and_union(empty, empty) == (0, 0)
    assert mask_iou(empty, empty) == 1.0  # both empty: the LISA/ReasonSeg convention
    assert mask_iou(empty, GT_A) == 0.0  # predicted nothing, gt has 6 px: 0 / 6
    assert mask_iou(GT_A, empty) == 0.0  # predicted 6 px of nothing: 0 / 6


def test_failed_prediction():
    # A failure is an empty prediction that is always wrong: (0, gt area), IoU 0.
    assert intersection_and_union(None, GT_A) == (0, 6)
    assert mask_iou(None, GT_A) == 0.0
    empty = np.zeros((4, 4), bool)
    assert intersection_and_union(None, empty) == (0, 0)
    assert mask_iou(None, empty) == 0.0  # even for an empty gt: failures are never rewarded


def test_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(4, 4\).*\(4, 5\)"):
        mask_iou(PRED_A, np.zeros((4, 5), bool))
    acc = IoUAccumulator()
    with pytest.raises(ValueError, match=r"\(3, 3\).*\(4, 4\)"):
        acc.add(np.zeros((3, 3), bool), GT_A)
    assert acc.count == 0  # a rejected sample is not counted


@pytest.mark.parametrize("bad", [[[0, 1], [1, 0]], np.array([["a"]]), np.array([[None]])])
def test_non_mask_inputs_raise(bad):
    with pytest.raises(ValueError):
        mask_iou(bad, np.zeros((1, 1), bool))
    with pytest.raises(ValueError):
        mask_iou(None, bad)


# --- accumulator -----------------------------------------------------------------------------


def test_giou_and_ciou_differ():
    acc = IoUAccumulator()
    # Sample 1: the 4x4 example: I = 2, U = 10, IoU = 0.2.
    assert acc.add(PRED_A, GT_A) == pytest.approx(0.2)
    # Sample 2: a 10x10 object predicted exactly: I = U = 100, IoU = 1.0.
    big = block((12, 12), 1, 11, 1, 11)
    assert acc.add(big, big) == 1.0
    # gIoU = (0.2 + 1.0) / 2 = 0.6; cIoU = (2 + 100) / (10 + 100) = 102 / 110 = 0.92727...
    assert acc.count == 2
    assert acc.giou == pytest.approx(0.6)
    assert acc.ciou == pytest.approx(102 / 110)
    assert acc.summary() == {
        "count": 2,
        "giou": pytest.approx(0.6),
        "ciou": pytest.approx(102 / 110),
        "intersection": 102,
        "union": 110,
    }


def test_failed_prediction_counts_in_both_means():
    acc = IoUAccumulator()
    acc.add(PRED_A, GT_A)  # I = 2, U = 10, IoU 0.2
    assert acc.add(None, GT_A) == 0.0  # I = 0, U = 6 (gt area), IoU 0
    # gIoU = (0.2 + 0) / 2 = 0.1; cIoU = (2 + 0) / (10 + 6) = 0.125
    assert acc.giou == pytest.approx(0.1)
    assert acc.ciou == pytest.approx(0.125)
    assert acc.summary()["union"] == 16


def test_empty_accumulator():
    acc = IoUAccumulator()
    assert (acc.count, acc.giou, acc.ciou) == (0, 0.0, 0.0)
    assert acc.summary() == {"count": 0, "giou": 0.0, "ciou": 0.0, "intersection": 0, "union": 0}


def test_zero_total_union_follows_both_empty_convention():
    empty = np.zeros((3, 3), bool)
    acc = IoUAccumulator()
    acc.add(empty, empty)  # IoU 1.0
    assert (acc.giou, acc.ciou) == (1.0, 1.0)  # 0 / 0 is defined as the gIoU
    acc.add(None, empty)  # a failure on an empty gt: IoU 0, I = U = 0
    assert (acc.giou, acc.ciou) == (0.5, 0.5)
    acc.add(PRED_A[:3, :3], empty)  # a real union now: I = 0, U = 6 (pred rows 0-1, cols 0-2)
    assert acc.ciou == 0.0  # 0 / 6
    assert acc.giou == pytest.approx(1 / 3)


def test_add_counts_resumes_an_evaluation():
    samples = [(PRED_A, GT_A), (None, GT_A), (GT_A, GT_A), (None, np.zeros((4, 4), bool))]
    full = IoUAccumulator()
    stored = []
    for pred, gt in samples:
        full.add(pred, gt)
        stored.append((*intersection_and_union(pred, gt), pred is None))
    resumed = IoUAccumulator()
    for i, u, failed in stored:
        resumed.add_counts(i, u, failed=failed)
    assert resumed.summary() == full.summary()
    # Without the failed flag a failure on an empty gt reads as both-empty (1.0).
    assert IoUAccumulator().add_counts(0, 0) == 1.0
    assert IoUAccumulator().add_counts(np.int64(3), np.int32(4)) == 0.75


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((5, 4), {}),
        ((-1, 4), {}),
        ((1, -1), {}),
        ((1.0, 4), {}),
        ((True, 4), {}),
        ((1, 4), {"failed": True}),
    ],
)
def test_add_counts_rejects_bad_counts(args, kwargs):
    acc = IoUAccumulator()
    with pytest.raises(ValueError):
        acc.add_counts(*args, **kwargs)
    assert acc.count == 0


def test_sums_are_python_ints_without_overflow():
    acc = IoUAccumulator()
    for _ in range(4):
        acc.add_counts(2**62, 2**63)
    s = acc.summary()
    assert s["union"] == 2**65 and s["intersection"] == 2**64
    assert type(s["union"]) is int and type(s["count"]) is int
    assert acc.ciou == 0.5 and acc.giou == 0.5


# --- boxes -----------------------------------------------------------------------------------


def test_box_iou_inclusive_pixels():
    # Each box covers 10 x 10 = 100 px; overlap x 5..9, y 5..9 = 5 x 5 = 25 px.
    # Union = 100 + 100 - 25 = 175; IoU = 25 / 175 = 1 / 7.
    assert box_iou((0, 0, 9, 9), (5, 5, 14, 14)) == pytest.approx(25 / 175)
    # Nested: inner (2..5)^2 = 16 px inside 100 px: 16 / 100.
    assert box_iou((0, 0, 9, 9), (2, 2, 5, 5)) == pytest.approx(0.16)


def test_box_iou_identical_and_single_pixel():
    assert box_iou((3, 4, 20, 30), (3, 4, 20, 30)) == 1.0
    assert box_iou((5, 5, 5, 5), (5, 5, 5, 5)) == 1.0  # one pixel has area 1, not 0
    assert box_iou(np.array([1, 2, 3, 4]), [1, 2, 3, 4]) == 1.0


def test_box_iou_disjoint_and_touching():
    assert box_iou((0, 0, 9, 9), (20, 20, 29, 29)) == 0.0
    # Adjacent: x 0..9 and x 10..19 share no pixel column.
    assert box_iou((0, 0, 9, 9), (10, 0, 19, 9)) == 0.0
    # Touching edge: both contain column x = 9, so they overlap by 1 x 10 = 10 px.
    # Union = 100 + 100 - 10 = 190; IoU = 10 / 190.
    assert box_iou((0, 0, 9, 9), (9, 0, 18, 9)) == pytest.approx(10 / 190)
    # Shared corner pixel (9, 9): 1 / (100 + 100 - 1).
    assert box_iou((0, 0, 9, 9), (9, 9, 18, 18)) == pytest.approx(1 / 199)


def test_box_iou_normalises_swapped_corners():
    assert box_iou((9, 9, 0, 0), (5, 5, 14, 14)) == pytest.approx(25 / 175)
    assert box_iou((9, 0, 0, 9), (14, 14, 5, 5)) == pytest.approx(25 / 175)


@pytest.mark.parametrize(
    "bad", [(0, 0, 9), (0, 0, 9, 9, 1), (0, 0, "a", 9), (0, 0, float("nan"), 9), 5]
)
def test_box_iou_rejects_bad_boxes(bad):
    with pytest.raises(ValueError):
        box_iou(bad, (0, 0, 9, 9))
    with pytest.raises(ValueError):
        box_iou((0, 0, 9, 9), bad)
