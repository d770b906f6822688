"""A tiny, randomly initialised Qwen3-VL checkpoint in the real on-disk format.

It loads through `AutoConfig` / `AutoProcessor` / `AutoModelForImageTextToText` like a hub id,
so the Qwen3-VL path (16-pixel patches, deepstack features, interleaved mrope, the JSON-list
answer) runs without a download. The tokenizer is the tiny Qwen2.5-VL one from
`segzero_model.tiny.qwen` plus Qwen3's <think> tokens.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

logger = logging.getLogger(__name__)

CANNED_ANSWER = (
    '<think>tiny</think><answer>[{"bbox_2d": [100,200,600,800], "point_2d": [350,500]}]</answer>'
)

# Qwen3-VL's reasoning markers: ordinary (not special) added tokens, as in the hub tokenizer.
THINK_TOKENS = ("<think>", "</think>")

# Like Qwen3-VL-Instruct's template: no default system prompt, one vision block per image or video
# item, text items verbatim, optional "Picture N: " labels, assistant generation prompt.
CHAT_TEMPLATE = """\
{%- set counts = namespace(image=0, video=0) -%}
{%- for message in messages -%}
  {{- '<|im_start|>' + message['role'] + '\\n' -}}
  {%- if message['content'] is string -%}
    {{- message['content'] -}}
  {%- else -%}
    {%- for item in message['content'] -%}
      {%- if item['type'] == 'image' or 'image' in item or 'image_url' in item -%}
        {%- set counts.image = counts.image + 1 -%}
        {%- if add_vision_id -%}{{- 'Picture ' ~ counts.image ~ ': ' -}}{%- endif -%}
        {{- '<|vision_start|><|image_pad|><|vision_end|>' -}}
      {%- elif item['type'] == 'video' or 'video' in item -%}
        {%- set counts.video = counts.video + 1 -%}
        {%- if add_vision_id -%}{{- 'Video ' ~ counts.video ~ ': ' -}}{%- endif -%}
        {{- '<|vision_start|><|video_pad|><|vision_end|>' -}}
      {%- elif 'text' in item -%}
        {{- item['text'] -}}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
  {{- '<|im_end|>\\n' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_start|>assistant\\n' -}}
{%- endif -%}
"""

# Hub Qwen3-VL image limits (in pixels); an 832x832 image (52*16 on a side) passes unresized.
MIN_PIXELS = 256 * 256
MAX_PIXELS = 16 * 16 * 65536
PATCH_SIZE = 16
MERGE_SIZE = 2


def write_tiny_qwen3_vl(
    directory: str | os.PathLike,
    *,
    seed: int = 0,
    canned_answer: str | None = CANNED_ANSWER,
    train_steps: int = 200,
) -> Path:
    """Write a tiny Qwen3-VL checkpoint to `directory` (created if needed) and return its path.

    `canned_answer=None` keeps pure random weights; otherwise up to `train_steps` AdamW steps
    teach greedy decoding to emit the answer then <|im_end|> for any image and query.
    Deterministic for a given seed on a given machine.
    """
    import numpy as np
    import torch

    if train_steps < 1:
        raise ValueError(f"train_steps must be >= 1, got {train_steps}")

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        processor = _build_processor(canned_answer)
        model = _build_model(processor.tokenizer)
        if canned_answer is not None:
            _teach_answer(model, processor, canned_answer, np.random.default_rng(seed), train_steps)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    logger.info(
        "wrote tiny qwen3_vl checkpoint to %s in %.1fs", directory, time.perf_counter() - started
    )
    return directory


def _build_processor(canned_answer: str | None):
    """The tiny Qwen2.5-VL tokenizer (its BPE also covers this answer), with <think> and </think>
    added, behind Qwen3-VL's processor and 16-pixel image and video processors."""
    from transformers import (
        AddedToken,
        Qwen2VLImageProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    from segzero_model.tiny.qwen import _build_processor as build_qwen2_5_processor

    tokenizer = build_qwen2_5_processor("qwen2_5_vl", canned_answer or CANNED_ANSWER).tokenizer
    tokenizer.add_tokens([AddedToken(token, special=False) for token in THINK_TOKENS])
    limits = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    settings = {
        "patch_size": PATCH_SIZE,
        "merge_size": MERGE_SIZE,
        "temporal_patch_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
    }
    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(size=limits, **settings),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(**settings),
        chat_template=CHAT_TEMPLATE,
    )


def _build_model(tokenizer):
    """fp32 model: 64-wide 2-layer text decoder, 3-block vision tower whose first two blocks feed
    deepstack features to the decoder's two layers; ids match the tokenizer."""
    from transformers import GenerationConfig, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    token = tokenizer.convert_tokens_to_ids
    text = {
        # Like the hub configs, the embedding table is padded past the tokenizer's length.
        "vocab_size": -(-len(tokenizer) // 64) * 64,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": 16,
        "max_position_embeddings": 8192,
        # Interleaved mrope over the 16-dim heads' 8 rotary frequencies (time, height, width).
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": [4, 2, 2],
            "mrope_interleaved": True,
            "rope_theta": 5e6,
        },
        "bos_token_id": token("<|endoftext|>"),
        "eos_token_id": token("<|im_end|>"),
        "pad_token_id": token("<|endoftext|>"),
    }
    vision = {
        "depth": 3,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": 64,
        "patch_size": PATCH_SIZE,
        "spatial_merge_size": MERGE_SIZE,
        "temporal_patch_size": 2,
        # A 16x16 grid of learnt positions, interpolated to each image's grid (hub: 48x48).
        "num_position_embeddings": 256,
        "deepstack_visual_indexes": [0, 1],
    }
    config = Qwen3VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=token("<|image_pad|>"),
        video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"),
        vision_end_token_id=token("<|vision_end|>"),
        tie_word_embeddings=False,
        dtype="float32",
    )
    model = Qwen3VLForConditionalGeneration(config).float().eval()
    # The hub's generation config, sampling parameters included.
    model.generation_config = GenerationConfig(
        bos_token_id=token("<|endoftext|>"),
        pad_token_id=token("<|endoftext|>"),
        eos_token_id=[token("<|im_end|>"), token("<|endoftext|>")],
        do_sample=True,
        temperature=0.7,
        top_p=0.8,
        top_k=20,
        repetition_penalty=1.0,
    )
    return model


def _teach_answer(model, processor, answer: str, rng, max_steps: int) -> None:
    """Train the text decoder (vision tower frozen, its features cached) to emit `answer`.

    The merger and deepstack outputs are shrunk far below the decoder RMSNorm's eps, so image
    tokens reach the decoder content-free and the answer holds for any image; random queries
    of random length move the answer around, so it keys on relative positions. Most steps use
    256x256 images (64 image tokens) for speed; the stopping check uses 832x832 ones (676
    image tokens), the size the reasoner sends.
    """
    import numpy as np
    import torch
    from PIL import Image
    from transformers.models.qwen3_vl.modeling_qwen3_vl import (
        BaseModelOutputWithDeepstackFeatures,
    )

    from segzero_model.prompt import build_prompt
    from segzero_model.tiny.qwen import _greedy_holds, _random_query

    tokenizer = processor.tokenizer
    target = tokenizer(answer, add_special_tokens=False)["input_ids"]
    target = torch.tensor(target + [tokenizer.convert_tokens_to_ids("<|im_end|>")])
    visual = model.model.visual
    with torch.no_grad():
        for merger in [visual.merger, *visual.deepstack_merger_list]:
            merger.linear_fc2.weight.mul_(1e-6)
            merger.linear_fc2.bias.mul_(1e-6)

    def features(size: int, black: bool = False):
        array = rng.integers(0, 1 if black else 256, (size, size, 3), dtype=np.uint8)
        pixels = processor.image_processor(images=[Image.fromarray(array)], return_tensors="pt")
        with torch.no_grad():
            out = model.model.get_image_features(pixels["pixel_values"], pixels["image_grid_thw"])
        return out, pixels["image_grid_thw"][0]

    def batch(queries: list[str], image) -> dict:
        """One image size per batch, left-padded like the reasoner's batches."""
        out, grid = image
        rows = []
        for query in queries:
            content = [{"type": "image"}, {"type": "text", "text": query}]
            text = processor.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
            image_tokens = processor.image_token * int(grid.prod() // MERGE_SIZE**2)
            text = text.replace(processor.image_token, image_tokens)
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
            rows.append(torch.cat([torch.tensor(ids), target]))
        input_ids = torch.full((len(rows), max(len(r) for r in rows)), tokenizer.pad_token_id)
        attention = torch.zeros_like(input_ids)
        for i, row in enumerate(rows):
            input_ids[i, input_ids.shape[1] - len(row) :] = row
            attention[i, input_ids.shape[1] - len(row) :] = 1
        n = len(rows)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "mm_token_type_ids": (input_ids == model.config.image_token_id).long(),
            "image_grid_thw": grid.expand(n, 3),
            "mm_encoder_outputs": {
                "image": BaseModelOutputWithDeepstackFeatures(
                    pooler_output=out.pooler_output * n,
                    deepstack_features=[feat * n for feat in out.deepstack_features],
                )
            },
        }

    vocabulary = [tokenizer.decode([i], skip_special_tokens=True) for i in range(len(tokenizer))]
    vocabulary = [p for p in vocabulary if p and p.isprintable() and "\ufffd" not in p]

    def query() -> str:
        """A random query, alone, in the Qwen2.5-VL prompt, or beside a Qwen3-style request
        whose example answer has other numbers (a prompt may show the format)."""
        text = _random_query(rng, vocabulary)
        draw = rng.random()
        if draw < 0.25:
            return build_prompt(text)
        if draw < 0.5:
            box, point = rng.integers(0, 1000, 4).tolist(), rng.integers(0, 1000, 2).tolist()
            example = json.dumps([{"bbox_2d": box, "point_2d": point}])
            return f"Locate {text}, output <think></think> then <answer>{example}</answer>."
        return text

    small = [features(256) for _ in range(4)]
    large = features(832)
    check_queries = ["cat", "", "Where could I hang my wet coat?", "THE SMALL BLUE BOX."]
    check_queries += [build_prompt("the 3rd apple"), "x"]
    check_queries += ['Find it: <answer>[{"bbox_2d": [5,6,7,8], "point_2d": [1,2]}]</answer>']
    checks = [batch(check_queries, large), batch(check_queries[::-1], features(832, black=True))]
    for name, param in model.named_parameters():
        param.requires_grad_("visual" not in name)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / 10, max(0.05, 1 - step / max_steps))
    )
    model.train()
    loss = float("nan")
    for step in range(1, max_steps + 1):
        if rng.random() < 0.2:
            inputs = batch([query() for _ in range(2)], large)
        else:
            inputs = batch([query() for _ in range(4)], small[int(rng.integers(len(small)))])
        logits = model(**inputs, logits_to_keep=len(target) + 1).logits[:, :-1]
        loss_t = torch.nn.functional.cross_entropy(logits.flatten(0, 1), target.repeat(len(logits)))
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_t.item()
        if (
            loss < 0.05
            and step % 10 == 0
            and all(_greedy_holds(model, check, target, 1.0) for check in checks)
        ):
            logger.debug("canned answer learnt after %d steps (loss %.4f)", step, loss)
            break
    else:
        raise RuntimeError(
            f"the tiny model did not learn the canned answer in {max_steps} steps "
            f"(last loss {loss:.4f}); raise train_steps"
        )
    model.eval()
    for param in model.parameters():
        param.requires_grad_(True)
