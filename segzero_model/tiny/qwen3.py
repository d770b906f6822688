"""A tiny, randomly initialised Qwen3-VL checkpoint in the real on-disk format.

It loads through `AutoConfig` / `AutoProcessor` / `AutoModelForImageTextToText` like a hub id,
so the Qwen3-VL path (16-pixel patches, deepstack features, interleaved mrope, the JSON-list
answer) runs without a download. The tokenizer is the tiny Qwen2.5-VL one from
`segzero_model.tiny.qwen` plus Qwen3's <think> tokens.

It is taught three canned answers, chosen by the query (`canned_answer_for`), so a list answer
with several objects and the empty "no object" list can be tested end to end: the word "unicorn"
gives ``[]``, the word "all" two objects, anything else one object.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

from segzero_model.reasoning.reply_format import (
    LIST_BOX_KEY,
    LIST_POINT_KEY,
    THINK_TAGS,
    list_answer_text,
    reply_text,
)

logger = logging.getLogger(__name__)

_FIRST = ((100, 200, 600, 800), (350, 500))
_SECOND = ((650, 100, 900, 400), (775, 250))
CANNED_ANSWER = reply_text(list_answer_text([_FIRST]), "tiny")  # one object
# The thinking differs at once, so the choice is made on the first token after <think>, near
# the query, and every later token can follow the model's own thinking.
CANNED_ANSWER_ALL = reply_text(list_answer_text([_FIRST, _SECOND]), "two of them")
CANNED_ANSWER_NONE = reply_text(list_answer_text([]), "none here")  # "no such object"

# Whole words, any case; "unicorn" wins when both are present.
ALL_WORD = re.compile(r"\ball\b", re.IGNORECASE)
NONE_WORD = re.compile(r"\bunicorn\b", re.IGNORECASE)


def canned_answer_for(query: str) -> str:
    """The answer the taught checkpoint gives for `query` (the query alone or in a prompt)."""
    if NONE_WORD.search(query):
        return CANNED_ANSWER_NONE
    if ALL_WORD.search(query):
        return CANNED_ANSWER_ALL
    return CANNED_ANSWER


# Qwen3-VL's reasoning markers: ordinary (not special) added tokens, as in the hub tokenizer.
THINK_TOKENS = THINK_TAGS

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
    taught: bool = True,
    train_steps: int = 1000,
) -> Path:
    """Write a tiny Qwen3-VL checkpoint to `directory` (created if needed) and return its path.

    `taught=False` keeps pure random weights; otherwise up to `train_steps` AdamW steps teach
    greedy decoding to emit `canned_answer_for(query)` then <|im_end|> for any image.
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
        processor = _build_processor()
        model = _build_model(processor.tokenizer)
        if taught:
            _teach_answers(model, processor, np.random.default_rng(seed), train_steps)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    logger.info(
        "wrote tiny qwen3_vl checkpoint to %s in %.1fs", directory, time.perf_counter() - started
    )
    return directory


def _build_processor():
    """The tiny Qwen2.5-VL tokenizer (its BPE also covers these answers and trigger words), with
    <think> and </think> added, behind Qwen3-VL's processor and 16-pixel image and video
    processors."""
    from transformers import (
        AddedToken,
        Qwen2VLImageProcessor,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    from segzero_model.tiny.qwen import _build_processor as build_qwen2_5_processor

    corpus = "\n".join(
        [CANNED_ANSWER_ALL, CANNED_ANSWER_NONE, "all the unicorn", "find all of them", "a unicorn"]
    )
    tokenizer = build_qwen2_5_processor("qwen2_5_vl", corpus).tokenizer
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


def _teach_answers(model, processor, rng, max_steps: int) -> None:
    """Train the text decoder (vision tower frozen, its features cached) to emit
    `canned_answer_for(query)`.

    The merger and deepstack outputs are shrunk far below the decoder RMSNorm's eps, so image
    tokens reach the decoder content-free and the answer holds for any image; random queries
    of random length move the answer around, so it keys on relative positions, and a trigger
    word ("all", "unicorn") put anywhere among them picks the answer. Each step teaches one of
    the three answers. Most steps use 256x256 images (64 image tokens) for speed; the stopping
    check uses 832x832 ones (676 image tokens), near the size the reasoner sends.
    """
    import numpy as np
    import torch
    from PIL import Image
    from transformers.models.qwen3_vl.modeling_qwen3_vl import (
        BaseModelOutputWithDeepstackFeatures,
    )

    from segzero_model.reasoning.families import RELATIVE_SCALE, qwen3_vl_prompt
    from segzero_model.reasoning.prompts import build_prompt
    from segzero_model.tiny.qwen import _greedy_holds, _random_query

    tokenizer = processor.tokenizer
    end = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    answers = (CANNED_ANSWER, CANNED_ANSWER_ALL, CANNED_ANSWER_NONE)
    targets = {
        answer: torch.tensor(tokenizer(answer, add_special_tokens=False)["input_ids"] + end)
        for answer in answers
    }
    weights = {
        answer: _choice_weights(target, targets.values()) for answer, target in targets.items()
    }
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

    def batch(queries: list[str], image) -> tuple[dict, torch.Tensor]:
        """One image size and one answer per batch, left-padded like the reasoner's batches."""
        (answer,) = {canned_answer_for(query) for query in queries}
        target = targets[answer]
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
        inputs = {
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
        return inputs, target

    vocabulary = [tokenizer.decode([i], skip_special_tokens=True) for i in range(len(tokenizer))]
    vocabulary = [p for p in vocabulary if p and p.isprintable() and "\ufffd" not in p]

    def query(answer: str) -> str:
        """A random query holding `answer`'s trigger word (if any) at a random place: alone, in
        the Seg-Zero or the Qwen3-VL family's prompt, or beside a Qwen3-style request whose
        example answer has other numbers (a prompt may show the format)."""
        text = _random_query(rng, vocabulary)
        while canned_answer_for(text) != CANNED_ANSWER:  # no trigger by chance
            text = _random_query(rng, vocabulary)
        if answer != CANNED_ANSWER:
            words = text.split(" ") if text else []
            words.insert(int(rng.integers(len(words) + 1)), str(rng.choice(_TRIGGERS[answer])))
            text = " ".join(words)
        draw = rng.random()
        if draw < 0.2:
            return build_prompt(text)
        if draw < 0.45:
            return qwen3_vl_prompt(text)
        if draw < 0.6:
            box = rng.integers(0, RELATIVE_SCALE, 4).tolist()
            point = rng.integers(0, RELATIVE_SCALE, 2).tolist()
            example = json.dumps([{LIST_BOX_KEY: box, LIST_POINT_KEY: point}])
            return f"Locate {text}, output {''.join(THINK_TAGS)} then {reply_text(example)}."
        return text

    small = [features(256) for _ in range(4)]
    large = features(832)
    black = features(832, black=True)
    one = ["cat", "", "Where could I hang my wet coat?", "THE BLUE BOX.", "x"]
    one += [build_prompt("the 3rd apple"), qwen3_vl_prompt("the small cup")]
    one += ["Find it: " + reply_text(list_answer_text([((5, 6, 7, 8), (1, 2))]))]
    every = ["all", "all the cups", "find all red cars", qwen3_vl_prompt("All the cups")]
    every += [build_prompt("all apples"), qwen3_vl_prompt("the cups, all of them")]
    nothing = ["unicorn", "the unicorn", "a unicorn on the table?", build_prompt("a unicorn")]
    nothing += [qwen3_vl_prompt("the pink unicorn"), qwen3_vl_prompt("Unicorn")]
    checks = []
    for queries in (one, every, nothing):
        checks += [batch(queries, large), batch(queries[::-1], black)]
    for name, param in model.named_parameters():
        param.requires_grad_("visual" not in name)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / 10, max(0.05, 1 - step / max_steps))
    )
    model.train()
    losses = [float("nan")] * len(answers)
    for step in range(1, max_steps + 1):
        kind = step % len(answers)
        answer = answers[kind]
        if rng.random() < 0.2:
            inputs, target = batch([query(answer) for _ in range(2)], large)
        else:
            image = small[int(rng.integers(len(small)))]
            inputs, target = batch([query(answer) for _ in range(4)], image)
        logits = model(**inputs, logits_to_keep=len(target) + 1).logits[:, :-1]
        token_loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), target.repeat(len(logits)), reduction="none"
        )
        loss_t = (token_loss * weights[answer].repeat(len(logits))).mean()
        loss_t.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses[kind] = loss_t.item()
        if (
            max(losses) < 0.05
            and step % 15 == 0
            and all(_greedy_holds(model, check, target, 1.0) for check, target in checks)
        ):
            logger.debug("canned answers learnt after %d steps (losses %s)", step, losses)
            break
    else:
        raise RuntimeError(
            f"the tiny model did not learn the canned answers in {max_steps} steps "
            f"(last losses {', '.join(f'{v:.4f}' for v in losses)}); raise train_steps"
        )
    model.eval()
    for param in model.parameters():
        param.requires_grad_(True)


def _choice_weights(target, targets, weight: float = 8.0):
    """Per-token loss weights: `weight` on the tokens where `target` leaves another answer that
    shares its beginning (the choice the trigger word makes), 1 elsewhere."""
    import torch

    weights = torch.ones(len(target))
    for other in targets:
        shared = min(len(target), len(other))
        differs = (target[:shared] != other[:shared]).nonzero()
        if len(differs):
            weights[int(differs[0])] = weight
    return weights


# The words `canned_answer_for` looks for, as the teaching puts them into queries.
_TRIGGERS = {CANNED_ANSWER_ALL: ("all", "All", "ALL"), CANNED_ANSWER_NONE: ("unicorn", "Unicorn")}
