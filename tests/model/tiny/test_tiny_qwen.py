"""The tiny Qwen checkpoint writer: real on-disk files that load through the Auto* classes, a
Qwen-compatible tokenizer and chat template, and the trained-in canned answer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segzero_model.reasoning.prompts import build_prompt
from segzero_model.tiny.qwen import CANNED_ANSWER, SPECIAL_TOKENS, write_tiny_qwen


def test_the_checkpoint_has_the_files_of_a_hub_checkpoint(tiny_qwen_dir):
    from safetensors import safe_open

    names = {path.name for path in tiny_qwen_dir.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "processor_config.json",
        "chat_template.jinja",
    } <= names
    config = json.loads((tiny_qwen_dir / "config.json").read_text())
    assert config["model_type"] == "qwen2_5_vl"
    assert config["architectures"] == ["Qwen2_5_VLForConditionalGeneration"]
    assert config["text_config"]["hidden_size"] == 64
    assert config["text_config"]["num_hidden_layers"] == 2
    assert config["vision_config"]["depth"] == 2
    assert config["vision_config"]["out_hidden_size"] == 64
    with safe_open(tiny_qwen_dir / "model.safetensors", "pt") as weights:
        dtypes = {str(weights.get_slice(name).get_dtype()) for name in weights.keys()}
    assert dtypes == {"F32"}


def test_it_reloads_through_the_auto_classes(tiny_qwen_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen_dir)
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.tokenizer).__name__ == "Qwen2Tokenizer"
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    image_processor = processor.image_processor
    assert (image_processor.patch_size, image_processor.merge_size) == (14, 2)
    assert image_processor.temporal_patch_size == 2


def test_special_tokens_have_the_ids_the_config_names(tiny_qwen_dir):
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    config = AutoConfig.from_pretrained(tiny_qwen_dir)
    generation = GenerationConfig.from_pretrained(tiny_qwen_dir)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}
    # Qwen's order, straight after the trained vocabulary.
    assert list(ids.values()) == list(range(ids["<|endoftext|>"], ids["<|endoftext|>"] + 14))
    assert 256 <= ids["<|endoftext|>"] <= 2048
    assert config.image_token_id == ids["<|image_pad|>"]
    assert config.video_token_id == ids["<|video_pad|>"]
    assert config.vision_start_token_id == ids["<|vision_start|>"]
    assert config.vision_end_token_id == ids["<|vision_end|>"]
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert set(generation.eos_token_id) == {ids["<|im_end|>"], ids["<|endoftext|>"]}
    assert len(tokenizer) <= config.text_config.vocab_size
    for token in SPECIAL_TOKENS:
        assert tokenizer(token, add_special_tokens=False)["input_ids"] == [ids[token]]


@pytest.mark.parametrize(
    "text",
    [build_prompt("The red cup."), CANNED_ANSWER, "Ünïcödé ✓ 中文 😀\n\ttabs  and  spaces"],
)
def test_the_byte_level_tokenizer_round_trips_any_text(tiny_qwen_dir, text):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_qwen_dir)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges were learnt, not only bytes


def test_the_chat_template_behaves_like_qwen2_5_vl(tiny_qwen_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen_dir)
    prompt = build_prompt("the cup")
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
    text = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        f"<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{prompt}<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    own_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert processor.apply_chat_template(own_system, tokenize=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
    )


def test_an_840_image_is_not_resized(tiny_qwen_dir):
    from transformers import AutoProcessor

    image_processor = AutoProcessor.from_pretrained(tiny_qwen_dir).image_processor
    out = image_processor(images=[Image.new("RGB", (840, 840))], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 60, 60]]  # 840 / 14
    assert tuple(out["pixel_values"].shape) == (3600, 3 * 2 * 14 * 14)


def test_untrained_checkpoints_are_deterministic_per_seed(tmp_path):
    first = write_tiny_qwen(tmp_path / "a", canned_answer=None, seed=1)
    again = write_tiny_qwen(tmp_path / "b", canned_answer=None, seed=1)
    other = write_tiny_qwen(tmp_path / "c", canned_answer=None, seed=2)
    weights = [(d / "model.safetensors").read_bytes() for d in (first, again, other)]
    assert weights[0] == weights[1] != weights[2]
    assert (first / "tokenizer.json").read_text() == (again / "tokenizer.json").read_text()


def test_a_qwen2_vl_checkpoint(tmp_path):
    from transformers import AutoConfig, AutoProcessor

    directory = write_tiny_qwen(tmp_path / "qwen2", model_type="qwen2_vl", canned_answer=None)
    assert AutoConfig.from_pretrained(directory).model_type == "qwen2_vl"
    assert type(AutoProcessor.from_pretrained(directory)).__name__ == "Qwen2VLProcessor"


@pytest.mark.parametrize(
    "kwargs, message",
    [({"model_type": "llava"}, "model_type"), ({"train_steps": 0}, "train_steps")],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        write_tiny_qwen(tmp_path, **kwargs)


def test_the_canned_answer_was_trained_in(tiny_qwen_dir):
    """Greedy decoding straight through transformers, without the reasoner."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_qwen_dir)
    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen_dir).eval()
    user = {
        "role": "user",
        "content": [{"type": "image"}, {"type": "text", "text": build_prompt("a zebra")}],
    }
    text = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    image = Image.fromarray(np.random.default_rng(4).integers(0, 256, (840, 840, 3), np.uint8))
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=128, do_sample=False)
    completion = out[0, inputs["input_ids"].shape[1] :]
    assert processor.tokenizer.decode(completion, skip_special_tokens=True) == CANNED_ANSWER
    assert processor.tokenizer.decode(completion[-1:]) == "<|im_end|>"
