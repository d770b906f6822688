"""The node's answers and tracked frames as the ROS perception ecosystem's detection messages
(vision_msgs), so that trackers, detection-to-3D packages, rviz and Foxglove read them without
an adapter node.

Contract (the parameters are in segzero_ros/params.py, the topics documented in docs/ros.md):
- Only where `vision_msgs` imports (a ROS install has `ros-<distro>-vision-msgs`; the pip-only
  venv does not, and the node then says so once at activate). `publish_detections` switches it.
- `detections_topic`, Detection2DArray, after every answer: OK → one Detection2D per object;
  NOT_FOUND → an empty array (nothing there is news too); other statuses send nothing (they
  say nothing about the scene). After every tracked frame: one per TRACKING object.
- With `use_depth`, `detections_3d_topic`, Detection3DArray, beside each 2D array: one
  Detection3D per object located in depth (colour optical frame, metres); empty when none was.
  With `target_frame` and a transform for the frame's stamp, the same boxes in that frame on
  `detections_3d_target_topic`.
- Every array and detection has the camera frame's header. `id`: "<query_id>/<k>" for object k
  of an answer (k = its instance id, SegmentationResult.objects[k-1]), the track id for a
  tracked object. One hypothesis: `class_id` = the query (a track's query without " #k"),
  `score` = the segmenter's mask score. 2D box: centre and size in pixels of the colour image.
  3D box: centre = the object's position (also the hypothesis' pose), size = its extent;
  orientation identity in the optical frame, the transform's rotation in the target frame.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from geometry_msgs.msg import Point, Pose, Quaternion, Vector3

from segzero_model.spatial.depth import ObjectGeometry
from segzero_model.spatial.frames import RigidTransform
from segzero_ros.spatial import SPATIAL_QOS

# The 3D outputs' QoS (reliable, so rviz's, Foxglove's and trackers' default readers match;
# volatile: detections are news), so the markers and the boxes of one answer arrive alike.
DETECTIONS_QOS = SPATIAL_QOS
# The output publishers' names in the node, and the parameter naming each one's topic.
TOPIC_PARAMS = {
    "detections": "detections_topic",
    "detections_3d": "detections_3d_topic",
    "detections_3d_target": "detections_3d_target_topic",
}
MISSING_HINT = "install ros-<distro>-vision-msgs (pip-only venv: ../shared/ros2-cli/setup.sh)"


@functools.cache
def vision_msgs():
    """The `vision_msgs.msg` module, or the ImportError that says why there is none."""
    try:
        import vision_msgs.msg as module
    except ImportError as error:
        return error
    return module


def available() -> bool:
    return not isinstance(vision_msgs(), ImportError)


def message_types() -> dict[str, type]:
    """The message type of each output publisher (call only when `available()`)."""
    msgs = vision_msgs()
    return {
        "detections": msgs.Detection2DArray,
        "detections_3d": msgs.Detection3DArray,
        "detections_3d_target": msgs.Detection3DArray,
    }


@dataclass(frozen=True)
class Detected:
    """One object as the detection messages carry it."""

    id: str
    class_id: str
    score: float
    box: Sequence[float] | None  # x1, y1, x2, y2 in pixels; None: no 2D detection
    geometry: ObjectGeometry | None = None  # where it is in depth; None or not OK: no 3D one


def answer_objects(msg, geometries: Sequence[ObjectGeometry] | None) -> list[Detected]:
    """The objects of an OK SegmentationResult message (and their geometries, when located)."""
    located = list(geometries or ())
    objects = []
    for k, obj in enumerate(msg.objects):
        objects.append(
            Detected(
                id=f"{msg.query_id}/{obj.instance_id}",
                class_id=msg.query,
                score=float(obj.score),
                box=list(obj.bbox) if obj.has_bbox else None,
                geometry=located[k] if k < len(located) else None,
            )
        )
    return objects


def detection_2d_array(header, objects: Sequence[Detected]):
    """A Detection2DArray of the objects that have a box."""
    msgs = vision_msgs()
    detections = []
    for obj in objects:
        if obj.box is None:
            continue
        x1, y1, x2, y2 = (float(v) for v in obj.box)
        bbox = msgs.BoundingBox2D(size_x=x2 - x1, size_y=y2 - y1)
        bbox.center.position.x = (x1 + x2) / 2
        bbox.center.position.y = (y1 + y2) / 2
        detections.append(
            msgs.Detection2D(header=header, results=[_hypothesis(obj)], bbox=bbox, id=obj.id)
        )
    return msgs.Detection2DArray(header=header, detections=detections)


def detection_3d_array(
    header, objects: Sequence[Detected], transform: RigidTransform | None = None
):
    """A Detection3DArray of the objects located in depth, in the camera frame of `header`, or
    (with `transform`, target_from_camera) in the target frame: pass the target's header."""
    msgs = vision_msgs()
    detections = []
    for obj in objects:
        geometry = obj.geometry
        if geometry is None or not geometry.ok:
            continue
        centre, rotation = geometry.position, (0.0, 0.0, 0.0, 1.0)
        if transform is not None:
            centre, rotation = transform.apply(centre), transform.rotation
        pose = Pose(position=Point(x=centre[0], y=centre[1], z=centre[2]))
        pose.orientation = Quaternion(x=rotation[0], y=rotation[1], z=rotation[2], w=rotation[3])
        sx, sy, sz = (float(v) for v in geometry.size)
        hypothesis = _hypothesis(obj)
        hypothesis.pose.pose = pose
        bbox = msgs.BoundingBox3D(center=pose, size=Vector3(x=sx, y=sy, z=sz))
        detections.append(
            msgs.Detection3D(header=header, results=[hypothesis], bbox=bbox, id=obj.id)
        )
    return msgs.Detection3DArray(header=header, detections=detections)


def _hypothesis(obj: Detected):
    msgs = vision_msgs()
    hypothesis = msgs.ObjectHypothesisWithPose()
    hypothesis.hypothesis.class_id = obj.class_id
    hypothesis.hypothesis.score = obj.score
    return hypothesis


@dataclass(frozen=True)
class DetectionServices:
    """What the detection outputs use of the node (no node object: built and tested alone)."""

    params: Callable[[], Any]  # the current PerceptionParams
    publisher: Callable[[str], Any]  # an output publisher by name; None when there is none
    target_transform: Callable[[Any], RigidTransform | None]  # camera header -> target_frame


class Detections:
    """Publishes the detection arrays of answers and tracked frames (any thread)."""

    def __init__(self, services: DetectionServices):
        self._services = services

    def publish_answer(self, msg, geometries: Sequence[ObjectGeometry] | None) -> None:
        """After an answer: its objects if OK, empty arrays for NOT_FOUND, else nothing."""
        from segzero_ros.msg import SegmentationResult as ResultMsg

        if msg.status == ResultMsg.OK:
            self.publish(msg.header, answer_objects(msg, geometries))
        elif msg.status == ResultMsg.NOT_FOUND:
            self.publish(msg.header, [])

    def publish(self, header, objects: Sequence[Detected]) -> None:
        """The 2D array, and with use_depth the 3D ones, of one frame's objects."""
        p = self._services.params()
        if not p.publish_detections or not available():
            return
        publisher = self._services.publisher
        if (two_d := publisher("detections")) is not None:
            two_d.publish(detection_2d_array(header, objects))
        if not p.use_depth:
            return
        if (three_d := publisher("detections_3d")) is not None:
            three_d.publish(detection_3d_array(header, objects))
        target = publisher("detections_3d_target")
        if not p.target_frame or target is None:
            return
        transform = self._services.target_transform(header)
        if transform is not None:
            target_header = type(header)(stamp=header.stamp, frame_id=p.target_frame)
            target.publish(detection_3d_array(target_header, objects, transform))
