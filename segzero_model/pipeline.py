"""`SegZeroPipeline`: reasoner → answer parser → frame scaling → SAM2, one result per query.

The answer is read in the reasoner's model family (`answer_parser.parse_objects`): one or several
objects, each prompted into SAM2 on the same image embedding, or an explicit "no object"
(Status.NOT_FOUND, which is an answer, not a failure).

Failures of one query (bad image, bad query, unparseable answer, out of memory, cancellation)
become a `SegmentationResult` with an error status and a reason; they are never raised, so a
long-running caller such as the ROS node keeps going.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence

import numpy as np

from segzero_model.config import (
    DEFAULT_API_KEY_ENV,
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_REASONING_MODEL,
    DEFAULT_SEGMENTATION_MODEL,
    DEFAULT_TIMEOUT,
    PipelineOptions,
)
from segzero_model.errors import InvalidImageError
from segzero_model.images import to_rgb8
from segzero_model.reasoning.answer_parser import (
    AnswerFormatError,
    FoundTarget,
    extract_thinking,
    parse_answer,
    parse_objects,
)
from segzero_model.reasoning.frames import scale_box, scale_xy
from segzero_model.result import ObjectResult, SegmentationResult, Status

logger = logging.getLogger(__name__)

MAX_QUERY_CHARS = 2000


def validate_query(query: object, max_chars: int = MAX_QUERY_CHARS) -> str | None:
    """Return why `query` cannot be used, or None when it is fine."""
    if not isinstance(query, str):
        return f"query must be a string, got {type(query).__name__}"
    if not query.strip(". \t\r\n"):
        return "query is empty"
    if len(query) > max_chars:
        return f"query is {len(query)} characters long; the limit is {max_chars}"
    return None


class SegZeroPipeline:
    """Owns a reasoner (`Reasoner`, or `RemoteReasoner` for a server) and a `Segmenter`;
    `segment` answers one query, `segment_batch` many.

    `segment` may be called from several threads when the reasoner allows it (the remote one
    does: each call is its own request; the local one does not): SAM2 runs one call at a time.
    """

    def __init__(self, reasoner, segmenter, *, max_query_chars: int = MAX_QUERY_CHARS):
        self.reasoner = reasoner
        self.segmenter = segmenter
        self.max_query_chars = max_query_chars
        self._segmenter_lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        reasoning_model: str = DEFAULT_REASONING_MODEL,
        segmentation_model: str = DEFAULT_SEGMENTATION_MODEL,
        *,
        device: str = "auto",
        dtype: str | None = None,
        max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
        max_query_chars: int = MAX_QUERY_CHARS,
        model_family: str = "auto",
        reasoning_url: str | None = None,
        reasoning_timeout: float | None = None,
        reasoning_api_key_env: str | None = None,
        prefix_cache_size: int | None = None,
        compile: bool = False,
        segmentation_family: str = "auto",
    ) -> SegZeroPipeline:
        """Load both models (hub ids or local directories); raises `ModelNotFoundError`.
        `model_family`: "auto" (from the checkpoint), a family name or a family YAML file;
        `segmentation_family` likewise for the segmenter (`segmentation.families`).

        With `reasoning_url` (an OpenAI-compatible server, e.g. http://localhost:8000/v1) the
        reasoning model is not loaded here: `reasoning_model` is the name the server serves it
        under, asked through `remote.RemoteReasoner` (`reasoning_timeout` seconds
        without data, default 60; the API key from the environment variable
        `reasoning_api_key_env`, default SEGZERO_REASONING_API_KEY); `device` and `dtype` then
        apply to SAM2 only.

        `prefix_cache_size` and `compile` apply to a reasoning model loaded here (see
        `local.Reasoner`; a server caches prefixes itself): the frames whose prompt prefix is
        kept for further queries (None: the default, 0 with `compile`) and the compiled decode
        (CUDA), which cannot be combined with prefix reuse nor with `reasoning_url`."""
        from segzero_model.segmentation.loading import load_segmenter

        if reasoning_url and compile:
            raise ValueError("compile applies to a reasoning model loaded here, not reasoning_url")
        if reasoning_url:
            from segzero_model.reasoning.remote import RemoteReasoner

            reasoner = RemoteReasoner.from_url(
                reasoning_url,
                reasoning_model,
                model_family=model_family,
                max_new_tokens=max_new_tokens,
                timeout=DEFAULT_TIMEOUT if reasoning_timeout is None else reasoning_timeout,
                api_key_env=(
                    DEFAULT_API_KEY_ENV if reasoning_api_key_env is None else reasoning_api_key_env
                ),
            )
        else:
            from segzero_model.reasoning.local import Reasoner

            reasoner = Reasoner.from_pretrained(
                reasoning_model,
                device=device,
                dtype=dtype,
                max_new_tokens=max_new_tokens,
                model_family=model_family,
                prefix_cache_size=prefix_cache_size,
                compile=compile,
            )
        try:
            segmenter = load_segmenter(
                segmentation_model, family=segmentation_family, device=device
            )
        except BaseException:
            reasoner.close()
            raise
        return cls(reasoner, segmenter, max_query_chars=max_query_chars)

    @classmethod
    def from_options(
        cls, options: PipelineOptions, *, max_query_chars: int = MAX_QUERY_CHARS
    ) -> SegZeroPipeline:
        """The pipeline `options` name (`segzero_model.config`: what the command, evaluation
        and the node declare), loaded by `from_pretrained`."""
        return cls.from_pretrained(
            options.reasoning_model,
            options.segmentation_model,
            device=options.device,
            dtype=None if options.dtype in ("", "auto") else options.dtype,
            max_new_tokens=options.max_new_tokens,
            max_query_chars=max_query_chars,
            model_family=options.model_family,
            reasoning_url=options.reasoning_url or None,
            reasoning_timeout=options.reasoning_timeout,
            reasoning_api_key_env=options.reasoning_api_key_env,
            prefix_cache_size=0 if options.compile else options.prefix_cache_size,
            compile=options.compile,
            segmentation_family=options.segmentation_family,
        )

    def close(self) -> None:
        """Release both models (and GPU memory)."""
        self.reasoner.close()
        self.segmenter.close()

    def segment(
        self,
        image,
        query: str,
        *,
        image_key: Hashable | None = None,
        on_text: Callable[[str], None] | None = None,
        cancel: threading.Event | None = None,
    ) -> SegmentationResult:
        """Segment the object `query` describes in `image` (numpy HxW[xC] or PIL).

        `image_key` identifies the image for SAM2's embedding cache and the reasoner's prefix
        cache (e.g. a camera stamp; None: both hash the pixels);
        `on_text` receives the model's text as it streams; setting `cancel` stops generation.
        """
        return self._run([image], [query], [image_key], on_text=on_text, cancel=cancel)[0]

    def segment_batch(
        self,
        images: Sequence,
        queries: Sequence[str],
        image_keys: Sequence[Hashable | None] | None = None,
    ) -> list[SegmentationResult]:
        """Answer several queries with one batched generation; one result per query, in order."""
        if len(images) != len(queries):
            raise ValueError(f"got {len(images)} images but {len(queries)} queries")
        keys = list(image_keys) if image_keys is not None else [None] * len(images)
        if len(keys) != len(images):
            raise ValueError(f"got {len(keys)} image keys for {len(images)} images")
        return self._run(list(images), list(queries), keys) if images else []

    def _run(self, images, queries, keys, on_text=None, cancel=None) -> list[SegmentationResult]:
        started = time.perf_counter()
        results: list[SegmentationResult | None] = [None] * len(images)
        rgb_images: list[np.ndarray | None] = [None] * len(images)
        for index, (image, query) in enumerate(zip(images, queries, strict=True)):
            results[index], rgb_images[index] = self._validate(image, query)

        pending = [i for i, result in enumerate(results) if result is None]
        if pending:
            generations = self._generate(
                [rgb_images[i] for i in pending],
                [queries[i] for i in pending],
                [keys[i] for i in pending],
                on_text,
                cancel,
            )
            for index, generation in zip(pending, generations, strict=True):
                results[index] = self._finish(
                    rgb_images[index], queries[index], keys[index], generation
                )
        total = time.perf_counter() - started
        for result in results:
            result.timings["total"] = total
        return results

    def _validate(self, image, query) -> tuple[SegmentationResult | None, np.ndarray | None]:
        problem = validate_query(query, self.max_query_chars)
        try:
            rgb = to_rgb8(image)
        except InvalidImageError as error:
            size = (0, 0)
            return self._failure(Status.INVALID_IMAGE, str(error), query, size), None
        size = (rgb.shape[1], rgb.shape[0])
        if problem is not None:
            return self._failure(Status.INVALID_QUERY, problem, query, size), None
        return None, rgb

    def _generate(self, images, queries, keys, on_text, cancel):
        """Run the reasoner; a failure of the whole batch becomes one failure per query."""
        try:
            return self.reasoner.generate(
                images, queries, image_keys=keys, on_text=on_text, cancel=cancel
            )
        except Exception as error:  # noqa: BLE001 - reported per query, see _error_status
            status = _error_status(error)
            logger.exception("reasoning failed for %d queries", len(queries))
            return [_FailedGeneration(status, f"reasoning failed: {error}")] * len(queries)

    def _finish(self, rgb, query, key, generation) -> SegmentationResult:
        size = (rgb.shape[1], rgb.shape[0])
        if isinstance(generation, _FailedGeneration):
            return self._failure(generation.status, generation.reason, query, size)
        result = SegmentationResult(
            status=Status.OK,
            query=query,
            image_size=size,
            raw_output=generation.text,
            num_generated_tokens=generation.num_tokens,
            timings={
                "reasoning_prefill": generation.prefill_seconds,
                "reasoning_decode": generation.decode_seconds,
            },
        )
        if generation.cancelled:
            result.status, result.reason = Status.CANCELLED, "generation was cancelled"
            result.reasoning = extract_thinking(generation.text)
            return result
        parse_started = time.perf_counter()
        try:
            found = self._parse(generation.text, size)
        except AnswerFormatError as error:
            result.status, result.reason = Status.UNPARSEABLE_ANSWER, str(error)
            logger.warning("unparseable answer for %r: %s", query, error)
            return result
        finally:
            result.timings["parse"] = time.perf_counter() - parse_started
            result.reasoning = extract_thinking(generation.text)
        if not found:
            result.status, result.reason = Status.NOT_FOUND, "the model found no such object"
            return result
        result.objects = [ObjectResult(t.bbox, t.points) for t in found]
        result.bbox, result.points = found[0].bbox, found[0].points or None
        self._segment(rgb, key, result)
        return result

    def _parse(self, text: str, size: tuple[int, int]) -> list[FoundTarget]:
        """The answer's objects in the image's pixels, read in the reasoner's family; a reasoner
        without one (a test double) answers in Seg-Zero's single-object 840 frame."""
        width, height = size
        family = getattr(self.reasoner, "family", None)
        if family is not None:
            return parse_objects(text, family, width, height)
        answer = parse_answer(text)
        box = None if answer.bbox is None else scale_box(answer.bbox, width, height)
        points = tuple(scale_xy(x, y, width, height) for x, y in answer.points or ())
        return [FoundTarget(box, points)]

    def _segment(self, rgb, key, result: SegmentationResult) -> None:
        """One embedding of the image, then one SAM2 prompt per object; `result.mask` is the
        union of the objects' masks and `result.score` the first object's score."""
        try:
            with self._segmenter_lock:
                started = time.perf_counter()
                self.segmenter.set_image(rgb, key=key)
                embedded = time.perf_counter()
                for obj in result.objects:
                    obj.mask, obj.score = self.segmenter.predict(obj.bbox, obj.points or None)
            result.timings["sam_embedding"] = embedded - started
            result.timings["sam_mask"] = time.perf_counter() - embedded
        except Exception as error:  # noqa: BLE001 - reported in the result
            logger.exception("segmentation failed for %r", result.query)
            result.status, result.reason = _error_status(error), f"segmentation failed: {error}"
            return
        result.mask = np.logical_or.reduce([obj.mask for obj in result.objects])
        result.score = result.objects[0].score

    @staticmethod
    def _failure(status: Status, reason: str, query, size) -> SegmentationResult:
        logger.warning("query %.80r not answered: %s", query, reason)
        return SegmentationResult(status=status, query=str(query), image_size=size, reason=reason)


class _FailedGeneration:
    def __init__(self, status: Status, reason: str):
        self.status, self.reason = status, reason


def _error_status(error: BaseException) -> Status:
    """OUT_OF_MEMORY for CUDA OOM (after freeing the cache, so the next query can run)."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return Status.ERROR
    if isinstance(error, torch.OutOfMemoryError):
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return Status.OUT_OF_MEMORY
    return Status.ERROR
