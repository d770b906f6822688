"""How tracking and reasoning share the node, measured with the tiny models on the CPU; prints
JSON.

    source install/setup.bash
    .venv/bin/python -m benchmarks.tracking_priority [--queries 10] [--seconds 5] [--camera-hz 30]

Both processes use config/fastdds_large_frames.xml (`--dds-profile`): with Fast DDS's default
transports most 640x480 frames never reach the node, and tracking would measure DDS losses.

The node's policy is "pause during reasoning": one device lock, held by the worker for a whole
query and by the tracking loop for one frame, and the loop takes no frame while a query runs
or waits. So a query waits at most for one tracked frame, and tracks stand still while the
reasoner thinks. This measures both sides, with the node in its own process (as deployed) and
this process streaming a 640x480 rgb8 camera to it over real DDS:

- `query_latency_ms`: query published -> result received, with `track:=false` and then with
  `track:=true` (every OK answer seeds or replaces the track of "the red cup", so one track runs
  between the queries). Their difference is what tracking costs a query.
- `tracking_hz_idle`: tracking-state messages per second over `--seconds` with no query.
- `tracked_frames_during_queries`: tracking-state messages stamped while a query was running
  (0 means tracking paused, as designed), and the node's own count of skipped frames.
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

from benchmarks.ros_overhead import image_msg, summary, use_local_ros

ROOT = Path(__file__).resolve().parents[1]
QUERY = "the red cup"  # the tiny reasoner answers it OK


class NodeProcess:
    """The perception node in its own process, on the tiny models (or what `params` name),
    after the parameter file `params_file` when given."""

    def __init__(self, cache_dir: str | None, params_file: Path | None = None, **params):
        from segzero_model.tiny import ensure_tiny_models

        reasoner_dir, segmenter_dir = ensure_tiny_models(cache_dir)
        values = {
            "reasoning_model": reasoner_dir,
            "segmentation_model": segmenter_dir,
            "device": "cpu",
            "max_new_tokens": 96,
            "max_image_age": 0.0,
            "image_topic": "/bench/image",
            "lost_score": 0.0,  # the tiny SAM2's scores hover near 0.5: no loss, a rate to measure
            **params,
        }
        command = [sys.executable, "-m", "segzero_ros.main", "--ros-args"]
        if params_file is not None:
            command += ["--params-file", str(params_file)]
        for name, value in values.items():
            command += ["-p", f"{name}:={str(value).lower() if isinstance(value, bool) else value}"]
        self.log = tempfile.NamedTemporaryFile("w+", prefix="segzero-bench-node-", suffix=".log")
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT
        )

    def check(self) -> None:
        if self.process.poll() is not None:
            self.log.seek(0)
            raise SystemExit(f"the node exited:\n{self.log.read()}")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


class Probe:
    """Camera publisher, query publisher, result and tracking-state subscriber."""

    def __init__(self, context, camera_hz: float, width: int, height: int):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image
        from std_msgs.msg import String

        from segzero_ros.msg import SegmentationResult, TrackingState

        self.node = rclpy.create_node("segzero_bench_tracking", context=context)
        self.results: list[tuple[float, SegmentationResult]] = []
        self.states: list[tuple[float, TrackingState]] = []
        self.arrived = threading.Condition()
        latched = QoSProfile(
            depth=10,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.node.create_subscription(
            SegmentationResult, "/segzero/result", self._on_result, latched
        )
        self.node.create_subscription(TrackingState, "/segzero/tracking/state", self._on_state, 50)
        self.queries = self.node.create_publisher(
            String, "/segzero/query", QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        )
        self.camera = self.node.create_publisher(Image, "/bench/image", 5)
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        threading.Thread(target=self.executor.spin, daemon=True).start()
        self.frame = image_msg(width, height, "rgb8")
        self.period = 1.0 / camera_hz
        self.streaming = threading.Event()
        self.String = String

    def _on_result(self, msg) -> None:
        with self.arrived:
            self.results.append((time.perf_counter(), msg))
            self.arrived.notify_all()

    def _on_state(self, msg) -> None:
        with self.arrived:
            self.states.append((time.perf_counter(), msg))

    def wait_for_node(self, node: NodeProcess, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while (
            self.queries.get_subscription_count() == 0 or self.camera.get_subscription_count() == 0
        ):
            node.check()
            if time.monotonic() > deadline:
                raise SystemExit("the node did not subscribe in time")
            time.sleep(0.05)

    def stream(self) -> None:
        self.streaming.clear()

        def run() -> None:
            while not self.streaming.wait(self.period):
                self.frame.header.stamp = self.node.get_clock().now().to_msg()
                self.camera.publish(self.frame)

        threading.Thread(target=run, daemon=True).start()

    def ask(self, text: str) -> tuple[float, float, object]:
        """(sent, received, result) for one query, waiting for its answer."""
        with self.arrived:
            seen = len(self.results)
        sent = time.perf_counter()
        self.queries.publish(self.String(data=text))
        with self.arrived:
            if not self.arrived.wait_for(
                lambda: any(m.query == text for _, m in self.results[seen:]), timeout=120
            ):
                raise SystemExit(f"no result for {text!r}")
            got, msg = next((t, m) for t, m in self.results[seen:] if m.query == text)
        return sent, got, msg

    def close(self) -> None:
        self.streaming.set()
        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()


def run_setting(context, args, track: bool) -> dict:
    node = NodeProcess(args.cache_dir, track=track)
    probe = Probe(context, args.camera_hz, args.width, args.height)
    try:
        probe.wait_for_node(node)
        probe.stream()
        for _ in range(100):  # until the node holds a frame (NO_IMAGE before)
            if probe.ask(QUERY)[2].status_name != "NO_IMAGE":
                break
            time.sleep(0.2)
        report: dict = {}
        if track:
            time.sleep(1.0)  # the seeded track settles into the camera's rhythm
            with probe.arrived:
                start = len(probe.states)
            time.sleep(args.seconds)
            with probe.arrived:
                idle = len(probe.states) - start
            report["tracking_hz_idle"] = round(idle / args.seconds, 2)
        latencies, windows, statuses = [], [], []
        for _ in range(args.queries):
            sent, got, msg = probe.ask(QUERY)
            latencies.append(got - sent)
            windows.append((sent, got))
            statuses.append(msg.status_name)
            time.sleep(0.3)  # some tracked frames between queries
        report["query_latency_ms"] = summary(latencies, 1e3)
        report["statuses"] = {s: statuses.count(s) for s in sorted(set(statuses))}
        if track:
            with probe.arrived:
                states = list(probe.states)
            # A message arriving within 50 ms after a query's start was a frame already taken.
            during = sum(
                1 for t, _ in states for sent, got in windows if sent + 0.05 < t < got - 0.005
            )
            report["tracked_frames_during_queries"] = during
            report["frames_skipped_reported"] = sum(s.frames_skipped for _, s in states)
            report["tracking_messages"] = len(states)
            objects = [o for _, s in states for o in s.objects]
            report["object_states"] = {
                n: sum(o.state_name == n for o in objects) for n in ("TRACKING", "LOST")
            }
            report["lost_reasons"] = sorted({o.reason for o in objects if o.reason})
        return report
    finally:
        probe.close()
        node.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0, help="idle tracking window")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--cache-dir", default=None, help="tiny model cache")
    parser.add_argument(
        "--dds-profile",
        default=str(ROOT / "config" / "fastdds_large_frames.xml"),
        help="Fast DDS profile for both processes ('' for Fast DDS's defaults, which lose most "
        "640x480 best-effort frames between processes: see that file)",
    )
    args = parser.parse_args()

    use_local_ros(args.dds_profile)
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        without = run_setting(context, args, track=False)
        with_tracking = run_setting(context, args, track=True)
    finally:
        rclpy.shutdown(context=context)
    report = {
        "policy": "pause during reasoning (one device lock; no frame taken while a query runs)",
        "camera": f"{args.width}x{args.height} rgb8 at {args.camera_hz:g} Hz",
        "dds_profile": args.dds_profile or "Fast DDS defaults",
        "without_tracking": without,
        "with_tracking": with_tracking,
        "query_latency_added_ms": round(
            with_tracking["query_latency_ms"]["median"] - without["query_latency_ms"]["median"], 2
        ),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
