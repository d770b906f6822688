"""segzero_ros.convert: camera messages → RGB arrays, results → messages (no node needed).

Messages are built by hand here (not with the functions under test) and, where it matters,
sent through the ROS serializer first, so the data field has the type a subscriber sees.
The result-message checks need the generated segzero_ros messages (`source install/setup.bash`,
as scripts/test.sh does) and are skipped without them.
"""

from __future__ import annotations

import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from segzero_model.result import ObjectResult, SegmentationResult, Status
from segzero_model.segmentation.tracks import LOST, TRACKING
from segzero_model.spatial.depth import DepthError, DepthStatus
from segzero_ros.convert import (
    SUPPORTED_ENCODINGS,
    ImageConversionError,
    compressed_msg_to_rgb,
    depth_msg_to_array,
    image_msg_to_rgb,
    instance_image_msg,
    mask_to_image_msg,
    result_objects,
    result_to_msg,
    rgb_to_image_msg,
    status_code,
    status_from_code,
    track_state_code,
)

MSG_DIR = Path(__file__).resolve().parents[2] / "msg"

RNG = np.random.default_rng(7)
H, W = 5, 7


def received(msg):
    """The message as a subscriber gets it (through serialization)."""
    return deserialize_message(serialize_message(msg), type(msg))


def image_msg(pixels: np.ndarray, encoding: str, padding: int = 0, big_endian: bool = False):
    """Image message of `pixels` (HxW or HxWxC, uint8 or uint16) with `padding` junk bytes at
    the end of every row."""
    height, width = pixels.shape[:2]
    if pixels.dtype == np.uint16:
        pixels = pixels.astype(">u2" if big_endian else "<u2")
    rows = np.ascontiguousarray(pixels).view(np.uint8).reshape(height, -1)
    junk = RNG.integers(0, 256, (height, padding), dtype=np.uint8)
    data = np.concatenate([rows, junk], axis=1)
    return received(
        Image(
            header=Header(frame_id="cam"),
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=int(big_endian),
            step=data.shape[1],
            data=data.tobytes(),
        )
    )


def random_pixels(channels: int, dtype=np.uint8) -> np.ndarray:
    high = 256 if dtype == np.uint8 else 65536
    shape = (H, W) if channels == 1 else (H, W, channels)
    return RNG.integers(0, high, shape, dtype=dtype)


def gray_to_rgb(gray8: np.ndarray) -> np.ndarray:
    return np.repeat(gray8[:, :, None], 3, axis=2)


# expected RGB from the raw pixels, computed independently of convert.py
COLOR_CASES = {
    "rgb8": (3, lambda p: p),
    "bgr8": (3, lambda p: p[:, :, ::-1]),
    "rgba8": (4, lambda p: p[:, :, :3]),
    "bgra8": (4, lambda p: p[:, :, 2::-1]),
    "mono8": (1, gray_to_rgb),
    "8UC1": (1, gray_to_rgb),
}


@pytest.mark.parametrize("padding", [0, 3])
@pytest.mark.parametrize("encoding", sorted(COLOR_CASES))
def test_8bit_encodings(encoding, padding):
    channels, expected = COLOR_CASES[encoding]
    pixels = random_pixels(channels)
    rgb = image_msg_to_rgb(image_msg(pixels, encoding, padding))
    assert rgb.dtype == np.uint8 and rgb.shape == (H, W, 3) and rgb.flags.c_contiguous
    np.testing.assert_array_equal(rgb, expected(pixels))


@pytest.mark.parametrize("padding", [0, 4])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("encoding", ["mono16", "16UC1"])
def test_16bit_gray_both_endiannesses(encoding, big_endian, padding):
    pixels = random_pixels(1, np.uint16)
    pixels[0, :3] = [0, 65535, 257 * 100]
    rgb = image_msg_to_rgb(image_msg(pixels, encoding, padding, big_endian))
    expected = ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    np.testing.assert_array_equal(rgb, gray_to_rgb(expected))
    assert list(rgb[0, :3, 0]) == [0, 255, 100]


def test_supported_encodings_are_all_tested():
    assert set(SUPPORTED_ENCODINGS) == set(COLOR_CASES) | {"mono16", "16UC1"}


def test_the_result_is_a_copy():
    msg = image_msg(random_pixels(3), "rgb8")
    rgb = image_msg_to_rgb(msg)
    rgb[:] = 0
    assert image_msg_to_rgb(msg).any()


def test_wrong_data_size():
    msg = image_msg(random_pixels(3), "rgb8")
    msg.data = bytes(msg.data)[:-1]
    with pytest.raises(ImageConversionError, match=rf"data has {H * W * 3 - 1} bytes .* {H} x"):
        image_msg_to_rgb(msg)


def test_step_too_short():
    msg = image_msg(random_pixels(3), "bgr8")
    msg.step = W * 3 - 1
    with pytest.raises(ImageConversionError, match=rf"step {W * 3 - 1} is shorter .* bgr8"):
        image_msg_to_rgb(msg)


@pytest.mark.parametrize("height, width", [(0, 4), (4, 0), (0, 0)])
def test_zero_size(height, width):
    msg = Image(height=height, width=width, encoding="rgb8", step=width * 3, data=b"")
    with pytest.raises(ImageConversionError, match="zero size"):
        image_msg_to_rgb(msg)


def test_unknown_encoding_names_it_and_the_supported_ones():
    msg = Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8))
    with pytest.raises(ImageConversionError) as error:
        image_msg_to_rgb(msg)
    text = str(error.value)
    assert "'yuv422'" in text and "rgb8" in text and "mono16" in text


# --------------------------------------------------------------------------- compressed


def compressed(array_bgr_or_gray: np.ndarray, fmt: str) -> CompressedImage:
    ok, encoded = cv2.imencode(f".{fmt}", array_bgr_or_gray)
    assert ok
    return received(CompressedImage(format=fmt, data=encoded.tobytes()))


def test_png_is_lossless_and_rgb_ordered():
    rgb = RNG.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    decoded = compressed_msg_to_rgb(compressed(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "png"))
    np.testing.assert_array_equal(decoded, rgb)


def test_png_gray16_and_bgra():
    gray16 = RNG.integers(0, 65536, (6, 4), dtype=np.uint16)
    decoded = compressed_msg_to_rgb(compressed(gray16, "png"))
    expected = ((gray16.astype(np.uint32) + 128) // 257).astype(np.uint8)
    np.testing.assert_array_equal(decoded, gray_to_rgb(expected))

    bgra = RNG.integers(0, 256, (6, 4, 4), dtype=np.uint8)
    decoded = compressed_msg_to_rgb(compressed(bgra, "png"))
    np.testing.assert_array_equal(decoded, bgra[:, :, 2::-1])


def test_jpeg_decodes_close_to_the_original():
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 30, 40)
    rgb[:, 24:] = (20, 180, 60)
    decoded = compressed_msg_to_rgb(compressed(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), "jpeg"))
    assert decoded.shape == (32, 48, 3)
    assert np.abs(decoded.astype(int) - rgb).mean() < 6
    assert decoded[16, 4, 0] > 150 and decoded[16, 44, 1] > 130  # red left, green right


@pytest.mark.parametrize("data", [b"", b"not an image at all"])
def test_undecodable_compressed(data):
    with pytest.raises(ImageConversionError, match="cannot decode compressed image .*'jpeg'"):
        compressed_msg_to_rgb(CompressedImage(format="jpeg", data=data))


# --------------------------------------------------------------------------- outgoing


def test_rgb_round_trip_keeps_header_and_pixels():
    rgb = RNG.integers(0, 256, (H, W, 3), dtype=np.uint8)
    header = Header(frame_id="camera_optical")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    msg = received(rgb_to_image_msg(rgb, header))
    assert (msg.height, msg.width, msg.encoding, msg.step) == (H, W, "rgb8", W * 3)
    assert msg.header == header
    np.testing.assert_array_equal(image_msg_to_rgb(msg), rgb)


def test_rgb_to_image_msg_of_a_strided_view():
    big = RNG.integers(0, 256, (10, 12, 3), dtype=np.uint8)
    view = big[::2, 1::3]
    msg = rgb_to_image_msg(view, Header())
    np.testing.assert_array_equal(image_msg_to_rgb(msg), view)


def test_mask_to_mono8():
    mask = RNG.random((H, W)) > 0.5
    header = Header(frame_id="cam")
    msg = received(mask_to_image_msg(mask, header))
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("mono8", H, W, W)
    values = np.frombuffer(bytes(msg.data), np.uint8).reshape(H, W)
    assert set(np.unique(values)) <= {0, 255}
    np.testing.assert_array_equal(values == 255, mask)
    assert msg.header.frame_id == "cam"


# --------------------------------------------------------------------------- results


@pytest.fixture()
def result_msg_type():
    module = pytest.importorskip(
        "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
    )
    return module.SegmentationResult


def ok_result() -> SegmentationResult:
    mask = np.zeros((H, W), bool)
    mask[1:4, 2:5] = True
    return SegmentationResult(
        status=Status.OK,
        query="the red cup",
        image_size=(W, H),
        mask=mask,
        bbox=(2.0, 1.0, 4.5, 3.5),
        points=((3.0, 2.0), (4.0, 3.0)),
        score=0.875,
        reasoning="The cup is red.",
        raw_output="<think>The cup is red.</think><answer>{...}</answer>",
        timings={"reasoning_decode": 1.25, "total": 1.5},
        num_generated_tokens=42,
    )


def test_ok_result_to_msg(result_msg_type):
    header = Header(frame_id="cam")
    header.stamp.sec = 99
    msg = received(result_to_msg(ok_result(), header, query_id="q7"))
    assert isinstance(msg, result_msg_type)
    assert msg.header == header and msg.query_id == "q7" and msg.query == "the red cup"
    assert (msg.status, msg.status_name, msg.error) == (result_msg_type.OK, "OK", "")
    assert msg.has_bbox and list(msg.bbox) == [2.0, 1.0, 4.5, 3.5]
    assert [(p.x, p.y, p.z) for p in msg.points] == [(3.0, 2.0, 0.0), (4.0, 3.0, 0.0)]
    assert msg.score == pytest.approx(0.875)
    assert msg.reasoning == "The cup is red." and msg.raw_output.startswith("<think>")
    assert {t.stage: t.seconds for t in msg.timings} == {"reasoning_decode": 1.25, "total": 1.5}
    assert msg.generated_tokens == 42
    assert (msg.depth_status, msg.depth_status_name, msg.has_position) == (0, "OFF", False)
    assert (msg.mask.height, msg.mask.width, msg.mask.encoding) == (H, W, "mono8")
    assert msg.mask.header == header
    mask = np.frombuffer(bytes(msg.mask.data), np.uint8).reshape(H, W) == 255
    np.testing.assert_array_equal(mask, ok_result().mask)


def test_failed_result_to_msg_and_status_override(result_msg_type):
    failed = SegmentationResult(
        status=Status.UNPARSEABLE_ANSWER,
        query="the cup",
        image_size=(W, H),
        reason="no <answer>",
        reasoning=None,
    )
    msg = received(result_to_msg(failed, Header()))
    assert (msg.status, msg.status_name) == (
        result_msg_type.UNPARSEABLE_ANSWER,
        "UNPARSEABLE_ANSWER",
    )
    assert msg.error == "no <answer>" and msg.reasoning == "" and not msg.has_bbox
    assert msg.mask.height == 0 and len(msg.points) == 0 and msg.score == 0.0

    for status in (Status.NO_IMAGE, Status.STALE_IMAGE, Status.DROPPED):  # the node's own
        failed.status = status
        msg = result_to_msg(failed, Header(), query_id="x")
        assert (msg.status, msg.status_name) == (getattr(result_msg_type, status.name), status.name)
        assert msg.query_id == "x" and len(msg.objects) == 0


def two_object_result() -> SegmentationResult:
    """Two objects (the second overlaps the first on one pixel); mask = their union."""
    first = np.zeros((H, W), bool)
    first[1:3, 1:3] = True
    second = np.zeros((H, W), bool)
    second[2:5, 2:6] = True
    objects = [
        ObjectResult((1.0, 1.0, 2.5, 2.5), ((1.5, 1.5), (2.0, 2.0)), first, 0.9),
        ObjectResult(None, ((4.0, 3.0),), second, 0.5),
    ]
    return SegmentationResult(
        status=Status.OK,
        query="the cups",
        image_size=(W, H),
        mask=first | second,
        bbox=objects[0].bbox,
        points=objects[0].points,
        score=0.9,
        reasoning="Two cups.",
        objects=objects,
    )


def test_single_object_result_has_one_object(result_msg_type):
    result = ok_result()  # no `objects`: one object from bbox, points, mask and score
    msg = received(result_to_msg(result, Header()))
    assert len(msg.objects) == 1
    obj = msg.objects[0]
    assert obj.instance_id == 1 and obj.has_bbox and list(obj.bbox) == list(msg.bbox)
    assert [(p.x, p.y) for p in obj.points] == [(3.0, 2.0), (4.0, 3.0)]
    assert obj.score == pytest.approx(0.875) and obj.area == 9 and not obj.has_position


def test_several_objects_to_msg(result_msg_type):
    result = two_object_result()
    msg = received(result_to_msg(result, Header(frame_id="cam"), query_id="q1"))
    assert msg.status == result_msg_type.OK
    assert list(msg.bbox) == [1.0, 1.0, 2.5, 2.5] and msg.score == pytest.approx(0.9)
    union = np.frombuffer(bytes(msg.mask.data), np.uint8).reshape(H, W) == 255
    np.testing.assert_array_equal(union, result.mask)  # the mask topic stays the union
    assert [o.instance_id for o in msg.objects] == [1, 2]
    assert [o.area for o in msg.objects] == [4, 12]
    assert [o.has_bbox for o in msg.objects] == [True, False]
    assert [(p.x, p.y) for p in msg.objects[1].points] == [(4.0, 3.0)]
    assert msg.objects[1].score == pytest.approx(0.5)


def test_instance_image_labels_each_object(result_msg_type):
    result = two_object_result()
    msg = received(instance_image_msg(result, Header(frame_id="cam")))
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("mono16", H, W, 2 * W)
    assert msg.header.frame_id == "cam" and not msg.is_bigendian
    labels = np.frombuffer(bytes(msg.data), "<u2").reshape(H, W)
    first, second = (o.mask for o in result.objects)
    assert (labels[first] == 1).all()  # overlap: the earlier object keeps the pixel
    assert (labels[second & ~first] == 2).all()
    assert (labels[~result.mask] == 0).all()
    single = received(instance_image_msg(ok_result(), Header()))
    values = np.frombuffer(bytes(single.data), "<u2").reshape(H, W)
    np.testing.assert_array_equal(values, ok_result().mask.astype(np.uint16))


def test_not_found_to_msg(result_msg_type):
    result = SegmentationResult(
        status=Status.NOT_FOUND,
        query="the unicorn",
        image_size=(W, H),
        reason="no such object in view",
        reasoning="There is no unicorn here.",
    )
    msg = received(result_to_msg(result, Header()))
    assert (msg.status, msg.status_name) == (result_msg_type.NOT_FOUND, "NOT_FOUND")
    assert msg.reasoning == "There is no unicorn here."
    assert msg.mask.height == 0 and not msg.has_bbox and len(msg.objects) == 0
    assert result_objects(result) == [] and instance_image_msg(result, Header()) is None


def msg_constants(name: str) -> dict[str, dict[str, int]]:
    """The constants of msg/<name>.msg by group, the word before the colon of the comment above
    each ("# status: ..." → "status"), as the file documents them."""
    groups: dict[str, dict[str, int]] = {}
    group = None
    for line in (MSG_DIR / f"{name}.msg").read_text().splitlines():
        comment = re.match(r"#\s*(\w+):", line)
        constant = re.match(r"\w+\s+([A-Z][A-Z0-9_]*)\s*=\s*(\d+)", line)
        if comment:
            group = comment.group(1)
        elif constant:
            assert group is not None, f"{name}.msg: {line!r} has no '# <group>:' comment above"
            groups.setdefault(group, {})[constant.group(1)] = int(constant.group(2))
    return groups


def test_status_is_the_one_definition_of_the_message_status_constants(result_msg_type):
    """Both ways: every Status has the message constant of its name and the message has no
    status constant Status lacks; name → number → name round-trips."""
    groups = msg_constants("SegmentationResult")
    assert set(groups) == {"status", "depth_status"}  # a new group needs its own check
    in_msg = groups["status"]
    assert {s.name for s in Status} == set(in_msg)
    for status in Status:
        code = status_code(status)
        assert code == in_msg[status.name] == getattr(result_msg_type, status.name)
        assert status_from_code(code) is status
    assert len(set(in_msg.values())) == len(in_msg)  # no two statuses share a number
    with pytest.raises(ValueError, match="255"):
        status_from_code(255)


def test_track_states_are_the_message_state_constants():
    """tracks.TRACKING / LOST are the TrackedObject state constants' names, both ways."""
    tracked_object = pytest.importorskip("segzero_ros.msg").TrackedObject
    groups = msg_constants("TrackedObject")
    assert set(groups) == {"state", "depth_status"}
    assert set(groups["state"]) == {TRACKING, LOST}
    for state in (TRACKING, LOST):
        code = track_state_code(state)
        assert code == groups["state"][state] == getattr(tracked_object, state)
    assert track_state_code(TRACKING) != track_state_code(LOST)


# --- depth images ------------------------------------------------------------------------------


def depth_msg(array: np.ndarray, encoding: str, padding: int = 0, big_endian: bool = False):
    """Depth image message of `array` (uint16 or float32), `padding` junk bytes per row."""
    height, width = array.shape
    order = ">" if big_endian else "<"
    raw = array.astype(array.dtype.newbyteorder(order)).view(np.uint8).reshape(height, -1)
    data = np.concatenate([raw, RNG.integers(0, 256, (height, padding), np.uint8)], axis=1)
    return received(
        Image(
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=int(big_endian),
            step=data.shape[1],
            data=data.tobytes(),
        )
    )


@pytest.mark.parametrize("encoding", ["16UC1", "mono16"])
@pytest.mark.parametrize("big_endian", [False, True])
@pytest.mark.parametrize("padding", [0, 6])
def test_16bit_depth_keeps_the_units(encoding, big_endian, padding):
    depth = RNG.integers(0, 65536, (H, W), dtype=np.uint16)
    array = depth_msg_to_array(depth_msg(depth, encoding, padding, big_endian))
    assert array.dtype == np.uint16 and array.dtype.isnative
    np.testing.assert_array_equal(array, depth)


@pytest.mark.parametrize("big_endian", [False, True])
def test_32fc1_depth_is_float_metres(big_endian):
    depth = RNG.uniform(0.2, 5.0, (H, W)).astype(np.float32)
    depth[0, 0] = np.nan
    array = depth_msg_to_array(depth_msg(depth, "32FC1", 4, big_endian))
    assert array.dtype == np.float32 and array.dtype.isnative
    np.testing.assert_array_equal(array, depth)  # NaN compares equal here


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"encoding": "rgb8"}, "unsupported depth encoding 'rgb8' (use 16UC1, mono16, 32FC1)"),
        ({"step": 3}, "step 3 is shorter than a 16UC1 row of width 7"),
        ({"height": H + 1}, "depth data has 70 bytes but height x step = 84"),
        ({"width": 0}, "depth image has zero size (0x5)"),
    ],
)
def test_bad_depth_images_are_bad_depth(change, message):
    msg = depth_msg(np.zeros((H, W), np.uint16), "16UC1")
    for name, value in change.items():
        setattr(msg, name, value)
    with pytest.raises(DepthError) as error:
        depth_msg_to_array(msg)
    assert error.value.status is DepthStatus.BAD_DEPTH and str(error.value) == message
