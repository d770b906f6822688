"""What the ROS layer adds to the model's time, with the tiny models on the CPU; prints JSON.

    source install/setup.bash
    .venv/bin/python -m benchmarks.ros_overhead [--queries 100] [--camera-hz 30]

- `query_overhead_ms`: time from publishing a std_msgs/String query to receiving its
  SegmentationResult, minus the pipeline's own time (the result's `total` timing). It covers
  DDS both ways, the executor, the queue hand-off, the camera frame's conversion and building
  the result message. The node runs as its own process (`python -m segzero_ros.main`, as
  deployed) while this process streams camera frames to it (`--camera-hz`, 640x480 rgb8 by
  default) and sends the queries one at a time, over real DDS (localhost, a domain of its own).
- `camera_callback_us`: the camera subscription callback itself, per 1920x1080 bgr8 frame,
  called directly (it only keeps the message; conversion happens when a query takes it).
- `convert_ms`: that conversion (segzero_ros.convert.image_msg_to_rgb), paid once per query,
  for the query frame and for 1920x1080 bgr8.

Target: median query overhead under 5 ms. The tiny checkpoints are built on first use into
the cache (`--cache-dir`, else $SEGZERO_CACHE, else ~/.cache/segzero; a few minutes once).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def summary(values: list[float], scale: float) -> dict[str, float]:
    array = np.asarray(values) * scale
    return {
        "median": round(float(np.median(array)), 4),
        "p95": round(float(np.percentile(array, 95)), 4),
        "mean": round(float(array.mean()), 4),
        "max": round(float(array.max()), 4),
        "n": len(values),
    }


def timed(function, repeats: int) -> list[float]:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return times


def image_msg(width: int, height: int, encoding: str, stamp=None):
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    header = Header(frame_id="bench")
    if stamp is not None:
        header.stamp = stamp
    return Image(
        header=header,
        height=height,
        width=width,
        encoding=encoding,
        step=width * 3,
        data=pixels.tobytes(),
    )


def camera_costs(context) -> dict:
    """The camera callback and the conversion, measured in this process."""
    from segzero_ros.convert import image_msg_to_rgb
    from segzero_ros.node import PerceptionNode

    node = PerceptionNode("segzero_bench_callback", context=context)
    try:
        full_hd = image_msg(1920, 1080, "bgr8")
        callback = timed(lambda: node._image_cb(full_hd), 2000)
        return {
            "camera_callback_us": summary(callback, 1e6),
            "convert_1920x1080_bgr8_ms": summary(timed(lambda: image_msg_to_rgb(full_hd), 20), 1e3),
        }
    finally:
        node.destroy_node()


def use_local_ros(dds_profile: str | os.PathLike | None) -> None:
    """Before rclpy is imported: this run's own DDS domain (unless ROS_DOMAIN_ID is set),
    discovery on this machine only, and `dds_profile` as the Fast DDS profile (the node's
    process inherits all three), so a benchmark usually meets no other run's nodes."""
    if dds_profile:
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(dds_profile)
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--width", type=int, default=640, help="camera frame width")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--camera-hz", type=float, default=30.0, help="camera frame rate")
    parser.add_argument("--cache-dir", default=None, help="tiny model cache")
    args = parser.parse_args()

    use_local_ros(None)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image
    from std_msgs.msg import String

    from segzero_model.tiny import ensure_tiny_models
    from segzero_ros.convert import image_msg_to_rgb
    from segzero_ros.msg import SegmentationResult

    reasoner_dir, segmenter_dir = ensure_tiny_models(args.cache_dir)
    node_args = {
        "reasoning_model": reasoner_dir,
        "segmentation_model": segmenter_dir,
        "device": "cpu",
        "max_new_tokens": 96,
        "max_image_age": 0.0,
        "image_topic": "/bench/image",
    }
    command = [sys.executable, "-m", "segzero_ros.main", "--ros-args"]
    for name, value in node_args.items():
        command += ["-p", f"{name}:={value}"]
    log = tempfile.NamedTemporaryFile("w+", prefix="segzero-bench-node-", suffix=".log")
    node_process = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    context = rclpy.Context()
    rclpy.init(context=context)
    client = rclpy.create_node("segzero_bench_client", context=context)
    received: dict[str, tuple[float, SegmentationResult]] = {}
    arrived = threading.Condition()

    def on_result(msg) -> None:
        now = time.perf_counter()
        with arrived:
            received[msg.query] = (now, msg)
            arrived.notify_all()

    latched = QoSProfile(
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    )
    client.create_subscription(SegmentationResult, "/segzero/result", on_result, latched)
    queries = client.create_publisher(
        String, "/segzero/query", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    )
    camera = client.create_publisher(Image, "/bench/image", 5)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    threading.Thread(target=executor.spin, daemon=True).start()

    frame = image_msg(args.width, args.height, "rgb8")
    streaming = threading.Event()

    def stream() -> None:
        while not streaming.wait(1.0 / args.camera_hz):
            frame.header.stamp = client.get_clock().now().to_msg()
            camera.publish(frame)

    overheads, totals, statuses = [], [], []
    try:
        deadline = time.monotonic() + 600
        while queries.get_subscription_count() == 0:  # subscribed once the models are loaded
            if node_process.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                raise SystemExit(f"the node did not start:\n{log.read()}")
            time.sleep(0.05)
        while camera.get_subscription_count() == 0:
            time.sleep(0.05)
        threading.Thread(target=stream, daemon=True).start()

        def ask(text: str):
            sent = time.perf_counter()
            queries.publish(String(data=text))
            with arrived:
                if not arrived.wait_for(lambda: text in received, timeout=120):
                    raise SystemExit(f"no result for {text!r}")
                got, msg = received.pop(text)
            return got - sent, msg

        # Until the node holds a camera frame its answers are NO_IMAGE: not what is measured.
        for i in range(100):
            if ask(f"is there a frame #{i}")[1].status_name != "NO_IMAGE":
                break
            time.sleep(0.2)
        for i in range(args.warmup + args.queries):
            latency, msg = ask(f"the red cup #{i}")
            total = next((t.seconds for t in msg.timings if t.stage == "total"), None)
            if i >= args.warmup:
                statuses.append(msg.status_name)
                if total is not None:  # None: answered without the pipeline
                    overheads.append(latency - total)
                    totals.append(total)
    finally:
        streaming.set()
        node_process.send_signal(signal.SIGINT)
        try:
            node_process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            node_process.kill()

    report = {
        "query_overhead_ms": summary(overheads, 1e3),
        "pipeline_total_ms": summary(totals, 1e3),
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
        "camera": f"{args.width}x{args.height} rgb8 at {args.camera_hz:g} Hz",
        "convert_query_frame_ms": summary(timed(lambda: image_msg_to_rgb(frame), 20), 1e3),
        **camera_costs(context),
        "target_median_overhead_ms": 5.0,
        "node_exit_code": node_process.returncode,
        "cpu_count": os.cpu_count(),
    }
    executor.shutdown(timeout_sec=2)
    client.destroy_node()
    rclpy.shutdown(context=context)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
