"""Pre-flight checks of TRL's vLLM generation in GRPO (``use_vllm``), both modes:

- ``vllm_mode: colocate``: vLLM runs inside each training process and takes
  ``vllm_gpu_memory_utilization`` of its GPU (the memory estimate, `segzero_training.memory`,
  counts training in what is left);
- ``vllm_mode: server``: the processes send their prompts to a separate ``trl vllm-serve``,
  which must answer at ``vllm_server_base_url`` (or ``vllm_server_host``:``vllm_server_port``).

The image tokens' fit in ``vllm_max_model_length`` is `preflight.prompt_problems`' check.
"""

from __future__ import annotations

import importlib.util

VLLM_MODES = ("colocate", "server")
HEALTH_TIMEOUT_S = 3.0


def vllm_available() -> bool:
    """vLLM generation needs the package and a CUDA GPU."""
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def server_url(config) -> str:
    """The vLLM server's base URL, as TRL's client builds it."""
    if config.vllm_server_base_url:
        return config.vllm_server_base_url.rstrip("/")
    host = "127.0.0.1" if config.vllm_server_host in ("0.0.0.0", "") else config.vllm_server_host
    return f"http://{host}:{config.vllm_server_port}"


def server_answers(url: str) -> bool:
    """Whether ``trl vllm-serve`` answers its health check at `url`."""
    import httpx2

    try:
        return httpx2.get(f"{url}/health/", timeout=HEALTH_TIMEOUT_S).status_code == 200
    except httpx2.HTTPError:
        return False


def vllm_problems(config) -> list[str]:
    """With ``use_vllm``: a known mode, vLLM and a CUDA GPU at hand, a colocated share of GPU
    memory strictly between 0 and 1, a server that answers."""
    if not config.use_vllm:
        return []
    problems = []
    if config.vllm_mode not in VLLM_MODES:
        return [f"vllm_mode: {config.vllm_mode!r} is not one of {list(VLLM_MODES)}"]
    if importlib.util.find_spec("vllm") is None:
        problems.append("use_vllm=true but vllm is not installed: pip install vllm")
    elif not vllm_available():
        problems.append("use_vllm=true but no CUDA GPU is visible: vLLM generates on GPUs only")
    share = config.vllm_gpu_memory_utilization
    if config.vllm_mode == "colocate" and not 0 < share < 1:
        problems.append(
            f"vllm_gpu_memory_utilization: {share} must be between 0 and 1 (the share of each "
            "GPU vLLM takes beside training)"
        )
    if config.vllm_mode == "server":
        url = server_url(config)
        if not server_answers(url):
            problems.append(
                f"vllm_mode=server but no vLLM server answers at {url}/health/: start one with "
                "`trl vllm-serve --model MODEL` (on GPUs the training does not use), or set "
                "vllm_server_base_url / vllm_server_host / vllm_server_port"
            )
    return problems
