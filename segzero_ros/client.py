"""`segzero-query`: send one query to the perception node's `Segment` action and print what
comes back — the reasoning as it streams, then the status, box and points. Ctrl-C cancels the
goal. Exit status: 0 OK, 1 the node answered with a failure status, 2 no server / timeout /
bad arguments, 3 NOT_FOUND (the model answered that no such object is in view), 130
interrupted.

Arguments after `--ros-args` go to ROS, e.g. `segzero-query "the red cup" --ros-args -r
__ns:=/left` asks the node started in the namespace /left (the action name is relative)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_ERROR, EXIT_NOT_FOUND, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


class _Interrupted(Exception):
    """Ctrl-C, noticed between spins (a KeyboardInterrupt raised inside rclpy's C code would
    surface as an unrelated error)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segzero-query",
        description=__doc__.split("\n")[0],
        epilog="Arguments after --ros-args go to ROS (e.g. --ros-args -r __ns:=/left).",
    )
    parser.add_argument("query", help='what to segment, e.g. "the red cup"')
    parser.add_argument("--image", type=Path, help="segment this image file, not the camera's")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to wait (300)")
    parser.add_argument(
        "--action",
        default="segzero/segment",
        help="action name (relative: resolved in the namespace given with --ros-args -r __ns:=/NS)",
    )
    parser.add_argument("--save-mask", type=Path, help="write the mask as a PNG (0/255)")
    parser.add_argument(
        "--save-overlay", type=Path, help="write an overlay PNG (needs --image: drawn here)"
    )
    parser.add_argument("--quiet", action="store_true", help="do not stream the reasoning")
    return parser


class _FeedbackPrinter:
    """Prints the part of the streamed reasoning that was not printed yet, and stage changes."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.printed = ""
        self.stage = ""

    def __call__(self, feedback_msg) -> None:
        feedback = feedback_msg.feedback
        if feedback.stage != self.stage:
            self.stage = feedback.stage
            where = f" (position {feedback.queue_position})" if feedback.stage == "queued" else ""
            print(f"[{feedback.stage}{where}]", file=sys.stderr, flush=True)
        if self.quiet or not feedback.reasoning.startswith(self.printed):
            return
        print(feedback.reasoning[len(self.printed) :], end="", flush=True)
        self.printed = feedback.reasoning

    def finish(self) -> None:
        if self.printed:
            print(flush=True)


def split_ros_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """(our arguments, ROS arguments): everything from the first `--ros-args` on is ROS's."""
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    return argv[:split], argv[split:]


def main(argv: list[str] | None = None) -> int:
    ours, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(ours)
    image = None
    if args.image is not None:
        from segzero_model.errors import ImageLoadError
        from segzero_model.images import load_image

        try:
            image = load_image(args.image)
        except ImageLoadError as error:
            print(f"segzero-query: error: {error}", file=sys.stderr)
            return EXIT_ERROR
    if args.save_overlay is not None and image is None:
        print("segzero-query: error: --save-overlay needs --image", file=sys.stderr)
        return EXIT_ERROR

    import rclpy
    from rclpy.action import ActionClient
    from rclpy.signals import SignalHandlerOptions

    from segzero_ros.action import Segment

    try:
        rclpy.init(args=[sys.argv[0], *ros_args], signal_handler_options=SignalHandlerOptions.NO)
    except RuntimeError as error:  # rclpy's RCLError, e.g. a malformed remapping
        detail = str(error).split(", at ")[0]
        print(f"segzero-query: error: bad ROS arguments: {detail}", file=sys.stderr)
        return EXIT_ERROR
    interrupted = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: interrupted.set())
    node = rclpy.create_node("segzero_query")
    client = ActionClient(node, Segment, args.action)
    action = node.resolve_topic_name(args.action)  # as the server's name resolves: for messages
    goal_handle = None
    try:
        if not client.wait_for_server(timeout_sec=min(args.timeout, 30.0)):
            print(
                f"segzero-query: error: no action server {action} "
                "(is segzero-perception running and active?)",
                file=sys.stderr,
            )
            return EXIT_ERROR
        goal = Segment.Goal(query=args.query)
        if image is not None:
            from segzero_ros.convert import rgb_to_image_msg

            header = _header(node, "segzero_query")
            goal.image = rgb_to_image_msg(image, header)
        printer = _FeedbackPrinter(args.quiet)
        deadline = time.monotonic() + args.timeout
        goal_handle = _wait(
            node, client.send_goal_async(goal, feedback_callback=printer), deadline, interrupted
        )
        if goal_handle is None or not goal_handle.accepted:
            print("segzero-query: error: the goal was rejected or timed out", file=sys.stderr)
            return EXIT_ERROR
        response = _wait(node, goal_handle.get_result_async(), deadline, interrupted)
        printer.finish()
        if response is None:
            print(f"segzero-query: error: no result within {args.timeout:g} s", file=sys.stderr)
            _cancel(node, goal_handle)
            return EXIT_ERROR
        return _report(response.result.result, args, image, printed_reasoning=bool(printer.printed))
    except (_Interrupted, KeyboardInterrupt):
        print("\nsegzero-query: cancelling the goal", file=sys.stderr)
        if goal_handle is not None:
            _cancel(node, goal_handle)
        return EXIT_INTERRUPTED
    finally:
        client.destroy()
        node.destroy_node()
        rclpy.try_shutdown()


def _header(node, frame_id: str):
    from std_msgs.msg import Header

    return Header(stamp=node.get_clock().now().to_msg(), frame_id=frame_id)


def _wait(node, future, deadline: float, interrupted: threading.Event | None = None):
    """Spin `node` until `future` is done; its result, or None at the deadline. Raises
    _Interrupted once `interrupted` is set (checked every 50 ms)."""
    import rclpy

    while not future.done() and time.monotonic() < deadline:
        if interrupted is not None and interrupted.is_set():
            raise _Interrupted
        rclpy.spin_until_future_complete(node, future, timeout_sec=0.05)
    return future.result() if future.done() else None


def _cancel(node, goal_handle) -> None:
    _wait(node, goal_handle.cancel_goal_async(), time.monotonic() + 5.0)


def _report(result, args, image, printed_reasoning: bool) -> int:
    print(f"status:    {result.status_name}" + (f" ({result.error})" if result.error else ""))
    if not printed_reasoning or args.quiet:
        print(f"reasoning: {result.reasoning or '-'}")
    if result.status_name == "NOT_FOUND":
        print("not found: the model answered that no such object is in view")
        return EXIT_NOT_FOUND
    if len(result.objects) > 1:
        print(f"objects:   {len(result.objects)} (bbox, points and score below: the first's)")
        for line in object_lines(result.objects):
            print(line)
    if result.has_bbox:
        print("bbox:      [" + ", ".join(f"{v:.1f}" for v in result.bbox) + "]")
    if result.points:
        print("points:    " + ", ".join(f"({p.x:.1f}, {p.y:.1f})" for p in result.points))
    timings = ", ".join(f"{t.stage} {t.seconds * 1000:.0f} ms" for t in result.timings)
    print(f"timings:   {timings or '-'}")
    mask = _mask(result)
    if mask is not None:
        print(f"mask:      {int(mask.sum())} pixels, score {result.score:.3f}")
        _save_outputs(args, image, result, mask)
    return EXIT_OK if result.status_name == "OK" else EXIT_FAILED


def object_lines(objects) -> list[str]:
    """One line per SegmentedObject: its number, box, points, score and area."""
    lines = []
    for obj in objects:
        box = "[" + ", ".join(f"{v:.1f}" for v in obj.bbox) + "]" if obj.has_bbox else "-"
        points = ", ".join(f"({p.x:.1f}, {p.y:.1f})" for p in obj.points) or "-"
        lines.append(
            f"  #{obj.instance_id}: bbox {box}, points {points}, "
            f"score {obj.score:.3f}, area {obj.area}"
        )
    return lines


def _mask(result):
    if result.mask.height == 0:
        return None
    from segzero_ros.convert import image_msg_to_rgb

    return image_msg_to_rgb(result.mask)[:, :, 0] > 127


def _save_outputs(args, image, result, mask) -> None:
    from segzero_model.images import save_image

    if args.save_mask is not None:
        save_image(args.save_mask, mask.astype("uint8") * 255)
        print(f"wrote {args.save_mask}")
    if args.save_overlay is not None and image is not None:
        from segzero_model.overlay import draw_overlay
        from segzero_model.result import SegmentationResult, Status

        drawn = SegmentationResult(
            status=Status.OK,
            query=result.query,
            image_size=(image.shape[1], image.shape[0]),
            mask=mask,
            bbox=tuple(result.bbox) if result.has_bbox else None,
            points=tuple((p.x, p.y) for p in result.points) or None,
        )
        save_image(args.save_overlay, draw_overlay(image, drawn))
        print(f"wrote {args.save_overlay}")


if __name__ == "__main__":
    sys.exit(main())
