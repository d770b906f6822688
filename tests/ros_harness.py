"""The node tests' shared harness: the perception node on the tiny models and a probe node (the
test's side of the wire), spinning in one MultiThreadedExecutor on a background thread of this
process, over real DDS in a domain of their own (from the pid) on localhost.

The node starts once per session (`node_harness` in conftest.py); the `harness` fixture hands
it to each test idle, active and on its start-up parameters, and checks that the test left it
so. Needs the generated messages (`source install/setup.bash`, as scripts/test.sh does).
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import ros_domain_id, ros_importorskip, ros_process_env

msgs = ros_importorskip(
    "segzero_ros.msg", reason="generated messages: run under `source install/setup.bash`"
)

import rclpy  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.action import ActionClient  # noqa: E402
from rclpy.executors import MultiThreadedExecutor  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Header, String  # noqa: E402

from segzero_ros.action import Segment  # noqa: E402
from segzero_ros.main import spin  # noqa: E402
from segzero_ros.node import PerceptionNode  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
R = msgs.SegmentationResult
DOMAIN_ID = str(ros_domain_id("node_harness"))
NODE_NAME = "segzero_perception"
CAMERA = "/test_camera/image_raw"
QUEUE_SIZE = 3
MAX_NEW_TOKENS = 96
WAIT = 90.0  # seconds; a tiny query takes 1-8 s on a busy 2-core CPU
LATCHED = QoSProfile(
    depth=300,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
# The parameters the shared node runs with; every test leaves them so.
NODE_OVERRIDES = {
    "device": "cpu",
    "max_new_tokens": MAX_NEW_TOKENS,
    "image_topic": CAMERA,
    "max_image_age": 0.0,  # frames are published once; the stale tests turn it on
    "queue_size": QUEUE_SIZE,
    "diagnostics_period": 0.2,
    "track": False,  # answers start no track unless a test asks (tests/ros/test_node_tracking.py)
}


def ros_env() -> dict[str, str]:
    """The environment of the ROS processes the node tests start: the harness's domain."""
    return ros_process_env(int(DOMAIN_ID))


def wait_until(predicate, timeout: float = WAIT, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def scene(width: int, height: int) -> np.ndarray:
    rgb = np.full((height, width, 3), 90, np.uint8)
    rgb[height // 3 : 2 * height // 3, width // 3 : 2 * width // 3] = (220, 30, 30)
    return rgb


def wait_matched(publisher, node: PerceptionNode, topic: str) -> None:
    """Wait until a publisher and the node's reader have matched each other: a reader drops
    what comes from a writer it has not matched yet, and the node makes new readers at each
    activate."""

    def matched() -> bool:
        readers = [s for s in node._subs if s.topic_name == topic]
        return (
            publisher.get_subscription_count() > 0
            and bool(readers)
            and all(reader.get_publisher_count() > 0 for reader in readers)
        )

    wait_until(matched, 20, f"{topic} matched")


class Probe:
    """The test's side of the wire: camera and query publishers, result/part subscribers and
    an action client, each message kept in arrival order."""

    def __init__(self, context):
        self.node = rclpy.create_node("segzero_test_probe", context=context)
        n = self.node
        self.condition = threading.Condition()
        self.received: dict[str, list] = {
            "result": [],
            "mask": [],
            "instances": [],
            "reasoning": [],
            "overlay": [],
            "diagnostics": [],
        }
        self.image_pub = n.create_publisher(Image, CAMERA, 5)
        self.query_pub = n.create_publisher(String, "/segzero/query", LATCHED)
        for key, kind, topic in [
            ("result", R, "/segzero/result"),
            ("mask", Image, "/segzero/mask"),
            ("instances", Image, "/segzero/instances"),
            ("reasoning", String, "/segzero/reasoning"),
            ("overlay", Image, "/segzero/overlay"),
            ("diagnostics", DiagnosticArray, "/diagnostics"),
        ]:
            qos = LATCHED if key != "diagnostics" else 10
            n.create_subscription(kind, topic, self._keeper(key), qos)
        self.action = ActionClient(n, Segment, "/segzero/segment")

    def _keeper(self, key):
        def keep(msg):
            with self.condition:
                self.received[key].append(msg)
                self.condition.notify_all()

        return keep

    def messages(self, key: str, after: int = 0) -> list:
        """The messages received on `key`, from index `after` on (see `mark`)."""
        with self.condition:
            return list(self.received[key][after:])

    def mark(self, key: str) -> int:
        """How many messages `key` has now: pass it as `after` to see only later ones."""
        with self.condition:
            return len(self.received[key])

    def wait_for(
        self, key: str, predicate, timeout: float = WAIT, what: str = "", *, after: int = 0
    ):
        """The first message on `key` (from index `after` on) that satisfies `predicate`."""
        with self.condition:
            found = self.condition.wait_for(
                lambda: next((m for m in self.received[key][after:] if predicate(m)), None),
                timeout,
            )
        assert found is not None, f"timed out waiting for {what or key}"
        return found

    def result(self, query: str, timeout: float = WAIT, *, after: int = 0):
        return self.wait_for(
            "result", lambda m: m.query == query, timeout, f"result of {query!r}", after=after
        )

    def query(self, text: str) -> None:
        self.query_pub.publish(String(data=text))

    def ask(self, text: str, timeout: float = WAIT):
        """Send a query and wait for its result (a result for the same text sent earlier in
        the session does not count)."""
        after = self.mark("result")
        self.query(text)
        return self.result(text, timeout, after=after)


class Harness:
    def __init__(self, context, executor, node: PerceptionNode, probe: Probe):
        self.context, self.executor, self.node, self.probe = context, executor, node, probe
        self.params = node.read_params()  # as started: what every test leaves behind

    # ------------------------------------------------------------------ inputs

    def image_msg(self, width=64, height=48, *, stamp=None, frame_id="camera_optical"):
        header = Header(frame_id=frame_id)
        header.stamp = stamp if stamp is not None else self.node.get_clock().now().to_msg()
        rgb = scene(width, height)
        return Image(
            header=header,
            height=height,
            width=width,
            encoding="rgb8",
            step=width * 3,
            data=rgb.tobytes(),
        )

    def publish_frame(self, msg: Image) -> Header:
        """Publish a camera frame and wait until the node holds it as its newest."""
        wait_until(lambda: self.probe.image_pub.get_subscription_count() > 0, what="camera match")
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # best effort: publish again until it is there
            self.probe.image_pub.publish(msg)
            try:
                wait_until(
                    lambda: (
                        (frame := self.node.latest_frame) is not None
                        and frame.msg.header == msg.header
                    ),
                    timeout=1.0,
                )
                return msg.header
            except AssertionError:
                continue
        raise AssertionError("the node never received the camera frame")

    def fresh_frame(self, **kwargs) -> Header:
        return self.publish_frame(self.image_msg(**kwargs))

    def send_goal(self, query: str, image: Image | None = None, feedback: list | None = None):
        assert self.probe.action.wait_for_server(timeout_sec=20), "no action server"
        goal = Segment.Goal(query=query)
        if image is not None:
            goal.image = image
        future = self.probe.action.send_goal_async(
            goal,
            feedback_callback=None if feedback is None else lambda f: feedback.append(f.feedback),
        )
        wait_until(future.done, 20, "goal response")
        handle = future.result()
        assert handle.accepted
        return handle

    def goal_result(self, handle, timeout: float = WAIT):
        future = handle.get_result_async()
        wait_until(future.done, timeout, "goal result")
        response = future.result()
        return response.status, response.result.result

    # ------------------------------------------------------------------ state

    def wait_query_matched(self) -> None:
        wait_matched(self.probe.query_pub, self.node, "/segzero/query")

    def wait_ready(self) -> None:
        """The node active and wired to the probe: queries match, the overlay has its
        subscriber (it is drawn only then), the action server answers."""
        assert self.node.active, "the node is not active"
        self.wait_query_matched()
        wait_until(
            lambda: self.node._pubs["overlay"].get_subscription_count() > 0,
            20,
            "the overlay subscriber matched",
        )
        assert self.probe.action.wait_for_server(timeout_sec=20), "no action server"

    def wait_idle(self, timeout: float = (QUEUE_SIZE + 1) * WAIT) -> None:
        worker = self.node.worker
        assert worker is not None, "the node is not configured"
        assert worker.wait_idle(timeout), "the node's queue did not drain"

    def restore(self) -> list[str]:
        """Put the node back as the harness started it (active, start-up parameters, the real
        pipeline); returns what had to be put back."""
        problems = []
        pipeline = self.node.pipeline
        if pipeline is not None and "segment" in vars(pipeline):
            del pipeline.segment
            problems.append("pipeline.segment wrapped")
        if self.node.tracking.track_ids:
            problems.append(f"tracks left: {self.node.tracking.track_ids}")
            self.node.tracking.stop_tracks()
        if self.node.worker is None:
            problems.append("unconfigured")
            assert self.node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        changed = {
            name: value
            for name, value in vars(self.params).items()
            if getattr(self.node.read_params(), name) != value
        }
        if changed:
            problems.append(f"parameters changed: {sorted(changed)}")
            results = self.node.set_parameters(
                [Parameter(name, value=value) for name, value in changed.items()]
            )
            assert all(r.successful for r in results), results
        if not self.node.active:
            problems.append("inactive")
            assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        elif changed:  # model parameters apply at activate
            assert self.node.trigger_deactivate() == TransitionCallbackReturn.SUCCESS
            assert self.node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        self.wait_ready()
        return problems


@contextlib.contextmanager
def running_harness(tiny_qwen_dir, tiny_sam2_dir) -> Iterator[Harness]:
    """The node (configured and active) and the probe, spinning until the block ends."""
    with pytest.MonkeyPatch.context() as patch:  # read once, when the context starts
        patch.setenv("ROS_DOMAIN_ID", DOMAIN_ID)
        patch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        context = rclpy.Context()
        rclpy.init(context=context)
    node = PerceptionNode(
        context=context,
        parameter_overrides={
            "reasoning_model": str(tiny_qwen_dir),
            "segmentation_model": str(tiny_sam2_dir),
            **NODE_OVERRIDES,
        },
    )
    probe = Probe(context)
    executor = MultiThreadedExecutor(num_threads=6, context=context)
    executor.add_node(node)
    executor.add_node(probe.node)
    # The node's own spin(), as the console script runs it: rclpy can still raise InvalidHandle
    # from the wait set when the action server is destroyed at deactivate (ros2/rclpy#1284).
    stop = threading.Event()
    spinner = threading.Thread(target=spin, args=(executor, node.get_logger(), stop), daemon=True)
    spinner.start()
    try:
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
        assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
        harness = Harness(context, executor, node, probe)
        harness.wait_ready()
        yield harness
        node.trigger_shutdown()
        assert node.worker is None and node.pipeline is None
    finally:
        stop.set()
        executor.shutdown(timeout_sec=5)
        node.release()
        node.destroy_node()
        probe.node.destroy_node()
        rclpy.shutdown(context=context)
        spinner.join(timeout=10)


# ---------------------------------------------------------------------- the pipeline boundary


@contextlib.contextmanager
def restored_parameters(node: PerceptionNode) -> Iterator[Callable[..., None]]:
    """`set_params(**values)` on the shared node; every parameter it changed is put back at
    the end, so the next test finds the node as the harness left it."""
    changed: dict = {}

    def set_params(**values) -> None:
        for name in values:
            changed.setdefault(name, getattr(node.params, name))
        results = node.set_parameters([Parameter(n, value=v) for n, v in values.items()])
        assert all(r.successful for r in results), results

    try:
        yield set_params
    finally:
        if changed:
            node.set_parameters([Parameter(n, value=v) for n, v in changed.items()])


@contextlib.contextmanager
def kept_tracks(harness: Harness) -> Iterator[Callable[..., None]]:
    """Within the block, tracks that no score or area can lose (the tiny SAM2's object scores
    hover near 0.5, its masks are noise: with the defaults a track could be lost at any
    frame); yields `restored_parameters`' setter. After it every track is stopped (once the
    node is idle) and the parameters are put back."""
    node = harness.node
    with restored_parameters(node) as set_params:
        set_params(lost_score=0.0, lost_min_area=0)
        try:
            yield set_params
        finally:
            harness.wait_idle()
            node.tracking.stop_tracks()


@contextlib.contextmanager
def wrap_segment(node: PerceptionNode, wrapper: Callable) -> Iterator[None]:
    """Within the block, the node's worker calls `wrapper(real_segment, *args, **kwargs)`
    instead of its real `pipeline.segment` (a call already in the wrapper finishes there)."""
    pipeline = node.pipeline
    assert pipeline is not None and "segment" not in vars(pipeline)
    pipeline.segment = functools.partial(wrapper, pipeline.segment)
    try:
        yield
    finally:
        del pipeline.segment


class Hold:
    """A gate at the pipeline boundary: every call waits until `release`, then calls the real
    segment. With the worker held in its running job, the queue fills deterministically."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self._calls = 0
        self._condition = threading.Condition()

    def __call__(self, segment, *args, **kwargs):
        with self._condition:
            self._calls += 1
            self._condition.notify_all()
        if not self.released.wait(WAIT):
            raise RuntimeError("the test never released the held job")
        return segment(*args, **kwargs)

    def wait_calls(self, n: int = 1, timeout: float = 20) -> None:
        with self._condition:
            assert self._condition.wait_for(lambda: self._calls >= n, timeout), (
                f"the worker made {self._calls} of {n} pipeline calls"
            )

    def release(self) -> None:
        self.released.set()


@contextlib.contextmanager
def held_worker(harness: Harness, start: Callable[[], object]) -> Iterator[object]:
    """Run `start()` (which sends one query or goal that reaches the model), and hold the
    worker inside that job's pipeline call until the block ends; yields what `start` returned.
    The queue is empty and the worker busy when the block begins."""
    hold = Hold()
    with wrap_segment(harness.node, hold):
        try:
            started = start()
            hold.wait_calls(1)
            assert harness.node.worker.busy and harness.node.worker.depth == 0
            yield started
        finally:
            hold.release()
