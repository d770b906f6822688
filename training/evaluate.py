"""gIoU and cIoU of a reasoning model + SAM2 on a ReasonSeg / RefCOCO evaluation set.

    python training/evaluate.py --reasoning-model Ricky06662/Seg-Zero-7B \\
        --segmentation-model facebook/sam2.1-hiera-large \\
        --dataset data/ReasonSeg_test --split test --output-dir runs/reasonseg-test

With the reasoning model on an OpenAI-compatible server (``vllm serve Ricky06662/Seg-Zero-7B``,
README "Reasoning on a server"), add ``--reasoning-url http://localhost:8000/v1``: nothing is
loaded but SAM2, and ``--concurrency N`` (default 8) rows are asked at once, which the server
batches continuously; results are still scored and written in row order.

The dataset is read by `segzero_training.heldout` in any of three layouts: the released
evaluation columns ``image`` (PIL), ``text``, ``mask`` (with ``image_id``, ``ann_id``); the
training layout ``image``, ``problem``, ``solution`` (prepare_data.py's, boxes only: scored by
box IoU, no gIoU / cIoU); or a folder as ``prepare_data.py --folder`` reads it (masks), so a
user's own held-out set needs no conversion. A dataset is a directory written by
``save_to_disk`` (a DatasetDict gives ``--split``, a Dataset is used whole) or, when no such
directory exists, a hub id handed to ``datasets.load_dataset``. Every row also gets
``box_iou`` (the answer's boxes against the true ones, `validation.sample_box_iou`) and
``parsed``; the summary their means.

Scoring uses `segzero_model.metrics`: gIoU is the mean per-sample IoU, cIoU the total
intersection over the total union. A failed prediction (any status but ok: unparseable answer,
invalid query, out of memory, ...) scores IoU 0 with the ground-truth area as its union. In the
``mask`` column (PIL image, array or nested lists) nonzero is foreground; masks are compared at
the ground-truth mask's size, and a prediction of another size (image and mask disagree) is
resized to it, nearest neighbour.

Written to ``--output-dir``:

- ``results.jsonl``: one line per sample, appended and flushed after every batch: ``index``
  (row of the split), ``image_id``, ``ann_id``, ``iou``, ``intersection``, ``union``,
  ``failed`` and the pipeline's result (`SegmentationResult.to_json_dict`: status, reason,
  bbox and points in original pixels, score, reasoning, raw output, timings).
The reasoning model is asked in its model family (`segzero_model.reasoning.families`: prompt, image
size, answer format and frame; ``--model-family``, default auto from the checkpoint), and a family
that answers a list of objects is scored on the union of their masks.

- ``run.json``: what produced results.jsonl (models, dataset, split, max_new_tokens, dtype,
  and the model family when one is named);
  a restart with other values is refused, so one file never mixes two runs.
- ``summary.json``: gIoU, cIoU, count, total intersection and union, failures by status, the
  checkpoints (name, local path, cached hub revision), the dataset (path, split, fingerprint,
  rows), the settings (batch size, max_new_tokens, dtype, device, limit), package versions,
  git commit and date: what it takes to reproduce the number.

Resuming: rerun the same command. Rows already in results.jsonl are not evaluated again; their
stored counts are re-accumulated (``add_counts(..., failed=...)``), and a last line torn by a
crash is dropped and redone. The summary is always computed from results.jsonl in row order, so
an interrupted and resumed run reports exactly the numbers of an uninterrupted one.
``--limit N`` scores the first N rows (a later run without it goes on from there).

Exit codes: 0 done; 2 bad arguments, dataset, output directory or model.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from segzero_model.config import add_pipeline_arguments, options_from_args
from segzero_model.errors import ModelNotFoundError
from segzero_model.metrics import IoUAccumulator, intersection_and_union

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
SUMMARY_FILE = "summary.json"
VERSIONED_PACKAGES = (
    "segzero_ros",
    "torch",
    "transformers",
    "tokenizers",
    "accelerate",
    "sam2",
    "datasets",
    "numpy",
    "pillow",
    "opencv-python-headless",
)
EXIT_USAGE = 2
DEFAULT_CONCURRENCY = 8  # requests in flight with --reasoning-url


class EvaluationError(ValueError):
    """The output directory cannot be resumed: it holds another run's or a corrupt file."""


# --------------------------------------------------------------------------- data


def load_eval_dataset(name: str | os.PathLike, split: str = "test"):
    """The held-out set to evaluate on, in any layout `segzero_training.heldout` reads (the
    released evaluation columns, the training layout, or a prepare_data.py folder).

    Raises:
        FileNotFoundError / OSError: not found (or unreachable).
        ValueError: no such split, or columns of no known layout.
    """
    from segzero_training.heldout import open_heldout

    return open_heldout(name, split)


def _resize_nearest(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    import cv2

    resized = cv2.resize(
        mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST
    )
    return resized.astype(bool)


def predicted_mask(result) -> np.ndarray | None:
    """What is scored: the union of every object's mask (a list family may name several; the
    pipeline's `result.mask` is that union, rebuilt here from `objects` if it is missing)."""
    if result.mask is not None:
        return result.mask
    masks = [obj.mask for obj in getattr(result, "objects", None) or [] if obj.mask is not None]
    return np.logical_or.reduce(masks) if masks else None


def score(result, gt: np.ndarray) -> tuple[int, int, bool]:
    """(intersection, union, failed) of one `SegmentationResult` against its ground truth; the
    prediction is the union of the answer's objects (`predicted_mask`). NOT_FOUND ("nothing
    there") is an empty prediction, not a failure: on an empty ground truth it scores 1, as GRES
    (gRefCOCO) scores a no-target sample, and 0 on a target."""
    from segzero_model.result import Status

    if result.status is Status.NOT_FOUND:
        return 0, int(np.count_nonzero(gt)), False
    pred = predicted_mask(result) if result.ok else None
    failed = pred is None
    if pred is not None and pred.shape != gt.shape:
        pred = _resize_nearest(pred, gt.shape)
    intersection, union = intersection_and_union(pred, gt)
    return intersection, union, failed


def score_record(result, sample) -> dict:
    """What results.jsonl stores of one answer: ``box_iou`` (`validation.sample_box_iou` of the
    answer's boxes; 0 for a failed answer), ``parsed``, ``failed`` and, where the sample has a
    mask, its ``iou``, ``intersection`` and ``union`` (else None: a training-layout set has
    boxes only)."""
    from segzero_model.result import Status
    from segzero_training.validation import sample_box_iou

    parsed = result.status in (Status.OK, Status.NOT_FOUND)
    boxes = [o.bbox for o in result.objects if o.bbox is not None] if parsed else []
    record = {
        "box_iou": sample_box_iou(boxes, sample.boxes) if parsed else 0.0,
        "parsed": parsed,
        "no_target": not sample.boxes,  # nothing to find: an empty mask or an empty object list
        "answered_none": result.status is Status.NOT_FOUND,
        "iou": None,
        "intersection": None,
        "union": None,
        "failed": not parsed,
    }
    if sample.mask is not None:
        intersection, union, failed = score(result, sample.mask)
        iou = IoUAccumulator().add_counts(intersection, union, failed=failed)
        record |= {"iou": iou, "intersection": intersection, "union": union, "failed": failed}
    return record


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _normalised(value):
    """`value` as it reads back from JSON, so ids compare equal to stored ones."""
    return json.loads(json.dumps(value, default=_jsonable))


# --------------------------------------------------------------------------- results file


def read_results(path: str | os.PathLike) -> dict[int, dict]:
    """The records of a results.jsonl by row index ({} when there is none).

    A last line without its newline (torn by a crash) is cut off the file, so it is redone.

    Raises:
        EvaluationError: a line is not a record, or a row index appears twice.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        logger.warning("dropping the torn last line of %s (%d bytes)", path, len(data) - end)
        with path.open("r+b") as file:
            file.truncate(end)
    records: dict[int, dict] = {}
    for number, line in enumerate(data[:end].splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            raise EvaluationError(f"{path}:{number} is not JSON ({error})") from error
        index = record.get("index") if isinstance(record, dict) else None
        missing = [k for k in ("intersection", "union", "failed") if k not in (record or {})]
        if not isinstance(index, int) or missing:
            raise EvaluationError(f"{path}:{number} is not a result record: {line[:120]!r}")
        if index in records:
            raise EvaluationError(
                f"{path}:{number} repeats row {index}; were two runs writing the same directory?"
            )
        records[index] = record
    return records


def summarize(records: dict[int, dict], count: int) -> dict:
    """Metrics over rows 0..count-1 of `records`, accumulated in row order (reproducible sums):
    gIoU and cIoU over the rows with masks (None without any), and over every row the mean
    ``box_iou`` and the ``parse_rate``."""
    accumulator = IoUAccumulator()
    failures: Counter[str] = Counter()
    box_iou = parsed = 0.0
    for index in range(count):
        record = records[index]
        if record["intersection"] is not None:
            accumulator.add_counts(record["intersection"], record["union"], failed=record["failed"])
        box_iou += record.get("box_iou", 0.0)
        parsed += record.get("parsed", not record["failed"])
        if record["failed"]:
            failures[record.get("status", "unknown")] += 1
    masks = accumulator.summary()
    if not masks.pop("count"):  # no row with a mask (a training-layout set): no gIoU / cIoU
        masks = {"giou": None, "ciou": None}
    return {
        "count": count,
        **masks,
        **presence_accuracy([records[index] for index in range(count)]),
        "box_iou": box_iou / count if count else 0.0,
        "parse_rate": parsed / count if count else 0.0,
        "failed": sum(failures.values()),
        "failures": dict(sorted(failures.items())),
    }


def presence_accuracy(records: Sequence[dict]) -> dict:
    """GRES's presence scores: ``n_acc``, the share of no-target rows answered "nothing there"
    (NOT_FOUND), and ``t_acc``, the share of target rows answered with at least one object
    (an OK answer); each None where the set has no such row, with the row counts beside them.
    Rows stored before these were recorded (no ``no_target`` key) are left out."""
    known = [r for r in records if r.get("no_target") is not None]
    no_target = [r for r in known if r["no_target"]]
    target = [r for r in known if not r["no_target"]]
    answered = [r for r in target if r.get("status") == "ok"]
    return {
        "no_target_samples": len(no_target),
        "n_acc": sum(r["answered_none"] for r in no_target) / len(no_target) if no_target else None,
        "target_samples": len(target),
        "t_acc": len(answered) / len(target) if target else None,
    }


def presence_line(metrics: dict, *, can_answer_none: bool) -> str:
    """The N-acc / T-acc line of the printed summary, saying when the family cannot say none."""
    n_acc, t_acc = metrics["n_acc"], metrics["t_acc"]
    line = (
        f"N-acc {'n/a' if n_acc is None else f'{n_acc:.2%}'} over "
        f"{metrics['no_target_samples']} no-target samples  T-acc "
        f"{'n/a' if t_acc is None else f'{t_acc:.2%}'} over "
        f"{metrics['target_samples']} target samples"
    )
    if not can_answer_none and metrics["no_target_samples"]:
        line += "  (a single-object family: it cannot answer 'none', so N-acc is 0)"
    return line


def _check_resumable(records: dict[int, dict], dataset, path: Path) -> None:
    if not records:
        return
    beyond = [index for index in records if index >= len(dataset)]
    if beyond:
        raise EvaluationError(
            f"{path} has rows up to {max(beyond)} but the dataset has {len(dataset)} rows: it "
            "belongs to another dataset; use another --output-dir"
        )
    for index, record in sorted(records.items()):
        expected = {key: _normalised(value) for key, value in dataset.ids(index).items()}
        stored = {key: record.get(key) for key in expected}
        if stored != expected:
            raise EvaluationError(
                f"{path}: row {index} was {stored}, the dataset has {expected}: another dataset "
                "or split; use another --output-dir"
            )


def _batches(indices: Sequence[int], size: int) -> Iterable[list[int]]:
    for start in range(0, len(indices), size):
        yield list(indices[start : start + size])


def _answers(pipeline, dataset, todo: Sequence[int], batch_size: int, concurrency: int):
    """Groups of (index, row, result) for the rows `todo`, in row order: batches of
    `batch_size` through `segment_batch`, or, with `concurrency` > 1, one `segment` call per row
    on that many threads (a remote reasoner then has that many requests in flight, which its
    server batches continuously), each row yielded as soon as it and every row before it are
    answered. Rows are read on the calling thread."""
    if concurrency <= 1:
        for batch in _batches(todo, batch_size):
            rows = [dataset[index] for index in batch]
            outputs = pipeline.segment_batch([r.image for r in rows], [r.query for r in rows])
            yield list(zip(batch, rows, outputs, strict=True))
        return
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    indices = iter(todo)
    pending: deque = deque()
    with ThreadPoolExecutor(concurrency, thread_name_prefix="evaluate") as pool:

        def submit() -> None:
            index = next(indices, None)
            if index is not None:
                row = dataset[index]
                future = pool.submit(pipeline.segment, row.image, row.query)
                pending.append((index, row, future))

        for _ in range(2 * concurrency):  # queued ahead, so no worker waits on a slow row
            submit()
        while pending:
            index, row, future = pending.popleft()
            result = future.result()
            submit()
            yield [(index, row, result)]


# --------------------------------------------------------------------------- evaluation


def evaluate(
    pipeline,
    dataset,
    output_dir: str | os.PathLike,
    *,
    batch_size: int = 4,
    limit: int | None = None,
    concurrency: int = 1,
) -> dict:
    """Evaluate rows 0..limit-1 of `dataset` with `pipeline` (a `SegZeroPipeline`), resuming
    from `output_dir`/results.jsonl; returns `summarize`'s metrics. `concurrency` > 1 answers
    that many rows at once on threads (for a remote reasoner, `_answers`); results are scored
    and written in row order either way.

    Raises:
        ValueError: batch_size, limit or concurrency below 1.
        EvaluationError: results.jsonl belongs to another dataset or is corrupt.
    """
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    results_path = output_dir / RESULTS_FILE
    records = read_results(results_path)
    _check_resumable(records, dataset, results_path)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    todo = [index for index in range(count) if index not in records]
    if count > len(todo):
        logger.info("resuming: %d of %d rows already in %s", count - len(todo), count, results_path)

    running = IoUAccumulator()  # for the progress bar only; the summary re-adds in row order
    for index in range(count):
        record = records.get(index)
        if record is not None and record["intersection"] is not None:
            running.add_counts(record["intersection"], record["union"], failed=record["failed"])

    bar = tqdm(total=len(todo), unit="sample", desc="evaluating")
    with bar, logging_redirect_tqdm(), results_path.open("a", encoding="utf-8") as results:
        for answered in _answers(pipeline, dataset, todo, batch_size, concurrency):
            lines = []
            for index, row, result in answered:
                record = {"index": index, **row.ids, **score_record(result, row)}
                if record["intersection"] is not None:
                    running.add_counts(
                        record["intersection"], record["union"], failed=record["failed"]
                    )
                record |= result.to_json_dict()
                line = json.dumps(record, default=_jsonable)
                records[index] = json.loads(line)  # as a resumed run reads it back
                lines.append(line + "\n")
            results.write("".join(lines))
            results.flush()
            bar.update(len(answered))
            bar.set_postfix(giou=f"{running.giou:.4f}", ciou=f"{running.ciou:.4f}")
    return summarize(records, count)


# --------------------------------------------------------------------------- provenance


def checkpoint_info(name: str) -> dict:
    """How to find a checkpoint again: its local path, or the hub revision in the local cache."""
    path = Path(name).expanduser()
    if path.exists():
        return {"name": name, "path": str(path.resolve()), "revision": None}
    revision = None
    try:
        from huggingface_hub.constants import HF_HUB_CACHE

        ref = Path(HF_HUB_CACHE) / f"models--{name.replace('/', '--')}" / "refs" / "main"
        revision = ref.read_text(encoding="utf-8").strip() if ref.is_file() else None
    except (ImportError, OSError):
        pass
    return {"name": name, "path": None, "revision": revision}


def package_versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return versions


def git_commit() -> str | None:
    """The commit of this checkout (read only), or None outside git."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def _write_json(path: Path, data: dict) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    staged = path.with_name(path.name + ".tmp")
    staged.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    os.replace(staged, path)


def _check_run(output_dir: Path, run: dict) -> None:
    """Refuse to append to results of a run with other models, data or generation settings."""
    run_path, results_path = output_dir / RUN_FILE, output_dir / RESULTS_FILE
    if run_path.is_file():
        stored = json.loads(run_path.read_text(encoding="utf-8"))
        changed = sorted(k for k in run.keys() | stored.keys() if run.get(k) != stored.get(k))
        if changed:
            details = ", ".join(f"{k}: {stored.get(k)!r} -> {run.get(k)!r}" for k in changed)
            raise EvaluationError(
                f"{output_dir} holds results of another run ({details}); use another "
                "--output-dir, or delete it to start over"
            )
    elif results_path.is_file() and results_path.stat().st_size:
        raise EvaluationError(
            f"{results_path} exists without {RUN_FILE}, so it cannot be resumed safely; use "
            "another --output-dir, or delete it to start over"
        )


# --------------------------------------------------------------------------- command line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py",
        description="gIoU / cIoU of a reasoning model + SAM2 on a ReasonSeg / RefCOCO set.",
    )
    parser.add_argument("--dataset", required=True, help="save_to_disk directory or hub id")
    parser.add_argument("--split", default="test", help="split of a DatasetDict (test)")
    parser.add_argument("--output-dir", type=Path, required=True, help="results and summary")
    parser.add_argument("--batch-size", type=int, default=4, help="queries per generation (4)")
    parser.add_argument("--limit", type=int, help="evaluate only the first N rows")
    add_pipeline_arguments(
        parser.add_argument_group("models"),
        (
            "reasoning_model",
            "model_family",
            "segmentation_model",
            "segmentation_family",
            "device",
            "dtype",
            "max_new_tokens",
            "prefix_cache_size",
            "compile",
        ),
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="use the built-in tiny random models (a smoke test; the numbers are meaningless)",
    )
    remote = parser.add_argument_group(
        "remote reasoning (an OpenAI-compatible server: vLLM, SGLang, transformers serve)"
    )
    add_pipeline_arguments(remote, ("reasoning_url", "reasoning_timeout", "reasoning_api_key_env"))
    remote.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help=f"with --reasoning-url: requests in flight at once, which the server batches "
        f"continuously (default {DEFAULT_CONCURRENCY}); --batch-size is then unused",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logger.setLevel(logging.INFO)  # our resume note, without the libraries' INFO chatter
    for name in ("batch_size", "limit", "max_new_tokens", "concurrency"):
        value = getattr(args, name)
        if value is not None and value < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return EXIT_USAGE
    if args.concurrency is not None and not args.reasoning_url:
        print(
            "error: --concurrency needs --reasoning-url (a local model batches with --batch-size)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    concurrency = (args.concurrency or DEFAULT_CONCURRENCY) if args.reasoning_url else 1

    options = options_from_args(args)
    if args.tiny:
        from segzero_model.tiny import TINY_WARNING

        print(TINY_WARNING, file=sys.stderr)
        options = options.with_tiny_models()
    reasoning_model, segmentation_model = options.reasoning_model, options.segmentation_model

    try:
        dataset = load_eval_dataset(args.dataset, args.split)
    except (OSError, ValueError) as error:
        print(f"error: cannot load dataset {args.dataset!r}: {error}", file=sys.stderr)
        return EXIT_USAGE
    dataset_path = Path(args.dataset).expanduser()
    dataset_name = str(dataset_path.resolve()) if dataset_path.exists() else args.dataset
    run = {
        "reasoning_model": reasoning_model,
        "segmentation_model": segmentation_model,
        "dataset": dataset_name,
        "split": args.split,
        "max_new_tokens": args.max_new_tokens,
        "dtype": args.dtype,
    }
    if args.model_family != "auto":  # absent for auto, so earlier runs still resume
        run["model_family"] = args.model_family
    if args.reasoning_url:  # likewise absent for a local model
        run["reasoning_url"] = args.reasoning_url
    output_dir = args.output_dir
    try:
        _check_run(output_dir, run)
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

    from segzero_model.pipeline import SegZeroPipeline

    where = f" at {args.reasoning_url}" if args.reasoning_url else ""
    print(f"loading {reasoning_model}{where} and {segmentation_model} ...", file=sys.stderr)
    try:
        pipeline = SegZeroPipeline.from_options(options)
    except (ModelNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE

    started = time.perf_counter()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_json(output_dir / RUN_FILE, run)
        metrics = evaluate(
            pipeline,
            dataset,
            output_dir,
            batch_size=args.batch_size,
            limit=args.limit,
            concurrency=concurrency,
        )
    except EvaluationError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        reasoner = pipeline.reasoner
        device = reasoner.device  # "remote" for a server
        dtype = None if reasoner.dtype is None else str(reasoner.dtype).removeprefix("torch.")
        family = reasoner.family
        pipeline.close()
    # A single-object family (Seg-Zero) always names one object: its N-acc is 0 by
    # construction, not by mistake; a list family can answer [] ("nothing there").
    can_answer_none = family.answer == "list"

    summary = {
        **metrics,
        "reasoning_model": checkpoint_info(reasoning_model),
        "segmentation_model": checkpoint_info(segmentation_model),
        "dataset": {
            "name": dataset_name,
            "split": args.split,
            "layout": dataset.layout,
            "fingerprint": dataset.fingerprint,
            "rows": len(dataset),
            "evaluated": metrics["count"],
            "complete": metrics["count"] == len(dataset),
        },
        "settings": {
            "batch_size": args.batch_size,
            "max_new_tokens": args.max_new_tokens,
            "dtype": dtype,
            "device": device,
            "requested_dtype": args.dtype,
            "requested_device": args.device,
            "model_family": family.name,
            "can_answer_none": can_answer_none,
            "requested_model_family": args.model_family,
            "image_size": family.image_size,
            "reasoning_url": args.reasoning_url or None,
            "concurrency": concurrency,
            "limit": args.limit,
            "tiny": args.tiny,
        },
        "results": str((output_dir / RESULTS_FILE).resolve()),
        "versions": package_versions(),
        "git_commit": git_commit(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds_this_run": round(time.perf_counter() - started, 1),
        "command": ["training/evaluate.py", *(sys.argv[1:] if argv is None else argv)],
    }
    _write_json(output_dir / SUMMARY_FILE, summary)
    scores = f"box IoU {metrics['box_iou']:.4f}  parsed {metrics['parse_rate']:.2%}"
    if metrics["giou"] is not None:
        scores = f"gIoU {metrics['giou']:.4f}  cIoU {metrics['ciou']:.4f}  {scores}"
    print(
        f"{scores}  over {metrics['count']} samples ({metrics['failed']} failed: "
        f"{metrics['failures'] or 'none'})"
    )
    print(presence_line(metrics, can_answer_none=can_answer_none))
    print(f"wrote {output_dir / SUMMARY_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
