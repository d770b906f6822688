"""segzero_model/spatial/frames.py: the transform arithmetic the node applies to tf2's answer."""

import math

import numpy as np
import pytest

from segzero_model.spatial.frames import RigidTransform


def test_identity_rotation_only_translates():
    move = RigidTransform((1.0, -2.0, 0.5), (0.0, 0.0, 0.0, 1.0))
    assert move.apply((0.1, 0.2, 0.3)) == pytest.approx((1.1, -1.8, 0.8))


def test_a_quarter_turn_about_z_then_the_translation():
    """90 degrees about z maps x to y and y to -x; the translation comes after the rotation."""
    half = math.sqrt(0.5)
    turn = RigidTransform((10.0, 0.0, 0.0), (0.0, 0.0, half, half))
    assert turn.apply((1.0, 0.0, 0.0)) == pytest.approx((10.0, 1.0, 0.0))
    assert turn.apply((0.0, 1.0, 0.0)) == pytest.approx((9.0, 0.0, 0.0))
    assert turn.apply((0.0, 0.0, 2.0)) == pytest.approx((10.0, 0.0, 2.0))


def test_the_camera_optical_frame_into_a_robots_base():
    """The usual optical -> base_link rotation (z forward -> x forward, x right -> -y, y down
    -> -z), quaternion (-0.5, 0.5, -0.5, 0.5), camera 1.2 m up: a point 2 m ahead of the lens
    and 0.3 m right of it is 2 m ahead of the base, 0.3 m to its right, at camera height."""
    optical = RigidTransform((0.0, 0.0, 1.2), (-0.5, 0.5, -0.5, 0.5))
    assert optical.apply((0.3, 0.0, 2.0)) == pytest.approx((2.0, -0.3, 1.2))
    assert optical.apply((0.0, 0.5, 2.0)) == pytest.approx((2.0, 0.0, 0.7))  # below the lens
    assert np.allclose(optical.matrix() @ optical.matrix().T, np.eye(3))


def test_an_unnormalised_quaternion_is_normalised_and_a_zero_one_refused():
    scaled = RigidTransform((0.0, 0.0, 0.0), (0.0, 0.0, 2.0, 2.0))
    assert scaled.rotation == pytest.approx((0.0, 0.0, math.sqrt(0.5), math.sqrt(0.5)))
    assert scaled.apply((1.0, 0.0, 0.0)) == pytest.approx((0.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="not a usable quaternion"):
        RigidTransform((0.0, 0.0, 0.0), (0.0, 0.0, 0.0, 0.0))
