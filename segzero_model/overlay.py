"""A picture of a result for people (CLI output, rviz/rqt): mask tinted, box and points drawn."""

from __future__ import annotations

import numpy as np

from segzero_model.result import SegmentationResult

MASK_COLOR = (255, 64, 0)  # RGB
BOX_COLOR = (0, 255, 0)
POINT_COLOR = (255, 255, 0)


def draw_overlay(
    image_rgb: np.ndarray, result: SegmentationResult, alpha: float = 0.5
) -> np.ndarray:
    """Return a new HxWx3 uint8 RGB image; `image_rgb` is left untouched."""
    import cv2

    canvas = image_rgb.copy()
    if result.mask is not None and result.mask.shape == canvas.shape[:2]:
        tint = np.array(MASK_COLOR, dtype=np.float32)
        region = canvas[result.mask].astype(np.float32)
        canvas[result.mask] = (region * (1.0 - alpha) + tint * alpha).astype(np.uint8)
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    if result.bbox is not None:
        x1, y1, x2, y2 = (round(v) for v in result.bbox)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOR, thickness)
    for x, y in result.points or ():
        cv2.circle(canvas, (round(x), round(y)), 2 * thickness + 2, POINT_COLOR, -1)
    return canvas
