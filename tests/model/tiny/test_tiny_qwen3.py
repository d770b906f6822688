"""The tiny Qwen3-VL checkpoint writer: real on-disk files that load through the Auto* classes
with Qwen3-VL's 16-pixel patches, and (slow: it is trained) the canned JSON-list answers: two
objects, none or one, by the query's words."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segzero_model.reasoning.families import FAMILIES
from segzero_model.tiny.qwen3 import (
    CANNED_ANSWER,
    CANNED_ANSWER_ALL,
    CANNED_ANSWER_NONE,
    THINK_TOKENS,
    canned_answer_for,
    write_tiny_qwen3_vl,
)


@pytest.fixture(scope="module")
def untrained_dir(tmp_path_factory):
    """Random weights only: seconds to build, enough for everything but the answer."""
    return write_tiny_qwen3_vl(tmp_path_factory.mktemp("qwen3") / "tiny", taught=False)


def _generate(directory, image: Image.Image, query: str, max_new_tokens: int) -> str:
    """Greedy decoding straight through transformers, as a user would load a hub id."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(directory)
    model = AutoModelForImageTextToText.from_pretrained(directory).eval()
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": query}]}
    text = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    completion = out[0, inputs["input_ids"].shape[1] :]
    assert 0 < len(completion) <= max_new_tokens
    return processor.tokenizer.decode(completion, skip_special_tokens=True)


def test_it_loads_through_the_auto_classes_as_qwen3_vl(untrained_dir):
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    config = AutoConfig.from_pretrained(untrained_dir)
    processor = AutoProcessor.from_pretrained(untrained_dir)
    model = AutoModelForImageTextToText.from_pretrained(untrained_dir)
    assert config.model_type == "qwen3_vl"
    assert type(processor).__name__ == "Qwen3VLProcessor"
    assert type(model).__name__ == "Qwen3VLForConditionalGeneration"
    assert sum(p.numel() for p in model.parameters()) < 1_000_000
    assert (config.vision_config.patch_size, config.vision_config.spatial_merge_size) == (16, 2)
    deepstack = config.vision_config.deepstack_visual_indexes  # each feeds one decoder layer
    assert 0 < len(deepstack) <= config.text_config.num_hidden_layers
    image_processor = processor.image_processor
    assert (image_processor.patch_size, image_processor.merge_size) == (16, 2)
    assert (processor.video_processor.patch_size, processor.video_processor.merge_size) == (16, 2)
    files = json.loads((untrained_dir / "config.json").read_text())
    assert files["architectures"] == ["Qwen3VLForConditionalGeneration"]


def test_special_tokens_have_the_ids_the_config_names(untrained_dir):
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(untrained_dir)
    config = AutoConfig.from_pretrained(untrained_dir)
    assert config.image_token_id == tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert config.video_token_id == tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert config.vision_start_token_id == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert len(tokenizer) <= config.text_config.vocab_size
    for token in THINK_TOKENS:  # one ordinary token each, kept when special ones are skipped
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tokenizer.decode(ids, skip_special_tokens=True) == token


def test_the_chat_template_behaves_like_qwen3_vl(untrained_dir):
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(untrained_dir)
    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "the cup"}]}
    text = processor.apply_chat_template([user], tokenize=False, add_generation_prompt=True)
    assert text == (  # no default system prompt, unlike Qwen2.5-VL
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>the cup<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_an_832_image_is_not_resized(untrained_dir):
    from transformers import AutoProcessor

    image_processor = AutoProcessor.from_pretrained(untrained_dir).image_processor
    out = image_processor(images=[Image.new("RGB", (832, 832))], return_tensors="pt")
    assert out["image_grid_thw"].tolist() == [[1, 52, 52]]  # 832 / 16
    assert tuple(out["pixel_values"].shape) == (52 * 52, 3 * 2 * 16 * 16)


def test_it_generates_from_an_832_image(untrained_dir):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (832, 832, 3), np.uint8))
    assert isinstance(_generate(untrained_dir, image, "the cup", max_new_tokens=4), str)


def test_untrained_checkpoints_are_deterministic_per_seed(tmp_path):
    first = write_tiny_qwen3_vl(tmp_path / "a", taught=False, seed=1)
    again = write_tiny_qwen3_vl(tmp_path / "b", taught=False, seed=1)
    other = write_tiny_qwen3_vl(tmp_path / "c", taught=False, seed=2)
    weights = [(d / "model.safetensors").read_bytes() for d in (first, again, other)]
    assert weights[0] == weights[1] != weights[2]


def test_bad_train_steps(tmp_path):
    with pytest.raises(ValueError, match="train_steps"):
        write_tiny_qwen3_vl(tmp_path, train_steps=0)


@pytest.mark.slow
def test_the_cached_checkpoint_was_taught_the_canned_answers(tiny_cache):
    """Built through the shared cache (its own entry, beside the Qwen2.5-VL/SAM2 one; taught
    once per machine, about a minute) and trained."""
    from transformers import AutoConfig

    from segzero_model.tiny import builder_fingerprint, ensure_tiny_qwen3_vl, qwen3_vl_fingerprint

    directory = ensure_tiny_qwen3_vl(tiny_cache)
    assert directory == tiny_cache / f"tiny-qwen3-vl-{qwen3_vl_fingerprint()}"
    assert qwen3_vl_fingerprint() != builder_fingerprint()
    assert ensure_tiny_qwen3_vl(tiny_cache) == directory  # reused, not rebuilt
    assert AutoConfig.from_pretrained(directory).model_type == "qwen3_vl"
    rng = np.random.default_rng(4)
    noise = Image.fromarray(rng.integers(0, 256, (832, 832, 3), np.uint8))
    black = Image.new("RGB", (832, 832))
    assert _generate(directory, noise, "a zebra", max_new_tokens=64) == CANNED_ANSWER
    assert _generate(directory, black, "", max_new_tokens=64) == CANNED_ANSWER
    assert _generate(directory, noise, "all the cups", max_new_tokens=96) == CANNED_ANSWER_ALL
    assert _generate(directory, black, "find all zebras", max_new_tokens=96) == CANNED_ANSWER_ALL
    assert _generate(directory, noise, "a unicorn", max_new_tokens=64) == CANNED_ANSWER_NONE
    prompt = FAMILIES["qwen3_vl"].prompt
    for query in ("the red cup", "all the cups", "the pink unicorn"):
        assert _generate(directory, noise, prompt(query), 96) == canned_answer_for(query)


def test_the_answer_is_chosen_by_whole_words():
    assert canned_answer_for("the red cup") == CANNED_ANSWER
    assert canned_answer_for("a small ball on the wall") == CANNED_ANSWER  # not the word "all"
    assert canned_answer_for("All the cups.") == CANNED_ANSWER_ALL
    assert canned_answer_for('Please find "all cups"') == CANNED_ANSWER_ALL
    assert canned_answer_for("the unicorn") == CANNED_ANSWER_NONE
    assert canned_answer_for("all unicorns") == CANNED_ANSWER_ALL  # "unicorns" is not "unicorn"
    assert canned_answer_for("all of the unicorn") == CANNED_ANSWER_NONE  # "unicorn" wins


def test_the_canned_answers_parse_as_two_none_and_one_object():
    from segzero_model.reasoning.answer_parser import parse_objects

    family = FAMILIES["qwen3_vl"]
    counts = [len(parse_objects(a, family, 640, 480)) for a in (CANNED_ANSWER_ALL, CANNED_ANSWER)]
    assert counts == [2, 1]
    assert parse_objects(CANNED_ANSWER_NONE, family, 640, 480) == []
