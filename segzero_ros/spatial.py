"""The node's 3D stage: where an answered (or tracked) object is, from a depth camera.

Contract (the geometry itself is `segzero_model.spatial.depth`'s; this module is the ROS glue):
- Inputs, while the node is active and `use_depth` is true: the depth image, the colour
  CameraInfo and, with `depth_info_topic`, the depth camera's CameraInfo. Their callbacks only
  store (`DepthMatcher`: the newest few depth frames, the latest CameraInfo of each camera).
- Every OK result gets a depth status (the first object's; each of `objects` gets its own
  position, the depth image converted once per result); a bad input never costs the 2D
  answer, the result stays OK with `has_position` false and `depth_error` saying why:
  OFF (use_depth false) → NO_CAMERA_INFO (none yet, or an unusable K) → NO_DEPTH (no depth
  frame within depth_sync_tolerance of the colour frame's stamp) → BAD_DEPTH (encoding, size)
  → RESOLUTION_MISMATCH / NO_VALID_DEPTH / OK (`locate_object`).
- The depth frame is picked when the query takes its colour frame (reasoning takes seconds;
  by its end the matching depth frame may have left the bounded buffer), and again after the
  answer if none had arrived yet.
- Positions are in the colour camera's optical frame (x right, y down, z forward), metres,
  with the colour frame's header. With `target_frame` and ROS 2's tf2_ros they are also
  transformed into that frame; without tf2_ros (the pip-only install) one warning says so.
- Outputs after the result: a PointStamped, a MarkerArray (a cube of the object's size and its
  query as text; ids stable per query and per track so rviz replaces them; a lifetime so stale
  ones vanish) and, with `publish_cloud`, the object's depth points as a PointCloud2.
"""

from __future__ import annotations

import sys
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, PointStamped, Vector3
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from segzero_model.spatial.depth import (
    DepthError,
    DepthStatus,
    Intrinsics,
    ObjectGeometry,
    RawDepth,
    locate_object,
)
from segzero_model.spatial.frames import RigidTransform
from segzero_ros.convert import depth_msg_to_array
from segzero_ros.depth_sync import DepthMatch, DepthMatcher
from segzero_ros.inputs import stamp_ns

# Reliable (rviz's default reader matches), volatile: a position is news only when it is new.
SPATIAL_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
# SegmentationResult.msg / TrackedObject.msg depth_status constants, by segzero_model status.
DEPTH_CODES = {
    DepthStatus.OFF: 0,
    DepthStatus.OK: 1,
    DepthStatus.NO_CAMERA_INFO: 2,
    DepthStatus.NO_DEPTH: 3,
    DepthStatus.BAD_DEPTH: 4,
    DepthStatus.RESOLUTION_MISMATCH: 5,
    DepthStatus.NO_VALID_DEPTH: 6,
}
OFF = ObjectGeometry(DepthStatus.OFF)
RESULT_MARKER_LIFETIME = 5.0  # seconds an answer's box stays in rviz
TRACK_MARKER_LIFETIME = 1.0  # seconds a track's box outlives its last tracked frame
ERODE_PX = 3  # colour pixels shaved off the mask's edge (depth bleeds there)
_MIN_MARKER_SIZE = 0.01  # metres: a flat object still shows as a thin box
_LABEL_HEIGHT = 0.08  # metres: rviz text size
_BOX_COLOUR = (0.1, 0.8, 0.2, 0.5)


@dataclass(frozen=True)
class DepthFrame:
    """A depth image ready for `locate_object` (checked, converted to metres where it is read,
    with both cameras' intrinsics), or the geometry that says why there is none (`failure`)."""

    depth_m: RawDepth | None = None
    color: Intrinsics | None = None
    depth: Intrinsics | None = None
    failure: ObjectGeometry | None = None

    def locate(self, mask: np.ndarray | None, *, keep_cloud: bool = False, max_points: int = 0):
        if self.failure is not None:
            return self.failure
        if mask is None:
            return ObjectGeometry(DepthStatus.NO_VALID_DEPTH, "no mask")
        return locate_object(
            mask,
            self.depth_m,
            self.color,
            self.depth,
            erode_px=ERODE_PX,
            keep_cloud=keep_cloud,
            max_cloud_points=max_points,
        )


@dataclass(frozen=True)
class SpatialServices:
    """What the 3D stage uses of the node: no node object, so it is built and tested alone."""

    params: Callable[[], Any]  # the current PerceptionParams (they change at runtime)
    logger: Any  # the node's logger (rclpy's: `throttle_duration_sec` is used)
    publisher: Callable[[str], Any]  # an output publisher by name; None while unconfigured
    subscribe: Callable[..., Any]  # (type, topic, callback, qos, group): the node's factory
    unsubscribe: Callable[[Any], Any]  # destroy one subscription
    resolve_topic: Callable[[str], str]  # a topic's full name, for messages
    tf_buffer: Callable[[], Any]  # (tf2 Buffer, its listener); ImportError without tf2_ros


def transform_buffer(node) -> tuple:
    """A tf2 Buffer fed by a TransformListener on `node` (the listener is returned too, to keep
    it alive); ImportError without ROS 2's tf2_ros."""
    import tf2_ros

    buffer = tf2_ros.Buffer()
    return buffer, tf2_ros.TransformListener(buffer, node)


class Spatial:
    """The 3D stage of one node: its depth inputs (`start`/`stop`, at activate/deactivate and
    when use_depth changes), the geometry of results and tracked objects, and its outputs."""

    def __init__(self, services: SpatialServices):
        self._services = services
        self._params = services.params
        self._logger = services.logger
        self._publisher = services.publisher
        self.matcher = DepthMatcher()
        self.subscriptions: list = []
        self._group = MutuallyExclusiveCallbackGroup()
        self._lock = threading.Lock()  # start/stop from a transition or a parameter change
        self._tf = None  # (buffer, listener) once target_frame was first used with tf2_ros
        self._tf_missing_logged = False
        self._last_transform = None  # (target, frame, stamp) and what tf2 answered for it

    # ------------------------------------------------------------------ inputs

    def start(self) -> None:
        """Subscribe to the depth inputs (when use_depth; idempotent)."""
        p = self._params()
        with self._lock:
            if self.subscriptions or not p.use_depth:
                return
            inputs = [
                (Image, p.depth_topic, self._depth_cb),
                (CameraInfo, p.camera_info_topic, self._camera_info_cb),
            ]
            if p.depth_info_topic:
                inputs.append((CameraInfo, p.depth_info_topic, self._depth_info_cb))
            # Sensor data QoS: best effort matches best-effort and reliable drivers alike.
            subs = [
                self._services.subscribe(
                    kind, topic, callback, qos_profile_sensor_data, self._group
                )
                for kind, topic, callback in inputs
            ]
            self.subscriptions = subs
        names = ", ".join(self._services.resolve_topic(s.topic_name) for s in subs)
        self._logger.info(f"depth on: {names}")

    def stop(self) -> None:
        """Unsubscribe and forget every stored frame and CameraInfo."""
        with self._lock:
            subs, self.subscriptions = self.subscriptions, []
            for subscription in subs:
                self._services.unsubscribe(subscription)
            self.matcher.clear()

    def _depth_cb(self, msg) -> None:
        self.matcher.add_depth(msg, stamp_ns(msg.header))

    def _camera_info_cb(self, msg) -> None:
        self.matcher.camera_info = msg

    def _depth_info_cb(self, msg) -> None:
        self.matcher.depth_info = msg

    # ------------------------------------------------------------------ geometry

    def match(self, header) -> DepthMatch | None:
        """The depth frame for a colour frame's header (None when use_depth is off); taken
        when the colour frame is taken."""
        p = self._params()
        if not p.use_depth:
            return None
        return self.matcher.nearest(stamp_ns(header), p.depth_sync_tolerance)

    def prepare(self, header, match: DepthMatch | None = None) -> DepthFrame:
        """The depth image for the colour frame `header`, ready for locating masks in it."""
        p = self._params()
        if not p.use_depth:
            return DepthFrame(failure=OFF)
        info = self.matcher.camera_info
        if info is None:
            topic = self._services.resolve_topic(p.camera_info_topic)
            return _failed(DepthStatus.NO_CAMERA_INFO, f"no CameraInfo received on {topic}")
        if match is None or match.msg is None:
            match = self.match(header)  # it may have arrived since the frame was taken
        if match.msg is None:
            topic = self._services.resolve_topic(p.depth_topic)
            return _failed(DepthStatus.NO_DEPTH, f"{topic}: {match.reason}")
        try:
            color = Intrinsics.from_k(info.k, info.width, info.height)
            depth = None
            if p.depth_info_topic:
                depth_info = self.matcher.depth_info
                if depth_info is None:
                    topic = self._services.resolve_topic(p.depth_info_topic)
                    return _failed(
                        DepthStatus.NO_CAMERA_INFO, f"no depth CameraInfo received on {topic}"
                    )
                depth = Intrinsics.from_k(depth_info.k, depth_info.width, depth_info.height)
        except ValueError as error:
            return _failed(DepthStatus.NO_CAMERA_INFO, f"unusable CameraInfo: {error}")
        try:
            raw = depth_msg_to_array(match.msg)
            # Converted to metres only under each mask it locates (RawDepth).
            metres = RawDepth(raw, match.msg.encoding, p.depth_scale, p.min_depth, p.max_depth)
        except DepthError as error:
            return _failed(error.status, str(error))
        except ValueError as error:  # min_depth >= max_depth
            return _failed(DepthStatus.BAD_DEPTH, str(error))
        return DepthFrame(metres, color, depth)

    def locate_result(self, msg, masks: list[np.ndarray | None], match: DepthMatch | None):
        """Locate each object's mask of an OK result on its frame (the depth image converted
        once) and fill `msg`'s depth fields: the top-level ones from the first object, each
        `msg.objects[k]`'s position and size from object k. The geometries, one per mask (for
        `publish_result`). Never raises: a failure is a depth status."""
        p = self._params()
        masks = list(masks) or [None]
        try:
            frame = self.prepare(msg.header, match)
            keep = p.publish_cloud
            geometries = [
                frame.locate(mask, keep_cloud=keep, max_points=p.cloud_max_points) for mask in masks
            ]
            fill_result(msg, geometries[0], self._in_target(msg.header, geometries[0]))
        except Exception as error:  # noqa: BLE001 - the 2D answer stands
            self._logger.warning(f"3D stage failed: {error!r}")
            failed = ObjectGeometry(DepthStatus.BAD_DEPTH, f"3D stage failed: {error}")
            geometries = [failed] * len(masks)
            fill_result(msg, failed)
        for obj, geometry in zip(msg.objects, geometries, strict=False):
            fill_object(obj, geometry)
        return geometries

    def locate_tracks(self, header, masks: list[np.ndarray]) -> list[ObjectGeometry]:
        """One geometry per mask of one tracked frame (the depth frame converted once)."""
        p = self._params()
        if not p.use_depth:
            return [OFF] * len(masks)
        try:
            frame = self.prepare(header)
            keep = p.publish_cloud
            return [
                frame.locate(mask, keep_cloud=keep, max_points=p.cloud_max_points) for mask in masks
            ]
        except Exception as error:  # noqa: BLE001 - the tracked frame is still published
            self._logger.warning(f"3D stage failed: {error!r}")
            failed = ObjectGeometry(DepthStatus.BAD_DEPTH, f"3D stage failed: {error}")
            return [failed] * len(masks)

    # ------------------------------------------------------------------ target frame

    def _in_target(self, header, geometry: ObjectGeometry) -> PointStamped | None:
        """The position in target_frame, or None (no target, no tf2, no transform)."""
        if not self._params().target_frame or not geometry.ok:
            return None
        transform = self.target_transform(header)
        if transform is None:
            return None
        target = Header(stamp=header.stamp, frame_id=self._params().target_frame)
        return PointStamped(header=target, point=_point(transform.apply(geometry.position)))

    def target_transform(self, header) -> RigidTransform | None:
        """target_frame from the camera frame of `header` at its stamp (tf2), or None: no
        target_frame, no tf2_ros (said once), or no transform yet (said every 5 s). The last
        answer is kept: an answer's position and its 3D detections ask for the same frame, and
        a lookup that fails waits up to 50 ms."""
        target = self._params().target_frame
        if not target:
            return None
        key = (target, header.frame_id, header.stamp.sec, header.stamp.nanosec)
        last = self._last_transform  # (key, transform): one tuple, read and set atomically
        if last is not None and last[0] == key:
            return last[1]
        transform = self._lookup(target, header)
        self._last_transform = (key, transform)
        return transform

    def _lookup(self, target: str, header) -> RigidTransform | None:
        logger = self._logger
        if self._tf is None:
            try:
                self._tf = self._services.tf_buffer()
            except ImportError as error:
                if not self._tf_missing_logged:
                    self._tf_missing_logged = True
                    logger.warning(
                        f"target_frame {target!r} needs ROS 2's tf2_ros, which this Python "
                        f"environment lacks ({error}); positions and 3D detections stay in the "
                        f"camera frame {header.frame_id!r} (position_in_target is left empty)"
                    )
                return None
        from rclpy.duration import Duration as RclDuration
        from rclpy.time import Time

        try:
            stamped = self._tf[0].lookup_transform(
                target,
                header.frame_id,
                Time.from_msg(header.stamp),
                timeout=RclDuration(seconds=0.05),
            )
        except Exception as error:  # noqa: BLE001 - tf2's lookup errors: no target position
            logger.warning(
                f"no transform {header.frame_id!r} -> {target!r}: {error}",
                throttle_duration_sec=5.0,
            )
            return None
        t, q = stamped.transform.translation, stamped.transform.rotation
        return RigidTransform((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))

    # ------------------------------------------------------------------ outputs

    def publish_result(self, msg, geometries: list[ObjectGeometry] | None) -> None:
        """Position (the first object's), markers (one box and label per located object) and
        (publish_cloud) the cloud of a located OK result."""
        located = [(k, g) for k, g in enumerate(geometries or ()) if g.ok]
        if not located:
            return
        header = msg.header
        publisher = self._publisher("position")
        if publisher is not None and msg.has_position:
            publisher.publish(msg.position)
        markers = []
        for k, geometry in located:
            label = object_label(msg.query, k)
            markers += object_markers(
                "segzero/result",
                query_marker_id(label),
                label,
                geometry,
                header,
                RESULT_MARKER_LIFETIME,
            )
        self._publish_markers_and_cloud(header, markers, [g for _, g in located])

    def publish_tracks(self, header, labelled: list[tuple[int, str, ObjectGeometry]]) -> None:
        """Markers (one box and label per located track) and cloud of one tracked frame."""
        located = [(i, q, g) for i, q, g in labelled if g.ok]
        if not located:
            return
        markers = []
        for track_id, query, geometry in located:
            label = f"{track_id}: {query}"
            markers += object_markers(
                "segzero/track", track_id, label, geometry, header, TRACK_MARKER_LIFETIME
            )
        self._publish_markers_and_cloud(header, markers, [g for _, _, g in located])

    def _publish_markers_and_cloud(self, header, markers, geometries) -> None:
        publisher = self._publisher("markers")
        if publisher is not None:
            publisher.publish(MarkerArray(markers=markers))
        cloud = self._publisher("cloud")
        if not self._params().publish_cloud or cloud is None:
            return
        points = [g.points for g in geometries if g.points is not None and len(g.points)]
        if points:
            cloud.publish(cloud_msg(np.concatenate(points), header))


def _point(xyz) -> Point:
    x, y, z = (float(v) for v in xyz)
    return Point(x=x, y=y, z=z)


def _vector(xyz) -> Vector3:
    x, y, z = (float(v) for v in xyz)
    return Vector3(x=x, y=y, z=z)


def _failed(status: DepthStatus, reason: str) -> DepthFrame:
    return DepthFrame(failure=ObjectGeometry(status, reason))


def fill_result(msg, geometry: ObjectGeometry, in_target: PointStamped | None = None) -> None:
    """The depth fields of a SegmentationResult message from one geometry."""
    msg.depth_status = DEPTH_CODES[geometry.status]
    msg.depth_status_name = geometry.status.value
    msg.depth_error = geometry.reason
    msg.valid_depth_ratio = float(geometry.valid_ratio)
    msg.depth_points = int(geometry.valid_points)
    msg.has_position = geometry.ok
    if geometry.ok:
        msg.position = PointStamped(header=msg.header, point=_point(geometry.position))
        msg.size = _vector(geometry.size)
    if in_target is not None:
        msg.position_in_target = in_target


def fill_object(msg, geometry: ObjectGeometry) -> None:
    """The position fields of a SegmentedObject message from one geometry."""
    msg.has_position = geometry.ok
    if geometry.ok:
        msg.position = _point(geometry.position)
        msg.size = _vector(geometry.size)


def object_label(query: str, index: int) -> str:
    """The name of object `index` (0-based) of an answer to `query`: the query itself for the
    first, "<query> #k" (k = index + 1) for the others; tracks and markers are named so."""
    return query if index == 0 else f"{query} #{index + 1}"


def fill_tracked(msg, geometry: ObjectGeometry) -> None:
    """The depth fields of a TrackedObject message from one geometry."""
    msg.depth_status = DEPTH_CODES[geometry.status]
    msg.depth_status_name = geometry.status.value
    msg.has_position = geometry.ok
    if geometry.ok:
        msg.position = _point(geometry.position)
        msg.size = _vector(geometry.size)


def query_marker_id(query: str) -> int:
    """A marker id stable for one query text (rviz replaces its box instead of adding one)."""
    return zlib.crc32(query.encode("utf-8")) & 0x7FFFFFFF


def object_markers(
    namespace: str, marker_id: int, label: str, geometry: ObjectGeometry, header, lifetime: float
) -> list[Marker]:
    """A CUBE at the object's position with its size, and its label as text above it (optical
    frame: y points down, so "above" is -y)."""
    x, y, z = (float(v) for v in geometry.position)
    dx, dy, dz = (max(float(v), _MIN_MARKER_SIZE) for v in geometry.size)
    seconds = int(lifetime)
    life = Duration(sec=seconds, nanosec=int((lifetime - seconds) * 1e9))
    box = Marker(header=header, ns=namespace, id=marker_id, type=Marker.CUBE, action=Marker.ADD)
    box.pose.position = Point(x=x, y=y, z=z)
    box.pose.orientation.w = 1.0
    box.scale = Vector3(x=dx, y=dy, z=dz)
    box.color.r, box.color.g, box.color.b, box.color.a = _BOX_COLOUR
    box.lifetime = life
    text = Marker(
        header=header,
        ns=f"{namespace}/label",
        id=marker_id,
        type=Marker.TEXT_VIEW_FACING,
        action=Marker.ADD,
        text=label,
    )
    text.pose.position = Point(x=x, y=y - dy / 2 - _LABEL_HEIGHT, z=z)
    text.pose.orientation.w = 1.0
    text.scale.z = _LABEL_HEIGHT
    text.color.r = text.color.g = text.color.b = text.color.a = 1.0
    text.lifetime = life
    return [box, text]


def cloud_msg(points: np.ndarray, header) -> PointCloud2:
    """(N, 3) float32 points → an unorganised PointCloud2 with fields x, y, z (float32)."""
    array = np.ascontiguousarray(points, dtype=np.float32).reshape(-1, 3)
    fields = [
        PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1)
        for i, name in enumerate("xyz")
    ]
    return PointCloud2(
        header=header,
        height=1,
        width=len(array),
        fields=fields,
        is_bigendian=sys.byteorder == "big",
        point_step=12,
        row_step=12 * len(array),
        data=array.tobytes(),
        is_dense=True,
    )
