"""Draw the bundled demo image segzero_model/assets/kitchen.png (a table with a red cup, a blue
bottle and a green apple), so the demo and tests need no downloaded photo."""

from pathlib import Path

import cv2
import numpy as np


def draw_scene(width: int = 640, height: int = 480) -> np.ndarray:
    image = np.full((height, width, 3), (225, 215, 200), np.uint8)  # wall (BGR)
    cv2.rectangle(image, (0, 300), (width, height), (60, 105, 150), -1)  # wooden table
    # red cup: a trapezoid body and a handle
    body = np.array([[150, 200], [250, 200], [240, 330], [160, 330]], np.int32)
    cv2.fillConvexPoly(image, body, (30, 30, 200))
    cv2.ellipse(image, (255, 262), (28, 38), 0, -90, 90, (30, 30, 200), 12)
    cv2.ellipse(image, (200, 200), (50, 10), 0, 0, 360, (20, 20, 140), -1)
    # blue bottle
    cv2.rectangle(image, (360, 150), (420, 340), (180, 80, 30), -1)
    cv2.rectangle(image, (378, 110), (402, 150), (150, 60, 20), -1)
    # green apple
    cv2.circle(image, (520, 300), 42, (60, 170, 70), -1)
    cv2.line(image, (520, 258), (526, 240), (40, 60, 90), 4)
    return cv2.GaussianBlur(image, (3, 3), 0)


if __name__ == "__main__":
    out = Path(__file__).resolve().parents[1] / "segzero_model" / "assets" / "kitchen.png"
    cv2.imwrite(str(out), draw_scene())
    print(f"wrote {out}")
