"""Pre-flight checks of vLLM generation in GRPO (training/vllm_checks.py). No GPU and no vLLM
here: what is tested is what the checks say, on the real recipe parsing, and the server check
against real sockets (a port nobody listens on; a small HTTP server answering /health/)."""

from __future__ import annotations

import http.server
import threading

import pytest
from conftest import tiny_recipe

from segzero_training import grpo
from segzero_training.recipe import RecipeError
from segzero_training.vllm_checks import server_answers, server_url


def problems(tiny_qwen_dir, training_data_dir, tmp_path, *extra: str) -> list[str]:
    with pytest.raises(RecipeError) as caught:
        grpo.parse_and_check(tiny_recipe(tiny_qwen_dir, training_data_dir, tmp_path, *extra))
    return caught.value.problems


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_colocated_vllm_needs_vllm_a_gpu_and_a_share(tiny_qwen_dir, training_data_dir, tmp_path):
    found = problems(
        tiny_qwen_dir,
        training_data_dir,
        tmp_path,
        "use_vllm=true",
        "vllm_gpu_memory_utilization=1.5",
    )
    assert found == [
        "use_vllm=true but vllm is not installed: pip install vllm",
        "vllm_gpu_memory_utilization: 1.5 must be between 0 and 1 (the share of each GPU vLLM "
        "takes beside training)",
    ]
    (mode,) = problems(
        tiny_qwen_dir, training_data_dir, tmp_path, "use_vllm=true", "vllm_mode=remote"
    )
    assert mode == "vllm_mode: 'remote' is not one of ['colocate', 'server']"


def test_server_mode_needs_a_server_that_answers(tiny_qwen_dir, training_data_dir, tmp_path):
    port = free_port()  # nobody listens there
    found = problems(
        tiny_qwen_dir,
        training_data_dir,
        tmp_path,
        "use_vllm=true",
        "vllm_mode=server",
        f"vllm_server_port={port}",
    )
    assert found[1].startswith(
        f"vllm_mode=server but no vLLM server answers at http://127.0.0.1:{port}/health/"
    )


def test_the_health_check_reads_trls_endpoint():
    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200 if self.path == "/health/" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert server_answers(url)
        assert not server_answers(f"{url}/elsewhere")
    finally:
        server.shutdown()
        server.server_close()

    class Config:
        vllm_server_base_url = None
        vllm_server_host = "0.0.0.0"
        vllm_server_port = 8000

    assert server_url(Config()) == "http://127.0.0.1:8000"  # TRL's default host, reached locally
    Config.vllm_server_base_url = "http://gpu-box:9000/"
    assert server_url(Config()) == "http://gpu-box:9000"
