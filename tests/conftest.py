"""Shared fixtures: tiny, randomly initialised checkpoints in the real on-disk formats, loaded
through the same code users call with hub ids.

They are built once into the tiny-model cache (`$SEGZERO_CACHE`, default ~/.cache/segzero),
under a name that hashes the builders' source, so later runs reuse them and a changed builder
never meets a stale build.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def share_the_cores_between_workers() -> int | None:
    """Under pytest-xdist, give each worker's torch (and every process a test starts: nodes,
    servers, launches, which inherit OMP_NUM_THREADS) its share of the cores instead of all of
    them: two workers on 2 cores with 2 threads each fight over the cores and ran the model
    tests 2.4x slower than with one thread each. A value the user set wins. Returns the thread
    count set, or None when nothing was changed."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 0)
    if workers < 2 or "OMP_NUM_THREADS" in os.environ:
        return None
    threads = max(1, (os.cpu_count() or 1) // workers)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if "torch" in sys.modules:  # a plugin imported it first: its pool is sized already
        sys.modules["torch"].set_num_threads(threads)
    return threads


share_the_cores_between_workers()

# scripts/test.sh (CI) sets SEGZERO_REQUIRE_ROS=1: what it built and installed must be there.
REQUIRE_ROS = os.environ.get("SEGZERO_REQUIRE_ROS") == "1"


def ros_importorskip(modname: str, reason: str | None = None):
    """`pytest.importorskip` for the ROS side (rclpy, the generated `segzero_ros.msg` /
    `segzero_ros.action`, launch_ros...): skips the module when `modname` cannot be imported,
    but with SEGZERO_REQUIRE_ROS=1 (scripts/test.sh) fails instead, since there a missing ROS
    package is a broken build, not an optional extra. Call it at module level, as
    `pytest.importorskip`; returns the module."""
    if not REQUIRE_ROS:
        return pytest.importorskip(modname, reason=reason)
    try:
        return importlib.import_module(modname)
    except ImportError as error:
        why = f" ({reason})" if reason else ""
        pytest.fail(
            f"SEGZERO_REQUIRE_ROS=1 but {modname} cannot be imported: {error}{why}", pytrace=False
        )


def ros2_cli_folder() -> Path:
    """Where the ROS 2 command-line wheels are: $SEGZERO_ROS2_CLI, else ../shared/ros2-cli."""
    return Path(os.environ.get("SEGZERO_ROS2_CLI") or ROOT.parent / "shared" / "ros2-cli")


def require_ros2_cli() -> Path:
    """The venv's `ros2` executable, for tests of `ros2 launch` and the other verbs; call it at
    module level. Skips when the command line is not installed and its wheel folder
    (`ros2_cli_folder()`) does not exist either (a clone without ../shared); fails instead,
    under SEGZERO_REQUIRE_ROS=1, when the folder is there but the command line is missing or
    not sourced (scripts/test.sh installs it and sources build/ros2-cli/local_setup.bash)."""
    ros2 = Path(sys.executable).parent / "ros2"
    missing = [
        name
        for name in ("launch", "launch_ros", "ros2launch", "composition_interfaces")
        if importlib.util.find_spec(name) is None
    ]
    if ros2.is_file() and not missing:
        return ros2
    folder = ros2_cli_folder()
    if not folder.is_dir():
        pytest.skip(
            f"no ROS 2 command line: {folder} does not exist (set SEGZERO_ROS2_CLI to the "
            "folder of the ros2-cli wheels)",
            allow_module_level=True,
        )
    message = (
        f"the ROS 2 command line is not installed ({', '.join(missing) or ros2} missing): run "
        f"{folder}/setup.sh .venv build/ros2-cli and source build/ros2-cli/local_setup.bash "
        "after install/setup.bash (scripts/test.sh does both)"
    )
    if REQUIRE_ROS:
        pytest.fail(message, pytrace=False)
    pytest.skip(message, allow_module_level=True)


@pytest.fixture(scope="session")
def tiny_cache():
    """The cache root holding the built tiny checkpoints (what `segzero infer --tiny` reads)."""
    from segzero_model.tiny import default_cache_dir, ensure_tiny_models

    ensure_tiny_models()
    return default_cache_dir()


@pytest.fixture(scope="session")
def tiny_model_dirs(tiny_cache):
    from segzero_model.tiny import ensure_tiny_models

    return ensure_tiny_models(tiny_cache)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tiny_model_dirs):
    return tiny_model_dirs[0]


@pytest.fixture(scope="session")
def tiny_sam2_dir(tiny_model_dirs):
    return tiny_model_dirs[1]


@pytest.fixture(scope="session")
def tiny_reasoner(tiny_qwen_dir):
    from segzero_model.reasoning.local import Reasoner

    return Reasoner.from_pretrained(tiny_qwen_dir, device="cpu", max_new_tokens=128)


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_sam2_dir):
    from segzero_model.segmentation.segmenter import Segmenter

    return Segmenter.from_pretrained(tiny_sam2_dir, device="cpu")


@pytest.fixture(scope="session")
def tiny_random_qwen_dir(tmp_path_factory):
    """A tiny Qwen2.5-VL with pure random weights (no canned answer, built in about a second):
    its greedy text depends on every prompt token and on the pixels, so two setups that
    answer it alike were given the same input."""
    from segzero_model.tiny.qwen import write_tiny_qwen

    return write_tiny_qwen(tmp_path_factory.mktemp("tiny-random") / "qwen", canned_answer=None)


@pytest.fixture(scope="session")
def reasoning_server(tmp_path_factory):
    """A real OpenAI-compatible server: `transformers serve` on a free localhost port, on the
    CPU with one thread (as the tests' local reasoners, so both sides compute alike), serving
    whatever local checkpoint a request names as its model (benchmarks/transformers_server.py).
    Yields its base URL (.../v1); started once per test process that asks for it, stopped at
    the end. Skips without the `transformers[serving]` extras (fails under
    SEGZERO_REQUIRE_ROS=1, i.e. scripts/test.sh, whose set-up installs them)."""
    from benchmarks import transformers_server as server

    missing = server.missing_serving_modules()
    if missing:
        message = f"transformers serve needs {missing}: pip install 'transformers[serving]'"
        if REQUIRE_ROS:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    log_path = tmp_path_factory.mktemp("reasoning-server") / "serve.log"
    process, url = server.start("cpu", log_path, threads=1)
    try:
        yield url
    finally:
        server.stop(process)


@pytest.fixture(scope="session")
def training_data_dir(tmp_path_factory):
    """Four synthetic rows in the released training layout, saved as the released data are."""
    from datasets import DatasetDict

    from segzero_training.synthetic import synthetic_dataset

    path = tmp_path_factory.mktemp("training-data") / "synthetic"
    DatasetDict({"train": synthetic_dataset(4, seed=0)}).save_to_disk(str(path))
    return path


# The DDS domains of one test process: one per purpose, so that a node or launch a test file
# leaves behind never meets the next file's, and none meets another xdist worker's or another
# run's. Domain ids 1-100 are safe on Linux (their ports lie below the ephemeral range).
DOMAIN_SLOTS = (
    "node_harness",
    "client",
    "ros2_cli",
    "namespaces",
    "launch_run",
    "launch_pytest",
    "dds_profile",
    "node_families",
    "node_segmenter_families",
)


def ros_domain_id(purpose: str) -> int:
    """The DDS domain (1-100) for `purpose` (one of DOMAIN_SLOTS) in this process: distinct for
    every purpose and every xdist worker of one run (`scripts/test.sh` runs two), and offset by
    the run's id (the pid without xdist), so two runs at once usually do not meet."""
    run_id = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    seed = int(run_id[:8], 16) if run_id else os.getpid()
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
    slot = worker * len(DOMAIN_SLOTS) + DOMAIN_SLOTS.index(purpose)
    return 1 + (seed + slot) % 100


def ros_process_env(domain_id: int, **extra: str) -> dict[str, str]:
    """The environment for ROS processes a test starts: a DDS domain of the test's own (see
    ros_domain_id), discovery on localhost only, no hub access, and the venv's executables
    (`ros2`, `segzero-query`) first on PATH."""
    return dict(
        os.environ,
        ROS_DOMAIN_ID=str(domain_id),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        HF_HUB_OFFLINE="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    )


def stop_process_group(process, timeout: float = 30.0) -> None:
    """Stop a process started with `start_new_session=True` (its own process group) as Ctrl-C
    would: SIGINT to the process, then SIGKILL to its whole group once it exited or after
    `timeout`, so no child (a node started by `ros2 launch`) outlives the test."""
    stop_process_groups([process], timeout)


def stop_process_groups(processes, timeout: float = 30.0) -> None:
    """`stop_process_group` for several processes at once: all get their SIGINT first, so
    they shut down side by side."""
    import signal
    import subprocess

    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
    for process in processes:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@pytest.fixture(scope="session")
def node_harness(tiny_qwen_dir, tiny_sam2_dir):
    """The perception node on the tiny models and a probe node, over real DDS in a domain of
    this process's own, started once for every node test file (see tests/ros_harness.py;
    rclpy is imported only here, so runs without the node tests never load it)."""
    from ros_harness import running_harness

    with running_harness(tiny_qwen_dir, tiny_sam2_dir) as harness:
        yield harness


@pytest.fixture
def harness(node_harness):
    """The shared node, idle, active and on its start-up parameters for each test; a test that
    leaves it otherwise errors in teardown (and the node is put back for the next one)."""
    node_harness.restore()
    node_harness.wait_idle()
    yield node_harness
    node_harness.wait_idle()
    left = node_harness.restore()
    assert not left, f"the test left the shared node changed: {'; '.join(left)}"


class OutputProcess:
    """A process started in its own process group (`stop` ends the group), its stdout and
    stderr collected line by line as they come."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        import subprocess
        import threading

        self.process = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float):
        """The first match of the regex `pattern` (multiline) in the output; fails when the
        process exits first or after `timeout` seconds."""
        import re
        import time

        deadline = time.monotonic() + timeout
        while True:
            exited = self.process.poll() is not None
            found = re.search(pattern, self.text, flags=re.M)
            if found:
                return found
            assert not exited, (
                f"exited ({self.process.returncode}) before {pattern!r}:\n{self.text}"
            )
            assert time.monotonic() < deadline, f"no {pattern!r} in {timeout:.0f} s:\n{self.text}"
            time.sleep(0.1)

    def stop(self) -> None:
        stop_process_group(self.process)


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makemodule(module_path, parent):
    """Collect every test file as a plain module. launch_testing's plugin (installed with the
    ROS 2 command line) otherwise imports each file while collecting to look for a launch_testing
    entry point, so one file's module-level skip would skip a whole run. This project's launch
    tests use launch_pytest, which does not need that hook."""
    if module_path.name == "__init__.py":
        return pytest.Package.from_parent(parent, path=module_path)
    return pytest.Module.from_parent(parent, path=module_path)


# The test files that take longest (measured on a fresh 2-core CI clone, longest first; each
# runs on one xdist worker). They are handed out first, so that the many short files fill in
# around them instead of one worker running a long file alone at the end (scripts/test.sh runs
# with --no-loadscope-reorder, which keeps this order; xdist's own reorder sorts files by their
# number of tests, which put these last).
LONG_FILES = (
    "tests/bench/test_benchmarks.py",
    "tests/training/test_grpo.py",
    "tests/model/test_cli.py",
    "tests/bench/test_grpo_learning.py",
    "tests/model/tiny/test_real_size.py",
    "tests/ros/test_ros2_cli.py",
    "tests/training/test_validation.py",
    "tests/model/reasoning/test_prefix_reuse.py",
)


def pytest_collection_modifyitems(config, items):
    """Collect LONG_FILES first, in their order; every other test keeps its place."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(LONG_FILES)))


# --------------------------------------------------------------------------- shared helpers


def infer_trained(reasoning_model, segmentation_model, json_path, family: str) -> dict:
    """`segzero infer` of a freshly trained checkpoint on the kitchen scene ("the red cup", 16
    new tokens, CPU), as a user runs it, family auto-detected; its --json summary. A model
    trained for a few steps answers anything (exit 0, or 1 for an unparseable answer), so what
    is checked is that the checkpoint loaded (never exit 2), was asked in `family` (a checkpoint
    that lost its family would be read as another one) and generated text."""
    from segzero_model.cli import main as segzero

    scene = Path(__file__).resolve().parents[1] / "segzero_model" / "assets" / "kitchen.png"
    code = segzero(
        [
            "infer", "--reasoning-model", str(reasoning_model),
            "--segmentation-model", str(segmentation_model),
            "--image", str(scene), "--query", "the red cup",
            "--device", "cpu", "--max-new-tokens", "16", "--json", str(json_path),
        ]
    )  # fmt: skip
    assert code in (0, 1), f"segzero infer exited {code}"
    summary = json.loads(Path(json_path).read_text())
    assert summary["model_family"] == family, summary
    assert summary["raw_output"], summary
    assert (code == 0) == (summary["status"] in ("ok", "not_found")), (code, summary)
    return summary


def tiny_recipe(model, data, output, *extra: str) -> list[str]:
    """The smallest real run: 1 prompt x 2 samples per step, 8 new tokens, float32 on the CPU."""
    return [
        f"model_name_or_path={model}",
        f"dataset_path={data}",
        f"output_dir={output}",
        "global_batch_size=1",
        "num_generations=2",
        "per_device_train_batch_size=2",
        "gradient_accumulation_steps=1",
        "max_completion_length=8",
        "dtype=float32",
        "bf16=false",
        "save_steps=1",
        *extra,
    ]


def count_embeddings(segmenter, monkeypatch) -> list:
    """Wrap the real SAM2 predictor's `set_image` (the image encoder run) with a counting
    wrapper that calls through; the returned list grows by one per embedding computed."""
    calls = []
    embed = segmenter._predictor.set_image

    def counting_set_image(*args, **kwargs):
        calls.append(1)
        return embed(*args, **kwargs)

    monkeypatch.setattr(segmenter._predictor, "set_image", counting_set_image)
    return calls


def training_script_help(script: str) -> str:
    """`python training/SCRIPT --help` as a user types it from the repository root: it must exit
    0; returns what it printed."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, f"training/{script}", "--help"],
        cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout
