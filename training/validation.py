"""Validation during GRPO training, and the best checkpoint by it.

Seg-Zero's users find their best checkpoint mid-run (around step 200 of 443), not at the end,
so every ``eval_steps`` the model being trained answers held-out samples (any layout of
`segzero_training.heldout`) greedily, in the run's prompt, and these are logged (``eval_*``;
W&B and TensorBoard show them under ``eval/``) and appended to ``metrics.jsonl``:

- ``eval_box_iou``: per sample, the mean over the true boxes of the best IoU with a predicted
  box (1 when nothing is there and nothing is answered), averaged over the samples;
- ``eval_parse_rate``: the share of replies the answer parser reads (an explicit "none" counts);
- with a segmentation model (``eval_segmentation_model``) and masks in the set: ``eval_giou``
  (mean per-sample mask IoU) and ``eval_ciou`` (total intersection over total union), scored
  as `training/evaluate.py` scores them (a failed answer: IoU 0, the true area as union).

Trainer's own machinery keeps the best checkpoint: ``metric_for_best_model`` (default
``box_iou``) is read from these metrics, the checkpoint saved at the best step is never rotated
away, and the run's ``segzero_recipe.json`` names it. In a multi-process (DeepSpeed) run each
process scores its shard of the samples (shards padded to equal length, so every process runs
the same number of generations, which ZeRO-3 needs) and the sums are added across processes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, fields, replace
from functools import partial

from trl import GRPOTrainer

logger = logging.getLogger(__name__)

METRICS = ("box_iou", "parse_rate", "giou", "ciou")


@dataclass
class ValidationTotals:
    """Sums over scored samples; added across processes, then turned into `metrics`."""

    samples: int = 0
    parsed: int = 0
    box_iou: float = 0.0
    masked: int = 0  # samples scored on masks
    mask_iou: float = 0.0
    intersection: float = 0.0
    union: float = 0.0

    def add(self, other: ValidationTotals) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_list(self) -> list[float]:
        return [float(getattr(self, f.name)) for f in fields(self)]

    @classmethod
    def from_list(cls, values) -> ValidationTotals:
        return cls(*[type(f.default)(v) for f, v in zip(fields(cls), values, strict=True)])

    def metrics(self, prefix: str = "eval") -> dict[str, float]:
        n = max(self.samples, 1)
        out = {
            f"{prefix}_box_iou": self.box_iou / n,
            f"{prefix}_parse_rate": self.parsed / n,
            f"{prefix}_samples": float(self.samples),
        }
        if self.masked:
            out[f"{prefix}_giou"] = self.mask_iou / self.masked
            out[f"{prefix}_ciou"] = self.intersection / self.union if self.union else 0.0
        return out


def sample_box_iou(predicted: list, truth: list) -> float:
    """Mean over the true boxes of the best IoU with a predicted box; 1.0 when both are empty."""
    from segzero_model.metrics import box_iou

    if not truth:
        return 1.0 if not predicted else 0.0
    if not predicted:
        return 0.0
    return sum(max(box_iou(p, t) for p in predicted) for t in truth) / len(truth)


def score_samples(
    reasoner, samples, segmenter=None, max_new_tokens: int | None = None
) -> list[ValidationTotals]:
    """One `ValidationTotals` per `HeldOutSample`, answered by `reasoner` in one greedy batch;
    through SAM2 too when a `segmenter` is given (masks scored where the samples have them)."""
    from segzero_model.reasoning.answer_parser import AnswerFormatError, parse_objects

    images = [s.image for s in samples]
    queries = [s.query for s in samples]
    scored = [ValidationTotals(samples=1) for _ in samples]
    if segmenter is None:
        generations = reasoner.generate(images, queries, max_new_tokens=max_new_tokens)
        for generation, sample, totals in zip(generations, samples, scored, strict=True):
            height, width = sample.image.shape[:2]
            try:
                found = parse_objects(generation.text, reasoner.family, width, height)
            except AnswerFormatError:
                continue
            totals.parsed = 1
            totals.box_iou = sample_box_iou([f.bbox for f in found if f.bbox], sample.boxes)
        return scored
    from segzero_model.pipeline import SegZeroPipeline
    from segzero_model.result import Status
    from segzero_training.evaluate import score

    results = SegZeroPipeline(reasoner, segmenter).segment_batch(images, queries)
    for result, sample, totals in zip(results, samples, scored, strict=True):
        if result.status in (Status.OK, Status.NOT_FOUND):
            totals.parsed = 1
            boxes = [o.bbox for o in result.objects if o.bbox is not None]
            totals.box_iou = sample_box_iou(boxes, sample.boxes)
        if sample.mask is not None:
            intersection, union, _ = score(result, sample.mask)
            totals.masked = 1
            totals.mask_iou = intersection / union if union else 0.0
            totals.intersection, totals.union = intersection, union
    return scored


def run_family(args):
    """The family with the prompt the run trains with (Seg-Zero's variant, or the family's
    prompt without thinking), so validation asks what training asks."""
    from segzero_model.reasoning.prompts import build_prompt

    family = args.family()
    if getattr(family.prompt, "func", family.prompt) is build_prompt:
        return replace(
            family, prompt=partial(build_prompt, thinking=args.thinking, answer=args.answer)
        )
    if not args.thinking:
        return replace(family, prompt=family.prompt_without_thinking)
    return family


class Validation:
    """The held-out samples of a run and how they are scored (see the module docstring)."""

    def __init__(
        self,
        heldout,
        family,
        *,
        max_new_tokens: int,
        batch_size: int,
        samples: int | None = None,
        segmentation_model=None,
    ):
        self.heldout = heldout
        self.count = len(heldout) if samples is None else min(samples, len(heldout))
        self.family = family
        self.max_new_tokens = max_new_tokens
        self.batch_size = max(1, batch_size)
        self.segmentation_model = segmentation_model
        self._segmenter = None

    def segmenter(self, device: str):
        if self.segmentation_model is None:
            return None
        if self._segmenter is None:
            from segzero_model.segmentation.loading import load_segmenter

            self._segmenter = load_segmenter(self.segmentation_model, device=device)
        return self._segmenter

    def shard(self, rank: int, world: int) -> list[int | None]:
        """This process's sample indices, padded with None to the same length on every process."""
        per = math.ceil(self.count / world)
        return [i if i < self.count else None for i in range(rank * per, (rank + 1) * per)]

    def run(self, trainer) -> ValidationTotals:
        """Score this process's shard with the trained model, then sum over the processes."""
        import torch
        from trl.models import unwrap_model_for_generation

        from segzero_model.reasoning.local import Reasoner

        accelerator = trainer.accelerator
        indices = self.shard(accelerator.process_index, accelerator.num_processes)
        device = str(accelerator.device)
        totals = ValidationTotals()
        with unwrap_model_for_generation(trainer.model_wrapped, accelerator) as model:
            was_training = model.training
            model.eval()
            reasoner = Reasoner(
                model,
                trainer.processing_class,
                model_id="the model being trained",
                device=device,
                max_new_tokens=self.max_new_tokens,
                family=self.family,
                prefix_cache_size=0,  # the weights change every step
            )
            try:
                for start in range(0, len(indices), self.batch_size):
                    batch = indices[start : start + self.batch_size]
                    # Padding is answered too (the same work on every process), never counted.
                    samples = [self.heldout[0 if i is None else i] for i in batch]
                    scored = score_samples(
                        reasoner, samples, self.segmenter(device), self.max_new_tokens
                    )
                    for index, one in zip(batch, scored, strict=True):
                        if index is not None:
                            totals.add(one)
            finally:
                model.train(was_training)
        summed = accelerator.reduce(
            torch.tensor(totals.as_list(), device=accelerator.device), "sum"
        )
        return ValidationTotals.from_list(summed.tolist())


class ValidatingGRPOTrainer(GRPOTrainer):
    """GRPOTrainer whose evaluation is `Validation` (greedy answers on held-out samples), so
    Trainer's eval schedule, logging and best-checkpoint keeping work on its metrics."""

    def __init__(self, *args, validation: Validation, **kwargs):
        super().__init__(*args, **kwargs)
        self.validation = validation

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        metrics = self.validation.run(self).metrics(metric_key_prefix)
        metrics[f"{metric_key_prefix}_step"] = float(self.state.global_step)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(
            self.args, self.state, self.control, metrics
        )
        return metrics


def placeholder_eval_dataset(count: int):
    """What Trainer is given as ``eval_dataset`` (it refuses an eval schedule without one): the
    held-out row numbers; `ValidatingGRPOTrainer.evaluate` reads the samples itself."""
    from datasets import Dataset

    return Dataset.from_dict({"heldout_index": list(range(count))})


def best_checkpoint(state) -> dict | None:
    """The best checkpoint Trainer kept, and its metric, for the run's summary; None without."""
    if state.best_model_checkpoint is None:
        return None
    return {
        "checkpoint": state.best_model_checkpoint,
        "metric": state.best_metric,
        "step": state.best_global_step,
    }


# --------------------------------------------------------------------------- the recipe


@dataclass
class ValidationArguments:
    """The held-out set a GRPO run is validated on (no validation without eval_dataset_path)."""

    eval_dataset_path: str | None = field(
        default=None,
        metadata={
            "help": "Held-out samples validated every eval_steps (greedy answers): a saved "
            "dataset in the evaluation layout (image, text, mask) or the training layout "
            "(image, problem, solution), or a folder as prepare_data.py --folder reads."
        },
    )
    eval_dataset_split: str = field(
        default="test", metadata={"help": "Split of eval_dataset_path (a saved DatasetDict)."}
    )
    eval_samples: int | None = field(
        default=64, metadata={"help": "Validate on the first N held-out samples (null: all)."}
    )
    eval_segmentation_model: str | None = field(
        default=None,
        metadata={
            "help": "SAM2 checkpoint: also score masks (eval_giou, eval_ciou) where the held-out "
            "set has them."
        },
    )


def configure_schedule(args, config) -> None:
    """With a held-out set: evaluate every `eval_steps` (default: `save_steps`) and keep the best
    checkpoint by `metric_for_best_model` (default ``box_iou``)."""
    if not args.eval_dataset_path:
        return
    if str(config.eval_strategy) in ("no", "IntervalStrategy.NO"):
        config.eval_strategy = "steps"
    if config.eval_steps is None:
        config.eval_steps = config.save_steps
    if config.metric_for_best_model is None:
        config.metric_for_best_model = "box_iou"
        config.greater_is_better = True


def validation_problems(args, config) -> list[str]:
    """The held-out set must load and be non-empty, masks must exist for a segmentation model,
    every evaluation step must be a save step (so the best one has a checkpoint) and the best
    metric must be one validation reports."""
    strategy = str(getattr(config.eval_strategy, "value", config.eval_strategy))
    if not args.eval_dataset_path:
        if strategy != "no":
            return [f"eval_strategy={strategy} needs eval_dataset_path (the held-out set)"]
        return []
    from segzero_training.heldout import open_heldout

    problems = []
    try:
        heldout = open_heldout(args.eval_dataset_path, args.eval_dataset_split)
    except (OSError, ValueError) as error:
        return [f"eval_dataset_path: {error}"]
    if len(heldout) == 0:
        problems.append(f"eval_dataset_path: {heldout.description} has no samples")
    if args.eval_segmentation_model and heldout.layout == "training":
        problems.append(
            "eval_segmentation_model: the held-out set is in the training layout (boxes, no "
            "masks), so there are no masks to score; drop it or use an evaluation-layout set"
        )
    save, every = config.save_steps, config.eval_steps
    if save >= 1 and every >= 1 and every % save:  # below 1: fractions of the run (Trainer)
        problems.append(
            f"eval_steps: {every:g} is not a multiple of save_steps={save:g}, so the best "
            "evaluated step may have no checkpoint to keep; make eval_steps a multiple of it"
        )
    metric = str(config.metric_for_best_model).removeprefix("eval_")
    wanted = METRICS if args.eval_segmentation_model else METRICS[:2]
    if metric not in wanted:
        problems.append(f"metric_for_best_model: {metric!r} is not one of {list(wanted)}")
    return problems


def build_validation(args, config, processor):
    """The run's `Validation`, or None without a held-out set."""
    if not args.eval_dataset_path:
        return None
    from segzero_training.heldout import open_heldout

    return Validation(
        open_heldout(args.eval_dataset_path, args.eval_dataset_split),
        run_family(args),
        max_new_tokens=config.max_completion_length or 1024,
        batch_size=config.per_device_eval_batch_size,
        samples=args.eval_samples,
        segmentation_model=args.eval_segmentation_model,
    )
