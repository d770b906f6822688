"""Targets from masks: analytic shapes, degenerate masks, input checks and random-blob properties,
plus a brute-force reference that the fast (cropped, pruned) implementation must match; and the
training solution string both ways (`format_solution` / `parse_solution`)."""

from __future__ import annotations

import dataclasses
import math
import random
import re

import numpy as np
import pytest

from segzero_model.targets import (
    EmptyMaskError,
    Target,
    format_solution,
    mask_to_target,
    parse_solution,
)


def disk(shape, cx, cy, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def dist(p, q):
    return math.hypot(p[0] - q[0], p[1] - q[1])


def check_invariants(mask: np.ndarray, t: Target) -> None:
    """Properties every target must have, whatever the shape."""
    fg = mask != 0
    ys, xs = np.nonzero(fg)
    x1, y1, x2, y2 = t.bbox
    assert (x1, y1, x2, y2) == (xs.min(), ys.min(), xs.max(), ys.max())
    (p1, p2), (r1, r2) = t.points, t.radii
    for x, y in (p1, p2):
        assert fg[y, x], f"point {(x, y)} is not foreground"
    assert r1 >= 1.0 and r2 >= 0.0 and r2 <= r1 + 1e-6
    if r2 > 0:
        assert dist(p1, p2) >= r1 + r2 - 1e-6, "circles overlap"
    # Each circle lies in the mask: points on radius r - 1 round to foreground pixels.
    for (cx, cy), r in ((p1, r1), (p2, r2)):
        if r <= 1:
            continue
        for angle in np.linspace(0, 2 * np.pi, 72, endpoint=False):
            x = int(round(cx + (r - 1) * np.cos(angle)))
            y = int(round(cy + (r - 1) * np.sin(angle)))
            assert 0 <= x < mask.shape[1] and 0 <= y < mask.shape[0]
            assert fg[y, x], f"circle at {(cx, cy)} r={r} leaves the mask at {(x, y)}"


def reference_target(mask: np.ndarray) -> Target:
    """Slow, direct transcription of the definition (brute-force Euclidean distances)."""
    fg = np.asarray(mask != 0)
    h, w = fg.shape
    padded = np.zeros((h + 2, w + 2), bool)
    padded[1:-1, 1:-1] = fg
    # The nearest background pixel always touches the foreground, so only those are searched.
    grown = padded.copy()
    grown[1:, :] |= padded[:-1, :]
    grown[:-1, :] |= padded[1:, :]
    grown[:, 1:] |= padded[:, :-1]
    grown[:, :-1] |= padded[:, 1:]
    by, bx = np.nonzero(grown & ~padded)
    ys, xs = np.nonzero(fg)
    d2 = np.concatenate(
        [
            ((ys[k : k + 512, None] + 1 - by) ** 2 + (xs[k : k + 512, None] + 1 - bx) ** 2).min(1)
            for k in range(0, len(ys), 512)
        ]
    )
    d = np.sqrt(d2.astype(np.float64))
    cy, cx = ys.mean(), xs.mean()
    tol = 1e-6 * max(1.0, d.max())

    def pick(score):
        cand = np.flatnonzero(score >= score.max() - tol)
        c2 = (ys[cand] - cy) ** 2 + (xs[cand] - cx) ** 2
        return cand[np.flatnonzero(c2 <= c2.min() + 1e-9 * max(1.0, c2.min()))[0]]

    i = pick(d)
    r1 = d[i]
    to_c1 = np.hypot(ys - ys[i], xs - xs[i])
    score = np.minimum(d, to_c1 - r1)
    if score.max() > tol:
        j = pick(score)
        r2 = score[j]
    else:
        j = pick(np.minimum(d, to_c1))
        r2 = 0.0
    return Target(
        bbox=(int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())),
        points=((int(xs[i]), int(ys[i])), (int(xs[j]), int(ys[j]))),
        radii=(float(r1), float(r2)),
    )


def random_blob(rng: np.random.Generator) -> np.ndarray:
    h, w = (int(v) for v in rng.integers(12, 64, size=2))
    mask = np.zeros((h, w), bool)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(-3, w + 3), rng.uniform(-3, h + 3)
        ax, ay = rng.uniform(1, w / 2), rng.uniform(1, h / 2)
        th = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(th) + (yy - cy) * np.sin(th)
        v = -(xx - cx) * np.sin(th) + (yy - cy) * np.cos(th)
        mask |= (u / ax) ** 2 + (v / ay) ** 2 <= 1
    if rng.random() < 0.3:  # holes
        mask &= rng.random((h, w)) > 0.05
    if not mask.any():
        mask[h // 2, w // 2] = True
    return mask


# --- analytic shapes -------------------------------------------------------------------------


def test_single_disk():
    mask = disk((100, 120), 50, 40, 20)
    t = mask_to_target(mask)
    check_invariants(mask, t)
    assert t.bbox == (30, 20, 70, 60)
    assert dist(t.points[0], (50, 40)) <= 1
    assert abs(t.radii[0] - 20) <= 1
    # A disk is all circle 1: no second circle fits outside it, so point 2 is the documented
    # fallback (radius 0): inside the disk, away from the centre, but not at the rim.
    assert t.radii[1] == 0.0
    assert 5 <= dist(t.points[1], (50, 40)) <= 15


def test_two_disjoint_disks_of_different_radii():
    mask = disk((80, 140), 30, 40, 15) | disk((80, 140), 100, 30, 9)
    t = mask_to_target(mask)
    check_invariants(mask, t)
    assert dist(t.points[0], (30, 40)) <= 1 and abs(t.radii[0] - 15) <= 1
    assert dist(t.points[1], (100, 30)) <= 1 and abs(t.radii[1] - 9) <= 1


def test_rectangle():
    mask = np.zeros((80, 150), np.uint8)
    mask[10:50, 20:120] = 1  # 100 wide, 40 tall
    t = mask_to_target(mask)
    check_invariants(mask, t)
    assert t.bbox == (20, 10, 119, 49)
    assert abs(t.radii[0] - 20) <= 1  # half the short side
    (x1, y1), (x2, y2) = t.points
    assert abs(x2 - x1) > 3 * abs(y2 - y1), "circles should lie along the long (x) axis"
    assert dist(t.points[0], t.points[1]) >= sum(t.radii) - 1e-6
    assert t.radii[1] > 10


def test_ring():
    yy, xx = np.mgrid[:100, :100]
    r2 = (yy - 50) ** 2 + (xx - 50) ** 2
    mask = (r2 <= 30**2) & (r2 >= 18**2)
    t = mask_to_target(mask)
    check_invariants(mask, t)
    for x, y in t.points:
        assert 18 < dist((x, y), (50, 50)) < 30  # on the ring, not in the hole
    assert t.radii[1] > 0 and abs(t.radii[0] - 6) <= 1 and abs(t.radii[1] - 6) <= 1


def test_l_shape_has_one_point_in_each_arm():
    mask = np.zeros((70, 160), bool)
    mask[0:50, 0:40] = True  # fat arm (40 x 50)
    mask[30:50, 40:140] = True  # thin arm (100 x 20)
    t = mask_to_target(mask)
    check_invariants(mask, t)
    (xa, _), (xb, _) = t.points
    assert xa < 40 and xb >= 40
    assert t.radii == pytest.approx((20.0, 10.0))


def test_image_border_counts_as_outside():
    mask = np.zeros((40, 50), bool)
    mask[0:20, 0:30] = True  # touches the top and left image borders
    t = mask_to_target(mask)
    check_invariants(mask, t)
    assert t.radii[0] == pytest.approx(10.0)  # 20 / 2, not limited only by the bottom edge
    assert t.points[0][1] in (9, 10)
    full = mask_to_target(np.ones((21, 21), bool))
    assert full.points[0] == (10, 10) and full.radii[0] == pytest.approx(11.0)
    assert full.bbox == (0, 0, 20, 20)


# --- degenerate masks ------------------------------------------------------------------------


def test_one_pixel():
    mask = np.zeros((5, 7), bool)
    mask[2, 3] = True
    t = mask_to_target(mask)
    assert t.bbox == (3, 2, 3, 2)
    assert t.points == ((3, 2), (3, 2))
    assert t.radii == (1.0, 0.0)


@pytest.mark.parametrize("vertical", [False, True])
def test_one_pixel_wide_line(vertical):
    mask = np.zeros((15, 30), bool)
    mask[7, 5:26] = True  # 21 pixels, centre x = 15
    if vertical:
        mask = mask.T.copy()
    t = mask_to_target(mask)
    check_invariants(mask, t)
    # d = 1 everywhere; circle 2 (radius 1) is two pixels from the centre; both sides tie on
    # the centroid distance, so the first in row-major order (smaller coordinate) wins.
    if vertical:
        assert t.bbox == (7, 5, 7, 25) and t.points == ((7, 15), (7, 13))
    else:
        assert t.bbox == (5, 7, 25, 7) and t.points == ((15, 7), (13, 7))
    assert t.radii == (1.0, 1.0)


def test_two_by_two_block():
    mask = np.zeros((6, 6), bool)
    mask[2:4, 2:4] = True
    t = mask_to_target(mask)
    check_invariants(mask, t)
    assert t.bbox == (2, 2, 3, 3)
    # All four pixels have d = 1 and tie on the centroid: the first (row-major) is circle 1;
    # the diagonal pixel fits a circle of radius sqrt(2) - 1 beside it.
    assert t.points == ((2, 2), (3, 3))
    assert t.radii == pytest.approx((1.0, math.sqrt(2) - 1))


def test_no_second_circle_falls_back_inside_the_object():
    mask = np.zeros((7, 7), bool)
    mask[3, 2:5] = True
    mask[2:5, 3] = True  # plus sign: every pixel lies within r1 = sqrt(2) of the centre
    t = mask_to_target(mask)
    check_invariants(mask, t)
    assert t.points[0] == (3, 3) and t.radii == pytest.approx((math.sqrt(2), 0.0))
    assert t.points[1] == (3, 2)  # four arms tie; the first in row-major order


def test_empty_mask_raises():
    with pytest.raises(EmptyMaskError, match=r"\(4, 5\)"):
        mask_to_target(np.zeros((4, 5), np.uint8))
    assert issubclass(EmptyMaskError, ValueError)


@pytest.mark.parametrize(
    "bad, pattern",
    [
        (np.ones((3, 4, 1), bool), r"\(3, 4, 1\)"),
        (np.ones(5, bool), r"\(5,\)"),
        (np.ones((0, 4), bool), r"\(0, 4\)"),
        (np.array([["a", "b"]]), "dtype"),
        (np.array([[1, None]], dtype=object), "dtype"),
        (np.array([[1.0, np.nan]]), "NaN"),
        ([[0, 1], [1, 1]], "list"),
    ],
)
def test_invalid_masks_raise_value_error(bad, pattern):
    with pytest.raises(ValueError, match=pattern):
        mask_to_target(bad)


def test_dtypes_give_identical_targets():
    base = disk((60, 70), 30, 25, 12) | disk((60, 70), 52, 40, 7)
    expected = mask_to_target(base)
    for mask in (
        base.astype(np.uint8),
        base.astype(np.uint8) * 255,
        base.astype(np.int32) * -3,
        base.astype(np.float32),
        base.astype(np.float64) * 0.5,
        np.asfortranarray(base),
        np.pad(base, 2)[2:-2, 2:-2],  # non-contiguous view
    ):
        assert mask_to_target(mask) == expected


def test_deterministic_on_symmetric_shape():
    mask = np.zeros((30, 30), bool)
    mask[10:20, 10:20] = True  # d = 5 at the four central pixels, all equally near the centroid
    first = mask_to_target(mask)
    assert all(mask_to_target(mask.copy()) == first for _ in range(5))
    assert first.points[0] == (14, 14)  # first of the tied centre pixels in row-major order
    assert first == reference_target(mask)


def test_target_is_frozen():
    t = mask_to_target(np.ones((3, 3), bool))
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.bbox = (0, 0, 0, 0)  # type: ignore[misc]


# --- properties on random blobs --------------------------------------------------------------


def test_random_blobs_properties_and_reference():
    rng = np.random.default_rng(1234)
    for _ in range(50):
        mask = random_blob(rng)
        t = mask_to_target(mask)
        check_invariants(mask, t)
        ref = reference_target(mask)
        assert t.bbox == ref.bbox
        assert t.points == ref.points
        assert t.radii == pytest.approx(ref.radii, abs=1e-9)


def test_large_mask_matches_reference_on_pruned_path():
    # Big enough that the strided lower bound and the integer distance filter kick in.
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[:300, :260]
    mask = ((xx - 120) / 100.0) ** 2 + ((yy - 140) / 60.0) ** 2 <= 1
    mask |= disk((300, 260), 200, 250, 35)
    mask &= rng.random(mask.shape) > 0.001
    t = mask_to_target(mask)
    check_invariants(mask, t)
    ref = reference_target(mask)
    assert (t.bbox, t.points) == (ref.bbox, ref.points)
    assert t.radii == pytest.approx(ref.radii, abs=1e-9)


def test_repeated_calls_are_bit_identical():
    # OpenCV's float32 distance transform can jitter by an ulp between calls; the returned
    # radii are recomputed exactly, so targets must not.
    mask = disk((60, 70), 30, 25, 12) | disk((60, 70), 52, 40, 7)
    first = mask_to_target(mask)
    for _ in range(30):
        assert mask_to_target(mask) == first


# --------------------------------------------------------------------------- solution string

# The ground truth of the paper's Figure 2, in the released datasets' three forms.
GT_BOX = (35, 60, 354, 423)
GT_POINTS = ((183, 235), (168, 305))
SOLUTION = "<box>(35,60),(354,423)</box><points>(183,235),(168,305)</points>"
SOLUTION_DICT = {"bbox": [35, 60, 354, 423], "points_1": [183, 235], "points_2": [168, 305]}


def test_format_solution_writes_the_released_string():
    assert format_solution(GT_BOX, GT_POINTS) == SOLUTION


def test_solution_round_trip_of_random_targets():
    rng = random.Random(0)
    for _ in range(200):
        x1, y1 = rng.randint(0, 839), rng.randint(0, 839)
        box = (x1, y1, rng.randint(x1, 839), rng.randint(y1, 839))
        points = tuple((rng.randint(box[0], box[2]), rng.randint(box[1], box[3])) for _ in "12")
        assert parse_solution(format_solution(box, points)) == (box, points)


def test_solution_round_trip_of_a_mask_target():
    target = mask_to_target(disk((120, 160), 70, 50, 30))
    box, points = parse_solution(format_solution(target.bbox, target.points))
    assert box == target.bbox and points == target.points
    assert all(isinstance(v, float) for v in (*box, *points[0], *points[1]))


@pytest.mark.parametrize(
    "solution",
    [
        SOLUTION,
        " <box>( 35 , 60 ),(354,423)</box>\n<points>(183,235), (168,305)</points> ",
        "<box>(35.0,60.0),(354.0,423.0)</box><points>(183.0,235.0),(168.0,305.0)</points>",
        "<box>(3.5e1,60),(354,423)</box><points>(+183,235),(168,305.)</points>",
        '{"bbox": [35, 60, 354, 423], "points_1": [183, 235], "points_2": [168, 305]}',
        SOLUTION_DICT,
        {**SOLUTION_DICT, "extra": "ignored"},
    ],
)
def test_parse_solution_formats(solution):
    assert parse_solution(solution) == (GT_BOX, GT_POINTS)


@pytest.mark.parametrize(
    ("solution", "message"),
    [
        ("<box>(35,60),(354,423)</box>", "expected '<box>"),
        ("<box>(35,60,354,423)</box><points>(1,2),(3,4)</points>", "expected '<box>"),
        ("<box>(a,60),(354,423)</box><points>(1,2),(3,4)</points>", "expected '<box>"),
        ("", "expected '<box>"),
        ('{"bbox": [35, 60, 354, 423], "points_1": [183, 235]}', "no 'points_2' key"),
        ('{"bbox": [35, 60, 354], "points_1": [1, 2], "points_2": [1, 2]}', "'bbox' must be 4"),
        ('{"bbox": [35, 60, 354, 423], "points_1": ["1", 2], "points_2": [1, 2]}', "'points_1'"),
        ('{"bbox": [35, 60, 354, 423], "points_1": [1, 2], "points_2": [1, NaN]}', "'points_2'"),
        ('{"bbox": [354, 60, 35, 423], "points_1": [1, 2], "points_2": [1, 2]}', "x1 <= x2"),
        ("<box>(354,60),(35,423)</box><points>(1,2),(3,4)</points>", "x1 <= x2"),
        ('{"bbox": [35, 60, 354, 423], ', "invalid JSON"),
        ("[1, 2, 3]", "expected '<box>"),
        ('{"bbox": [35, 60, 354, 423], "points_1": [1, 2], "points_2": [1, 2]', "invalid JSON"),
        (None, "expected a str or dict, got NoneType"),
        ([35, 60, 354, 423], "expected a str or dict, got list"),
    ],
)
def test_malformed_solution_raises_value_error_naming_the_problem(solution, message):
    with pytest.raises(ValueError, match=f"malformed ground truth.*{re.escape(message)}"):
        parse_solution(solution)


# --------------------------------------------------------------------------- lists of objects


def test_object_list_solutions_both_ways():
    from segzero_model.targets import (
        ObjectTruth,
        format_objects_solution,
        is_objects_solution,
        parse_objects_solution,
    )

    objects = [ObjectTruth((1.5, 2, 30, 40), (10, 20.5)), ObjectTruth((0, 0, 5, 5), (2, 2))]
    text = format_objects_solution(objects)
    assert text == (
        '[{"bbox_2d": [2, 2, 30, 40], "point_2d": [10, 20]}, '
        '{"bbox_2d": [0, 0, 5, 5], "point_2d": [2, 2]}]'
    )  # Python's round: half to even
    assert parse_objects_solution(text)[1] == ObjectTruth((0.0, 0.0, 5.0, 5.0), (2.0, 2.0))
    assert parse_objects_solution("[]") == [] and is_objects_solution(" []")
    single = "<box>(1,2),(3,4)</box><points>(2,3),(1,2)</points>"
    assert not is_objects_solution(single)
    assert parse_objects_solution(single) == [ObjectTruth((1.0, 2.0, 3.0, 4.0), (2.0, 3.0))]
    for bad, message in [
        ("[{]", "invalid JSON"),
        ('[{"bbox_2d": [1, 2, 3, 4]}]', "object 0 needs 'bbox_2d'"),
        ('[{"bbox_2d": [5, 2, 3, 4], "point_2d": [1, 1]}]', "x1 <= x2"),
        ("[3]", "object 0 is not a JSON object"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_objects_solution(bad)
