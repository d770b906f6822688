import pytest

from segzero_model.reasoning.frames import REASONING_SIZE, scale_box, scale_xy, to_frame_xy


def test_scale_back_to_original_frame():
    assert REASONING_SIZE == 840
    assert scale_xy(420, 420, 640, 480) == (320.0, 240.0)
    assert scale_box((0, 0, 840, 840), 1920, 1080) == (0.0, 0.0, 1920.0, 1080.0)
    assert scale_box((84, 168, 420, 630), 640, 480) == pytest.approx((64, 96, 320, 360))


def test_to_frame_inverts_scale():
    x, y = to_frame_xy(*scale_xy(123, 456, 333, 777), 333, 777)
    assert (x, y) == pytest.approx((123, 456))
