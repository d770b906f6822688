"""The reasoner on the tiny Qwen2.5-VL checkpoint: loading through the real transformers code,
the prompt and image tokens it builds, greedy batched generation, streaming and cancelling."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from PIL import Image

from segzero_model.errors import ModelNotFoundError
from segzero_model.prompt import build_prompt
from segzero_model.reasoner import Reasoner


def noise(height=120, width=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_checkpoint_is_in_the_real_on_disk_format(tiny_qwen_dir):
    from transformers import AutoConfig, AutoProcessor

    names = {path.name for path in tiny_qwen_dir.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert any("preprocessor" in name or "processor" in name for name in names)
    config = AutoConfig.from_pretrained(tiny_qwen_dir)
    assert config.model_type == "qwen2_5_vl"
    tokenizer = AutoProcessor.from_pretrained(tiny_qwen_dir).tokenizer
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == config.image_token_id
    assert tokenizer.decode(tokenizer(build_prompt("the red cup"))["input_ids"]) == build_prompt(
        "the red cup"
    )


@pytest.mark.parametrize("size", [(840, 840), (1, 1), (3000, 100), (48, 64)])
def test_prompt_and_900_image_tokens_for_any_image_size(tiny_reasoner, size):
    from segzero_model.reasoner import _conversation, _reasoning_image

    processor = tiny_reasoner.processor
    text = processor.apply_chat_template(
        _conversation("The red cup."), tokenize=False, add_generation_prompt=True
    )
    assert build_prompt("the red cup") in text
    assert text.endswith("<|im_start|>assistant\n")
    picture = _reasoning_image(np.zeros((size[1], size[0], 3), np.uint8))
    assert picture.size == (840, 840)
    inputs = processor(text=[text], images=[picture], return_tensors="pt")
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == image_pad).sum()) == 900  # (840/14)^2 / (2x2 merge)


def test_generation_is_greedy_and_batched_like_one_by_one(tiny_reasoner):
    images = [noise(seed=1), Image.new("L", (50, 40), 90), noise(300, 20, seed=2)]
    queries = ["the red cup", "the blue bottle", "the thing I can drink from"]
    batched = tiny_reasoner.generate(images, queries, max_new_tokens=24)
    single = [
        tiny_reasoner.generate([i], [q], max_new_tokens=24)[0]
        for i, q in zip(images, queries, strict=True)
    ]
    assert [g.text for g in batched] == [g.text for g in single]
    assert all(0 < g.num_tokens <= 24 and g.prefill_seconds > 0 for g in batched)
    assert (
        tiny_reasoner.generate(images[:1], queries[:1], max_new_tokens=24)[0].text == single[0].text
    )


def test_the_tiny_model_was_taught_its_canned_answer(tiny_reasoner):
    from segzero_model.answer import parse_answer
    from segzero_model.tiny_qwen import CANNED_ANSWER

    generation = tiny_reasoner.generate([noise(seed=3)], ["the red cup"], max_new_tokens=128)[0]
    assert generation.text.startswith("<think>")
    assert parse_answer(generation.text).thinking == parse_answer(CANNED_ANSWER).thinking


def test_streaming_chunks_concatenate_to_the_text(tiny_reasoner):
    chunks: list[str] = []
    generation = tiny_reasoner.generate(
        [noise()], ["the red cup"], max_new_tokens=40, on_text=chunks.append
    )[0]
    assert len(chunks) > 1 and "".join(chunks) == generation.text
    with pytest.raises(ValueError, match="batch of one"):
        tiny_reasoner.generate([noise(), noise()], ["a", "b"], on_text=chunks.append)


def test_cancel_stops_generation(tiny_reasoner):
    cancel = threading.Event()
    cancel.set()
    assert tiny_reasoner.generate([noise()], ["cup"], cancel=cancel)[0].cancelled

    cancel = threading.Event()
    seen: list[str] = []

    def stop_after_first_chunk(chunk: str) -> None:
        seen.append(chunk)
        cancel.set()

    generation = tiny_reasoner.generate(
        [noise()], ["cup"], max_new_tokens=100, on_text=stop_after_first_chunk, cancel=cancel
    )[0]
    assert generation.cancelled and generation.num_tokens < 100


def test_min_new_tokens_forces_a_fixed_length(tiny_reasoner):
    generation = tiny_reasoner.generate([noise()], ["cup"], max_new_tokens=12, min_new_tokens=12)[0]
    assert generation.num_tokens == 12


@pytest.mark.parametrize(
    "kwargs, message",
    [({"max_new_tokens": 0}, "max_new_tokens"), ({}, "at least one")],
)
def test_bad_arguments(tiny_reasoner, kwargs, message):
    images = [noise()] if kwargs else []
    queries = ["cup"] if kwargs else []
    with pytest.raises(ValueError, match=message):
        tiny_reasoner.generate(images, queries, **kwargs)
    with pytest.raises(ValueError, match="1 images but 2 queries"):
        tiny_reasoner.generate([noise()], ["a", "b"])


def test_qwen2_vl_checkpoints_load_too(tmp_path):
    from segzero_model.tiny_qwen import write_tiny_qwen

    directory = write_tiny_qwen(tmp_path / "qwen2", model_type="qwen2_vl", canned_answer=None)
    reasoner = Reasoner.from_pretrained(directory, device="cpu", max_new_tokens=4)
    assert reasoner.model.config.model_type == "qwen2_vl"
    assert reasoner.generate([noise()], ["cup"])[0].num_tokens >= 1
    reasoner.close()
    assert reasoner.model is None
    with pytest.raises(RuntimeError, match="closed"):
        reasoner.generate([noise()], ["cup"])


@pytest.mark.parametrize("name", ["nonexistent-org/no-such-model", "missing-dir"])
def test_missing_models_fail_fast_with_the_name(tmp_path, monkeypatch, name):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache: nothing is there
    target = name if "/" in name else str(tmp_path / name)
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError, match=name):
        Reasoner.from_pretrained(target, device="cpu")
    assert time.monotonic() - started < 30
