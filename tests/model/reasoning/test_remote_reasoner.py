"""`segzero_model.reasoning.remote` (and `segzero_model.reasoning.chat`) against real servers: a
real
`transformers serve` process on the tiny checkpoints (conftest.py `reasoning_server`), and, for
the failures a healthy server never shows, a small HTTP server of this file's own on real
sockets (down, hanging, 5xx, garbage, slow streams). Then `segzero infer --reasoning-url` and
`training/evaluate.py --reasoning-url` on that server, compared with the local answers.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from stub_server import StubServer

import segzero_model
from segzero_model.pipeline import SegZeroPipeline
from segzero_model.reasoning.chat import openai_messages, reasoning_image, user_messages
from segzero_model.reasoning.families import FAMILIES
from segzero_model.reasoning.local import Reasoner
from segzero_model.reasoning.remote import (
    ReasoningServerError,
    RemoteReasoner,
    _TextAssembler,
    chat_completions_url,
    remote_family,
)
from segzero_model.result import Status
from segzero_model.tiny.qwen import CANNED_ANSWER

SCENE = Path(segzero_model.__file__).parent / "assets" / "kitchen.png"
NEW_TOKENS = 48


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The server runs one thread (conftest.py); so do the local reasoners here, so both sides
    sum in the same order."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def noise(seed: int = 0, shape=(300, 400, 3)) -> np.ndarray:
    """Noise: the random model's answer to it changes with small changes of the pixels (a JPEG
    round trip), unlike its answer to a smooth picture."""
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def jpeg_round_trip(image: np.ndarray, size: int) -> np.ndarray:
    buffer = io.BytesIO()
    reasoning_image(image, size).save(buffer, format="JPEG", quality=95)
    return np.asarray(Image.open(buffer).convert("RGB"))


@pytest.fixture(scope="module")
def random_local(tiny_random_qwen_dir):
    return Reasoner.from_pretrained(tiny_random_qwen_dir, device="cpu", max_new_tokens=NEW_TOKENS)


@pytest.fixture(scope="module")
def random_remote(reasoning_server, tiny_random_qwen_dir):
    with RemoteReasoner.from_url(
        reasoning_server, str(tiny_random_qwen_dir), max_new_tokens=NEW_TOKENS
    ) as reasoner:
        yield reasoner


@pytest.fixture(scope="module")
def canned_remote(reasoning_server, tiny_qwen_dir):
    with RemoteReasoner.from_url(reasoning_server, str(tiny_qwen_dir), max_new_tokens=128) as r:
        yield r


def same_answer(remote: str, local: str) -> bool:
    """Equal, but for the one thing `transformers serve` changes: its response parser drops
    whitespace right before the end token (a `\\s*<|im_end|>` delimiter), which the local
    decode keeps."""
    return remote == local or (remote == local.rstrip() and local != local.rstrip())


# --------------------------------------------------------------------------- the request


def test_chat_completions_url_accepts_a_base_a_server_or_the_endpoint():
    assert chat_completions_url("http://h:8000/v1") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("http://h:8000/v1/") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url(" http://h:8000 ") == "http://h:8000/v1/chat/completions"
    assert chat_completions_url("https://h/x/v1/chat/completions") == (
        "https://h/x/v1/chat/completions"
    )
    for bad in ("localhost:8000", "ftp://h/v1", "http://", ""):
        with pytest.raises(ValueError, match="not an http"):
            chat_completions_url(bad)


def test_the_request_is_the_local_chat_with_the_exact_pixels_as_png():
    image = noise(1, (120, 90, 3))
    family = FAMILIES["seg_zero"]
    reasoner = RemoteReasoner("http://127.0.0.1:9/v1", "m", max_new_tokens=7)
    body = reasoner.request_body(image, "The red cup.", 7)
    assert body["model"] == "m" and body["stream"] is True
    assert body["temperature"] == 0.0 and body["max_tokens"] == 7 and "min_tokens" not in body
    assert reasoner.request_body(image, "x", 7, min_new_tokens=3)["min_tokens"] == 3
    (turn,) = body["messages"]  # no system message: the template adds its default, as locally
    (local,) = user_messages(family.prompt("The red cup."))
    assert turn["role"] == local["role"] == "user"
    image_part, text_part = turn["content"]
    assert text_part == local["content"][1]
    assert [part["type"] for part in local["content"]] == ["image", "text"]
    url = image_part["image_url"]["url"]
    assert image_part["type"] == "image_url" and url.startswith("data:image/png;base64,")
    sent = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert sent.format == "PNG" and sent.mode == "RGB" and sent.size == (840, 840)
    assert np.array_equal(np.asarray(sent), np.asarray(reasoning_image(image, 840)))
    assert openai_messages(image, "t", 840)[0]["content"][0] == image_part
    reasoner.close()


def test_the_text_puts_thinking_back_and_drops_special_tokens_streaming_the_same():
    pieces = []
    text = _TextAssembler(pieces.append)
    deltas = [
        (None, " a plan"),  # a server's reasoning parser split the thinking out
        (None, " <so"),
        ("<answer>{", None),
        ('"bbox": [1, 2]<|vis', None),  # a special token split over two pieces
        ("ion_end|>}</answer><", None),
        ("|im_end|>", None),
    ]
    for content, reasoning in deltas:
        text.add(content=content, reasoning=reasoning)
    text.finish()
    assert text.text == '<think> a plan <so</think><answer>{"bbox": [1, 2]}</answer>'
    assert "".join(pieces) == text.text
    assert not any("<|" in piece for piece in pieces)
    assert text.pieces == len(deltas)
    unclosed = _TextAssembler(None)
    unclosed.add(content=None, reasoning="cut off")
    unclosed.finish()
    assert unclosed.text == "<think>cut off"  # as the local text of a think never closed


def test_the_family_of_a_served_model(tiny_qwen_dir):
    assert remote_family(str(tiny_qwen_dir)).name == "seg_zero"  # read from its config.json
    assert remote_family("Ricky06662/VisionReasoner-7B").name == "seg_zero"  # not readable here
    assert remote_family("any/model", "vision_reasoner").name == "vision_reasoner"
    with pytest.raises(ValueError, match="serves"):
        remote_family(str(tiny_qwen_dir), "qwen3_vl")  # its model type is qwen2_5_vl


def test_bad_settings_are_refused_with_the_value():
    with pytest.raises(ValueError, match="timeout"):
        RemoteReasoner("http://h/v1", "m", timeout=0)
    with pytest.raises(ValueError, match="not an environment variable name"):
        RemoteReasoner("http://h/v1", "m", api_key_env="MY-KEY")
    with pytest.raises(ValueError, match="not an http"):
        RemoteReasoner("h:8000", "m")
    with pytest.raises(ValueError, match="empty"):
        RemoteReasoner("http://h/v1", " ")


# --------------------------------------------------------------------------- a real server


def test_greedy_remote_answers_equal_local_ones(random_local, random_remote):
    """The tiny random model's greedy text hangs on every prompt token and pixel, so equal
    text means the server got the same chat template, system prompt, text and pixels. Its text
    holds Qwen special tokens that `transformers serve` leaves in (dropped here, as locally)."""
    for seed, query in ((0, "the red cup"), (1, "Which one would I drink from?")):
        image = noise(seed)
        local = random_local.generate([image], [query])[0]
        pieces: list[str] = []
        remote = random_remote.generate([image], [query], on_text=pieces.append)[0]
        assert same_answer(remote.text, local.text), (remote.text, local.text)
        assert remote.num_tokens == local.num_tokens and not remote.cancelled
        assert len(pieces) > 3 and "".join(pieces) == remote.text
        assert remote.prefill_seconds > 0 and remote.decode_seconds > 0
    assert random_remote.last_error is None and random_remote.check() is None


def test_the_comparison_would_see_other_pixels_or_another_system_prompt(
    random_local, random_remote
):
    """Controls for the test above: the same model answers otherwise to the JPEG of the same
    picture, and to another system prompt; Qwen's default system prompt sent explicitly changes
    nothing (the server's template adds it when none is sent, as the local processor's does)."""
    image, query = noise(0), "the red cup"
    png = random_local.generate([image], [query])[0].text
    jpeg = random_local.generate([jpeg_round_trip(image, 840)], [query])[0].text
    assert jpeg != png

    def with_system(prompt: str) -> str:
        body = random_remote.request_body(image, query, NEW_TOKENS)
        body["messages"].insert(0, {"role": "system", "content": prompt})
        return random_remote._complete(body, None, lambda: False).text

    default = random_remote.generate([image], [query])[0].text
    assert with_system("You are a helpful assistant.") == default
    assert with_system("You are a robot.") != default


def test_a_server_that_splits_the_thinking_out_answers_the_local_text(
    reasoning_server, tiny_qwen_dir, canned_remote, tiny_reasoner
):
    """`transformers serve` streams a Qwen model's <think> part as `reasoning_content`; the
    remote reasoner puts it back, so the trained answer reads as the local one."""
    import httpx2

    body = canned_remote.request_body(noise(2), "the cup", 128)
    with httpx2.Client(timeout=60).stream(
        "POST", f"{reasoning_server}/chat/completions", json=body
    ) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line[6:7] == "{"]
    deltas = [c["delta"] for e in events for c in e.get("choices", [])]
    assert any(d.get("reasoning_content") for d in deltas)  # what makes the test meaningful
    remote = canned_remote.generate([noise(2)], ["the cup"])[0]
    local = tiny_reasoner.generate([noise(2)], ["the cup"])[0]
    assert remote.text == local.text == CANNED_ANSWER


def test_a_batch_is_sent_at_once_and_answered_in_order(random_remote):
    images, queries = [noise(0), noise(1), noise(3)], ["the red cup", "the cup", "a dog"]
    alone = [random_remote.generate([i], [q])[0].text for i, q in zip(images, queries, strict=True)]
    assert [g.text for g in random_remote.generate(images, queries)] == alone


def test_cancel_mid_stream_returns_the_text_so_far(random_remote):
    """(That the connection is closed at once is checked on a slow stub server below: this
    tiny model streams 300 tokens in well under a second.)"""
    image, query = noise(2), "the red cup"  # 300 tokens, no end token before
    full = random_remote.generate([image], [query], max_new_tokens=300)[0]
    assert full.num_tokens == 300
    cancel, pieces = threading.Event(), []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 3:
            cancel.set()

    partial = random_remote.generate(
        [image], [query], max_new_tokens=300, on_text=on_text, cancel=cancel
    )[0]
    assert partial.cancelled and partial.num_tokens < 100
    assert partial.text == "".join(pieces) and full.text.startswith(partial.text)
    assert 0 < len(partial.text) < len(full.text)
    assert random_remote.last_error is None  # a cancel is no failure


def test_the_pipeline_reads_the_remote_answer_in_its_family(
    canned_remote, random_remote, tiny_segmenter
):
    ok = SegZeroPipeline(canned_remote, tiny_segmenter).segment(noise(5), "the cup")
    assert ok.status is Status.OK and ok.raw_output == CANNED_ANSWER and ok.mask is not None
    garbage = SegZeroPipeline(random_remote, tiny_segmenter).segment(noise(5), "the cup")
    assert garbage.status is Status.UNPARSEABLE_ANSWER, garbage.reason


# --------------------------------------------------------------------------- failures


@pytest.fixture
def stub():
    server = StubServer()
    yield server
    server.close()


def free_port() -> int:
    """A localhost port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def remote(url: str, **kwargs) -> RemoteReasoner:
    return RemoteReasoner(url, "stub-model", **kwargs)


def test_a_server_that_is_down_fails_each_query_after_bounded_retries(tiny_segmenter):
    url = f"http://127.0.0.1:{free_port()}/v1"
    reasoner = remote(url, retries=2)
    assert "cannot reach it" in reasoner.check()
    pipeline = SegZeroPipeline(reasoner, tiny_segmenter)
    started = time.perf_counter()
    results = pipeline.segment_batch([noise(0), noise(1)], ["the cup", "the dog"])
    elapsed = time.perf_counter() - started
    assert [r.status for r in results] == [Status.ERROR, Status.ERROR]
    for result in results:
        assert result.reason.startswith("reasoning failed: reasoning server")
        assert url in result.reason and "ConnectError" in result.reason
        assert "gave up after 3 attempts" in result.reason
    assert 1.5 <= elapsed < 10  # the backoff: 0.5 s, then 1 s
    assert "ConnectError" in reasoner.last_error


def test_a_server_that_never_answers_fails_within_the_timeout_without_retrying(stub):
    reasoner = remote(stub.url("hang"), timeout=1.0, retries=2)
    started = time.perf_counter()
    with pytest.raises(ReasoningServerError, match="no answer within the timeout of 1 s"):
        reasoner.generate([noise(0)], ["the cup"])
    assert 1.0 <= time.perf_counter() - started < 6.0  # margin for a loaded CI machine
    assert stub.counts["hang"] == 1


def test_cancel_while_waiting_for_the_first_token_shuts_the_connection(stub):
    reasoner = remote(stub.url("hang"), timeout=30.0)
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    started = time.perf_counter()
    (generation,) = reasoner.generate([noise(0)], ["the cup"], cancel=cancel)
    returned = time.monotonic()
    assert generation.cancelled and generation.text == ""
    assert time.perf_counter() - started < 6.0  # not the 30 s timeout (margin for a loaded CI)
    deadline = time.monotonic() + 5
    while "hang" not in stub.disconnected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stub.disconnected["hang"] - returned < 3.0  # the server saw the client go


def test_cancel_mid_stream_closes_the_connection(stub):
    reasoner = remote(stub.url("slow"), timeout=30.0)
    cancel, pieces = threading.Event(), []

    def on_text(piece: str) -> None:
        pieces.append(piece)
        if len(pieces) == 4:
            cancel.set()

    (generation,) = reasoner.generate([noise(0)], ["the cup"], on_text=on_text, cancel=cancel)
    returned = time.monotonic()
    assert generation.cancelled and generation.text == "w0 w1 w2 w3 " == "".join(pieces)
    deadline = time.monotonic() + 5
    while "slow" not in stub.disconnected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert stub.disconnected["slow"] - returned < 3.0  # its next writes failed: closed


def test_5xx_is_retried_with_backoff_then_answered(stub):
    reasoner = remote(stub.url("flaky"), retries=2)
    (generation,) = reasoner.generate([noise(0)], ["the cup"])
    assert generation.text == '<think>stub</think><answer>{"bbox": [84, 168, 420, 630]}</answer>'
    assert stub.counts["flaky"] == 3
    stub.fail = 10
    with pytest.raises(ReasoningServerError, match=r"HTTP 503: loading \(gave up after 2"):
        remote(stub.url("flaky"), retries=1).generate([noise(0)], ["the cup"])


def test_nothing_is_retried_once_text_has_arrived(stub):
    """docs/inference.md: a connection cut mid-answer is an error at once, never a retry (the
    retry would send the text already streamed a second time)."""
    pieces = []
    reasoner = remote(stub.url("dropped"), retries=3)
    with pytest.raises(ReasoningServerError, match="the connection broke mid-answer"):
        reasoner.generate([noise(0)], ["the cup"], on_text=pieces.append)
    assert "".join(pieces) == "<think>stub</think>"  # text had arrived
    assert stub.counts["dropped"] == 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("status", "HTTP 500: Internal Server Error"),
        ("missing", "HTTP 404: Not Found (is http"),
        ("garbage", "answered an event that is not JSON: 'hello there'"),
        ("html", "answered text/html, not an event stream: '<html><body>It works!"),
        ("nodelta", 'answered a chunk without a delta: \'{"choices"'),
        ("truncated", "the answer stream ended before the answer was finished"),
        ("error", "reported an error: CUDA out of memory"),
    ],
)
def test_garbage_and_errors_are_one_clear_error_per_query(stub, tiny_segmenter, mode, message):
    reasoner = remote(stub.url(mode), retries=1)
    result = SegZeroPipeline(reasoner, tiny_segmenter).segment(noise(0), "the cup")
    assert result.status is Status.ERROR and message in result.reason, result.reason
    assert stub.counts[mode] == (2 if mode == "status" else 1)  # only 5xx is retried
    assert message in reasoner.last_error


def test_the_api_key_is_sent_but_never_logged_shown_or_in_an_error(stub, monkeypatch, caplog):
    secret = "sk-test-0123456789abcdef"
    monkeypatch.setenv("MY_SERVER_KEY", secret)
    caplog.set_level(logging.DEBUG)  # every logger, httpx2's and httpcore2's included
    reasoner = remote(stub.url("ok"), api_key_env="MY_SERVER_KEY")
    reasoner.generate([noise(0)], ["the cup"])
    with pytest.raises(ReasoningServerError) as failed:
        remote(stub.url("missing"), api_key_env="MY_SERVER_KEY").generate([noise(0)], ["x"])
    assert stub.headers[0]["Authorization"] == f"Bearer {secret}"
    assert secret not in caplog.text and secret not in str(failed.value)
    assert secret not in repr(reasoner) and "$MY_SERVER_KEY" in repr(reasoner)
    monkeypatch.delenv("MY_SERVER_KEY")
    remote(stub.url("ok"), api_key_env="MY_SERVER_KEY").generate([noise(0)], ["the cup"])
    assert "Authorization" not in stub.headers[-1]  # unset: none sent


# --------------------------------------------------------------------------- the commands


def test_segzero_infer_with_a_reasoning_url_answers_as_the_local_model(
    reasoning_server, tiny_cache, tiny_qwen_dir, tiny_sam2_dir, tmp_path, capsys
):
    from segzero_model.cli import main

    common = ["infer", "--image", str(SCENE), "--query", "the red cup", "--device", "cpu"]
    common += ["--reasoning-model", str(tiny_qwen_dir), "--segmentation-model", str(tiny_sam2_dir)]
    assert main([*common, "--json", str(tmp_path / "local.json")]) == 0
    code = main([*common, "--reasoning-url", reasoning_server, "--json", str(tmp_path / "r.json")])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert f"at {reasoning_server}" in out.err
    local, remote = (json.loads((tmp_path / f).read_text()) for f in ("local.json", "r.json"))
    assert remote["status"] == "ok" and remote["raw_output"] == local["raw_output"]
    assert (remote["bbox"], remote["points"]) == (local["bbox"], local["points"])
    assert remote["mask_area"] == local["mask_area"] > 0

    down = f"http://127.0.0.1:{free_port()}/v1"
    code = main([*common, "--reasoning-url", down, "--reasoning-timeout", "5"])
    out = capsys.readouterr()
    assert code == 1 and "status:    error (reasoning failed: reasoning server" in out.out
    assert main([*common, "--reasoning-url", "localhost:8000"]) == 2
    assert "not an http(s) URL" in capsys.readouterr().err
