import numpy as np
import pytest
from PIL import Image

from segzero_model.errors import ImageLoadError, InvalidImageError
from segzero_model.images import load_image, save_image, to_rgb8


def test_rgb8_passes_through():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert np.array_equal(to_rgb8(image), image)


def test_gray_becomes_three_equal_channels():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    rgb = to_rgb8(gray)
    assert rgb.shape == (3, 4, 3)
    assert np.array_equal(rgb[..., 0], gray) and np.array_equal(rgb[..., 2], gray)
    assert np.array_equal(to_rgb8(gray[..., None]), rgb)


def test_rgba_drops_alpha():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 10
    assert to_rgb8(rgba)[0, 0].tolist() == [200, 0, 0]


def test_16_bit_is_scaled_to_8_bit():
    image = np.array([[0, 257, 65535, 32896]], np.uint16)
    assert to_rgb8(image)[0, :, 0].tolist() == [0, 1, 255, 128]


def test_float_and_bool():
    assert to_rgb8(np.array([[0.0, 1.0, 0.5]]))[0, :, 1].tolist() == [0, 255, 128]
    assert to_rgb8(np.array([[True, False]]))[0, :, 0].tolist() == [255, 0]
    with pytest.raises(InvalidImageError, match="NaN"):
        to_rgb8(np.array([[np.nan]]))


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((0, 5, 3), np.uint8), "zero size"),
        (np.zeros((4, 4, 2), np.uint8), "shape"),
        (np.zeros((2, 2, 2, 3), np.uint8), "shape"),
        (np.zeros((2, 2), np.int64), "dtype"),
    ],
)
def test_unsupported_arrays_are_rejected_with_the_layout(array, message):
    with pytest.raises(InvalidImageError, match=message):
        to_rgb8(array)


def test_pil_modes():
    assert to_rgb8(Image.new("L", (4, 3), 7)).shape == (3, 4, 3)
    assert to_rgb8(Image.new("RGBA", (4, 3), (1, 2, 3, 4)))[0, 0].tolist() == [1, 2, 3]
    assert to_rgb8(Image.new("P", (4, 3))).shape == (3, 4, 3)
    sixteen = Image.fromarray(np.full((3, 4), 65535, np.uint16))
    assert to_rgb8(sixteen)[0, 0].tolist() == [255, 255, 255]
    with pytest.raises(InvalidImageError, match="type"):
        to_rgb8("not an image")


def test_load_keeps_rgb_order(tmp_path):
    image = np.zeros((4, 6, 3), np.uint8)
    image[..., 0] = 255  # pure red
    save_image(tmp_path / "red.png", image)
    assert load_image(tmp_path / "red.png")[0, 0].tolist() == [255, 0, 0]


def test_load_16_bit_gray_and_rgba_png(tmp_path):
    import cv2

    cv2.imwrite(str(tmp_path / "deep.png"), np.full((3, 5), 65535, np.uint16))
    assert load_image(tmp_path / "deep.png").shape == (3, 5, 3)
    assert load_image(tmp_path / "deep.png").max() == 255
    Image.new("RGBA", (5, 3), (10, 20, 30, 0)).save(tmp_path / "alpha.png")
    assert load_image(tmp_path / "alpha.png")[0, 0].tolist() == [10, 20, 30]


def test_missing_unreadable_and_directory(tmp_path):
    with pytest.raises(ImageLoadError, match="not found"):
        load_image(tmp_path / "nope.png")
    (tmp_path / "junk.png").write_bytes(b"definitely not a png")
    with pytest.raises(ImageLoadError, match="cannot decode"):
        load_image(tmp_path / "junk.png")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageLoadError, match="cannot decode"):
        load_image(tmp_path / "empty.png")
    with pytest.raises(ImageLoadError, match="not a file"):
        load_image(tmp_path)


def test_bundled_demo_image_loads():
    from pathlib import Path

    import segzero_model

    path = Path(segzero_model.__file__).parent / "assets" / "kitchen.png"
    assert load_image(path).shape == (480, 640, 3)
