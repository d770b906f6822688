"""The released Qwen2.5-VL-3B and -7B architectures (segzero_model/tiny/real_size.py) run through
the project's own reasoner on the CPU: a random checkpoint with every width, head count, rope
and vision setting as released, its depth cut to 2 text layers and 2 vision blocks (one
windowed, one with full attention), is written in the hub's format, loaded by
`Reasoner.from_pretrained` and generates on an 840x840 image, so a configuration bug shows here
rather than first on a GPU."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass

import numpy as np
import pytest

from segzero_model.tiny.real_size import (
    ARCHES,
    RELEASED_CONFIGS,
    full_attention_blocks,
    real_size_config,
    write_real_size_reasoner,
)

CUT = {"text_layers": 2, "vision_depth": 2}
NEW_TOKENS = 3
IMAGE_TOKENS = (840 // 14 // 2) ** 2  # 60x60 patches of 14 px, merged 2x2: 900


@pytest.mark.parametrize("arch, billions", [("3b", 3.75), ("7b", 8.29)])
def test_at_full_depth_they_have_the_published_parameter_counts(tiny_qwen_dir, arch, billions):
    """Built on the meta device, as released: the sizes the hub lists for the two checkpoints
    (which also pins the 3B's tied and the 7B's untied embeddings)."""
    import torch
    from transformers import AutoModelForImageTextToText

    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(real_size_config(arch, tiny_qwen_dir))
    unique = {id(p): p.numel() for p in model.parameters()}
    assert round(sum(unique.values()) / 1e9, 2) == billions


@pytest.mark.parametrize("arch", ARCHES)
def test_the_rope_sections_cover_the_rotary_half_of_every_head(tiny_qwen_dir, arch):
    """mrope splits each head's head_dim / 2 rotary frequencies over (time, height, width); a
    split that does not add up (the tiny model's [2, 3, 3] on 128-dim heads) crashes the first
    forward pass."""
    text = real_size_config(arch, tiny_qwen_dir, **CUT).text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert head_dim == 128
    assert text.rope_parameters["mrope_section"] == [16, 24, 24]
    assert 2 * sum(text.rope_parameters["mrope_section"]) == head_dim


def test_a_cut_vision_tower_keeps_windowed_and_full_attention_blocks():
    released = RELEASED_CONFIGS["3b"]["vision_config"]["fullatt_block_indexes"]
    assert full_attention_blocks(32, released) == [7, 15, 23, 31]
    assert full_attention_blocks(2, released) == [1]
    assert full_attention_blocks(10, released) == [7, 9]
    with pytest.raises(ValueError, match="0"):
        full_attention_blocks(0, released)


def test_unknown_arches_and_depths_are_refused(tiny_qwen_dir):
    with pytest.raises(ValueError, match="'13b'"):
        real_size_config("13b", tiny_qwen_dir)
    with pytest.raises(ValueError, match="between 1 and 36 for 3b, got 37"):
        real_size_config("3b", tiny_qwen_dir, text_layers=37)
    with pytest.raises(ValueError, match="between 1 and 32 for 7b, got 0"):
        real_size_config("7b", tiny_qwen_dir, vision_depth=0)


@dataclass
class Run:
    """One cut real-size checkpoint, loaded by the reasoner, and what one generate call saw."""

    arch: str
    reasoner: object  # segzero_model.reasoning.local.Reasoner
    inputs: dict  # the reasoner's processed batch for the image and query
    generation: object  # segzero_model.reasoning.local.Generation
    merger_outputs: list  # shapes of the vision tower's outputs (image tokens, width)
    logits: list  # the logits of every decoding step


@pytest.fixture(scope="module", params=ARCHES)
def run(request, tiny_qwen_dir, tmp_path_factory):
    """Write the cut `arch` checkpoint in bf16 (as released: half the disk of fp32), load it as
    a user on a CPU would (the CPU default, fp32: on a CPU without bf16 arithmetic, such as an
    AVX2 one, the bf16 prefill took 5x longer), generate NEW_TOKENS tokens (forced: random
    weights never stop on purpose) for an 840x840 image, recording the vision tower's outputs
    and the logits of each step. The checkpoint is deleted afterwards."""
    import torch

    from segzero_model.reasoning.local import Reasoner

    arch = request.param
    directory = tmp_path_factory.mktemp(f"qwen2.5-vl-{arch}")
    try:
        write_real_size_reasoner(arch, tiny_qwen_dir, directory, dtype=torch.bfloat16, **CUT)
        assert json.loads((directory / "config.json").read_text())["dtype"] == "bfloat16"
        reasoner = Reasoner.from_pretrained(directory, device="cpu")
        model = reasoner.model
        merger_outputs, logits = [], []
        hooks = [
            model.model.visual.merger.register_forward_hook(
                lambda module, args, output: merger_outputs.append(tuple(output.shape))
            ),
            model.lm_head.register_forward_hook(
                lambda module, args, output: logits.append(output.float())
            ),
        ]
        image = np.random.default_rng(0).integers(0, 256, (840, 840, 3), dtype=np.uint8)
        query = "the red cup"
        inputs = reasoner.prepare_inputs([image], [query])
        try:
            (generation,) = reasoner.generate(
                [image], [query], max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS
            )
        finally:
            for hook in hooks:
                hook.remove()
        yield Run(arch, reasoner, inputs, generation, merger_outputs, logits)
        reasoner.close()
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
def test_the_loaded_model_has_the_released_widths_and_the_cut_depth(run):
    released = RELEASED_CONFIGS[run.arch]
    model = run.reasoner.model
    config, text = model.config, model.config.text_config
    assert str(model.dtype) == "torch.float32"  # the bf16 checkpoint, at the CPU's default
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "num_key_value_heads",
        "vocab_size",
        "rms_norm_eps",
        "max_position_embeddings",
    ):
        assert getattr(text, key) == released[key], key
    assert text.rope_parameters["rope_theta"] == released["rope_theta"]
    assert text.rope_parameters["mrope_section"] == released["rope_scaling"]["mrope_section"]
    assert config.tie_word_embeddings is released["tie_word_embeddings"]
    vision = config.vision_config
    for key in (
        "hidden_size",
        "intermediate_size",
        "num_heads",
        "out_hidden_size",
        "patch_size",
        "spatial_merge_size",
        "temporal_patch_size",
        "window_size",
        "tokens_per_second",
    ):
        assert getattr(vision, key) == released["vision_config"][key], key
    assert (text.num_hidden_layers, vision.depth, vision.fullatt_block_indexes) == (2, 2, [1])

    # The weights as loaded: real widths, grouped-query attention, 128-dim heads.
    hidden, heads, kv_heads = (
        released["hidden_size"],
        released["num_attention_heads"],
        released["num_key_value_heads"],
    )
    language = model.model.language_model
    attention = language.layers[0].self_attn
    assert attention.q_proj.weight.shape == (heads * 128, hidden)
    assert attention.k_proj.weight.shape == (kv_heads * 128, hidden)
    assert language.embed_tokens.weight.shape == (released["vocab_size"], hidden)
    assert len(language.layers) == 2 and len(model.model.visual.blocks) == 2
    assert language.rotary_emb.inv_freq.shape == (64,)
    tied = model.lm_head.weight.data_ptr() == language.embed_tokens.weight.data_ptr()
    assert tied is released["tie_word_embeddings"]
    # Initialised as transformers does (the writer skips torch's first, discarded pass).
    assert bool((language.norm.weight == 1).all())
    assert float(attention.q_proj.weight.detach().float().std()) == pytest.approx(0.02, rel=0.05)


@pytest.mark.slow
def test_an_840x840_image_is_900_image_tokens(run):
    image_token = run.reasoner.model.config.image_token_id
    assert run.inputs["image_grid_thw"].tolist() == [[1, 60, 60]]
    assert run.inputs["pixel_values"].shape == (60 * 60, 3 * 2 * 14 * 14)
    assert int((run.inputs["input_ids"] == image_token).sum()) == IMAGE_TOKENS
    out_width = RELEASED_CONFIGS[run.arch]["vision_config"]["out_hidden_size"]
    assert run.merger_outputs == [(IMAGE_TOKENS, out_width)]  # one vision pass, at prefill


@pytest.mark.slow
def test_generate_yields_the_forced_tokens_from_finite_logits(run):
    vocab = RELEASED_CONFIGS[run.arch]["vocab_size"]
    assert run.generation.num_tokens == NEW_TOKENS
    assert not run.generation.cancelled
    assert run.generation.prefill_seconds > 0 and run.generation.decode_seconds > 0
    assert [tuple(step.shape) for step in run.logits] == [(1, 1, vocab)] * NEW_TOKENS
    assert all(bool(step.isfinite().all()) for step in run.logits)
