"""Same-frame prefix reuse for the local reasoner (`local.Reasoner`).

The chat (`chat.user_messages`) puts what depends on the image alone first: the template's head
(Qwen2.5-VL's default system prompt, the user turn's start), then the image block
``<|vision_start|>`` + the image's tokens + ``<|vision_end|>``; the family's prompt with the
query follows. Every query on the same frame shares that prefix, so the vision encoder and the
prefill of the prefix run once per frame (`fill`); each generation then starts from a copy of
the prefix's KV cache and prefills only the query's tokens. This is transformers' documented
prefix caching: a `DynamicCache` filled by one forward of the prefix, `copy.deepcopy` of it per
`generate`, which is given the full input_ids and computes only the uncached ones.

Where the prefix ends: right after the image's end token. Its tokens are those of the whole
chat because tokenisation restarts after a special token: the text after it is tokenised on
its own, so `split_chat` can read the query's tokens from the chat with the image still one
placeholder (a few hundred tokens, no image processing). The template's words between the
image and the query (Seg-Zero's 'Please find "') are left out of the prefix: a cut inside plain
text would let the byte-level BPE merge across it (Qwen's pre-tokeniser glues a leading quote to
the next word, ``"cup``), so the cut tokens could differ from the whole chat's.

Positions: Qwen-VL's multimodal RoPE gives the image's tokens 3-D positions that span fewer
steps than there are tokens; every text token after the image sits at its index plus the
sequence's `rope_deltas` (negative). The prefix forward computes that delta (the model keeps it
as ``model.rope_deltas``); `generate`, continuing from a cache with no new image tokens, places
the new tokens at index + the delta the model holds. So the entry keeps its own delta and
`use` puts it back on the model before each generation from it: the last generation may have
left another frame's delta there.

Keys: as SAM2's embedding cache (`segmenter.Segmenter.set_image`): the caller's key (the
camera frame's stamp) when there is one, else a digest of the pixels the model sees.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = [
    "IMAGE_END_TOKEN",
    "REUSABLE_MODEL_TYPES",
    "Prefix",
    "PrefixCache",
    "PrefixError",
    "PrefixReuse",
    "Request",
    "cache_argument",
    "fill",
    "image_cache_key",
    "split_chat",
    "use",
]

IMAGE_END_TOKEN = "<|vision_end|>"

# Model types whose prefix reuse is tested token for token against plain generation
# (tests/model/reasoning/test_prefix_reuse.py). Others (Qwen3.5's linear-attention layers, the MoE
# variants) are generated without reuse until a test covers them.
REUSABLE_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


class PrefixError(Exception):
    """The model or tokenizer does not behave as prefix reuse assumes (the message says how);
    the reasoner then generates without it."""


@dataclass
class Prefix:
    """One frame's prefix, ready to generate from."""

    head: tuple[int, ...]  # the chat's token ids through the image's end, image as placeholder
    input_ids: torch.Tensor  # (1, P): the same with the image's tokens, as the model reads them
    cache: object  # the transformers KV cache after the P tokens; never generated into
    rope_deltas: torch.Tensor  # (1, 1): position offset of the text after the image


class PrefixCache:
    """The prefixes of the last `size` frames (least recently used evicted first)."""

    def __init__(self, size: int):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"prefix cache size must be an integer >= 1, got {size!r}")
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Hashable, Prefix] = OrderedDict()

    def get(self, key: Hashable, head: tuple[int, ...]) -> Prefix | None:
        """The prefix stored for `key` when its chat head is `head` (counted as a hit), else
        None (a miss)."""
        entry = self._entries.get(key)
        if entry is None or entry.head != head:
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: Hashable, entry: Prefix) -> None:
        self._entries[key] = entry
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        """Drop every prefix (their KV caches: GPU memory on CUDA)."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries


def image_cache_key(key: Hashable | None, picture: Image.Image) -> tuple:
    """("key", key) for a caller's key, else ("digest", hash of `picture`'s size and pixels)."""
    if key is not None:
        return ("key", key)
    digest = hashlib.blake2b(repr((picture.mode, picture.size)).encode(), digest_size=16)
    digest.update(picture.tobytes())
    return ("digest", digest.hexdigest())


def split_chat(tokenizer, text: str, image_end_id: int) -> tuple[tuple[int, ...], list[int]]:
    """(head, tail): the token ids of the chat `text` (its image one placeholder token) through
    the first image end token, and the ids after it (the query's part). Tokenised as the
    processor tokenises the chat (the tokenizer's defaults). PrefixError without an image end."""
    ids = tokenizer(text)["input_ids"]
    try:
        end = ids.index(image_end_id) + 1
    except ValueError:
        raise PrefixError(f"the chat has no image end token {IMAGE_END_TOKEN}") from None
    return tuple(ids[:end]), ids[end:]


def cache_argument(model) -> str:
    """The keyword `forward` and `generate` take the KV cache under: `cache` in the newer
    transformers releases, `past_key_values` before them."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def fill(model, inputs: Mapping, length: int, head: tuple[int, ...]) -> Prefix:
    """Run the vision encoder and the prefill of the first `length` tokens of the processor's
    batch of one `inputs` (input_ids, attention_mask, pixel_values, image_grid_thw, ...) into a
    fresh `DynamicCache`; no logits are computed. Call under `torch.inference_mode()`."""
    from transformers import DynamicCache

    ids = inputs["input_ids"]
    if ids.shape[0] != 1:
        raise ValueError(f"a prefix is filled for a batch of one, got {ids.shape[0]}")
    # Tensors per token (input_ids, attention_mask, mm_token_type_ids) are cut to the prefix;
    # the image's tensors (pixel_values, image_grid_thw) are passed whole.
    prefix_inputs = {
        name: value[:, :length] if value.ndim == 2 and value.shape == ids.shape else value
        for name, value in inputs.items()
    }
    base = model.base_model  # the multimodal model without the LM head
    cache = DynamicCache(config=model.config)
    base(**prefix_inputs, **{cache_argument(model): cache}, use_cache=True)
    deltas = getattr(base, "rope_deltas", None)
    if deltas is None or tuple(deltas.shape) != (1, 1) or cache.get_seq_length() != length:
        raise PrefixError(
            f"the prefix forward of {type(model).__name__} left rope_deltas {deltas!r} and "
            f"{cache.get_seq_length()} cached tokens for a prefix of {length}"
        )
    return Prefix(head, prefix_inputs["input_ids"], cache, deltas.clone())


def use(model, entry: Prefix, tail_ids: torch.Tensor) -> dict:
    """The `generate` inputs that continue from `entry`: the full input_ids (the prefix's, then
    `tail_ids`, shape (1, T)), their attention mask and a copy of the prefix's cache. Puts the
    entry's RoPE delta on the model (see the module docstring)."""
    import torch

    input_ids = torch.cat([entry.input_ids, tail_ids.to(entry.input_ids.device)], dim=1)
    model.base_model.rope_deltas = entry.rope_deltas.clone()
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        cache_argument(model): copy.deepcopy(entry.cache),
    }


@dataclass
class Request:
    """One generation's way to its image's prefix (`PrefixReuse.request`)."""

    key: tuple  # the image's cache key
    head: tuple[int, ...]  # the chat's ids through the image's end (image as one placeholder)
    tail: list[int]  # the chat's ids after the image's end: the query's part
    entry: Prefix | None  # the kept prefix (a hit), or None (a miss)
    inputs: Mapping | None  # on a miss, the processor's batch of one; None on a hit


class PrefixReuse:
    """Prefix reuse for one model: its `PrefixCache` (`cache`) and the two steps of a
    generation from it, `request` (tokenising; the processor on a miss) and `inputs` (the
    model's work: on a miss, the prefix's forward)."""

    def __init__(self, model, tokenizer, size: int):
        problem = self.unsupported(model, tokenizer)
        if problem is not None:
            raise PrefixError(problem)
        self.model = model
        self.tokenizer = tokenizer
        self.image_end_id = tokenizer.convert_tokens_to_ids(IMAGE_END_TOKEN)
        self.cache = PrefixCache(size)

    @staticmethod
    def unsupported(model, tokenizer) -> str | None:
        """Why reuse is off for `model`, or None when it is on."""
        model_type = model.config.model_type
        if model_type not in REUSABLE_MODEL_TYPES:
            return f"a {model_type} model (reuse is tested for {', '.join(REUSABLE_MODEL_TYPES)})"
        end = tokenizer.convert_tokens_to_ids(IMAGE_END_TOKEN)
        if end is None or end == tokenizer.unk_token_id:
            return f"the tokenizer has no {IMAGE_END_TOKEN}"
        return None

    def request(
        self,
        picture: Image.Image,
        text: str,
        key: Hashable | None,
        process: Callable[[], Mapping],
    ) -> Request:
        """Look up the prefix of `picture` (the image the model sees) for the chat `text`;
        on a miss `process()` gives the processor's batch of one for them. PrefixError when
        the chat has no image end."""
        head, tail = split_chat(self.tokenizer, text, self.image_end_id)
        cache_key = image_cache_key(key, picture)
        entry = self.cache.get(cache_key, head)
        return Request(cache_key, head, tail, entry, process() if entry is None else None)

    def inputs(self, request: Request) -> dict:
        """`generate` inputs continuing from the request's prefix (`use`); a miss first
        computes it (vision encoder and prefill of the prefix, `fill`) and keeps it. Call under
        `torch.inference_mode()`. PrefixError when the processor's tokens are not the chat's
        split ones, or the model did not fill as assumed."""
        import torch

        entry = request.entry
        if entry is None:
            ids = request.inputs["input_ids"][0].tolist()
            if self.image_end_id not in ids:
                raise PrefixError(f"the processor's tokens have no {IMAGE_END_TOKEN}")
            length = ids.index(self.image_end_id) + 1
            if ids[length:] != request.tail:
                raise PrefixError("the processor's tokens after the image differ from the chat's")
            entry = fill(self.model, request.inputs, length, request.head)
            self.cache.put(request.key, entry)
        tail = torch.tensor([request.tail], dtype=entry.input_ids.dtype)
        return use(self.model, entry, tail)
