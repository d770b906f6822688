"""The edge recipe (config/edge.yaml) as deployed, measured on this machine: the reasoner on an
OpenAI-compatible server, EdgeTAM in the node on the CPU; query latency and tracking rate.

    source install/setup.bash
    .venv/bin/python -m benchmarks.edge [--queries 5] [--seconds 10] [--camera-hz 15]

The server is `transformers serve` on this machine with the tiny reasoner (what a GPU host's
vLLM or SGLang would be; its own speed is not the point), the segmenter the released EdgeTAM
architecture at random weights, written in its on-disk format (`--tiny-segmenter`: the tiny
EdgeTAM). The node runs in its own process with the recipe's parameter file and only the
addresses changed (server URL, model paths, camera topic, CPU), with the Fast DDS profile for
640x480 frames; this process streams the camera and asks. Prints JSON.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchmarks import provenance, transformers_server
from benchmarks.ros_overhead import summary, use_local_ros
from benchmarks.tracking_priority import QUERY, NodeProcess, Probe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "config" / "edge.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=10.0, help="tracking window")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--camera-hz", type=float, default=15.0)
    parser.add_argument("--tiny-segmenter", action="store_true", help="the tiny EdgeTAM")
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)

    from segzero_model.tiny import ensure_tiny_models
    from segzero_model.tiny.segmenters import write_tiny_segmenter

    use_local_ros(ROOT / "config" / "fastdds_large_frames.xml")
    import rclpy

    reasoner_dir, _ = ensure_tiny_models()
    with tempfile.TemporaryDirectory(prefix="segzero-edge-") as scratch:
        edgetam = write_tiny_segmenter(
            Path(scratch) / "edgetam", "edgetam", real_size=not args.tiny_segmenter
        )
        server, url = transformers_server.start("cpu", Path(scratch) / "server.log")
        context = rclpy.Context()
        rclpy.init(context=context)
        node = probe = None
        try:
            node = NodeProcess(
                None,
                params_file=RECIPE,
                reasoning_url=url,
                reasoning_model=reasoner_dir,
                segmentation_model=edgetam,
                device="cpu",
            )
            probe = Probe(context, args.camera_hz, args.width, args.height)
            probe.wait_for_node(node)
            probe.stream()
            for _ in range(300):  # until the node holds a frame (NO_IMAGE before)
                if probe.ask(QUERY)[2].status_name != "NO_IMAGE":
                    break
                time.sleep(0.2)
            latencies, statuses = [], []
            for _ in range(args.queries):
                sent, got, msg = probe.ask(QUERY)
                latencies.append(got - sent)
                statuses.append(msg.status_name)
                time.sleep(0.5)
            with probe.arrived:
                start = len(probe.states)
            time.sleep(args.seconds)
            with probe.arrived:
                tracked = len(probe.states) - start
        finally:
            if probe is not None:
                probe.close()
            if node is not None:
                node.stop()
            rclpy.shutdown(context=context)
            transformers_server.stop(server)
    report = {
        "benchmark": "edge",
        "recipe": str(RECIPE.relative_to(ROOT)),
        "segmenter": "EdgeTAM, "
        + ("tiny" if args.tiny_segmenter else "released architecture")
        + " (random weights), in the node on the CPU",
        "reasoner": "tiny Qwen2.5-VL on transformers serve (localhost)",
        "camera": f"{args.width}x{args.height} rgb8 at {args.camera_hz:g} Hz",
        "query_latency_ms": summary(latencies, 1e3),
        "statuses": {s: statuses.count(s) for s in sorted(set(statuses))},
        "tracking_hz": round(tracked / args.seconds, 2),
        "cpu_count": os.cpu_count(),
    }
    provenance.publish(report, args.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
