"""Rigid transforms between coordinate frames, as tf2 hands them out (a translation and a unit
quaternion x, y, z, w), applied to the points and boxes the 3D stage makes.

The ROS node looks the transform up (tf2_ros); the arithmetic lives here so that it is one
definition, tested without ROS: a position goes to the target frame as
``R @ p + t``, and an axis-aligned box in the camera frame keeps its size and takes the
transform's rotation as its orientation (the same box, seen from the target frame).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RigidTransform:
    """`target_from_source`: maps a point given in the source frame into the target frame."""

    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]  # quaternion x, y, z, w (tf2's order)

    def __post_init__(self) -> None:
        norm = float(np.linalg.norm(self.rotation))
        if not np.isfinite(norm) or norm < 1e-9:
            raise ValueError(f"rotation {self.rotation} is not a usable quaternion")
        if abs(norm - 1.0) > 1e-6:  # tf2 normalises; a hand-written one may not be
            object.__setattr__(self, "rotation", tuple(float(v) / norm for v in self.rotation))

    def matrix(self) -> np.ndarray:
        """The 3x3 rotation matrix of the quaternion."""
        x, y, z, w = self.rotation
        return np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )

    def apply(self, point) -> tuple[float, float, float]:
        """`point` (x, y, z in the source frame) in the target frame."""
        moved = self.matrix() @ np.asarray(point, dtype=float) + np.asarray(self.translation)
        return tuple(float(v) for v in moved)
