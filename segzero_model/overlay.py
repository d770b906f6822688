"""A picture of a result for people (CLI output, rviz/rqt): mask tinted, box and points drawn."""

from __future__ import annotations

import numpy as np

from segzero_model.result import ObjectResult, SegmentationResult

MASK_COLOR = (255, 64, 0)  # RGB
BOX_COLOR = (0, 255, 0)
POINT_COLOR = (255, 255, 0)
OBJECT_COLORS = (MASK_COLOR, (0, 128, 255), (255, 0, 200), (0, 200, 120), (160, 80, 255))


def draw_overlay(
    image_rgb: np.ndarray, result: SegmentationResult, alpha: float = 0.5
) -> np.ndarray:
    """Return a new HxWx3 uint8 RGB image with every object's mask, box and points drawn
    (`image_rgb` is left untouched); the first object in MASK_COLOR, the others in
    OBJECT_COLORS so neighbours can be told apart."""
    import cv2

    canvas = image_rgb.copy()
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    objects = result.objects or [ObjectResult(result.bbox, result.points or (), result.mask)]
    for index, obj in enumerate(objects):
        color = OBJECT_COLORS[index % len(OBJECT_COLORS)]
        if obj.mask is not None and obj.mask.shape == canvas.shape[:2]:
            tint = np.array(color, dtype=np.float32)
            region = canvas[obj.mask].astype(np.float32)
            canvas[obj.mask] = (region * (1.0 - alpha) + tint * alpha).astype(np.uint8)
    for obj in objects:
        if obj.bbox is not None:
            x1, y1, x2, y2 = (round(v) for v in obj.bbox)
            cv2.rectangle(canvas, (x1, y1), (x2, y2), BOX_COLOR, thickness)
        for x, y in obj.points or ():
            cv2.circle(canvas, (round(x), round(y)), 2 * thickness + 2, POINT_COLOR, -1)
    return canvas
