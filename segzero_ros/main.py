"""The `segzero-perception` console script (also `ros2 run segzero_ros segzero_perception`):
argument parsing, start-up checks, the executor and a clean shutdown.

    segzero-perception [--params-file config/perception.yaml] [--tiny] [--ros-args ...]

Exit status: 0 after a normal shutdown (Ctrl-C, SIGTERM), 2 when the node could not start (a
bad parameter or parameter file, models that do not load), 130 when interrupted during start-up.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading

import rclpy
from rclpy.exceptions import InvalidHandle, ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions

from segzero_ros.client import split_ros_args
from segzero_ros.node import PerceptionNode, one_line
from segzero_ros.params import ParamsError, load_params_file

EXIT_START_FAILED = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="segzero-perception",
        description="Run the Seg-Zero perception node (ROS 2). Arguments after --ros-args go "
        "to ROS (remaps, -p name:=value, --params-file, --log-level).",
    )
    parser.add_argument(
        "--params-file",
        help="ROS 2 parameter file (e.g. config/perception.yaml); checked before start-up",
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="use the built-in tiny random models (plumbing tests; output is MEANINGLESS); with "
        "-p model_family:=qwen3_vl the tiny Qwen3-VL (two objects for 'all', none for 'unicorn')",
    )
    return parser


def ros_params_files(ros_args: list[str]) -> list[str]:
    """The files given with --params-file among the ROS arguments."""
    return [ros_args[i + 1] for i, arg in enumerate(ros_args[:-1]) if arg == "--params-file"]


def main(argv: list[str] | None = None) -> int:
    ours, ros_args = split_ros_args(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(ours)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s] [%(name)s]: %(message)s")
    # The node logs one line per failed query itself; the pipeline's own warnings would repeat it.
    logging.getLogger("segzero_model.pipeline").setLevel(logging.ERROR)

    extra: list[str] = []
    try:
        if args.params_file is not None:
            load_params_file(args.params_file)
            extra += ["--params-file", os.path.abspath(args.params_file)]
    except ParamsError as error:
        print(f"segzero-perception: error: {error}", file=sys.stderr)
        return EXIT_START_FAILED
    if args.tiny:
        from segzero_model.tiny import TINY_WARNING

        print(TINY_WARNING, file=sys.stderr)

    rclpy_args = [sys.argv[0]]
    if extra:
        rclpy_args += ["--ros-args", *extra]
    rclpy_args += ros_args
    # rclpy's own SIGINT handler would shut the context down before the node is released, and
    # every log line of the release would then fail to reach /rosout. Signals only stop the
    # executor here; the node is released while the context is still valid.
    rclpy.init(args=rclpy_args, signal_handler_options=SignalHandlerOptions.NO)
    stop = _SignalStop()
    node = None
    try:
        try:
            node = PerceptionNode()
            for path in ros_params_files(ros_args):
                # Unknown names in this node's sections are errors; a file without a section
                # for this node is fine (one file may serve several nodes).
                load_params_file(
                    path,
                    node_name=node.get_name(),
                    namespace=node.get_namespace(),
                    require_section=False,
                )
            if args.tiny:
                use_tiny_models(node)
        except (ParamsError, ParameterException) as error:
            print(f"segzero-perception: error: {one_line(error)}", file=sys.stderr)
            return EXIT_START_FAILED
        if args.tiny:
            node.get_logger().warning(TINY_WARNING)
        executor = MultiThreadedExecutor(num_threads=max(4, os.cpu_count() or 1))
        executor.add_node(node)
        if node.params.autostart and not start(node):
            return EXIT_START_FAILED
        stop.set_spinning()
        try:
            spin(executor, node.get_logger(), stop)
        except ExternalShutdownException:
            pass
        finally:
            executor.shutdown(timeout_sec=1.0)
        return 0
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        if node is not None:
            node.release()
            node.destroy_node()
        rclpy.try_shutdown()


def use_tiny_models(node: PerceptionNode) -> None:
    """--tiny: the tiny checkpoints of the node's model_family (`segzero_model.tiny.tiny_models`,
    the choice every --tiny path makes: the tiny Qwen3-VL for qwen3_vl, else the tiny
    Qwen2.5-VL) replace both models. Read after the node is built, so its own parameter
    resolution (-p, parameter files, namespaces, wildcard sections) decides the family.
    Raises ParameterException when the change is refused."""
    from segzero_model.tiny import tiny_models

    params = node.params
    tiny = tiny_models(params.model_family, params.segmentation_family)
    reasoner, segmenter = (str(path) for path in tiny)
    names = {"reasoning_model": reasoner, "segmentation_model": segmenter}
    results = node.set_parameters([Parameter(name, value=v) for name, v in names.items()])
    for name, result in zip(names, results, strict=True):
        if not result.successful:
            raise ParameterException(result.reason, [name])
    node.get_logger().info(
        f"--tiny, model_family {params.model_family}, segmentation_family "
        f"{params.segmentation_family}: the tiny models {reasoner}, {segmenter}"
    )


class _SignalStop(threading.Event):
    """Set by SIGINT or SIGTERM. Before the spin starts (loading the models can take minutes) a
    signal interrupts at once (KeyboardInterrupt: exit 130); while spinning it only sets the
    event, so the spin loop returns and the node is released with its context still valid."""

    def __init__(self) -> None:
        super().__init__()
        self._spinning = False
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def set_spinning(self) -> None:
        self._spinning = True

    def _handle(self, signum, frame) -> None:
        self.set()
        if not self._spinning:
            raise KeyboardInterrupt


SPIN_PERIOD = 0.2  # seconds between checks of the stop event (how fast a signal is answered)


def spin(executor, logger, stop: threading.Event) -> None:
    """Spin until `stop` is set or the context shuts down (set `stop` before shutting the
    executor down). Survives rclpy's wait-set race with entity destruction (ros2/rclpy#1284):
    an entity destroyed (the action server at deactivate) while an executor thread adds it to
    its wait set raises InvalidHandle, or RCLError "... pointer is invalid" from rcl itself;
    either costs one wait, not the node."""
    while not stop.is_set() and executor.context.ok():
        try:
            executor.spin_once(timeout_sec=SPIN_PERIOD)
        except (InvalidHandle, _rclpy.RCLError) as error:
            if isinstance(error, _rclpy.RCLError) and not _destroyed_entity(error):
                raise
            logger.warning(f"executor: {error}; spinning on", throttle_duration_sec=10.0)


def _destroyed_entity(error: Exception) -> bool:
    """rcl's words for adding an entity that was just destroyed to a wait set."""
    return "pointer is invalid" in str(error)


def start(node: PerceptionNode) -> bool:
    """Configure and activate (autostart); False, after one logged line, when either fails."""
    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        return False
    return node.trigger_activate() == TransitionCallbackReturn.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
