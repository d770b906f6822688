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


class StandInTfBuffer:
    """tf2_ros is not importable in the pip-only venv: a buffer that answers one fixed
    transform (camera optical frame -> base_link) as tf2's lookup_transform does, counting
    the lookups."""

    def __init__(self):
        self.lookups = []

    def lookup_transform(self, target, source, time, timeout=None):
        from geometry_msgs.msg import TransformStamped

        self.lookups.append((target, source, time.nanoseconds))
        stamped = TransformStamped()
        stamped.transform.translation.z = 1.2
        q = stamped.transform.rotation
        q.x, q.y, q.z, q.w = -0.5, 0.5, -0.5, 0.5
        return stamped


class Recorder:
    def __init__(self):
        self.messages = []

    def publish(self, msg):
        self.messages.append(msg)


def test_an_answer_in_the_target_frame_looks_its_transform_up_once():
    """position_in_target and the target topic's 3D detections of one answer: one tf2 lookup
    for its frame, the same point in both; a new frame looks up again."""
    import rclpy.logging

    from segzero_ros.detections import Detections, DetectionServices
    from segzero_ros.params import PerceptionParams
    from segzero_ros.spatial import Spatial, SpatialServices

    params = PerceptionParams.from_mapping({"use_depth": True, "target_frame": "base_link"})
    buffer = StandInTfBuffer()
    spatial = Spatial(
        SpatialServices(
            params=lambda: params,
            logger=rclpy.logging.get_logger("test_detections"),
            publisher=lambda name: None,
            subscribe=None,
            unsubscribe=None,
            resolve_topic=str,
            tf_buffer=lambda: (buffer, None),
        )
    )
    publishers = {name: Recorder() for name in ("detections", "detections_3d")}
    publishers["detections_3d_target"] = Recorder()
    detections = Detections(
        DetectionServices(
            params=lambda: params,
            publisher=publishers.get,
            target_transform=spatial.target_transform,
        )
    )
    header = Header(frame_id="camera_optical")
    header.stamp.sec = 7
    located = ObjectGeometry(DepthStatus.OK, position=(0.3, 0.0, 2.0), size=(0.1, 0.2, 0.3))

    position = spatial._in_target(header, located)
    detections.publish(header, [Detected("q1/1", "the cup", 0.8, (0, 0, 1, 1), located)])
    assert buffer.lookups == [("base_link", "camera_optical", 7 * 10**9)]
    assert (position.header.frame_id, position.header.stamp.sec) == ("base_link", 7)
    point = position.point
    assert (point.x, point.y, point.z) == pytest.approx((2.0, -0.3, 1.2))
    (array,) = publishers["detections_3d_target"].messages
    assert array.header.frame_id == "base_link" and array.header.stamp.sec == 7
    assert array.detections[0].bbox.center.position == point
    assert publishers["detections_3d"].messages[0].header.frame_id == "camera_optical"

    header.stamp.sec = 8
    spatial._in_target(header, located)
    assert len(buffer.lookups) == 2
