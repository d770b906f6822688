"""Device and dtype choice (segzero_model/device.py): 'auto', 'cpu', 'cuda' and 'cuda:N', bad
strings, and the error a caller turns into its own advice when the GPU it asked for is missing.

The machine's real GPU state decides the 'auto' and 'cuda' answers, so those tests pin
`torch.cuda.is_available` / `device_count` to the case they check; the plain CPU checks run on
whatever torch reports."""

from __future__ import annotations

import pytest
import torch

from segzero_model.device import (
    DeviceUnavailableError,
    default_attention,
    resolve_device,
    resolve_dtype,
)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_cpu_is_always_available():
    assert resolve_device("cpu") == "cpu"


def test_auto_picks_the_gpu_when_there_is_one(two_gpus):
    assert resolve_device() == resolve_device("auto") == "cuda"


def test_auto_falls_back_to_the_cpu(no_gpu):
    assert resolve_device("auto") == "cpu"


def test_auto_on_this_machine_matches_torch():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto") == expected


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:1"])
def test_visible_gpus_are_kept(two_gpus, device):
    assert resolve_device(device) == device


@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_raises_a_neutral_message(no_gpu, device):
    with pytest.raises(DeviceUnavailableError) as info:
        resolve_device(device)
    error = info.value
    assert isinstance(error, ValueError)  # callers that catch ValueError still catch it
    assert error.device == device and error.visible == 0
    assert str(error) == (
        f"device {device!r} was requested but no CUDA GPU is visible; choose the CPU device"
    )
    # No caller's spelling in the message itself; each caller adds its own.
    assert "--device" not in str(error) and "device:=" not in str(error)
    assert error.advice("--device cpu") == (
        f"device {device!r} was requested but no CUDA GPU is visible; use --device cpu"
    )
    assert error.advice("device:=cpu").endswith("; use device:=cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without a CUDA GPU")
def test_cuda_on_this_cpu_only_machine_raises():
    with pytest.raises(DeviceUnavailableError, match="no CUDA GPU is visible"):
        resolve_device("cuda")


def test_a_gpu_index_past_the_visible_ones_raises(two_gpus):
    with pytest.raises(DeviceUnavailableError) as info:
        resolve_device("cuda:2")
    assert info.value.device == "cuda:2" and info.value.visible == 2
    assert str(info.value) == (
        "device 'cuda:2' was requested but only 2 CUDA GPU(s) are visible (cuda:0 to cuda:1); "
        "choose the CPU device"
    )


@pytest.mark.parametrize(
    "device",
    ["", "gpu", "tpu", "CPU", "cuda:", "cuda:x", "cuda0", "cudafoo", " cpu", "mps", None, 0],
)
def test_bad_device_strings_are_named(no_gpu, device):
    with pytest.raises(ValueError, match="unknown device") as info:
        resolve_device(device)
    assert not isinstance(info.value, DeviceUnavailableError)
    assert repr(device) in str(info.value)
    assert "'auto', 'cpu', 'cuda' or 'cuda:N'" in str(info.value)


def test_dtypes():
    assert resolve_dtype("cpu") is torch.float32  # CPU bf16 is slow
    assert resolve_dtype("cuda") is resolve_dtype("cuda:1", "auto") is torch.bfloat16
    assert resolve_dtype("cpu", "float16") is torch.float16
    assert resolve_dtype("cuda", "float32") is torch.float32
    for bad in ("float8", "Tensor", "cuda"):
        with pytest.raises(ValueError, match=f"unknown dtype '{bad}'"):
            resolve_dtype("cpu", bad)


def test_attention():
    assert default_attention("cpu") == "sdpa"


def test_inference_mode_turns_autograd_off_and_keeps_the_cpu_in_fp32():
    import torch

    from segzero_model.device import inference_mode

    with inference_mode("cpu"):
        assert torch.is_inference_mode_enabled()
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(2) * 2).dtype == torch.float32
    assert not torch.is_inference_mode_enabled()
