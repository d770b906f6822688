"""What every reasoning backend is: one typed interface for the local model (`local.Reasoner`)
and a served one (`remote.RemoteReasoner`), so the pipeline, the node and evaluation never ask
which they hold."""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from segzero_model.reasoning.families import Family


@dataclass
class Generation:
    """One completion; timings are per batch (the batch shares one prefill and decode loop)."""

    text: str  # decoded completion, special tokens removed
    num_tokens: int  # generated tokens, the terminating <|im_end|> included, padding not
    prefill_seconds: float  # vision encoder + prefill: time to the first generated token
    decode_seconds: float  # the rest of generation
    cancelled: bool  # stopped early because `cancel` was set; `text` is partial


@runtime_checkable
class ReasoningBackend(Protocol):
    """Image + query in, the model's text (think + answer) out, greedy, in `family`'s prompt."""

    family: Family
    model_id: str
    device: str  # "cpu", "cuda:0", ... or "remote"
    max_new_tokens: int

    def generate(
        self,
        images: Sequence,
        queries: Sequence[str],
        *,
        image_keys: Sequence[Hashable | None] | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Generation]: ...

    def close(self) -> None: ...


def check_request(images, queries, image_keys, max_new_tokens: int, on_text) -> int:
    """The checks every reasoner backend's `generate` makes of its arguments (ValueError says
    which is wrong); returns `max_new_tokens`."""
    if len(images) == 0:
        raise ValueError("generate() needs at least one image and query")
    if len(images) != len(queries):
        raise ValueError(f"got {len(images)} images but {len(queries)} queries")
    if image_keys is not None and len(image_keys) != len(images):
        raise ValueError(f"got {len(image_keys)} image keys for {len(images)} images")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if on_text is not None and len(images) != 1:
        raise ValueError(f"on_text streams a batch of one, got a batch of {len(images)}")
    return max_new_tokens
