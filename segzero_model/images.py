"""Turn whatever image a user or camera hands us into the one layout both models take:
an HxWx3 uint8 RGB array. Grayscale, alpha, 16-bit and float inputs are converted; anything
else is rejected with a message that names the layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from segzero_model.errors import ImageLoadError, InvalidImageError


def to_rgb8(image) -> np.ndarray:
    """Return `image` (numpy array or PIL image) as a contiguous HxWx3 uint8 RGB array.

    Accepted: HxW or HxWx1 (gray), HxWx3 (RGB), HxWx4 (RGBA, alpha dropped); uint8, uint16
    (scaled by 1/257 so 65535 → 255), bool, and floats in [0, 1].
    """
    if not isinstance(image, np.ndarray):
        image = _pil_to_array(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise InvalidImageError(
            f"unsupported image shape {image.shape}; expected HxW, HxWx1, HxWx3 or HxWx4"
        )
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise InvalidImageError(f"image has zero size: shape {image.shape}")
    image = _to_uint8(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 4:
        image = image[:, :, :3]
    image = np.ascontiguousarray(image)
    # Arrays viewing PIL or message buffers are read-only; torch warns on those and may not
    # share them, so hand out a writable copy.
    return image if image.flags.writeable else image.copy()


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all():
            raise InvalidImageError("float image contains NaN or infinity")
        return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    raise InvalidImageError(
        f"unsupported image dtype {image.dtype}; expected uint8, uint16, bool or float in [0, 1]"
    )


def _pil_to_array(image) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError as error:  # pragma: no cover - pillow is a dependency
        raise InvalidImageError(f"unsupported image type {type(image).__name__}") from error
    if not isinstance(image, Image.Image):
        raise InvalidImageError(
            f"unsupported image type {type(image).__name__}; expected a numpy array or PIL image"
        )
    if image.mode in ("I;16", "I;16B", "I;16L"):
        return np.asarray(image).astype(np.uint16)
    if image.mode not in ("RGB", "L", "RGBA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return np.asarray(image)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (PNG, JPEG, TIFF, ... including 16-bit) as HxWx3 uint8 RGB."""
    import cv2

    path = Path(path)
    if not path.exists():
        raise ImageLoadError(f"image file not found: {path}")
    if not path.is_file():
        raise ImageLoadError(f"not a file: {path}")
    data = np.fromfile(path, dtype=np.uint8)
    decoded = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if decoded is None:
        raise ImageLoadError(f"cannot decode image file {path} (not an image, or corrupt)")
    if decoded.ndim == 3 and decoded.shape[2] == 3:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    elif decoded.ndim == 3 and decoded.shape[2] == 4:
        decoded = cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA)
    try:
        return to_rgb8(decoded)
    except InvalidImageError as error:
        raise ImageLoadError(f"{path}: {error}") from error


def save_image(path: str | os.PathLike, image_rgb: np.ndarray) -> None:
    """Write an RGB (or single-channel) uint8 image; the format follows the file suffix."""
    import cv2

    array = image_rgb if image_rgb.ndim == 2 else cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR)
    suffix = Path(path).suffix or ".png"
    ok, encoded = cv2.imencode(suffix, array)
    if not ok:
        raise ValueError(f"cannot encode an image as {suffix!r} for {path}")
    Path(path).write_bytes(encoded.tobytes())
