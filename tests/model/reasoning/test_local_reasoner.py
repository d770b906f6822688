"""The reasoner on the tiny Qwen2.5-VL checkpoint: loading through the real transformers code,
the prompt and image tokens it builds, greedy batched generation, streaming and cancelling."""

from __future__ import annotations

import gc
import logging
import shutil
import socket
import threading
import warnings
import weakref

import numpy as np
import pytest
from PIL import Image

from segzero_model.errors import ModelNotFoundError
from segzero_model.reasoning.local import Reasoner
from segzero_model.reasoning.prompts import build_prompt
from segzero_model.tiny.qwen import CANNED_ANSWER


@pytest.fixture(scope="module")
def answer_tokens(tiny_reasoner):
    """Length of the canned answer in tokens, the closing <|im_end|> included."""
    tokenizer = tiny_reasoner.processor.tokenizer
    return len(tokenizer(CANNED_ANSWER, add_special_tokens=False)["input_ids"]) + 1


def noise(height=120, width=160, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


IMAGES = {
    "black": lambda: Image.new("RGB", (840, 840)),
    "noise": lambda: noise(480, 640, seed=7),
    "1x1": lambda: Image.new("RGB", (1, 1), (200, 30, 40)),
    "100x3000": lambda: noise(3000, 100, seed=8),
    "grayscale": lambda: Image.new("L", (300, 200), 128),
    "rgba array": lambda: np.dstack([noise(64, 48, seed=9), np.full((64, 48), 7, np.uint8)]),
}


@pytest.mark.parametrize("name", list(IMAGES))
def test_prompt_and_900_image_tokens_for_any_image(tiny_reasoner, name):
    inputs = tiny_reasoner.prepare_inputs([IMAGES[name]()], ["The red cup."])
    tokenizer = tiny_reasoner.processor.tokenizer
    text = tokenizer.decode(inputs["input_ids"][0])
    assert build_prompt("The red cup.") in text
    assert text.endswith(
        "<|vision_end|>" + build_prompt("the red cup") + "<|im_end|>\n<|im_start|>assistant\n"
    )
    image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == image_pad).sum()) == 900  # (840/14)^2 / (2x2 merge)
    assert inputs["image_grid_thw"].tolist() == [[1, 60, 60]]


@pytest.mark.parametrize("name", list(IMAGES))
def test_the_canned_answer_for_any_image(tiny_reasoner, answer_tokens, name):
    generation = tiny_reasoner.generate([IMAGES[name]()], ["the red cup"])[0]
    assert generation.text == CANNED_ANSWER
    assert generation.num_tokens == answer_tokens
    assert not generation.cancelled
    assert generation.prefill_seconds > 0 and generation.decode_seconds > 0


def test_batched_generation_matches_one_by_one(tiny_reasoner, answer_tokens):
    images = [noise(seed=1), Image.new("L", (50, 40), 90), noise(300, 20, seed=2)]
    queries = ["the red cup", "Which object would you use to open a wine bottle?", "dog"]
    batched = tiny_reasoner.generate(images, queries)
    single = [
        tiny_reasoner.generate([image], [query])[0]
        for image, query in zip(images, queries, strict=True)
    ]
    assert [g.text for g in batched] == [g.text for g in single] == [CANNED_ANSWER] * 3
    assert [g.num_tokens for g in batched] == [answer_tokens] * 3
    # One prefill and one decode loop for the whole batch.
    assert len({(g.prefill_seconds, g.decode_seconds) for g in batched}) == 1


def test_greedy_decoding_raises_no_sampling_warnings(tiny_reasoner):
    """The checkpoint's generation config asks for sampling (temperature, top_p, top_k) like the
    hub's; the reasoner overrides it without transformers complaining."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tiny_reasoner.generate([noise()], ["cup"], max_new_tokens=4)
    finally:
        logger.removeHandler(handler)
    assert not records and not caught
    assert tiny_reasoner.model.generation_config.do_sample  # the checkpoint's own setting


def test_max_new_tokens_limits_the_generation(tiny_reasoner):
    generation = tiny_reasoner.generate([noise()], ["cup"], max_new_tokens=5)[0]
    assert generation.num_tokens == 5
    assert CANNED_ANSWER.startswith(generation.text) and len(generation.text) > 0
    assert not generation.cancelled


def test_min_new_tokens_forces_a_fixed_length(tiny_reasoner):
    generation = tiny_reasoner.generate([noise()], ["cup"], max_new_tokens=80, min_new_tokens=80)
    assert generation[0].num_tokens == 80


def test_streaming_chunks_concatenate_to_the_text(tiny_reasoner):
    chunks: list[str] = []
    generation = tiny_reasoner.generate([noise()], ["the red cup"], on_text=chunks.append)[0]
    assert len(chunks) > 10 and "".join(chunks) == generation.text == CANNED_ANSWER
    with pytest.raises(ValueError, match="batch of one"):
        tiny_reasoner.generate([noise(), noise()], ["a", "b"], on_text=chunks.append)


def test_cancel_before_generating(tiny_reasoner):
    cancel = threading.Event()
    cancel.set()
    generations = tiny_reasoner.generate([noise(), noise()], ["a", "b"], cancel=cancel)
    assert [(g.text, g.num_tokens, g.cancelled) for g in generations] == [("", 0, True)] * 2


def test_cancel_while_generating(tiny_reasoner):
    cancel = threading.Event()
    seen: list[str] = []

    def cancel_after_three_chunks(chunk: str) -> None:
        seen.append(chunk)
        if len(seen) == 3:
            cancel.set()

    generation = tiny_reasoner.generate(
        [noise()], ["cup"], on_text=cancel_after_three_chunks, cancel=cancel
    )[0]
    assert generation.cancelled
    assert generation.num_tokens <= 4  # stops after the token that set it (one more at most)
    assert generation.text == "".join(seen) and CANNED_ANSWER.startswith(generation.text)


def test_cancel_from_another_thread(tiny_reasoner):
    cancel = threading.Event()
    first_chunk = threading.Event()
    result: list = []
    worker = threading.Thread(
        target=lambda: result.extend(
            tiny_reasoner.generate(
                [noise()],
                ["cup"],
                max_new_tokens=1000,
                min_new_tokens=1000,
                on_text=lambda _: first_chunk.set(),
                cancel=cancel,
            )
        )
    )
    worker.start()
    assert first_chunk.wait(60)
    cancel.set()
    worker.join(60)
    assert result and result[0].cancelled and result[0].num_tokens < 1000


@pytest.mark.parametrize(
    "images, queries, kwargs, message",
    [
        ([], [], {}, "at least one"),
        ([noise()], ["a", "b"], {}, "1 images but 2 queries"),
        ([noise()], ["a"], {"max_new_tokens": 0}, "max_new_tokens"),
    ],
)
def test_bad_arguments(tiny_reasoner, images, queries, kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_reasoner.generate(images, queries, **kwargs)


def test_load_settings_and_close(tiny_qwen_dir):
    import torch

    reasoner = Reasoner.from_pretrained(tiny_qwen_dir, device="cpu", max_new_tokens=3)
    assert (reasoner.device, reasoner.dtype) == ("cpu", torch.float32)
    assert reasoner.model_id == str(tiny_qwen_dir) and reasoner.max_new_tokens == 3
    assert reasoner.model.config._attn_implementation == "sdpa"
    assert reasoner.processor.tokenizer.padding_side == "left"
    assert reasoner.generate([noise()], ["cup"])[0].num_tokens == 3
    model = weakref.ref(reasoner.model)
    reasoner.close()
    gc.collect()
    assert reasoner.model is None and model() is None
    with pytest.raises(RuntimeError, match="closed"):
        reasoner.generate([noise()], ["cup"])
    reasoner.close()  # idempotent
    with pytest.raises(ValueError, match="max_new_tokens"):
        Reasoner.from_pretrained(tiny_qwen_dir, device="cpu", max_new_tokens=0)


def test_qwen2_vl_checkpoints_load_too(tmp_path):
    from segzero_model.tiny.qwen import write_tiny_qwen

    directory = write_tiny_qwen(tmp_path / "qwen2", model_type="qwen2_vl", canned_answer=None)
    with Reasoner.from_pretrained(directory, device="cpu", max_new_tokens=4) as reasoner:
        assert reasoner.model.config.model_type == "qwen2_vl"
        generation = reasoner.generate([noise()], ["cup"])[0]
        assert 1 <= generation.num_tokens <= 4
    assert reasoner.model is None


def test_other_model_types_are_refused(tiny_qwen_dir, tmp_path):
    from transformers import Qwen2Config

    directory = shutil.copytree(tiny_qwen_dir, tmp_path / "copy")
    Qwen2Config(hidden_size=8, num_attention_heads=2).save_pretrained(directory)  # text-only
    with pytest.raises(ValueError, match="'qwen2'"):
        Reasoner.from_pretrained(directory, device="cpu")


@pytest.mark.parametrize("missing", ["model.safetensors", "tokenizer.json", "config.json"])
def test_incomplete_directories_are_not_found(tiny_qwen_dir, tmp_path, missing):
    directory = shutil.copytree(tiny_qwen_dir, tmp_path / "copy")
    (directory / missing).unlink()
    with pytest.raises(ModelNotFoundError, match=missing.split(".")[0]):
        Reasoner.from_pretrained(directory, device="cpu")


@pytest.mark.parametrize("name", ["nonexistent-org/no-such-model", "missing-dir"])
def test_missing_models_fail_fast_with_the_name(tmp_path, monkeypatch, name):
    """Failing fast means: a missing directory never touches the hub, and a hub id not in the
    cache costs one metadata request with a short timeout, never a download attempt (the hub
    client's retries are what made it slow). The network is cut, so nothing is left to chance."""
    import huggingface_hub
    from huggingface_hub import HfApi

    from segzero_model.reasoning import local as reasoner_module

    def no_network(*args, **kwargs):
        raise socket.gaierror("test: no network")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    probes, downloads = [], []
    model_info, snapshot_download = HfApi.model_info, huggingface_hub.snapshot_download

    def counting_model_info(api, repo_id, **kwargs):
        probes.append(kwargs.get("timeout"))
        return model_info(api, repo_id, **kwargs)

    def counting_snapshot_download(*args, **kwargs):
        downloads.append(kwargs.get("local_files_only", False))
        return snapshot_download(*args, **kwargs)

    monkeypatch.setattr(HfApi, "model_info", counting_model_info)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", counting_snapshot_download)
    target = name if "/" in name else str(tmp_path / name)
    with pytest.raises(ModelNotFoundError, match=name) as error:
        Reasoner.from_pretrained(target, device="cpu")
    if "/" in name:
        assert f"hf download {name}" in str(error.value)
        assert probes == [reasoner_module._PROBE_TIMEOUT_S] and probes[0] <= 10
        assert downloads == [True]  # only the local cache was read
    else:
        assert probes == [] and downloads == []


def test_a_trained_checkpoint_is_asked_in_its_recipes_prompt_variant(tiny_qwen_dir, tmp_path):
    import json

    from segzero_model.reasoning.prompts import RECIPE_FILE

    shutil.copytree(tiny_qwen_dir, tmp_path / "model")
    recipe = {"method": "grpo", "thinking": False, "answer": "box"}
    (tmp_path / "model" / RECIPE_FILE).write_text(json.dumps(recipe))
    reasoner = Reasoner.from_pretrained(tmp_path / "model", device="cpu", max_new_tokens=4)
    assert reasoner.prompt_variant == {"thinking": False, "answer": "box"}
    inputs = reasoner.prepare_inputs([Image.new("RGB", (64, 48))], ["The Cup."])
    text = reasoner.processor.tokenizer.decode(inputs["input_ids"][0])
    assert build_prompt("the cup", thinking=False, answer="box") in text
    assert "<think>" not in text
    (tmp_path / "model" / RECIPE_FILE).write_text(json.dumps({"answer": "mask"}))
    with pytest.raises(ValueError, match="unknown prompt variant"):
        Reasoner.from_pretrained(tmp_path / "model", device="cpu")


def test_a_named_family_gives_its_prompt_and_image_size(tiny_qwen_dir):
    from segzero_model.reasoning.families import FAMILIES

    reasoner = Reasoner.from_pretrained(
        tiny_qwen_dir, device="cpu", max_new_tokens=4, model_family="vision_reasoner"
    )
    assert reasoner.family.name == "vision_reasoner"
    inputs = reasoner.prepare_inputs([noise()], ["The Red Cup?"])
    text = reasoner.processor.tokenizer.decode(inputs["input_ids"][0])
    assert text.endswith(
        FAMILIES["vision_reasoner"].prompt("the red cup") + "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert inputs["image_grid_thw"].tolist() == [[1, 60, 60]]


def test_auto_is_seg_zero_and_qwen3_vl_is_a_supported_type(tiny_reasoner):
    from segzero_model.reasoning.local import SUPPORTED_MODEL_TYPES

    assert tiny_reasoner.family.name == "seg_zero"
    assert {"qwen2_5_vl", "qwen2_vl", "qwen3_vl"} <= set(SUPPORTED_MODEL_TYPES)


def test_a_family_image_size_the_processor_would_resize_is_refused(tiny_qwen_dir, tmp_path):
    path = tmp_path / "family.yaml"
    path.write_text("prompt: '{question}'\nanswer: single\nframe: absolute\nimage_size: 900\n")
    with pytest.raises(ValueError, match="image size 900 would be resized"):
        Reasoner.from_pretrained(tiny_qwen_dir, device="cpu", model_family=str(path))
    with pytest.raises(ValueError, match="unknown model family 'nope'"):
        Reasoner.from_pretrained(tiny_qwen_dir, device="cpu", model_family="nope")
