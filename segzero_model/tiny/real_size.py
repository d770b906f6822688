"""Random Qwen2.5-VL checkpoints with the released 3B and 7B architectures.

`RELEASED_CONFIGS` holds the config.json of Qwen/Qwen2.5-VL-3B-Instruct and of
Qwen/Qwen2.5-VL-7B-Instruct (huggingface.co/Qwen/<name>/blob/main/config.json; the bases of the
released Seg-Zero 3B and 7B models) field for field, in the hub's own flat layout, so
transformers parses them exactly as it parses the downloaded files. Nothing can be downloaded
here: the values were transcribed from public copies of those files, which agree:

* 3B: a verbatim copy of the config.json in a model-dump page titled
  "Qwen/Qwen2.5-VL-3B-Instruct", and the "Selected Json config from Qwen2.5VL-3B" of a JSON
  parser's test (every field it keeps is equal);
* 7B: `QWEN2_5_VL_7B_CONFIG` in NVIDIA/TensorRT-LLM,
  tests/unittest/_torch/modeling/test_modeling_qwen2_5vl.py (the hub file with the depths and
  the full-attention blocks cut for a test, its comments giving the released 28 layers and 32
  vision blocks); the printed 7B model in acproject/duorou, docs/qwen2.5vl_graph.md
  (Embedding(152064, 3584), k_proj 3584 to 512, 28 decoder layers, 32 vision blocks of width
  1280 and MLP 3420, merger 5120 to 3584); and for the vision tower also the defaults of
  transformers' `Qwen2_5_VLVisionConfig`, which are the 7B's (32 blocks, MLP 3420, 16 heads,
  window 112, out_hidden_size 3584, full attention in blocks 7, 15, 23 and 31).

At full depth they build 3.75 B and 8.29 B parameters, the sizes the hub lists for the two
checkpoints (tests/model/tiny/test_real_size.py checks both on the meta device), which also pins the
3B's tied and the 7B's untied embeddings.

`real_size_config` can cut the depth (text layers, vision blocks) so that a forward pass at the
real widths fits a CPU; every width, head count, rope and vision setting stays as released. The
special-token ids are the tiny checkpoint's (segzero_model.tiny.qwen), so its tokenizer and
processor can feed the real-size model; they all lie below the released vocabulary size, which
is kept.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

ARCHES = ("3b", "7b")

# config.json of Qwen/Qwen2.5-VL-3B-Instruct and -7B-Instruct, as published (see above). The
# special-token ids are Qwen's; real_size_config replaces them with the tiny tokenizer's.
RELEASED_CONFIGS = {
    "3b": {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "hidden_act": "silu",
        "hidden_size": 2048,
        "initializer_range": 0.02,
        "intermediate_size": 11008,
        "max_position_embeddings": 128000,
        "max_window_layers": 70,
        "model_type": "qwen2_5_vl",
        "num_attention_heads": 16,
        "num_hidden_layers": 36,
        "num_key_value_heads": 2,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": True,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.41.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": 32,
            "hidden_act": "silu",
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "in_chans": 3,
            "out_hidden_size": 2048,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
            "temporal_patch_size": 2,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vocab_size": 151936,
    },
    "7b": {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "vision_start_token_id": 151652,
        "vision_end_token_id": 151653,
        "vision_token_id": 151654,
        "image_token_id": 151655,
        "video_token_id": 151656,
        "hidden_act": "silu",
        "hidden_size": 3584,
        "initializer_range": 0.02,
        "intermediate_size": 18944,
        "max_position_embeddings": 128000,
        "max_window_layers": 28,
        "model_type": "qwen2_5_vl",
        "num_attention_heads": 28,
        "num_hidden_layers": 28,
        "num_key_value_heads": 4,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "sliding_window": 32768,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.41.2",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": 32,
            "hidden_act": "silu",
            "hidden_size": 1280,
            "intermediate_size": 3420,
            "num_heads": 16,
            "in_chans": 3,
            "out_hidden_size": 3584,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": 112,
            "fullatt_block_indexes": [7, 15, 23, 31],
            "tokens_per_second": 2,
            "temporal_patch_size": 2,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "vocab_size": 152064,
    },
}

# Where the tiny checkpoint's special-token ids go in a config: (top-level keys, text keys).
_TOKEN_KEYS = (
    ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"),
    ("bos_token_id", "eos_token_id", "pad_token_id"),
)


def full_attention_blocks(depth: int, released: list[int]) -> list[int]:
    """The vision blocks with full attention when the tower is cut to `depth` blocks: the
    released ones below `depth`, and always the last block, so a cut tower still has windowed
    blocks followed by a full-attention one (2 blocks: [1]; the released 32: unchanged)."""
    if depth < 1:
        raise ValueError(f"the vision depth must be >= 1, got {depth}")
    return sorted({index for index in released if index < depth} | {depth - 1})


def real_size_config(
    arch: str,
    tiny_dir: str | os.PathLike,
    *,
    text_layers: int | None = None,
    vision_depth: int | None = None,
):
    """The released `arch` ("3b" or "7b") Qwen2.5-VL config with the special-token ids of the
    tiny checkpoint in `tiny_dir`, parsed as transformers parses the hub's config.json.

    `text_layers` / `vision_depth` cut the depth (None: as released); the vision blocks with
    full attention follow `full_attention_blocks`. Raises ValueError for an unknown arch or a
    depth below 1 or above the released one.
    """
    from transformers import AutoConfig, Qwen2_5_VLConfig

    if arch not in RELEASED_CONFIGS:
        raise ValueError(f"unknown arch {arch!r}; expected one of {ARCHES}")
    released = RELEASED_CONFIGS[arch]
    fields = copy.deepcopy(released)  # transformers edits the rope dict it is given
    vision = fields["vision_config"]
    for key, value, limit in (
        ("num_hidden_layers", text_layers, released["num_hidden_layers"]),
        ("depth", vision_depth, released["vision_config"]["depth"]),
    ):
        if value is not None and not 1 <= value <= limit:
            raise ValueError(f"{key} must be between 1 and {limit} for {arch}, got {value}")
    if text_layers is not None:
        fields["num_hidden_layers"] = text_layers
    if vision_depth is not None:
        vision["depth"] = vision_depth
        vision["fullatt_block_indexes"] = full_attention_blocks(
            vision_depth, released["vision_config"]["fullatt_block_indexes"]
        )

    tiny = AutoConfig.from_pretrained(tiny_dir)
    top_keys, text_keys = _TOKEN_KEYS
    fields |= {key: getattr(tiny, key) for key in top_keys}
    fields |= {key: getattr(tiny.text_config, key) for key in text_keys}
    fields.pop("vision_token_id")  # Qwen's id of <|vision_pad|>, which no code reads
    return Qwen2_5_VLConfig(**fields)


def write_real_size_reasoner(
    arch: str,
    tiny_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    dtype,
    text_layers: int | None = None,
    vision_depth: int | None = None,
    seed: int = 0,
) -> Path:
    """Save a random Qwen2.5-VL of `arch`'s architecture (`real_size_config`) in `dtype` (a
    torch dtype) to `out_dir`, with the tiny checkpoint's tokenizer, processor and generation
    config, so `Reasoner.from_pretrained(out_dir)` loads it as it loads a hub checkpoint."""
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.initialization import no_init_weights

    tiny_dir, out_dir = Path(tiny_dir), Path(out_dir)
    config = real_size_config(arch, tiny_dir, text_layers=text_layers, vision_depth=vision_depth)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # Built uninitialised, then initialised once the transformers way (normal(0, 0.02)
        # weights, unit norms): from_config alone initialises every layer twice (torch's
        # defaults, then transformers'), a third of the write time of a 7B.
        with no_init_weights():
            model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
        model.init_weights()
    model.save_pretrained(out_dir)
    del model
    for path in tiny_dir.iterdir():
        if path.is_file() and path.suffix != ".safetensors" and path.name != "config.json":
            shutil.copy(path, out_dir / path.name)
    return out_dir
