"""A real node run with `segmentation_family: edgetam`: `segzero-perception --tiny --ros-args
-p segmentation_family:=edgetam -p track:=true` loads the tiny EdgeTAM checkpoint (transformers'
EdgeTamModel / EdgeTamVideoModel), answers a query on a camera stream, and tracks the answer on
the frames after it (TrackingState messages stamped with those frames' headers)."""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import pytest
from conftest import OutputProcess, ros_domain_id, ros_importorskip, ros_process_env

ros_importorskip("segzero_ros.msg", reason="run under `source install/setup.bash`")

pytestmark = pytest.mark.slow

DOMAIN_ID = ros_domain_id("node_segmenter_families")
NAMESPACE = "/edgetam"
START_TIMEOUT = 180.0
WIDTH, HEIGHT = 160, 120


@pytest.fixture(scope="module")
def edgetam_node(tiny_cache):
    from segzero_model.tiny import ensure_tiny_segmenter

    segmenter = ensure_tiny_segmenter("edgetam")
    node = OutputProcess(
        [sys.executable, "-m", "segzero_ros.main", "--tiny", "--ros-args"]
        + ["-p", "segmentation_family:=edgetam", "-p", "track:=true"]
        + ["-r", f"__ns:={NAMESPACE}"],
        ros_process_env(DOMAIN_ID),
    )
    try:
        node.wait_for(r"\]: active: ", START_TIMEOUT)
        yield node, segmenter
    finally:
        node.stop()


def test_the_node_answers_and_tracks_with_edgetam(edgetam_node, monkeypatch):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header, String

    from segzero_ros.msg import SegmentationResult, TrackingState

    node_process, segmenter = edgetam_node
    assert "segmentation_family edgetam" in node_process.text
    assert str(segmenter) in node_process.text

    for name, value in ros_process_env(DOMAIN_ID).items():
        if name.startswith("ROS_"):
            monkeypatch.setenv(name, value)
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=DOMAIN_ID)
    probe = rclpy.create_node("edgetam_probe", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(probe)
    results, states, sent = [], [], []
    probe.create_subscription(SegmentationResult, f"{NAMESPACE}/segzero/result", results.append, 10)
    probe.create_subscription(
        TrackingState, f"{NAMESPACE}/segzero/tracking/state", states.append, 10
    )
    camera = probe.create_publisher(Image, f"{NAMESPACE}/camera/image_raw", 10)
    queries = probe.create_publisher(String, f"{NAMESPACE}/segzero/query", 10)
    stop = threading.Event()

    def stream() -> None:
        index = 0
        while not stop.is_set():
            rgb = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
            x = 10 + (3 * index) % (WIDTH - 50)
            rgb[40:80, x : x + 40] = (220, 30, 30)
            header = Header(frame_id="camera_optical")
            header.stamp = probe.get_clock().now().to_msg()
            msg = Image(header=header, height=HEIGHT, width=WIDTH, encoding="rgb8")
            msg.step, msg.data = WIDTH * 3, rgb.tobytes()
            camera.publish(msg)
            sent.append(header.stamp)
            index += 1
            time.sleep(0.1)

    spinner = threading.Thread(target=executor.spin, daemon=True)
    streamer = threading.Thread(target=stream, daemon=True)
    spinner.start()
    streamer.start()
    try:
        deadline = time.monotonic() + 120
        while not sent or queries.get_subscription_count() == 0:
            assert time.monotonic() < deadline, "the node's query topic never matched"
            time.sleep(0.1)
        time.sleep(1.0)  # a few frames in, so the query has a recent one
        queries.publish(String(data="the red square"))
        while not results or len(states) < 3:
            counts = f"{len(results)} results, {len(states)} tracking states"
            assert time.monotonic() < deadline, f"{counts}: {node_process.text[-2000:]}"
            time.sleep(0.1)
    finally:
        stop.set()
        executor.shutdown()
        probe.destroy_node()
        rclpy.try_shutdown(context=context)
    (result,) = results[:1]
    assert result.status == SegmentationResult.OK, result.error
    assert result.mask.width == WIDTH and result.mask.height == HEIGHT
    assert result.track_id > 0
    stamps = {(s.sec, s.nanosec) for s in sent}
    for state in states:
        assert (state.header.stamp.sec, state.header.stamp.nanosec) in stamps
        assert [obj.track_id for obj in state.objects] == [result.track_id]
