"""segzero_model.spatial.depth on analytic scenes: depth rendered per pixel from known geometry, so
the
true position and extent are known exactly.

Scene: a wall (fronto-parallel plane) at 1.500 m and a box standing on it whose front face is
0.80 m in front of the wall (at 0.700 m). The box spans the optical axis, so only its front
face is visible; the truth is that face: its centre, its x/y extent, and ~0 z extent."""

from __future__ import annotations

import re

import numpy as np
import pytest

from segzero_model.spatial.depth import (
    DepthError,
    DepthStatus,
    Intrinsics,
    ObjectGeometry,
    RawDepth,
    depth_to_metres,
    locate_object,
)

WALL_M = 1.5
FACE_M = 0.7
FACE_X = (-0.08, 0.12)  # metres: 0.20 wide, off centre
FACE_Y = (-0.05, 0.10)  # 0.15 high
FACE_CENTRE = ((FACE_X[0] + FACE_X[1]) / 2, (FACE_Y[0] + FACE_Y[1]) / 2, FACE_M)
FACE_SIZE = (FACE_X[1] - FACE_X[0], FACE_Y[1] - FACE_Y[0], 0.0)

CENTRED = Intrinsics(fx=600.0, fy=600.0, cx=319.5, cy=239.5, width=640, height=480)
OFF_CENTRE = Intrinsics(fx=610.0, fy=605.0, cx=301.0, cy=262.0, width=640, height=480)


def rays(camera: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel centre's ray direction (x/z, y/z), HxW each."""
    u = (np.arange(camera.width) - camera.cx) / camera.fx
    v = (np.arange(camera.height) - camera.cy) / camera.fy
    return np.broadcast_to(u, (camera.height, camera.width)), np.broadcast_to(
        v[:, None], (camera.height, camera.width)
    )


def box_face(camera: Intrinsics) -> np.ndarray:
    """Pixels whose ray hits the box's front face."""
    rx, ry = rays(camera)
    x, y = rx * FACE_M, ry * FACE_M
    return (x >= FACE_X[0]) & (x <= FACE_X[1]) & (y >= FACE_Y[0]) & (y <= FACE_Y[1])


def box_scene_depth(camera: Intrinsics) -> np.ndarray:
    """z-depth in metres (float64) of the wall-and-box scene."""
    return np.where(box_face(camera), FACE_M, WALL_M)


def leaky(mask: np.ndarray, pixels: int = 2) -> np.ndarray:
    """The mask grown by `pixels` on its right and bottom edges: background a real mask leaks."""
    grown = mask.copy()
    for shift in range(1, pixels + 1):
        grown[:, shift:] |= mask[:, :-shift]
        grown[shift:, :] |= mask[:-shift, :]
    return grown


def as_encoding(depth_m: np.ndarray, encoding: str) -> np.ndarray:
    if encoding == "16UC1":
        return np.round(np.nan_to_num(depth_m, nan=0.0) * 1000).astype(np.uint16)
    return depth_m.astype(np.float32)


def assert_close(geometry: ObjectGeometry, centre, size, *, centre_tol=0.01, size_tol=0.02):
    assert geometry.status is DepthStatus.OK, geometry.reason
    assert np.abs(np.subtract(geometry.position, centre)).max() < centre_tol, geometry.position
    error = np.abs(np.subtract(geometry.size, size))
    assert error.max() < size_tol, (geometry.size, size)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
@pytest.mark.parametrize("color", [CENTRED, OFF_CENTRE], ids=["centred", "off-centre"])
@pytest.mark.parametrize("depth_scale", [1, 2], ids=["full-res", "half-res"])
def test_box_face_position_and_extent(encoding, color, depth_scale):
    depth_camera = color.scaled_to(color.width // depth_scale, color.height // depth_scale)
    raw = as_encoding(box_scene_depth(depth_camera), encoding)
    mask = leaky(box_face(color))

    geometry = locate_object(mask, depth_to_metres(raw, encoding), color)

    assert_close(geometry, FACE_CENTRE, FACE_SIZE)
    assert geometry.valid_ratio > 0.99
    assert geometry.size[2] < 0.005  # a flat face: no depth extent


def test_explicit_depth_intrinsics_equal_the_scaled_default():
    depth_camera = OFF_CENTRE.scaled_to(320, 240)
    depth_m = depth_to_metres(as_encoding(box_scene_depth(depth_camera), "32FC1"), "32FC1")
    mask = box_face(OFF_CENTRE)
    assert locate_object(mask, depth_m, OFF_CENTRE, depth_camera) == locate_object(
        mask, depth_m, OFF_CENTRE
    )


def test_background_leak_does_not_move_the_centroid_without_erosion():
    """A 6-pixel leak onto the wall (0.8 m behind) is rejected by the depth band alone."""
    mask = leaky(box_face(CENTRED), pixels=6)
    depth_m = depth_to_metres(as_encoding(box_scene_depth(CENTRED), "32FC1"), "32FC1")

    geometry = locate_object(mask, depth_m, CENTRED, erode_px=0)

    assert_close(geometry, FACE_CENTRE, FACE_SIZE)
    assert geometry.valid_ratio == 1.0  # the wall is valid depth, only not the object's


# A face 0.30 m wide, 0.16 m high, centred 1.0 m ahead, turned 35 degrees about the y axis.
TILT = np.radians(35.0)
TILT_CENTRE = np.array([0.03, -0.02, 1.0])
TILT_HALF = (0.15, 0.08)
TILT_AXIS_U = np.array([np.cos(TILT), 0.0, np.sin(TILT)])
TILT_NORMAL = np.array([-np.sin(TILT), 0.0, np.cos(TILT)])


def tilted_face(camera: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """(hit mask, z-depth of the hit) of the tilted face, per pixel."""
    rx, ry = rays(camera)
    t = TILT_NORMAL @ TILT_CENTRE / (TILT_NORMAL[0] * rx + TILT_NORMAL[2])
    along = (rx * t - TILT_CENTRE[0]) * TILT_AXIS_U[0] + (t - TILT_CENTRE[2]) * TILT_AXIS_U[2]
    up = ry * t - TILT_CENTRE[1]
    return (np.abs(along) <= TILT_HALF[0]) & (np.abs(up) <= TILT_HALF[1]), t


def test_tilted_face_centroid_and_x_z_extent():
    """Truth: the face's centre; x extent 2a cos(tilt), z extent 2a sin(tilt). Perspective puts
    more pixels on the near half, which biases the median by a few millimetres (< 1 cm here)."""
    hit, t = tilted_face(CENTRED)
    raw = as_encoding(np.where(hit, t, WALL_M), "16UC1")
    width = 2 * TILT_HALF[0]
    size = (width * np.cos(TILT), 2 * TILT_HALF[1], width * np.sin(TILT))

    geometry = locate_object(leaky(hit), depth_to_metres(raw, "16UC1"), CENTRED)

    assert_close(geometry, TILT_CENTRE, size)
    assert geometry.size[2] > 0.15  # a real depth extent, not flattened by the outlier band


def edge_ring(mask: np.ndarray, width: int) -> np.ndarray:
    """Mask pixels within `width` pixels of its edge."""
    import cv2

    kernel = np.ones((2 * width + 1, 2 * width + 1), np.uint8)
    return mask & ~cv2.erode(mask.astype(np.uint8), kernel).astype(bool)


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_noisy_and_missing_depth_at_the_edge(encoding):
    """A 5-pixel ring at the face's edge: a quarter missing (0, or NaN for 32FC1), a quarter
    bled into the wall's depth, a quarter noisy by +-3 cm; 2 mm noise everywhere."""
    rng = np.random.default_rng(7)
    face = box_face(CENTRED)
    depth = box_scene_depth(CENTRED) + rng.normal(0.0, 0.002, face.shape)
    ring = edge_ring(face, 5)
    kind = rng.integers(0, 4, face.shape)
    depth[ring & (kind == 0)] = np.nan if encoding == "32FC1" else 0.0
    depth[ring & (kind == 1)] = WALL_M
    noisy = ring & (kind == 2)
    depth[noisy] += rng.uniform(-0.03, 0.03, int(noisy.sum()))
    raw = as_encoding(depth, encoding)

    geometry = locate_object(leaky(face, 3), depth_to_metres(raw, encoding), CENTRED)

    assert_close(geometry, FACE_CENTRE, FACE_SIZE)
    assert 0.8 < geometry.valid_ratio < 1.0


def test_point_cloud_when_asked_and_capped():
    depth_m = depth_to_metres(as_encoding(box_scene_depth(CENTRED), "32FC1"), "32FC1")
    mask = box_face(CENTRED)

    assert locate_object(mask, depth_m, CENTRED).points is None
    geometry = locate_object(mask, depth_m, CENTRED, keep_cloud=True, max_cloud_points=500)

    assert geometry.points.shape == (500, 3) and geometry.points.dtype == np.float32
    assert np.allclose(geometry.points[:, 2], FACE_M)
    lows, highs = geometry.points.min(axis=0), geometry.points.max(axis=0)
    assert FACE_X[0] - 0.01 < lows[0] and highs[0] < FACE_X[1] + 0.01
    assert FACE_Y[0] - 0.01 < lows[1] and highs[1] < FACE_Y[1] + 0.01


def test_a_mask_too_thin_to_erode_falls_back_to_the_whole_mask():
    mask = np.zeros((CENTRED.height, CENTRED.width), bool)
    mask[200:203, 300:340] = True  # 3 rows: a 3-pixel erosion empties it
    depth_m = np.full(mask.shape, 0.9, np.float32)

    geometry = locate_object(mask, depth_m, CENTRED)

    assert geometry.status is DepthStatus.OK
    assert geometry.position[2] == pytest.approx(0.9)
    assert geometry.size[0] == pytest.approx(39 * 0.9 / CENTRED.fx, rel=0.05)


# A fronto-parallel rectangle, 80 x 50 colour pixels, at 0.9 m; fx != fy so the axes differ.
RECT_CAMERA = Intrinsics(fx=600.0, fy=500.0, cx=319.5, cy=239.5, width=640, height=480)
RECT_ROWS, RECT_COLS, RECT_Z = slice(200, 250), slice(280, 360), 0.9


@pytest.mark.parametrize("erode_px", [0, 3, 6])
def test_the_size_gives_back_the_width_the_erosion_shaved_off(erode_px):
    """docs/inference.md: the x/y extent is the percentile range "plus the eroded width", so
    the size does not shrink with the erosion: 80 x 50 pixel centres span 79 x 49 pixels."""
    mask = np.zeros((RECT_CAMERA.height, RECT_CAMERA.width), bool)
    mask[RECT_ROWS, RECT_COLS] = True
    depth_m = np.full(mask.shape, RECT_Z, np.float32)

    geometry = locate_object(mask, depth_m, RECT_CAMERA, erode_px=erode_px)

    assert geometry.status is DepthStatus.OK, geometry.reason
    pixel_x, pixel_y = RECT_Z / RECT_CAMERA.fx, RECT_Z / RECT_CAMERA.fy  # one pixel, in metres
    assert geometry.size[0] == pytest.approx(79 * pixel_x, abs=0.2 * pixel_x)
    assert geometry.size[1] == pytest.approx(49 * pixel_y, abs=0.2 * pixel_y)


def band_scene(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 40 x 50 mask whose depth pixels hold `values` (2000 of them), on a 640x480 frame."""
    mask = np.zeros((CENTRED.height, CENTRED.width), bool)
    mask[200:240, 300:350] = True
    depth_m = np.full(mask.shape, np.nan, np.float32)
    depth_m[mask] = values
    return mask, depth_m


def test_a_spread_out_object_keeps_depths_within_3_robust_sigmas():
    """docs/inference.md: depths further than max(3 robust sigmas (MAD), 5 cm) from the median
    are dropped. Depths spread evenly over 1.0 +- 0.1 m: MAD 0.05 m, sigma 0.074 m, so the band
    is 3 sigma = 0.222 m (wider than 5 cm): 20 cm off is kept, 25 cm off is dropped."""
    kept = [1.2, 1.2, 0.8]  # 20 cm off: beyond 5 cm and 2 sigma, within 3 sigma
    dropped = [1.25, 0.75]  # 25 cm off: beyond 3 sigma, within 4
    values = np.concatenate([np.linspace(0.9, 1.1, 2000 - 5), kept, dropped])
    mask, depth_m = band_scene(values.astype(np.float32))

    geometry = locate_object(mask, depth_m, CENTRED, erode_px=0, keep_cloud=True)

    assert geometry.status is DepthStatus.OK, geometry.reason
    assert geometry.valid_ratio == 1.0  # every depth is valid: only the band drops some
    assert geometry.valid_points == 2000 - len(dropped)
    z = geometry.points[:, 2]
    assert z.max() == pytest.approx(1.2) and z.min() == pytest.approx(0.8)


def test_a_flat_object_keeps_depths_within_5_cm():
    """docs/inference.md: the band is never narrower than 5 cm. A flat face (1.0 m +- 1 mm:
    3 robust sigmas are 2 mm) keeps depths 4.5 cm off and drops those 5.5 cm off."""
    kept = [1.045, 0.955]
    dropped = [1.055, 0.945]
    flat = 1.0 + np.resize([-0.001, 0.0, 0.001], 2000 - 4)
    values = np.concatenate([flat, kept, dropped])
    mask, depth_m = band_scene(values.astype(np.float32))

    geometry = locate_object(mask, depth_m, CENTRED, erode_px=0, keep_cloud=True)

    assert geometry.status is DepthStatus.OK, geometry.reason
    assert geometry.valid_points == 2000 - len(dropped)
    z = geometry.points[:, 2]
    assert z.max() == pytest.approx(1.045) and z.min() == pytest.approx(0.955)


# --- statuses -------------------------------------------------------------------------------


def test_status_names_are_what_the_node_publishes():
    assert [s.value for s in DepthStatus] == [s.name for s in DepthStatus]
    assert DepthStatus.NO_VALID_DEPTH == "NO_VALID_DEPTH"


@pytest.mark.parametrize("invalid", [0.0, np.nan, np.inf, 0.05, 25.0])
def test_no_valid_depth_inside_the_mask(invalid):
    depth_m = np.full((CENTRED.height, CENTRED.width), invalid, np.float32)
    depth_m[:, :50] = 1.0  # valid depth elsewhere does not count
    mask = box_face(CENTRED)

    geometry = locate_object(mask, depth_to_metres(depth_m, "32FC1"), CENTRED)

    assert geometry.status is DepthStatus.NO_VALID_DEPTH
    assert "no valid depth" in geometry.reason
    assert geometry.position is None and geometry.size is None and geometry.valid_points == 0


def test_an_empty_mask_has_no_valid_depth():
    mask = np.zeros((CENTRED.height, CENTRED.width), bool)
    depth_m = np.ones(mask.shape, np.float32)
    geometry = locate_object(mask, depth_m, CENTRED)
    assert geometry.status is DepthStatus.NO_VALID_DEPTH and "empty" in geometry.reason


def test_mask_not_at_the_colour_resolution():
    mask = np.ones((240, 320), bool)
    geometry = locate_object(mask, np.ones((480, 640), np.float32), CENTRED)
    assert geometry.status is DepthStatus.RESOLUTION_MISMATCH
    assert "(240, 320)" in geometry.reason and "480x640" in geometry.reason


def test_depth_with_another_aspect_ratio():
    mask = box_face(CENTRED)
    geometry = locate_object(mask, np.ones((360, 640), np.float32), CENTRED)
    assert geometry.status is DepthStatus.RESOLUTION_MISMATCH
    assert "aspect" in geometry.reason


def test_depth_intrinsics_for_another_size():
    mask = box_face(CENTRED)
    depth_m = np.ones((240, 320), np.float32)
    geometry = locate_object(mask, depth_m, CENTRED, CENTRED)
    assert geometry.status is DepthStatus.RESOLUTION_MISMATCH
    assert "320x240" in geometry.reason and "640x480" in geometry.reason


def test_locate_object_refuses_raw_units():
    mask = box_face(CENTRED)
    raw = np.full(mask.shape, 700, np.uint16)  # forgot depth_to_metres
    geometry = locate_object(mask, raw, CENTRED)
    assert geometry.status is DepthStatus.BAD_DEPTH and "uint16" in geometry.reason


@pytest.mark.parametrize(
    "array, encoding, words",
    [
        (np.zeros((4, 4, 3), np.uint8), "rgb8", "unsupported depth encoding 'rgb8'"),
        (np.zeros((4, 4), np.uint8), "16UC1", "must be uint16, got uint8"),
        (np.zeros((4, 4), np.float32), "16UC1", "must be uint16, got float32"),
        (np.zeros((4, 4), np.uint16), "32FC1", "must be float, got uint16"),
        (np.zeros((4, 4, 2), np.uint16), "16UC1", "HxW image, got shape (4, 4, 2)"),
        (np.zeros((0, 4), np.uint16), "16UC1", "non-empty"),
    ],
)
def test_bad_depth(array, encoding, words):
    with pytest.raises(DepthError, match=re.escape(words)) as caught:
        depth_to_metres(array, encoding)
    assert caught.value.status is DepthStatus.BAD_DEPTH
    assert isinstance(caught.value, ValueError)


def test_depth_to_metres_units_and_invalid_values():
    raw = np.array([[0, 100, 1234], [65535, 20000, 99]], np.uint16)
    metres = depth_to_metres(raw, "16UC1")
    assert metres.dtype == np.float32 and metres.shape == (2, 3)
    expected = [[np.nan, 0.1, 1.234], [np.nan, 20.0, np.nan]]  # 0, >20 m, <0.1 m are invalid
    np.testing.assert_allclose(metres, expected, rtol=1e-6)
    np.testing.assert_allclose(
        depth_to_metres(raw[:, :, None], "mono16", depth_scale=0.0001)[0],
        [np.nan, np.nan, 0.1234],
        rtol=1e-6,
    )

    floats = np.array([[np.nan, np.inf, -1.0, 0.0, 2.5]], np.float64)
    np.testing.assert_array_equal(
        np.isnan(depth_to_metres(floats, "32FC1")), [[True, True, True, True, False]]
    )
    assert depth_to_metres(floats, "32FC1").dtype == np.float32
    with pytest.raises(ValueError, match="depth_scale"):
        depth_to_metres(raw, "16UC1", depth_scale=0.0)


def test_depth_to_metres_leaves_the_input_alone():
    floats = np.array([[0.0, 1.0]], np.float32)
    depth_to_metres(floats, "32FC1")
    assert floats[0, 0] == 0.0


# --- intrinsics -----------------------------------------------------------------------------


def test_intrinsics_from_camera_info_k():
    k = [615.0, 0.0, 321.5, 0.0, 614.0, 242.25, 0.0, 0.0, 1.0]
    assert Intrinsics.from_k(k, 640, 480) == Intrinsics(615.0, 614.0, 321.5, 242.25, 640, 480)


@pytest.mark.parametrize(
    "k, size, words",
    [
        ([0.0] * 9, (640, 480), "fx > 0 and fy > 0"),
        ([600, 0, 320, 0, -1, 240, 0, 0, 1], (640, 480), "fy=-1.0"),
        ([600, 0, 320, 0, 600, 240], (640, 480), "9 values"),
        ([600, 0, 320, 0, 600, 240, 0, 0, 1], (0, 480), "0x480"),
        ([600, 0, np.nan, 0, 600, 240, 0, 0, 1], (640, 480), "finite"),
    ],
)
def test_intrinsics_errors_name_the_problem(k, size, words):
    with pytest.raises(ValueError, match=re.escape(words)):
        Intrinsics.from_k(k, *size)


def test_scaled_to_keeps_pixel_centres_on_the_same_rays():
    half = CENTRED.scaled_to(320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == (300.0, 300.0, 159.5, 119.5)
    assert (half.width, half.height) == (320, 240)
    # Pixel-centre convention: the image's outer edge (-0.5) stays on the same ray.
    assert (-0.5 - half.cx) / half.fx == pytest.approx((-0.5 - CENTRED.cx) / CENTRED.fx)
    odd = OFF_CENTRE.scaled_to(1280, 960)
    assert (odd.fx, odd.cx, odd.cy) == (1220.0, 602.5, 524.5)
    assert odd.scaled_to(640, 480) == OFF_CENTRE


def test_geometry_json_summary():
    depth_m = depth_to_metres(as_encoding(box_scene_depth(CENTRED), "32FC1"), "32FC1")
    summary = locate_object(box_face(CENTRED), depth_m, CENTRED).to_json_dict()
    assert summary["depth_status"] == "OK" and summary["depth_reason"] == ""
    assert summary["position_m"][2] == pytest.approx(FACE_M)
    assert len(summary["size_m"]) == 3 and summary["depth_points"] > 1000
    assert summary["valid_depth_ratio"] == 1.0
    off = ObjectGeometry(DepthStatus.OFF).to_json_dict()
    assert off["depth_status"] == "OFF" and off["position_m"] is None


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_raw_depth_converts_only_what_is_read_and_gives_the_same_geometry(encoding):
    color = Intrinsics(fx=500.0, fy=500.0, cx=319.5, cy=239.5, width=640, height=480)
    metres = np.full((480, 640), 1.5, np.float32)
    metres[200:280, 280:360] = 0.7
    metres[210:220, 290:300] = 0.0  # missing readings
    raw = np.round(metres * 1000).astype(np.uint16) if encoding == "16UC1" else metres
    mask = np.zeros((480, 640), bool)
    mask[198:282, 278:362] = True
    lazy = RawDepth(raw, encoding)
    assert lazy.shape == (480, 640)
    window = lazy.metres(slice(205, 215), slice(285, 295))
    assert window.shape == (10, 10) and np.isnan(window[5:, 5:]).all()
    assert np.allclose(window[:5, :5], 0.7)
    eager = locate_object(mask, depth_to_metres(raw, encoding), color)
    assert locate_object(mask, lazy, color) == eager and eager.ok


def test_raw_depth_checks_the_encoding_at_once():
    with pytest.raises(DepthError, match="unsupported depth encoding 'rgb8'") as caught:
        RawDepth(np.zeros((4, 4, 3), np.uint8), "rgb8")
    assert caught.value.status is DepthStatus.BAD_DEPTH
    with pytest.raises(DepthError, match="16UC1 depth must be uint16, got float32"):
        RawDepth(np.zeros((4, 4), np.float32), "16UC1")
