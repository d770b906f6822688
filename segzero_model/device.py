"""Device and dtype choice in one place: bf16 on CUDA, fp32 on the CPU (CPU bf16 is slow)."""

from __future__ import annotations

import contextlib
import importlib.util
import re
from collections.abc import Iterator

_DEVICE = re.compile(r"cpu|cuda(?::\d+)?")


class DeviceUnavailableError(ValueError):
    """A CUDA device was requested that this machine does not have.

    `device` is the requested device string ('cuda', 'cuda:1'); `visible` is how many CUDA
    GPUs are visible (0 when none). The message is neutral about how the CPU is chosen; each
    caller spells that its own way with `advice` (the CLI: ``--device cpu``, the ROS node:
    ``device:=cpu``).
    """

    def __init__(self, device: str, visible: int):
        self.device = device
        self.visible = visible
        if visible == 0:
            problem = f"device {device!r} was requested but no CUDA GPU is visible"
        else:
            problem = (
                f"device {device!r} was requested but only {visible} CUDA GPU(s) are visible "
                f"(cuda:0 to cuda:{visible - 1})"
            )
        self.problem = problem
        super().__init__(f"{problem}; choose the CPU device")

    def advice(self, cpu_choice: str) -> str:
        """The message with the caller's way to choose the CPU, e.g. ``advice("--device cpu")``
        gives "... no CUDA GPU is visible; use --device cpu"."""
        return f"{self.problem}; use {cpu_choice}"


def resolve_device(device: str = "auto") -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'; anything else is validated and kept.

    Raises:
        DeviceUnavailableError: 'cuda' or 'cuda:N' was asked for and that GPU is not visible.
        ValueError: `device` is not 'auto', 'cpu', 'cuda' or 'cuda:N'.
    """
    if not isinstance(device, str) or not (device == "auto" or _DEVICE.fullmatch(device)):
        raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if device == "cpu":
        return device
    import torch

    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "auto":
        return "cuda" if visible else "cpu"
    index = int(device.partition(":")[2] or 0)
    if index >= visible:
        raise DeviceUnavailableError(device, visible)
    return device


def resolve_dtype(device: str, dtype: str | None = None):
    """torch dtype for `device`; `dtype` may name one: 'bfloat16', 'float16' or 'float32'."""
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        value = getattr(torch, dtype)
    except AttributeError:
        value = None
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; expected bfloat16, float16 or float32")
    return value


@contextlib.contextmanager
def inference_mode(device: str) -> Iterator[None]:
    """SAM2's inference context: no autograd anywhere; bf16 autocast on CUDA only (the CPU runs
    fp32, as sam2's own predictors do)."""
    import torch

    on_cuda = device.startswith("cuda")
    with (
        torch.inference_mode(),
        torch.autocast("cuda" if on_cuda else "cpu", dtype=resolve_dtype(device), enabled=on_cuda),
    ):
        yield


def default_attention(device: str) -> str:
    """flash-attention 2 on CUDA when installed, else PyTorch SDPA (also fine on the CPU)."""
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"
