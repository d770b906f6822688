"""segzero_ros/detections.py alone, on the real vision_msgs messages: a tracked frame's
TRACKING objects become detections named by track id, and 3D boxes go into a target frame
with the transform's rotation and translation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import ros_importorskip

ros_importorskip("segzero_ros.msg", reason="run under `source install/setup.bash`")
ros_importorskip("vision_msgs.msg", reason="vision_msgs: a ROS install or ../shared/ros2-cli")

from std_msgs.msg import Header  # noqa: E402

from segzero_model.segmentation.tracks import LOST, TrackStatus  # noqa: E402
from segzero_model.spatial.depth import DepthStatus, ObjectGeometry  # noqa: E402
from segzero_model.spatial.frames import RigidTransform  # noqa: E402
from segzero_ros.detections import Detected, detection_2d_array, detection_3d_array  # noqa: E402
from segzero_ros.tracking import tracked_detections  # noqa: E402

MASK = np.zeros((4, 4), bool)


def test_a_tracked_frame_names_its_tracking_objects_by_track_id():
    statuses = [
        TrackStatus(3, "the cup", "TRACKING", MASK, (1, 2, 5, 6), 0.9),
        TrackStatus(4, "the cup #2", "TRACKING", MASK, (0, 0, 2, 2), 0.4),
        TrackStatus(5, "the lid", LOST, MASK, None, 0.0, "left the view"),
    ]
    objects = tracked_detections(statuses, [None, None, None])
    array = detection_2d_array(Header(frame_id="cam"), objects)
    assert [d.id for d in array.detections] == ["3", "4"]
    assert [d.results[0].hypothesis.class_id for d in array.detections] == ["the cup"] * 2
    first = array.detections[0].bbox
    assert (first.center.position.x, first.center.position.y, first.size_x) == (3.0, 4.0, 4.0)


def test_a_3d_box_in_the_target_frame_takes_the_transforms_rotation():
    located = ObjectGeometry(DepthStatus.OK, position=(0.3, 0.0, 2.0), size=(0.1, 0.2, 0.3))
    unlocated = ObjectGeometry(DepthStatus.NO_DEPTH, "no depth")
    objects = [
        Detected("q1/1", "the cup", 0.8, (0, 0, 1, 1), located),
        Detected("q1/2", "the cup", 0.5, (0, 0, 1, 1), unlocated),
    ]
    camera = detection_3d_array(Header(frame_id="cam"), objects)
    (only,) = camera.detections  # the unlocated object has no 3D detection
    assert (only.bbox.center.position.z, only.bbox.center.orientation.w) == (2.0, 1.0)
    assert only.results[0].pose.pose == only.bbox.center

    optical_to_base = RigidTransform((0.0, 0.0, 1.2), (-0.5, 0.5, -0.5, 0.5))
    base = detection_3d_array(Header(frame_id="base_link"), objects, optical_to_base)
    (moved,) = base.detections
    p, q = moved.bbox.center.position, moved.bbox.center.orientation
    assert (p.x, p.y, p.z) == pytest.approx((2.0, -0.3, 1.2))
    assert (q.x, q.y, q.z, q.w) == pytest.approx((-0.5, 0.5, -0.5, 0.5))
    assert (moved.bbox.size.x, moved.bbox.size.y, moved.bbox.size.z) == pytest.approx(
        (0.1, 0.2, 0.3)
    )
    assert moved.header.frame_id == "base_link" and not math.isnan(p.x)
