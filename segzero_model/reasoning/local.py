"""The reasoning model: image + query in, the model's text (think + answer) out.

Follows the released Seg-Zero inference recipe: every image is resized to a square (840x840
for Seg-Zero; the model family's `image_size`, `segzero_model.reasoning.families`), the user turn
is the image then the family's prompt, and decoding is greedy. Parsing the answer is not this
module's job.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from segzero_model.config import DEFAULT_PREFIX_CACHE_SIZE
from segzero_model.device import default_attention, resolve_device, resolve_dtype
from segzero_model.errors import ModelNotFoundError
from segzero_model.reasoning.backend import Generation, check_request
from segzero_model.reasoning.chat import reasoning_image, user_messages
from segzero_model.reasoning.families import (
    FAMILIES,
    SUPPORTED_MODEL_TYPES,
    Family,
    check_image_size,
    family_for_checkpoint,
)
from segzero_model.reasoning.prefix_reuse import PrefixCache, PrefixError, PrefixReuse, Request
from segzero_model.reasoning.prompts import build_prompt, checkpoint_prompt_variant
from segzero_model.reasoning.reply_format import DEFAULT_VARIANT

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "SUPPORTED_MODEL_TYPES",
    "Reasoner",
    "resolve_checkpoint",
]


# What a checkpoint needs on disk; anything else in a hub repo is not downloaded.
_DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.jinja", "*.model"]

# One quick metadata request decides "offline" instead of the hub client's ~20 s of retries.
_PROBE_TIMEOUT_S = 10.0


class Reasoner:
    """A Qwen2.5-VL, Qwen2-VL or Qwen3-VL checkpoint and its processor, ready for greedy
    generation in its model family's prompt and image size.

    `prefix_cache_size`: the number of frames whose prompt prefix (system prompt and image:
    the vision encoding and its KV cache, `segzero_model.reasoning.prefix_reuse`) is kept for
    further queries on the same frame; 0 turns the reuse off. `compile`: decode with a static KV
    cache and `torch.compile` (meant for CUDA; it cannot be combined with prefix reuse).
    """

    def __init__(
        self,
        model,
        processor,
        *,
        model_id: str,
        device: str,
        max_new_tokens: int,
        thinking: bool = True,
        answer: str = DEFAULT_VARIANT,
        family: Family | None = None,
        prefix_cache_size: int = DEFAULT_PREFIX_CACHE_SIZE,
        compile: bool = False,
    ):
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        _check_prefix_options(prefix_cache_size, compile)
        # The Seg-Zero prompt variant the model was trained with (ablation checkpoints differ);
        # it makes the prompt when no family is given.
        self.prompt_variant = {"thinking": thinking, "answer": answer}
        if family is None:
            prompt = partial(build_prompt, thinking=thinking, answer=answer)
            family = replace(FAMILIES["seg_zero"], prompt=prompt)
        self.family = family
        self.model = model
        self.processor = processor
        self.model_id = model_id
        self.device = device
        self.dtype = model.dtype
        self.max_new_tokens = max_new_tokens
        self.compile = compile
        self._compile_config_cached = None
        self._reuse: PrefixReuse | None = None  # None while prefix reuse is off
        if prefix_cache_size > 0:
            problem = PrefixReuse.unsupported(model, processor.tokenizer)
            if problem is None:
                self._reuse = PrefixReuse(model, processor.tokenizer, prefix_cache_size)
            else:
                logger.info("no prefix reuse for %s: %s", model_id, problem)

    def twin(self, *, prefix_cache_size: int = 0, compile: bool = False) -> Reasoner:
        """Another reasoner on this one's model and processor (loaded once) with other speed
        options, so benchmarks and tests compare them on identical weights."""
        return Reasoner(
            self.model,
            self.processor,
            model_id=self.model_id,
            device=self.device,
            max_new_tokens=self.max_new_tokens,
            family=self.family,
            prefix_cache_size=prefix_cache_size,
            compile=compile,
        )

    @property
    def prefixes(self) -> PrefixCache | None:
        """The kept prefixes (`size`, `hits`, `misses`); None while prefix reuse is off."""
        return None if self._reuse is None else self._reuse.cache

    @classmethod
    def from_pretrained(
        cls,
        model: str | os.PathLike,
        *,
        device: str = "auto",
        dtype: str | None = None,
        attn_implementation: str | None = None,
        max_new_tokens: int = 1024,
        model_family: str | Family = "auto",
        prefix_cache_size: int | None = None,
        compile: bool = False,
    ) -> Reasoner:
        """Load from a local directory or a hub id (the local HF cache first, then a download).

        `model_family` ("auto": by model type and recipe; a family name; a family .yaml path;
        a `families.Family`) fixes the prompt and the image size. A checkpoint trained by
        training/grpo.py or sft.py carries the prompt variant it was trained with
        (`prompt.RECIPE_FILE`); it is asked in that variant.
        `prefix_cache_size` (None: `DEFAULT_PREFIX_CACHE_SIZE`, or 0 with `compile`) and
        `compile`: see the class.
        Raises ModelNotFoundError, within seconds when offline, if the checkpoint cannot be had,
        and ValueError for a model type not in `SUPPORTED_MODEL_TYPES`, an unknown family, a
        family image size the processor would resize, or `compile` with prefix reuse.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if prefix_cache_size is None:
            prefix_cache_size = 0 if compile else DEFAULT_PREFIX_CACHE_SIZE
        _check_prefix_options(prefix_cache_size, compile)
        device = resolve_device(device)
        torch_dtype = resolve_dtype(device, dtype)
        attn_implementation = attn_implementation or default_attention(device)
        model_id = os.fspath(model)
        path = resolve_checkpoint(model_id, is_path=isinstance(model, os.PathLike))

        from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

        started = time.perf_counter()
        local = {"local_files_only": True, "trust_remote_code": False}
        try:
            config = AutoConfig.from_pretrained(path, **local)
            if config.model_type not in SUPPORTED_MODEL_TYPES:
                raise ValueError(
                    f"reasoning model {model_id!r} is a {config.model_type!r} model; "
                    f"expected one of {SUPPORTED_MODEL_TYPES}"
                )
            family = family_for_checkpoint(path, model_family)
            processor = AutoProcessor.from_pretrained(path, **local)
            check_image_size(processor, family.image_size)
            net = AutoModelForImageTextToText.from_pretrained(
                path,
                config=config,
                dtype=torch_dtype,
                attn_implementation=attn_implementation,
                use_safetensors=True,
                **local,
            )
        except OSError as exc:
            raise ModelNotFoundError(
                f"reasoning model {model_id!r} could not be loaded from {path}: {exc}"
            ) from exc
        processor.tokenizer.padding_side = "left"
        net.eval().to(device)
        logger.info(
            "loaded reasoning model %s (family %s; %s, %s, %s) in %.1fs",
            model_id,
            family.name,
            device,
            torch_dtype,
            attn_implementation,
            time.perf_counter() - started,
        )
        return cls(
            net,
            processor,
            model_id=model_id,
            device=device,
            max_new_tokens=max_new_tokens,
            family=family,
            prefix_cache_size=prefix_cache_size,
            compile=compile,
            **checkpoint_prompt_variant(path),
        )

    def generate(
        self,
        images: Sequence[Image.Image | np.ndarray],
        queries: Sequence[str],
        *,
        image_keys: Sequence[Hashable | None] | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Generation]:
        """Greedy completions for (image, query) pairs, batched with left padding.

        Images are PIL images or arrays of any size, in any layout `images.to_rgb8` takes.
        `image_keys`, one per image, name the images for the prefix cache (e.g. a camera frame's
        stamp; a key of None, or no keys: the pixels are hashed). A batch of one whose image
        was seen in one of the last `prefix_cache_size` generations reuses its prompt prefix
        (vision encoding and KV cache, `segzero_model.reasoning.prefix_reuse`) and prefills only
        the query's tokens; the tokens generated are the same. Larger batches are generated without
        reuse. `on_text` receives text chunks as they are decoded (batch of one only; the chunks
        concatenate to `text`). `cancel` is checked after every token; once set, generation
        stops and the partial text is returned.
        `min_new_tokens` suppresses the end token until that many were generated (benchmarks of
        random-weight models use it to generate a fixed number of tokens).
        """
        import torch
        from transformers import StoppingCriteriaList

        if self.model is None:
            raise RuntimeError(f"reasoner for {self.model_id!r} is closed")
        max_new_tokens = check_request(
            images,
            queries,
            image_keys,
            self.max_new_tokens if max_new_tokens is None else max_new_tokens,
            on_text,
        )
        if cancel is not None and cancel.is_set():
            return [Generation("", 0, 0.0, 0.0, True) for _ in images]

        request = None
        if self._reuse is not None and len(images) == 1:
            key = None if image_keys is None else image_keys[0]
            request = self._prefix_request(images[0], queries[0], key)
        inputs = self.prepare_inputs(images, queries) if request is None else request.inputs
        tokenizer = self.processor.tokenizer
        progress = _Progress(cancel, cuda=self.device.startswith("cuda"))
        stream = _TextStream(tokenizer, on_text) if on_text is not None else None
        compiled = {}
        if self.compile:  # transformers' compiled decode: a static cache + compile_config
            compiled = {"cache_implementation": "static", "compile_config": self._compile_config}

        started = time.perf_counter()
        try:
            with torch.inference_mode():
                if request is not None:  # on a miss this runs the vision encoder and prefill
                    inputs = self._from_prefix(request)
                sequences = self.model.generate(
                    **inputs,
                    max_new_tokens=max_new_tokens,
                    min_new_tokens=min(min_new_tokens, max_new_tokens),
                    # Greedy, as the released inference code; the checkpoint's sampling
                    # parameters are unset (its repetition_penalty still applies, as it did).
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    pad_token_id=tokenizer.pad_token_id,
                    stopping_criteria=StoppingCriteriaList([progress]),
                    streamer=stream,
                    **compiled,
                )
        except torch.OutOfMemoryError:
            if self.prefixes is not None:  # give the kept prefixes' memory to the next query
                self.prefixes.clear()
            raise
        progress.sync()
        finished = time.perf_counter()
        first = progress.first_token_at or finished
        prefill, decode = first - started, finished - first

        new_tokens = sequences[:, inputs["input_ids"].shape[1] :].cpu()
        eos = self.model.generation_config.eos_token_id
        eos = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
        results = []
        for row in new_tokens.tolist():
            count = next((i + 1 for i, token in enumerate(row) if token in eos), len(row))
            text = tokenizer.decode(row[:count], skip_special_tokens=True)
            results.append(Generation(text, count, prefill, decode, progress.cancelled))
        if stream is not None:
            results[0].text = stream.text
        return results

    def prepare_inputs(self, images: Sequence[Image.Image | np.ndarray], queries: Sequence[str]):
        """The processor's batch that generate() feeds the model (input_ids, attention_mask,
        pixel_values, image_grid_thw, ...), left-padded and on the reasoner's device.

        Each image becomes a square of the family's image size, RGB (bilinear): for Seg-Zero
        840x840, always 900 image tokens; the user turn is the image followed by the family's
        prompt for the query (Seg-Zero: `build_prompt(query)`), then the assistant prompt.
        """
        if len(images) != len(queries):
            raise ValueError(f"got {len(images)} images but {len(queries)} queries")
        size = self.family.image_size
        pictures = [reasoning_image(image, size) for image in images]
        return self._processed(pictures, [self._chat_text(query) for query in queries])

    def _chat_text(self, query: str) -> str:
        return self.processor.apply_chat_template(
            user_messages(self.family.prompt(query)), tokenize=False, add_generation_prompt=True
        )

    def _processed(self, pictures: list[Image.Image], texts: list[str]):
        inputs = self.processor(text=texts, images=pictures, padding=True, return_tensors="pt")
        return inputs.to(self.device)

    def _prefix_request(self, image, query: str, key: Hashable | None) -> Request | None:
        """The prefix cache's look-up for a batch of one (the processor runs on a miss); None,
        turning reuse off, if the chat breaks its assumptions."""
        picture = reasoning_image(image, self.family.image_size)
        text = self._chat_text(query)
        try:
            return self._reuse.request(
                picture, text, key, lambda: self._processed([picture], [text])
            )
        except PrefixError as error:
            self._stop_reuse(error)
            return None

    def _from_prefix(self, request: Request):
        """generate()'s inputs from the request's prefix (computed and kept on a miss); the
        processor's batch, turning reuse off, if the model breaks reuse's assumptions."""
        try:
            return self._reuse.inputs(request)
        except PrefixError as error:
            self._stop_reuse(error)
            return request.inputs

    def _stop_reuse(self, error: PrefixError) -> None:
        logger.warning("prefix reuse is off for %s: %s", self.model_id, error)
        self._reuse = None

    @property
    def _compile_config(self):
        if self._compile_config_cached is None:
            from transformers import CompileConfig

            config = CompileConfig()
            if not self.device.startswith("cuda"):
                # generate() compiles on CUDA only; transformers' own flag for compiling on any
                # device ("useful for testing") lets the CPU tests run the compiled path.
                config._compile_all_devices = True
            self._compile_config_cached = config
        return self._compile_config_cached

    def close(self) -> None:
        """Drop the model and the kept prefixes so their memory (GPU memory on CUDA) is freed;
        generate() then fails."""
        if self.model is None:
            return
        self.model = None
        if self._reuse is not None:
            self._reuse.cache.clear()
            self._reuse = None  # it holds the model too
        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def __enter__(self) -> Reasoner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def resolve_checkpoint(name: str, *, is_path: bool = False) -> Path:
    """A complete local checkpoint directory for `name`: the directory itself, the HF cache's
    snapshot of a hub id, or a fresh download; ModelNotFoundError otherwise, fast when offline."""
    path = Path(name).expanduser()
    if path.is_dir():
        _check_checkpoint(path, name)
        return path
    hint = (
        f"Download it on a connected machine with `hf download {name} --local-dir DIR` "
        "and pass the directory, or check the name."
    )
    if is_path or not _is_hub_id(name):
        raise ModelNotFoundError(f"reasoning model directory {name!r} does not exist")

    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError

    try:
        cached = Path(
            snapshot_download(name, allow_patterns=_DOWNLOAD_PATTERNS, local_files_only=True)
        )
        if _missing_files(cached) is None:
            return cached
    except Exception:  # not (fully) cached: try the hub below
        pass
    try:
        HfApi().model_info(name, timeout=_PROBE_TIMEOUT_S)
    except RepositoryNotFoundError as exc:
        raise ModelNotFoundError(
            f"reasoning model {name!r} was not found on the Hugging Face hub (typo? a private "
            "or gated model needs `hf auth login`). " + hint
        ) from exc
    except Exception as exc:  # offline, DNS, proxy, HF_HUB_OFFLINE=1, timeouts
        raise ModelNotFoundError(
            f"reasoning model {name!r} was not found locally and could not be downloaded "
            f"(offline? {type(exc).__name__}). " + hint
        ) from exc
    logger.info("downloading reasoning model %s", name)
    try:
        path = Path(snapshot_download(name, allow_patterns=_DOWNLOAD_PATTERNS))
    except Exception as exc:  # any failure mid-download means "not available"
        raise ModelNotFoundError(f"downloading reasoning model {name!r} failed: {exc}") from exc
    _check_checkpoint(path, name)
    return path


def _is_hub_id(name: str) -> bool:
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except Exception:  # HFValidationError: not a repo id, so a (missing) path
        return False
    return True


def _check_checkpoint(path: Path, name: str) -> None:
    missing = _missing_files(path)
    if missing is not None:
        raise ModelNotFoundError(
            f"reasoning model {name!r} at {path} is incomplete: {missing}. Download the full "
            "checkpoint (config, tokenizer, processor and .safetensors weights)."
        )


def _missing_files(path: Path) -> str | None:
    """What a loadable checkpoint directory lacks, or None when it looks complete."""
    import json

    if not (path / "config.json").is_file():
        return "no config.json"
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.json").is_file():
        return "no tokenizer (tokenizer.json or vocab.json)"
    if not any((path / f).is_file() for f in ("preprocessor_config.json", "processor_config.json")):
        return "no processor config (preprocessor_config.json or processor_config.json)"
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = set(json.loads(index.read_text())["weight_map"].values())
        absent = sorted(s for s in shards if not (path / s).is_file())
        return f"missing weight shards {absent}" if absent else None
    if (path / "model.safetensors").is_file():
        return None
    if any(path.glob("*.bin")):
        return "only PyTorch .bin weights, no .safetensors (loading .bin files is disabled)"
    return "no model.safetensors weights"


def _check_prefix_options(prefix_cache_size: int, compile: bool) -> None:
    if (
        isinstance(prefix_cache_size, bool)
        or not isinstance(prefix_cache_size, int)
        or prefix_cache_size < 0
    ):
        raise ValueError(f"prefix_cache_size must be an integer >= 0, got {prefix_cache_size!r}")
    if compile and prefix_cache_size > 0:
        raise ValueError(
            f"compile cannot be combined with prefix reuse (prefix_cache_size "
            f"{prefix_cache_size}): the compiled decode runs on a static KV cache of its own; "
            "set prefix_cache_size to 0"
        )


class _Progress:
    """Stopping criterion that timestamps the first generated token and honours `cancel`."""

    def __init__(self, cancel: threading.Event | None, *, cuda: bool):
        self.cancel = cancel
        self.cuda = cuda
        self.first_token_at: float | None = None
        self.cancelled = False

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        import torch

        if self.first_token_at is None:
            self.sync()
            self.first_token_at = time.perf_counter()
        stop = self.cancel is not None and self.cancel.is_set()
        self.cancelled = self.cancelled or stop
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    def sync(self) -> None:
        if self.cuda:
            import torch

            torch.cuda.synchronize()


class _TextStream:
    """generate() streamer that hands `on_text` each newly decoded piece of text.

    The whole completion is re-decoded per token and only a grown prefix is emitted, holding
    back a trailing partial UTF-8 character, so the chunks always add up to the final text.
    """

    def __init__(self, tokenizer, on_text: Callable[[str], None]):
        self.tokenizer = tokenizer
        self.on_text = on_text
        self.ids: list[int] = []
        self.text = ""
        self.prompt_seen = False

    def put(self, value) -> None:
        if not self.prompt_seen:  # generate() first pushes the prompt
            self.prompt_seen = True
            return
        self.ids.extend(value.reshape(-1).tolist())
        self._emit(final=False)

    def end(self) -> None:
        self._emit(final=True)

    def _emit(self, *, final: bool) -> None:
        decoded = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if not decoded.startswith(self.text) or (not final and decoded.endswith("\ufffd")):
            return
        chunk = decoded[len(self.text) :]
        if chunk:
            self.text = decoded
            self.on_text(chunk)
