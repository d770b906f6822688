"""The remote reasoner: the local `local.Reasoner`'s chat, answered by any OpenAI-compatible
chat-completions server (vLLM, SGLang, `transformers serve`) over HTTP, streamed. Same interface
as the local one (`family`, `model_id`, `device`, `generate`, `close`), so the pipeline, the
node and evaluation take either.

The contract (tests/model/reasoning/test_remote_reasoner.py checks each case against a real server):

- The request is the local chat exactly (`chat.openai_messages`): one user turn, the image
  resized to the family's square and sent as a PNG data URL (lossless), then the family's prompt
  text; no system message, so the server's chat template adds the same default the local
  processor's does. Greedy (temperature 0), ``max_tokens`` = max_new_tokens; every other
  sampling setting is the server's default for the checkpoint (its generation_config.json, as
  locally: vLLM ``--generation-config auto``, SGLang ``--sampling-defaults model``).
- The text is the streamed ``content`` in order. A server that splits the thinking out
  (``reasoning_content`` / ``reasoning``: `transformers serve` does for Qwen models, vLLM and
  SGLang with ``--reasoning-parser``) gets it put back inside ``<think>`` ``</think>``; Qwen's
  special tokens (``<|...|>``) that a server leaves in the text are removed, as the local decode
  removes them.
- `on_text` gets the text as it streams (a batch of one); the pieces add up to the text.
- `cancel`: the connection is shut at once (also while waiting for the first token, from a
  watcher that checks the event every `CANCEL_POLL` s) and the partial text is returned with
  ``cancelled=True``; the server sees the client go and stops generating.
- Failures raise `ReasoningServerError`, whose message names the server and what went wrong
  (never the API key); the pipeline turns it into one ERROR result per query:
  a refused connection, a connection dropped before any answer, and HTTP 408/429/5xx are
  retried `retries` times with exponential backoff (0.5 s, 1 s, ... at most 4 s); no data for
  `timeout` seconds (connecting, waiting for the first token, between tokens) is an error at
  once, as are other HTTP errors (the server's message is quoted), an answer that is not an
  event stream of chat-completion chunks, an error event, and a stream that ends unfinished.
  Nothing is retried once text has arrived.
- A batch sends one request per query, all at once (at most `max_concurrency` in flight), so a
  server with continuous batching batches them; one failed request stops the others and fails
  the batch, as a local batch fails as one.

The API key is read from the environment variable named by `api_key_env` (sent as a Bearer
token when set); it is kept out of every log line, message and repr.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from segzero_model.config import DEFAULT_API_KEY_ENV, DEFAULT_TIMEOUT
from segzero_model.reasoning.backend import Generation, check_request
from segzero_model.reasoning.chat import openai_messages
from segzero_model.reasoning.families import FAMILIES, Family, family_for_checkpoint, family_named
from segzero_model.reasoning.reply_format import THINK_TAGS

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

logger = logging.getLogger(__name__)

__all__ = [
    "ReasoningServerError",
    "RemoteReasoner",
    "chat_completions_url",
    "remote_family",
]

DEFAULT_RETRIES = 2
DEFAULT_MAX_CONCURRENCY = 16
CANCEL_POLL = 0.05  # seconds between checks of the cancel event while a request runs
_BACKOFF = 0.5  # seconds before the first retry, doubled for each further one
_MAX_BACKOFF = 4.0
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CHECK_TIMEOUT = 5.0  # seconds `check` waits
_ERROR_BODY_CHARS = 300  # how much of a failed response's body a message quotes
# Qwen's special tokens (<|im_end|>, <|vision_start|>, ...), and the start of one cut off at
# the end of the text so far (held back until the next piece decides).
_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")
_PARTIAL_SPECIAL_TOKEN = re.compile(r"<(?:\|[A-Za-z0-9_]*\|?)?\Z")
_API_KEY_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ReasoningServerError(RuntimeError):
    """The reasoning server could not answer: down, too slow, or not answering in the OpenAI
    chat-completions stream format. The message says which server and why."""


class _Retryable(Exception):
    """A failure before any answer that another attempt may not meet (refused, 5xx, ...)."""


def chat_completions_url(url: str) -> str:
    """The chat-completions endpoint of a server URL: an OpenAI base URL
    (``http://host:8000/v1``) gets ``/chat/completions``, a bare server (``http://host:8000``)
    ``/v1/chat/completions``, and a URL already ending in ``/chat/completions`` is kept.
    ValueError for anything but an http(s) URL with a host."""
    text = url.strip() if isinstance(url, str) else url
    parts = urlsplit(text) if isinstance(text, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"reasoning URL {url!r} is not an http(s) URL; expected the server's OpenAI base "
            "URL, e.g. http://localhost:8000/v1"
        )
    path = parts.path.rstrip("/")
    if path.endswith("/chat/completions"):
        return text
    base = text.split("?", 1)[0].rstrip("/")
    return f"{base}/chat/completions" if path else f"{base}/v1/chat/completions"


def remote_family(model: str, model_family: str | Family = "auto") -> Family:
    """The family a served model is asked in. The server's checkpoint cannot be read from
    here, so "auto" reads `model` as a local checkpoint directory when it is one (a server on
    this machine, or a copy of its files: config.json and segzero_recipe.json), else takes
    seg_zero (the released Seg-Zero models); a name, a family .yaml or a `Family` is used as
    given (checked against the directory's model type when there is one)."""
    if isinstance(model_family, Family):
        return model_family
    directory = Path(model).expanduser()
    if (directory / "config.json").is_file():
        return family_for_checkpoint(directory, model_family)
    if model_family == "auto":
        logger.info("remote model %s: no local checkpoint to read, family seg_zero", model)
        return FAMILIES["seg_zero"]
    return family_named(model_family)


class RemoteReasoner:
    """A model served by an OpenAI-compatible chat-completions server, asked like the local
    `Reasoner` (see the module docstring for the contract)."""

    def __init__(
        self,
        url: str,
        model: str,
        *,
        family: Family | None = None,
        max_new_tokens: int = 1024,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        api_key_env: str | None = DEFAULT_API_KEY_ENV,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    ):
        import httpx2

        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if not timeout > 0:
            raise ValueError(f"timeout must be above 0 seconds, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if api_key_env and not _API_KEY_ENV_NAME.fullmatch(api_key_env):
            raise ValueError(f"api_key_env {api_key_env!r} is not an environment variable name")
        if not isinstance(model, str) or not model.strip():
            raise ValueError("the served model's name must not be empty")
        self.endpoint = chat_completions_url(url)
        self.url = url.strip()
        self.model_id = model
        self.family = family or FAMILIES["seg_zero"]
        self.device = "remote"
        self.dtype = None  # the server's business
        self.max_new_tokens = max_new_tokens
        self.timeout = float(timeout)
        self.retries = retries
        self.max_concurrency = max_concurrency
        self.api_key_env = api_key_env or None
        self._api_key = os.environ.get(api_key_env) if api_key_env else None
        # No kept-alive connections: each request has a socket of its own, which cancel shuts.
        self._client = httpx2.Client(
            timeout=httpx2.Timeout(self.timeout),
            limits=httpx2.Limits(max_keepalive_connections=0),
        )
        self._lock = threading.Lock()
        self._last_error: str | None = None
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        model: str,
        *,
        model_family: str | Family = "auto",
        max_new_tokens: int = 1024,
        timeout: float = DEFAULT_TIMEOUT,
        retries: int = DEFAULT_RETRIES,
        api_key_env: str | None = DEFAULT_API_KEY_ENV,
    ) -> RemoteReasoner:
        """The reasoner for `model` (the server's name for it) at `url`, in `model_family`
        (`remote_family`). Nothing is sent yet: a server that is down fails the queries, not
        this call (`check` asks it)."""
        family = remote_family(model, model_family)
        return cls(
            url,
            model,
            family=family,
            max_new_tokens=max_new_tokens,
            timeout=timeout,
            retries=retries,
            api_key_env=api_key_env,
        )

    def __repr__(self) -> str:
        key = f", api key from ${self.api_key_env}" if self._api_key else ""
        return f"RemoteReasoner({self.model_id!r} at {self.endpoint}{key})"

    # ------------------------------------------------------------------ health

    @property
    def last_error(self) -> str | None:
        """Why the last request failed, or None when it succeeded (or none was sent)."""
        with self._lock:
            return self._last_error

    def _record(self, error: str | None) -> None:
        with self._lock:
            self._last_error = error

    def check(self) -> str | None:
        """Ask the server for its models (GET .../models, one try, at most 5 s): None when
        it answers, else why not (also kept as `last_error`). Never raises."""
        import httpx2

        models = self.endpoint.removesuffix("/chat/completions") + "/models"
        try:
            response = self._client.get(
                models, headers=self._headers(), timeout=min(self.timeout, _CHECK_TIMEOUT)
            )
            if response.status_code != 200:
                error = f"{self._where()}: GET {models} answered HTTP {response.status_code}"
            else:
                error = None
        except httpx2.HTTPError as exc:
            error = f"{self._where()}: cannot reach it ({_describe(exc)})"
        self._record(error)
        return error

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        images: Sequence[Image.Image | np.ndarray],
        queries: Sequence[str],
        *,
        image_keys: Sequence[Hashable | None] | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int = 0,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> list[Generation]:
        """Greedy completions for (image, query) pairs, one request each, sent concurrently.

        As `Reasoner.generate`: `on_text` streams a batch of one; `cancel` stops early with the
        partial text; `image_keys` are not used (a server caches prompt prefixes by their
        tokens itself, e.g. vLLM's automatic prefix caching). `min_new_tokens` > 0 is sent as
        ``min_tokens`` (vLLM and SGLang take it; `transformers serve` refuses it). Timings:
        `prefill_seconds` is the time to the first text (upload, queueing and prefill),
        `decode_seconds` the rest. `num_tokens` is the server's reported completion tokens
        (else the number of streamed pieces). Raises ReasoningServerError (see the module
        docstring) and ValueError for bad arguments.
        """
        if self._closed:
            raise RuntimeError(f"reasoner for {self.model_id!r} is closed")
        max_new_tokens = check_request(
            images,
            queries,
            image_keys,
            self.max_new_tokens if max_new_tokens is None else max_new_tokens,
            on_text,
        )
        if cancel is not None and cancel.is_set():
            return [Generation("", 0, 0.0, 0.0, True) for _ in images]

        bodies = [
            self.request_body(image, query, max_new_tokens, min_new_tokens)
            for image, query in zip(images, queries, strict=True)
        ]
        user_stop = (lambda: cancel.is_set()) if cancel is not None else (lambda: False)
        if len(bodies) == 1:
            return [self._complete(bodies[0], on_text, user_stop)]

        failed = threading.Event()

        def one(body: dict) -> Generation:
            try:
                return self._complete(body, None, lambda: user_stop() or failed.is_set())
            except BaseException:
                failed.set()
                raise

        workers = min(len(bodies), self.max_concurrency)
        with ThreadPoolExecutor(workers, thread_name_prefix="segzero-remote") as pool:
            futures = [pool.submit(one, body) for body in bodies]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:  # the requests stopped because of the first failure return, not raise
            raise errors[0]
        return [future.result() for future in futures]

    def request_body(self, image, query: str, max_new_tokens: int, min_new_tokens: int = 0):
        """The JSON body of one chat-completions request (streamed, greedy)."""
        body = {
            "model": self.model_id,
            "messages": openai_messages(image, self.family.prompt(query), self.family.image_size),
            "max_tokens": max_new_tokens,
            "temperature": 0.0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if min_new_tokens > 0:
            body["min_tokens"] = min(min_new_tokens, max_new_tokens)
        return body

    def _complete(self, body: dict, on_text, stop: Callable[[], bool]) -> Generation:
        """One request with its retries; records the outcome for `last_error`."""
        attempt = 0
        while True:
            try:
                generation = self._stream(body, on_text, stop)
            except _Retryable as error:
                if attempt >= self.retries:
                    message = f"{error} (gave up after {attempt + 1} attempts)"
                    self._record(message)
                    raise ReasoningServerError(message) from None
                delay = min(_BACKOFF * 2**attempt, _MAX_BACKOFF)
                attempt += 1
                logger.warning("%s; retry %d in %.1f s", error, attempt, delay)
                if _sleep_unless(stop, delay):
                    return Generation("", 0, 0.0, 0.0, True)
                continue
            except ReasoningServerError as error:
                self._record(str(error))
                raise
            if not generation.cancelled:
                self._record(None)
            return generation

    def _stream(self, body: dict, on_text, stop: Callable[[], bool]) -> Generation:
        """One attempt: POST, then read the event stream to its end, a stop, or a failure."""
        import httpx2

        text = _TextAssembler(on_text)
        connection = _Connection()
        watcher = _StopWatcher(stop, connection)
        started = time.perf_counter()
        first_text_at = None
        finished = False
        usage_tokens = None
        try:
            with self._client.stream(
                "POST",
                self.endpoint,
                json=body,
                headers=self._headers(),
                extensions={"trace": connection.trace},
            ) as response:
                self._check_response(response)
                for event in httpx2.EventSource(response):
                    if stop():
                        break
                    chunk = self._chunk(event.data)
                    if chunk is None:  # [DONE]
                        break
                    usage = chunk.get("usage")
                    if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
                        usage_tokens = usage["completion_tokens"]
                    for content, reasoning, finish in self._deltas(chunk, event.data):
                        if reasoning or content:
                            if first_text_at is None:
                                first_text_at = time.perf_counter()
                            text.add(content=content, reasoning=reasoning)
                        finished = finished or finish
        except httpx2.TimeoutException as error:
            if stop():
                return self._cancelled(text, started, first_text_at)
            raise ReasoningServerError(
                f"{self._where()}: no answer within the timeout of {self.timeout:g} s "
                f"({_describe(error)})"
            ) from None
        except (httpx2.NetworkError, httpx2.RemoteProtocolError) as error:
            if stop():
                return self._cancelled(text, started, first_text_at)
            if text.pieces == 0:  # refused, or dropped before any answer
                raise _Retryable(f"{self._where()}: {_describe(error)}") from None
            raise ReasoningServerError(
                f"{self._where()}: the connection broke mid-answer ({_describe(error)})"
            ) from None
        except httpx2.HTTPError as error:
            if stop():
                return self._cancelled(text, started, first_text_at)
            raise ReasoningServerError(f"{self._where()}: {_describe(error)}") from None
        finally:
            watcher.done()
        if stop():
            return self._cancelled(text, started, first_text_at)
        if not finished:
            raise ReasoningServerError(
                f"{self._where()}: the answer stream ended before the answer was finished "
                f"(no finish_reason; {text.pieces} pieces of text came)"
            )
        text.finish()
        ended = time.perf_counter()
        first = first_text_at or ended
        tokens = usage_tokens if usage_tokens is not None else text.pieces
        return Generation(text.text, tokens, first - started, ended - first, False)

    @staticmethod
    def _cancelled(text: _TextAssembler, started: float, first_text_at) -> Generation:
        text.finish()
        ended = time.perf_counter()
        first = first_text_at or ended
        return Generation(text.text, text.pieces, first - started, ended - first, True)

    def _check_response(self, response) -> None:
        """Raise for an HTTP error (retryable or not) or a body that is no event stream."""
        status = response.status_code
        if status != 200:
            detail = _body_excerpt(response)
            message = f"{self._where()}: HTTP {status}" + (f": {detail}" if detail else "")
            if status in _RETRY_STATUS:
                raise _Retryable(message)
            if status == 404:
                message += (
                    f" (is {self.url} the server's OpenAI base URL, e.g. http://host:8000/v1, "
                    f"and {self.model_id!r} the name it serves the model under?)"
                )
            raise ReasoningServerError(message)
        kind = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if kind != "text/event-stream":
            raise ReasoningServerError(
                f"{self._where()}: answered {kind or 'no content type'}, not an event stream: "
                f"{_body_excerpt(response)!r}"
            )

    def _chunk(self, data: str) -> dict | None:
        """One event's chat-completion chunk; None for the closing [DONE]."""
        if data.strip() == "[DONE]":
            return None
        try:
            chunk = json.loads(data)
        except ValueError:
            raise ReasoningServerError(
                f"{self._where()}: answered an event that is not JSON: {data[:120]!r}"
            ) from None
        if not isinstance(chunk, dict):
            raise ReasoningServerError(
                f"{self._where()}: answered an event that is not a chat-completion chunk: "
                f"{data[:120]!r}"
            )
        if chunk.get("error") is not None:
            error = chunk["error"]
            detail = error.get("message", error) if isinstance(error, dict) else error
            raise ReasoningServerError(f"{self._where()}: reported an error: {detail}")
        choices = chunk.get("choices")
        if choices is None and "usage" not in chunk or not isinstance(choices or [], list):
            raise ReasoningServerError(
                f"{self._where()}: answered an event that is not a chat-completion chunk: "
                f"{data[:120]!r}"
            )
        return chunk

    def _deltas(self, chunk: dict, data: str) -> list[tuple[str | None, str | None, bool]]:
        """(content, reasoning, finished) of each choice of a chunk; ReasoningServerError for a
        choice that is not a streamed delta of text."""
        found = []
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                raise ReasoningServerError(
                    f"{self._where()}: answered a chunk without a delta: {data[:120]!r}"
                )
            content = delta.get("content")
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if not all(part is None or isinstance(part, str) for part in (content, reasoning)):
                raise ReasoningServerError(
                    f"{self._where()}: answered a delta whose text is not a string: {data[:120]!r}"
                )
            found.append((content, reasoning, choice.get("finish_reason") is not None))
        return found

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}

    def _where(self) -> str:
        return f"reasoning server {self.endpoint} ({self.model_id})"

    # ------------------------------------------------------------------ lifetime

    def close(self) -> None:
        """Close the HTTP client; generate() then fails."""
        if not self._closed:
            self._closed = True
            self._client.close()

    def __enter__(self) -> RemoteReasoner:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


class _TextAssembler:
    """The streamed deltas as the local reasoner's text: thinking put back in <think></think>,
    Qwen special tokens removed. `on_text` gets each grown part of that text (a special token
    cut at the end of the text so far is held back until it is complete or ruled out), so the
    pieces add up to `text`."""

    def __init__(self, on_text: Callable[[str], None] | None):
        self.on_text = on_text
        self.raw = ""
        self.sent = ""
        self.pieces = 0
        self._thinking = False

    def add(self, *, content: str | None, reasoning: str | None) -> None:
        self.pieces += 1
        if reasoning:
            if not self._thinking:
                self.raw += THINK_TAGS[0]
                self._thinking = True
            self.raw += reasoning
        if content:
            if self._thinking:
                self.raw += THINK_TAGS[1]
                self._thinking = False
            self.raw += content
        self._emit(final=False)

    def finish(self) -> None:
        self._emit(final=True)

    @property
    def text(self) -> str:
        return _SPECIAL_TOKEN.sub("", self.raw)

    def _emit(self, *, final: bool) -> None:
        raw = self.raw
        if not final:
            partial = _PARTIAL_SPECIAL_TOKEN.search(raw)
            if partial is not None:
                raw = raw[: partial.start()]
        clean = _SPECIAL_TOKEN.sub("", raw)
        if len(clean) > len(self.sent) and clean.startswith(self.sent):
            chunk, self.sent = clean[len(self.sent) :], clean
            if self.on_text is not None:
                self.on_text(chunk)


class _Connection:
    """The socket of one request, caught from httpcore's ``trace`` extension as it connects,
    so another thread can shut it: a blocked read then returns at once."""

    def __init__(self) -> None:
        self._socket = None
        self._lock = threading.Lock()
        self._shut = False

    def trace(self, event: str, info: dict) -> None:
        if event == "connection.connect_tcp.complete":
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            with self._lock:
                self._socket = sock
                if self._shut:
                    _shutdown(sock)

    def shut(self) -> None:
        with self._lock:
            self._shut = True
            _shutdown(self._socket)


class _StopWatcher:
    """Shuts the request's connection once `stop()` is true, checking every CANCEL_POLL s until
    `done()`."""

    def __init__(self, stop: Callable[[], bool], connection: _Connection):
        self._finished = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(stop, connection), name="segzero-remote-cancel", daemon=True
        )
        self._thread.start()

    def _watch(self, stop: Callable[[], bool], connection: _Connection) -> None:
        while not self._finished.wait(CANCEL_POLL):
            if stop():
                connection.shut()
                return

    def done(self) -> None:
        self._finished.set()


def _shutdown(sock) -> None:
    import socket

    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:  # already closed
        pass


def _sleep_unless(stop: Callable[[], bool], seconds: float) -> bool:
    """Sleep `seconds` in CANCEL_POLL steps; True as soon as `stop()` is."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if stop():
            return True
        time.sleep(min(CANCEL_POLL, left))
    return stop()


def _body_excerpt(response) -> str:
    """The start of a response's body as one line (the server's error message, mostly)."""
    data = b""
    try:
        for part in response.iter_bytes():
            data += part
            if len(data) >= 2048:
                break
    except Exception:  # noqa: BLE001 - only for a message; what came so far is quoted
        pass
    body = data[:2048].decode("utf-8", "replace")
    try:  # {"error": {"message": ...}}, {"detail": ...}, {"message": ...}
        data = json.loads(body)
        if isinstance(data, dict):
            found = data.get("error") or data.get("detail") or data.get("message")
            if isinstance(found, dict):
                found = found.get("message", found)
            if found:
                body = str(found)
    except ValueError:
        pass
    line = " ".join(body.split())
    return line[:_ERROR_BODY_CHARS] + ("..." if len(line) > _ERROR_BODY_CHARS else "")


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
