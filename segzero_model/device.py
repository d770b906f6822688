"""Device and dtype choice in one place: bf16 on CUDA, fp32 on the CPU (CPU bf16 is slow)."""

from __future__ import annotations

import importlib.util


def resolve_device(device: str = "auto") -> str:
    """'auto' → 'cuda' when a GPU is visible, else 'cpu'; anything else is validated and kept."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} was requested but no CUDA GPU is visible; use --device cpu"
        )
    if not (device == "cpu" or device.startswith("cuda")):
        raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
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


def default_attention(device: str) -> str:
    """flash-attention 2 on CUDA when installed, else PyTorch SDPA (also fine on the CPU)."""
    if device.startswith("cuda") and importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return "sdpa"
