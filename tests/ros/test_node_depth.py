"""The node's 3D stage end to end on the shared tiny node (tests/ros_harness.py): colour, depth
(16UC1 and 32FC1) and CameraInfo with matching stamps give OK results a position, a
PointStamped and markers with the colour frame's header; every bad depth input is a depth
status on a result that stays OK in 2D; target_frame without tf2_ros says so once; tracked
frames carry positions.

The scene: a plane at 1.5 m with a box at 1.0 m in front of it. The tiny SAM2's masks are
noise, so the checks are that z lies between the scene's depths, not on the box. Each test
turns use_depth on through its fixture and puts every parameter back.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import ros_importorskip

ros_importorskip(
    "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
)

from geometry_msgs.msg import PointStamped  # noqa: E402
from rcl_interfaces.msg import Log  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from ros_harness import (  # noqa: E402
    LATCHED,
    WAIT,
    R,
    restored_parameters,
    wait_matched,
    wait_until,
)
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from segzero_ros.action import Segment  # noqa: E402
from segzero_ros.inputs import stamp_ns  # noqa: E402
from segzero_ros.msg import TrackedObject, TrackingState  # noqa: E402
from segzero_ros.node import PerceptionNode  # noqa: E402

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 64, 48
PLANE, BOX = 1.5, 1.0  # metres
DEPTH_TOPIC, INFO_TOPIC = "/camera/depth/image_raw", "/camera/camera_info"  # the defaults


def depth_image(header, encoding="16UC1", width=WIDTH, height=HEIGHT, scene=True) -> Image:
    metres = np.full((height, width), PLANE, np.float32)
    metres[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = BOX
    if not scene:
        metres[:] = 0.0
    if encoding == "32FC1":
        array = metres
    else:
        array = np.round(metres * 1000).astype(np.uint16)
    return Image(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        step=width * array.itemsize,
        data=array.tobytes(),
    )


def camera_info(header, width=WIDTH, height=HEIGHT) -> CameraInfo:
    focal = 50.0 * width / WIDTH
    k = [focal, 0.0, (width - 1) / 2, 0.0, focal, (height - 1) / 2, 0.0, 0.0, 1.0]
    return CameraInfo(header=header, width=width, height=height, k=k)


@pytest.fixture(scope="module")
def depth_probe(node_harness):
    """The probe's depth and CameraInfo publishers and its subscribers on the 3D outputs."""
    probe = node_harness.probe
    n = probe.node
    publishers = {
        "depth": n.create_publisher(Image, DEPTH_TOPIC, 5),
        "info": n.create_publisher(CameraInfo, INFO_TOPIC, 5),
    }
    subscriptions = []
    for key, kind, topic in [
        ("position", PointStamped, "/segzero/position"),
        ("markers", MarkerArray, "/segzero/markers"),
        ("cloud", PointCloud2, "/segzero/cloud"),
        ("tracking_state_3d", TrackingState, "/segzero/tracking/state"),
        ("rosout", Log, "/rosout"),
    ]:
        probe.received.setdefault(key, [])
        subscriptions.append(n.create_subscription(kind, topic, probe._keeper(key), 50))
    yield publishers
    for subscription in subscriptions:
        n.destroy_subscription(subscription)
    for publisher in publishers.values():
        n.destroy_publisher(publisher)


@pytest.fixture
def depth(harness, depth_probe):
    """The harness with use_depth on and its inputs matched; parameters put back after."""
    node = harness.node
    with restored_parameters(node) as set_params:
        harness.set_params = set_params
        harness.depth_pubs = depth_probe
        set_params(use_depth=True)
        wait_until(
            lambda: (
                len(node.spatial.subscriptions) == 2
                and all(s.get_publisher_count() > 0 for s in node.spatial.subscriptions)
                and node._pubs["markers"].get_subscription_count() > 0
            ),
            20,
            "the depth inputs matched",
        )
        try:
            yield harness
        finally:
            harness.wait_idle()
            node.tracking.stop_tracks()
            del harness.set_params, harness.depth_pubs
    assert node.spatial.subscriptions == [] and len(node.spatial.matcher) == 0


def send_depth(harness, depth_msg: Image | None, info: bool = True) -> None:
    """Publish a depth frame (and the CameraInfo) until the node holds them."""
    matcher = harness.node.spatial.matcher
    pubs = harness.depth_pubs

    def held() -> bool:
        has_depth = (
            depth_msg is None or matcher.nearest(stamp_ns(depth_msg.header), 0.0).msg is not None
        )
        return has_depth and (not info or matcher.camera_info is not None)

    def publish_until_held() -> bool:
        if depth_msg is not None:
            pubs["depth"].publish(depth_msg)
        if info:
            pubs["info"].publish(camera_info(depth_msg.header if depth_msg else None))
        return held()

    wait_until(publish_until_held, 20, "the node holding the depth frame")


def ask_with_depth(harness, query: str, encoding="16UC1", **depth_kwargs):
    """A colour frame with depth of the same stamp; the result of `query` on it."""
    frame = harness.image_msg(WIDTH, HEIGHT)
    info = depth_kwargs.pop("info", True)
    offset = depth_kwargs.pop("offset_ns", 0)
    header = type(frame.header)(frame_id=frame.header.frame_id)
    header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns(frame.header) + offset, 10**9)
    send_depth(harness, depth_image(header, encoding, **depth_kwargs), info)
    harness.publish_frame(frame)
    result = harness.probe.ask(query)
    assert result.status == R.OK, (result.status_name, result.error)
    assert result.header == frame.header
    return result


def test_depth_is_off_by_default(harness):
    harness.fresh_frame()
    result = harness.probe.ask("the red square without depth")
    assert result.status == R.OK
    assert (result.depth_status, result.depth_status_name) == (R.DEPTH_OFF, "OFF")
    assert not result.has_position and result.depth_error == ""
    assert harness.node.spatial.subscriptions == []


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1"])
def test_an_ok_answer_has_a_position_point_and_markers(depth, encoding):
    probe = depth.probe
    depth.set_params(publish_cloud=True)
    after = {key: probe.mark(key) for key in ("position", "markers", "cloud")}
    query = f"the red square in {encoding}"
    result = ask_with_depth(depth, query, encoding)
    assert (result.depth_status, result.depth_status_name) == (R.DEPTH_OK, "OK")
    assert result.has_position and result.depth_error == ""
    assert result.position.header == result.header  # camera optical frame, the colour stamp
    assert BOX - 0.01 <= result.position.point.z <= PLANE + 0.01
    assert result.size.x > 0 and result.size.y > 0 and result.size.z >= 0
    assert 0.0 < result.valid_depth_ratio <= 1.0 and result.depth_points > 0
    assert result.position_in_target.header.frame_id == ""  # no target_frame

    point = probe.wait_for("position", lambda m: m.header == result.header, after=after["position"])
    assert point.point == result.position.point
    markers = probe.wait_for(
        "markers", lambda m: m.markers[0].header == result.header, after=after["markers"]
    )
    box, text = markers.markers
    assert (box.type, text.type) == (Marker.CUBE, Marker.TEXT_VIEW_FACING)
    assert box.pose.position == result.position.point and text.text == query
    assert box.ns == "segzero/result" and text.ns == "segzero/result/label"
    assert box.id == text.id and box.lifetime.sec > 0
    cloud = probe.wait_for("cloud", lambda m: m.header == result.header, after=after["cloud"])
    assert [f.name for f in cloud.fields] == ["x", "y", "z"] and cloud.point_step == 12
    points = np.frombuffer(bytes(cloud.data), np.float32).reshape(-1, 3)
    assert len(points) == cloud.width == min(result.depth_points, 5000)
    assert np.all((points[:, 2] >= BOX - 0.01) & (points[:, 2] <= PLANE + 0.01))

    again = ask_with_depth(depth, query, encoding)  # the same query: the same marker ids
    markers = probe.wait_for(
        "markers", lambda m: m.markers[0].header == again.header, after=after["markers"]
    )
    assert markers.markers[0].id == box.id


@pytest.mark.parametrize(
    ("case", "kwargs", "status", "reason"),
    [
        ("no camera info", {"info": False}, R.NO_CAMERA_INFO, "no CameraInfo received on"),
        ("depth too late", {"offset_ns": 500_000_000}, R.NO_DEPTH, "no depth frame within 0.05"),
        ("wrong encoding", {"encoding": "rgb8"}, R.BAD_DEPTH, "unsupported depth encoding"),
        ("other aspect", {"height": WIDTH}, R.RESOLUTION_MISMATCH, "different aspect ratios"),
        ("all zero", {"scene": False}, R.NO_VALID_DEPTH, "no valid depth"),
    ],
)
def test_a_bad_depth_input_is_a_depth_status_on_an_ok_answer(depth, case, kwargs, status, reason):
    result = ask_with_depth(depth, f"the red square, {case}", **kwargs)
    assert result.depth_status == status, (result.depth_status_name, result.depth_error)
    assert not result.has_position and reason in result.depth_error
    assert result.has_bbox and result.mask.height == HEIGHT  # the 2D answer stands


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("tf2_ros") is not None,
    reason="tf2_ros is installed: target_frame transforms instead",
)
def test_target_frame_without_tf2_says_so_once_and_keeps_the_camera_frame(depth):
    probe = depth.probe
    depth.set_params(target_frame="base_link")
    after = probe.mark("rosout")
    first = ask_with_depth(depth, "the red square in base_link")
    second = ask_with_depth(depth, "the red square in base_link again")
    for result in (first, second):
        assert result.has_position and result.position.header.frame_id == "camera_optical"
        assert result.position_in_target.header.frame_id == ""
    wait_until(lambda: probe.messages("rosout", after), 10, "a log line")
    lines = [m.msg for m in probe.messages("rosout", after) if "needs ROS 2's tf2_ros" in m.msg]
    assert len(lines) == 1, lines
    assert "target_frame 'base_link'" in lines[0] and "'camera_optical'" in lines[0]


def test_a_tracked_frame_carries_the_positions(depth):
    probe, node = depth.probe, depth.node
    depth.set_params(lost_score=0.0, lost_min_area=0)
    stop = threading.Event()
    pubs = depth.depth_pubs

    # 160x120 noise with a red square where the depth has its box: on smaller or plainer
    # frames the tiny SAM2's (random) tracked masks come out empty, with nothing to locate.
    width, height = 160, 120
    rgb = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    rgb[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = (255, 40, 40)

    def stream() -> None:
        while not stop.is_set():
            frame = depth.image_msg(width, height)
            frame.data = rgb.tobytes()
            pubs["info"].publish(camera_info(frame.header, width, height))
            pubs["depth"].publish(depth_image(frame.header, width=width, height=height))
            stop.wait(0.01)
            probe.image_pub.publish(frame)
            stop.wait(0.05)

    thread = threading.Thread(target=stream, daemon=True)
    thread.start()
    try:
        wait_until(lambda: node.spatial.matcher.camera_info is not None, 20, "CameraInfo")
        wait_until(  # a frame of this stream, not an earlier test's smaller one
            lambda: node.latest_frame is not None and node.latest_frame.msg.width == width,
            20,
            "a colour frame of the stream",
        )
        after = probe.mark("tracking_state_3d")
        after_markers = probe.mark("markers")
        future = probe.action.send_goal_async(
            Segment.Goal(query="the tracked square", track=Segment.Goal.TRACK)
        )
        wait_until(future.done, 20, "goal response")
        _, result = depth.goal_result(future.result())
        assert result.status == R.OK and result.track_id > 0

        def located(state) -> bool:  # the 3D stage ran for this track on a non-empty mask
            return any(
                o.track_id == result.track_id
                and o.depth_status != TrackedObject.DEPTH_OFF
                and o.area > 0
                for o in state.objects
            )

        state = probe.wait_for("tracking_state_3d", located, WAIT, "a located track", after=after)
    finally:
        stop.set()
        thread.join(5)
    (obj,) = state.objects
    assert obj.state == TrackedObject.TRACKING
    assert (obj.depth_status, obj.depth_status_name) == (TrackedObject.DEPTH_OK, "OK")
    assert BOX - 0.01 <= obj.position.z <= PLANE + 0.01 and obj.size.x > 0
    markers = probe.wait_for(
        "markers", lambda m: m.markers[0].ns == "segzero/track", 10, after=after_markers
    )
    assert markers.markers[0].id == result.track_id
    assert markers.markers[1].text == f"{result.track_id}: the tracked square"


def test_depth_scale_converts_16_bit_units(depth):
    """depth_scale: metres per 16UC1 unit. Millimetre data read at 2 mm per unit is twice as
    far; 32FC1 (metres already) is not scaled."""
    depth.set_params(depth_scale=0.002)
    result = ask_with_depth(depth, "the red square at 2 mm per unit")
    assert 2 * BOX - 0.02 <= result.position.point.z <= 2 * PLANE + 0.02
    assert result.position.point.z > PLANE + 0.1
    metres = ask_with_depth(depth, "the red square in metres", "32FC1")
    assert BOX - 0.01 <= metres.position.point.z <= PLANE + 0.01


def test_min_and_max_depth_ignore_readings_outside(depth):
    """The scene holds 1.0 m (the box) and 1.5 m (the plane, most of the frame: the band around
    the median drops the box anyway, so min_depth is checked by leaving nothing)."""
    depth.set_params(max_depth=1.2)  # only the box
    result = ask_with_depth(depth, "the red square nearer than 1.2 m")
    assert result.depth_status == R.DEPTH_OK, (result.depth_status_name, result.depth_error)
    assert result.position.point.z == pytest.approx(BOX, abs=0.01)
    depth.set_params(max_depth=20.0, min_depth=1.6)  # nothing
    result = ask_with_depth(depth, "the red square farther than 1.6 m")
    assert result.depth_status == R.NO_VALID_DEPTH, result.depth_status_name


def test_cloud_max_points_subsamples_the_cloud(depth):
    probe = depth.probe
    depth.set_params(publish_cloud=True, cloud_max_points=7)
    after = probe.mark("cloud")
    result = ask_with_depth(depth, "the red square, seven points")
    assert result.depth_points > 7
    cloud = probe.wait_for("cloud", lambda m: m.header == result.header, after=after)
    assert cloud.width == 7 and len(cloud.data) == 7 * cloud.point_step


def test_a_wider_depth_sync_tolerance_takes_a_later_depth_frame(depth):
    """Depth 0.5 s off the colour stamp: NO_DEPTH at the default 0.05 s (the bad-input case
    above), OK within 1 s."""
    depth.set_params(depth_sync_tolerance=1.0)
    result = ask_with_depth(depth, "the red square, depth late", offset_ns=500_000_000)
    assert result.depth_status == R.DEPTH_OK, (result.depth_status_name, result.depth_error)


def test_depth_info_topic_gives_the_depth_cameras_own_intrinsics(
    harness, tiny_qwen_dir, tiny_sam2_dir
):
    """depth_info_topic (read-only: a node of its own): the depth image is located with that
    CameraInfo's K, not the colour K scaled. Until it arrives: NO_CAMERA_INFO naming it. Its
    principal point is at the depth image's left edge, so every point lies right of the axis
    (x > 0); with the colour K the centroid of the centred scene is near x = 0."""
    names = {
        "image_topic": "/di/image", "camera_info_topic": "/di/info",
        "depth_topic": "/di/depth", "depth_info_topic": "/di/depth_info",
        "query_topic": "/di/query", "result_topic": "/di/result", "mask_topic": "/di/mask",
        "reasoning_topic": "/di/reasoning", "overlay_topic": "/di/overlay",
        "action_name": "/di/segment", "position_topic": "/di/position",
        "markers_topic": "/di/markers", "cloud_topic": "/di/cloud",
        "instances_topic": "/di/instances", "tracking_mask_topic": "/di/tracking/mask",
        "tracking_state_topic": "/di/tracking/state", "stop_tracking_service": "/di/stop",
    }  # fmt: skip
    node = PerceptionNode(
        "segzero_depth_info",
        context=harness.context,
        parameter_overrides={
            "reasoning_model": str(tiny_qwen_dir),
            "segmentation_model": str(tiny_sam2_dir),
            "device": "cpu",
            "max_new_tokens": 96,
            "use_depth": True,
            "track": False,
            **names,
        },  # fmt: skip
    )
    harness.executor.add_node(node)
    probe = harness.probe.node
    results: list = []
    entities = [
        probe.create_subscription(R, "/di/result", results.append, LATCHED),
        image := probe.create_publisher(Image, "/di/image", 5),
        info := probe.create_publisher(CameraInfo, "/di/info", 5),
        depth_pub := probe.create_publisher(Image, "/di/depth", 5),
        depth_info := probe.create_publisher(CameraInfo, "/di/depth_info", 5),
        queries := probe.create_publisher(String, "/di/query", LATCHED),
    ]
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        for publisher in (image, info, depth_pub, depth_info):
            wait_until(publisher.get_subscription_count, 20, "the node's depth inputs")
        wait_matched(queries, node, "/di/query")

        def ask(text: str, send_depth_info: bool):
            frame = harness.image_msg(WIDTH, HEIGHT)
            depth_msg = depth_image(frame.header, width=WIDTH // 2, height=HEIGHT // 2)
            own = camera_info(frame.header, WIDTH // 2, HEIGHT // 2)
            own.k[2] = 0.0  # the principal point on the left edge
            matcher = node.spatial.matcher

            def held() -> bool:
                info.publish(camera_info(frame.header))
                depth_pub.publish(depth_msg)
                if send_depth_info:
                    depth_info.publish(own)
                image.publish(frame)
                latest = node.latest_frame
                return (
                    latest is not None
                    and latest.msg.header == frame.header
                    and matcher.nearest(stamp_ns(frame.header), 0.0).msg is not None
                    and (not send_depth_info or matcher.depth_info is not None)
                )

            wait_until(held, 20, "the node holding the frames")
            queries.publish(String(data=text))
            return wait_until(lambda: next((r for r in results if r.query == text), None))

        result = ask("the red square, no depth CameraInfo yet", send_depth_info=False)
        assert result.status == R.OK and result.depth_status == R.NO_CAMERA_INFO
        assert "no depth CameraInfo received on /di/depth_info" in result.depth_error
        result = ask("the red square, with the depth CameraInfo", send_depth_info=True)
        assert result.depth_status == R.DEPTH_OK, (result.depth_status_name, result.depth_error)
        assert result.position.point.x > 0.3, result.position.point
    finally:
        node.trigger_shutdown()
        harness.executor.remove_node(node)
        node.destroy_node()
        for entity in entities:
            if hasattr(entity, "publish"):
                probe.destroy_publisher(entity)
            else:
                probe.destroy_subscription(entity)
