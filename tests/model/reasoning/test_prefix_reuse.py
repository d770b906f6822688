"""Same-frame prefix reuse (segzero_model/reasoning/prefix_reuse.py) in the reasoner, and the
compiled decode:
on random-weight tiny Qwen2.5-VL, Qwen2-VL and Qwen3-VL checkpoints, whose greedy text and
logits depend on every prompt token, its position and the pixels, the tokens and the logits of
every decoding step match plain generation; the cache's keys, bounds and fallbacks."""

from __future__ import annotations

import logging
import threading
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image

from segzero_model.config import DEFAULT_PREFIX_CACHE_SIZE
from segzero_model.reasoning.chat import user_messages
from segzero_model.reasoning.local import Reasoner
from segzero_model.reasoning.prefix_reuse import IMAGE_END_TOKEN, Prefix, PrefixCache, split_chat

NEW_TOKENS = 12
# A leading quote or space would merge with the template's text before it, were the prefix cut
# there; the first query repeats at the end.
QUERIES = ["the red cup", '"quoted" words first', " a leading space", "the red cup"]
LOGIT_TOLERANCE = 1e-5  # float32 on the CPU; a wrong RoPE offset moves the logits by ~1e-3


def frame(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (120, 160, 3), dtype=np.uint8)


def load(directory, prefix_cache_size=DEFAULT_PREFIX_CACHE_SIZE) -> Reasoner:
    return Reasoner.from_pretrained(
        directory,
        device="cpu",
        max_new_tokens=NEW_TOKENS,
        prefix_cache_size=prefix_cache_size,
    )


@contextmanager
def step_logits(reasoner: Reasoner):
    """The LM head's logits at the last position of every forward while inside (one per
    generated token: the prefill's and each decoding step's)."""
    captured: list[torch.Tensor] = []
    head = reasoner.model.get_output_embeddings()
    handle = head.register_forward_hook(
        lambda module, args, output: captured.append(output[:, -1].float().clone())
    )
    try:
        yield captured
    finally:
        handle.remove()


def assert_same_generation(reusing: Reasoner, plain: Reasoner, images, queries, keys=None):
    with step_logits(reusing) as reused_logits:
        reused = reusing.generate(images, queries, image_keys=keys)
    with step_logits(plain) as plain_logits:
        expected = plain.generate(images, queries)
    assert [(g.text, g.num_tokens) for g in reused] == [(g.text, g.num_tokens) for g in expected]
    assert len(reused_logits) == len(plain_logits) > 0
    for step, (got, want) in enumerate(zip(reused_logits, plain_logits, strict=True)):
        difference = float((got - want).abs().max())
        assert difference <= LOGIT_TOLERANCE, f"step {step}: logits differ by {difference:.2e}"
    return reused


@pytest.fixture(scope="module")
def qwen2_vl_dir(tmp_path_factory):
    from segzero_model.tiny.qwen import write_tiny_qwen

    directory = tmp_path_factory.mktemp("tiny-qwen2-vl")
    return write_tiny_qwen(directory, model_type="qwen2_vl", canned_answer=None)


@pytest.fixture(scope="module")
def qwen3_vl_dir(tmp_path_factory):
    from segzero_model.tiny.qwen3 import write_tiny_qwen3_vl

    return write_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl") / "qwen3", taught=False)


@pytest.fixture(scope="module", params=["qwen2_5_vl", "qwen2_vl", "qwen3_vl"])
def checkpoint(request, tiny_random_qwen_dir):
    """A random-weight tiny checkpoint of each model type prefix reuse is enabled for."""
    if request.param == "qwen2_5_vl":
        return tiny_random_qwen_dir
    return request.getfixturevalue(f"{request.param}_dir")


@pytest.fixture(scope="module")
def qwen25(tiny_random_qwen_dir) -> Reasoner:
    return load(tiny_random_qwen_dir)


@pytest.fixture(scope="module")
def qwen3(qwen3_vl_dir) -> Reasoner:
    return load(qwen3_vl_dir)


# --------------------------------------------------------------------------- the answers


def test_reuse_gives_plain_generation_token_for_token(checkpoint):
    """Several queries on each of three frames, two frames kept: the first query of a frame
    computes its prefix, the others reuse it; a frame evicted is computed again."""
    reusing = load(checkpoint, prefix_cache_size=2)
    plain = reusing.twin()
    frames = [frame(seed) for seed in (1, 2, 3)]
    for index, image in enumerate(frames):
        for query in QUERIES:
            assert_same_generation(reusing, plain, [image], [query], keys=[("frame", index)])
    assert (reusing.prefixes.misses, reusing.prefixes.hits) == (3, 3 * (len(QUERIES) - 1))
    assert ("key", ("frame", 0)) not in reusing.prefixes  # the least recently used went
    assert_same_generation(reusing, plain, [frames[0]], ["a bottle"], keys=[("frame", 0)])
    assert_same_generation(reusing, plain, [frames[2]], ["a bottle"], keys=[("frame", 2)])
    assert (reusing.prefixes.misses, reusing.prefixes.hits) == (4, 3 * (len(QUERIES) - 1) + 1)
    assert len(reusing.prefixes) == 2


def test_the_logit_check_catches_a_wrong_rope_offset(qwen25, monkeypatch):
    """The comparison above can fail: a prefix continued at the positions of plain text (no
    RoPE delta) changes the logits (by ~1e-3 on this model) and, here, the tokens too."""
    import segzero_model.reasoning.prefix_reuse as prefix_module

    real_use = prefix_module.use

    def use_without_delta(model, entry, tail_ids):
        inputs = real_use(model, entry, tail_ids)
        model.base_model.rope_deltas = torch.zeros_like(entry.rope_deltas)
        return inputs

    monkeypatch.setattr(prefix_module, "use", use_without_delta)
    image = frame(4)
    qwen25.generate([image], ["the red cup"], image_keys=["wrong-offset"])  # fills the prefix
    with pytest.raises(AssertionError):
        assert_same_generation(qwen25, qwen25.twin(), [image], ["a bottle"], ["wrong-offset"])


def test_batches_are_generated_without_reuse(qwen25):
    images, queries = [frame(5), frame(6)], ["the red cup", "a bottle"]
    qwen25.generate(images[:1], queries[:1], image_keys=["batch"])
    before = (qwen25.prefixes.hits, qwen25.prefixes.misses, len(qwen25.prefixes))
    assert_same_generation(qwen25, qwen25.twin(), images, queries, keys=["batch", "other"])
    assert (qwen25.prefixes.hits, qwen25.prefixes.misses, len(qwen25.prefixes)) == before


def test_streaming_and_cancelling_from_a_kept_prefix(qwen25):
    image = frame(7)
    qwen25.generate([image], ["the red cup"], image_keys=["stream"])
    hits = qwen25.prefixes.hits
    expected = qwen25.twin().generate([image], ["a bottle"], max_new_tokens=24)[0]

    chunks: list[str] = []
    streamed = qwen25.generate(
        [image], ["a bottle"], image_keys=["stream"], max_new_tokens=24, on_text=chunks.append
    )[0]
    assert "".join(chunks) == streamed.text == expected.text and len(chunks) > 1

    cancel = threading.Event()
    cancelled = qwen25.generate(
        [image],
        ["a bottle"],
        image_keys=["stream"],
        max_new_tokens=24,
        on_text=lambda chunk: cancel.set(),
        cancel=cancel,
    )[0]
    assert cancelled.cancelled and 0 < cancelled.num_tokens < expected.num_tokens
    assert expected.text.startswith(cancelled.text)
    assert qwen25.prefixes.hits == hits + 2


# --------------------------------------------------------------------------- keys and bounds


def test_without_a_key_the_pixels_are_the_key(qwen25):
    image = frame(8)
    qwen25.generate([image], ["the red cup"])
    misses, hits = qwen25.prefixes.misses, qwen25.prefixes.hits
    qwen25.generate([Image.fromarray(image)], ["a bottle"])  # the same pixels, as PIL
    assert (qwen25.prefixes.misses, qwen25.prefixes.hits) == (misses, hits + 1)
    changed = image.copy()
    changed[0, 0] ^= 1
    qwen25.generate([changed], ["a bottle"])
    assert (qwen25.prefixes.misses, qwen25.prefixes.hits) == (misses + 1, hits + 1)


def test_a_callers_key_names_the_frame(qwen25):
    """As SAM2's embedding cache: the key is trusted to name one image (a camera stamp)."""
    qwen25.generate([frame(9)], ["the red cup"], image_keys=[("camera", 1)])
    hits = qwen25.prefixes.hits
    qwen25.generate([frame(10)], ["the red cup"], image_keys=[("camera", 1)])
    assert qwen25.prefixes.hits == hits + 1


def test_the_lru_keeps_the_most_recently_used():
    cache = PrefixCache(2)
    entries = {name: Prefix((1, 2), torch.zeros(1, 2), None, torch.zeros(1, 1)) for name in "abc"}
    cache.put("a", entries["a"])
    cache.put("b", entries["b"])
    assert cache.get("a", (1, 2)) is entries["a"]  # a is now the most recent
    cache.put("c", entries["c"])
    assert "b" not in cache and "a" in cache and "c" in cache
    assert cache.get("a", (1, 3)) is None  # another chat head (another family's template)
    assert (cache.hits, cache.misses) == (1, 1)
    cache.clear()
    assert len(cache) == 0


@pytest.mark.parametrize("size", [0, -1, 1.5, True])
def test_a_cache_holds_at_least_one_prefix(size):
    with pytest.raises(ValueError, match="prefix cache size"):
        PrefixCache(size)


def test_prefix_options(qwen25):
    assert qwen25.prefixes is not None and qwen25.prefixes.size == DEFAULT_PREFIX_CACHE_SIZE
    assert qwen25.twin().prefixes is None
    with pytest.raises(ValueError, match="prefix_cache_size must be an integer >= 0"):
        qwen25.twin(prefix_cache_size=-1)
    with pytest.raises(ValueError, match="compile cannot be combined with prefix reuse"):
        qwen25.twin(prefix_cache_size=1, compile=True)
    with pytest.raises(ValueError, match="image keys"):
        qwen25.generate([frame(1)], ["cup"], image_keys=["a", "b"])


def test_compile_turns_the_default_reuse_off(tiny_random_qwen_dir):
    reasoner = Reasoner.from_pretrained(tiny_random_qwen_dir, device="cpu", compile=True)
    assert reasoner.compile and reasoner.prefixes is None
    with pytest.raises(ValueError, match="compile cannot be combined"):
        Reasoner.from_pretrained(
            tiny_random_qwen_dir, device="cpu", compile=True, prefix_cache_size=2
        )


def test_out_of_memory_and_close_free_the_prefixes(tiny_random_qwen_dir, monkeypatch):
    reasoner = load(tiny_random_qwen_dir)
    reasoner.generate([frame(11)], ["the red cup"])
    assert len(reasoner.prefixes) == 1

    def out_of_memory(**kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(reasoner.model, "generate", out_of_memory)
    with pytest.raises(torch.OutOfMemoryError):
        reasoner.generate([frame(11)], ["a bottle"])
    assert len(reasoner.prefixes) == 0
    monkeypatch.undo()
    reasoner.generate([frame(11)], ["the red cup"])
    assert len(reasoner.prefixes) == 1
    prefixes = reasoner.prefixes
    reasoner.close()
    assert len(prefixes) == 0 and reasoner.prefixes is None


def test_a_broken_assumption_turns_reuse_off_and_answers_plainly(tiny_random_qwen_dir, monkeypatch):
    """Should a model not fill the prefix as assumed (another transformers version), the query
    is answered without reuse, reuse is turned off and a warning says why."""
    import segzero_model.reasoning.prefix_reuse as prefix_module

    def broken_fill(*args, **kwargs):
        raise prefix_module.PrefixError("the prefix forward left no rope_deltas (simulated)")

    reasoner = load(tiny_random_qwen_dir)
    monkeypatch.setattr(prefix_module, "fill", broken_fill)
    image = frame(17)
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)  # on the logger itself: ROS's launch, when
    handler.emit = records.append  # imported, installs loggers that do not propagate
    logger = logging.getLogger("segzero_model.reasoning.local")
    logger.addHandler(handler)
    try:
        got = reasoner.generate([image], ["the red cup"])[0]
    finally:
        logger.removeHandler(handler)
    assert reasoner.prefixes is None
    (record,) = records
    assert "prefix reuse is off" in record.getMessage() and "simulated" in record.getMessage()
    expected = reasoner.twin().generate([image], ["the red cup"])[0]
    assert (got.text, got.num_tokens) == (expected.text, expected.num_tokens)


# --------------------------------------------------------------------------- the token split


@pytest.mark.parametrize(
    "query",
    [
        "the red cup",
        '"quoted" first',
        "  two spaces",
        "\nnewline first",
        "ünïcödé ☕ cup",
        "Please find",
        IMAGE_END_TOKEN + " inside the query",
    ],
)
def test_the_split_gives_the_processors_tokens(query, qwen25, qwen3):
    """The chat's tokens with the image as one placeholder, cut after the image's end, are the
    processor's tokens (the image's expanded) on both sides of the cut, for any query."""
    for reasoner in (qwen25, qwen3):
        processor, tokenizer = reasoner.processor, reasoner.processor.tokenizer
        text = processor.apply_chat_template(
            user_messages(reasoner.family.prompt(query)), tokenize=False, add_generation_prompt=True
        )
        end_id = tokenizer.convert_tokens_to_ids(IMAGE_END_TOKEN)
        head, tail = split_chat(tokenizer, text, end_id)
        ids = reasoner.prepare_inputs([frame(12)], [query])["input_ids"][0].tolist()
        cut = ids.index(end_id) + 1
        assert ids[cut:] == tail
        image_pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
        collapsed = [t for i, t in enumerate(ids[:cut]) if t != image_pad or ids[i - 1] != t]
        assert tuple(collapsed) == head


# --------------------------------------------------------------------------- the pipeline


def test_the_pipeline_passes_its_image_key(tiny_random_qwen_dir, tiny_segmenter):
    from segzero_model.pipeline import SegZeroPipeline

    reasoner = load(tiny_random_qwen_dir)
    pipeline = SegZeroPipeline(reasoner, tiny_segmenter)
    pipeline.segment(frame(13), "the red cup", image_key=("camera", 7))
    pipeline.segment(frame(14), "a bottle", image_key=("camera", 7))  # the key, not the pixels
    assert (reasoner.prefixes.misses, reasoner.prefixes.hits) == (1, 1)


# --------------------------------------------------------------------------- compiled decode


@pytest.mark.slow
def test_the_compiled_decode_gives_the_eager_tokens(tiny_random_qwen_dir):
    """A static KV cache and torch.compile (on the CPU too, for this test): the same tokens as
    eager decoding, for two prompt lengths; the model's forward really was compiled."""
    from torch._dynamo.utils import counters

    eager = load(tiny_random_qwen_dir, prefix_cache_size=0)
    compiled = eager.twin(compile=True)
    graphs = counters["stats"]["unique_graphs"]
    for image, query in [(frame(15), "the red cup"), (frame(16), "a much longer query, please")]:
        want = eager.generate([image], [query], min_new_tokens=NEW_TOKENS)[0]
        got = compiled.generate([image], [query], min_new_tokens=NEW_TOKENS)[0]
        assert (got.text, got.num_tokens) == (want.text, want.num_tokens)
        assert got.num_tokens == NEW_TOKENS
    assert counters["stats"]["unique_graphs"] > graphs
