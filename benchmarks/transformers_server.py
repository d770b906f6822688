"""`transformers serve` (transformers' own OpenAI-compatible server) on a free localhost port,
for the remote-reasoner benchmark and the tests: started, waited for, stopped with its process
group. It serves whatever local checkpoint a request names as its model."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

START_TIMEOUT_S = 120.0  # for /health to answer
SERVING_MODULES = ("fastapi", "uvicorn", "openai")  # what transformers[serving] adds


def missing_serving_modules() -> list[str]:
    """The `transformers[serving]` modules that are not installed ([] when it can run)."""
    import importlib.util

    return [name for name in SERVING_MODULES if importlib.util.find_spec(name) is None]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(device: str, log_path: Path, *, threads: int | None = None) -> tuple:
    """(process, base URL ending in /v1) of a server on `device`, answering /health; raises
    RuntimeError with its log if it exits or does not answer within START_TIMEOUT_S."""
    import httpx2

    port = free_port()
    argv = [str(Path(sys.executable).parent / "transformers"), "serve", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--device", device, "--model-timeout", "3600"]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"transformers serve exited:\n{log_path.read_text()}")
        try:
            if httpx2.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return process, f"http://127.0.0.1:{port}/v1"
        except httpx2.HTTPError:
            pass
        if time.monotonic() > deadline:
            stop(process)
            raise RuntimeError(f"transformers serve: no /health in time:\n{log_path.read_text()}")
        time.sleep(0.2)


def stop(process, timeout: float = 10.0) -> None:
    """SIGINT, then SIGKILL to the whole process group (no worker outlives it)."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
