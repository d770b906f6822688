"""Supervised fine-tuning (SFT) baseline: the paper's comparison to GRPO, on the same data.

    python training/sft.py --config training/configs/sft_3b.yaml [--key value ...]
    accelerate launch --num_processes 8 training/sft.py --config ... [--key value ...]
    python training/sft.py --config ... --check     # only the pre-flight checks
    python training/sft.py --help                   # every key, with its help and default

The model sees each training image (840x840) with the no-thinking prompt of
`segzero_model.reasoning.prompts` and is taught, by cross-entropy on the answer tokens only (TRL's
`SFTTrainer`, completion-only loss), to reply with the ground truth as
``<answer>{"bbox": [...], "points_1": [...], "points_2": [...]}</answer>``: the output format of
the GRPO model without the reasoning (`segzero_training.conversation.sft_dataset`); a model
family answering a list of objects is taught its list, ``<answer>[{"bbox_2d": [...],
"point_2d": [...]}]</answer>``, in its frame, after its prompt without thinking. Keys are
the fields of `SFTScriptArguments` and of TRL's `SFTConfig`; ``key=value`` is accepted for
``--key value`` (`segzero_training.recipe`).

Every problem the pre-flight checks find (`segzero_training.preflight`: model, data, output
directory, DeepSpeed, batch sizes, an image the processor would resize, a ``max_length`` that
would cut an example) is reported at once, exit code 2. Defaults are this baseline's
(`SegZeroSFTConfig`), ``max_length`` among them: None, not TRL's 1024, which would cut the
answer off examples of ~1,000 tokens (900 of them the image).
The loss is logged every ``logging_steps`` (also to ``OUTPUT_DIR/metrics.jsonl``); checkpoints
(``checkpoint-N``) resume with ``--resume_from_checkpoint true``. The final model and processor
are saved in Hugging Face format in ``output_dir`` with ``segzero_recipe.json`` beside them,
ready for ``segzero infer --reasoning-model OUTPUT_DIR``.

Exit codes: 0 done; 2 bad recipe (every problem listed).
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Literal

from transformers.trainer_utils import SchedulerType
from trl import SFTConfig

from segzero_training import preflight
from segzero_training.recipe import RecipeError, new_default, recipe_parser
from segzero_training.runs import (
    CHECK_FLAG,
    CHECK_HELP,
    EXIT_BAD_RECIPE,
    ModelDataArguments,
    leave_process_group,
    metrics_callback,
    read_command_line,
    resume_argument,
    save_final,
)

logger = logging.getLogger(__name__)


@dataclass
class SFTScriptArguments(ModelDataArguments):
    """What to fine-tune, on what, and which answer it learns to give."""

    dtype: Literal["bfloat16", "float16", "float32", "auto"] = field(
        default="float32",
        metadata={
            "help": "Dtype the model is loaded in; without DeepSpeed also the dtype of the "
            "weights the optimizer updates (bf16=true computes in bf16 either way)."
        },
    )
    global_batch_size: int | None = field(
        default=None,
        metadata={
            "help": "Examples per optimizer step, checked against per_device_train_batch_size x "
            "processes x gradient_accumulation_steps; None: not checked."
        },
    )


@dataclass
class SegZeroSFTConfig(SFTConfig):
    """TRL's SFTConfig with this baseline's defaults (training/configs/sft_3b.yaml says why)."""

    learning_rate: float = new_default(SFTConfig, "learning_rate", 1e-5)
    lr_scheduler_type: SchedulerType | str = new_default(SFTConfig, "lr_scheduler_type", "cosine")
    warmup_steps: float = new_default(SFTConfig, "warmup_steps", 0.03)
    weight_decay: float = new_default(SFTConfig, "weight_decay", 0.01)
    max_length: int | None = field(
        default=None,
        metadata={"help": "Token limit per example; None (no limit): the image alone is 900."},
    )
    logging_steps: float = new_default(SFTConfig, "logging_steps", 1)
    save_steps: float = new_default(SFTConfig, "save_steps", 100)
    report_to: None | str | list[str] = new_default(SFTConfig, "report_to", "none")
    output_dir: str | None = new_default(SFTConfig, "output_dir", "runs/sft")


# --------------------------------------------------------------------------- pre-flight


def recipe_checks(values, given: set[str]) -> list[str]:
    """Checks on the parsed values alone (nothing loaded): batch arithmetic, then those of
    every training script (`preflight.trainer_problems`)."""
    problems = preflight.example_batch_problems(
        values.global_batch_size,
        values.per_device_train_batch_size,
        values.gradient_accumulation_steps,
        preflight.world_size(),
    )
    return problems + preflight.trainer_problems(values, given)


def length_problems(processor, example: dict, max_length: int | None) -> list[str]:
    """`example` (an `sft_dataset` row) collated exactly as in training, untruncated, must fit
    `max_length`: the collator cuts the end, so the answer would go first, then image tokens."""
    if max_length is None:
        return []
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    collator = DataCollatorForVisionLanguageModeling(processor, completion_only_loss=True)
    length = int(collator([dict(example)])["input_ids"].shape[1])
    if length <= max_length:
        return []
    return [
        f"max_length={max_length} would cut the examples: the first takes {length} tokens (900 "
        "of them the image, then the prompt and the answer); set max_length=null (no limit)"
    ]


def model_and_data_problems(args: SFTScriptArguments, config: SFTConfig) -> list[str]:
    """Checks that load the model's config and processor and the dataset (not the weights):
    the model family must answer in a form the targets are written in and have a prompt
    without thinking, its image size one the processor keeps."""
    family, processor, size, problems = preflight.family_and_data_problems(args, "sft")
    if problems:
        return problems
    from transformers import AutoConfig

    from segzero_model.reasoning.local import resolve_checkpoint

    path = resolve_checkpoint(args.model_name_or_path)
    example = load_sft_dataset(args, limit=1)[0]
    completion_text = example["completion"][0]["content"][0]["text"]
    problems = preflight.prompt_problems(
        processor,
        AutoConfig.from_pretrained(path),
        example["prompt"],
        max_completion_length=len(processor.tokenizer(completion_text)["input_ids"]) + 2,
        image_size=size,
    )
    return problems + length_problems(processor, example, config.max_length)


def build_parser():
    """The command line: TRL's parser of the two dataclasses, plus --config and --check."""
    return recipe_parser(
        (SFTScriptArguments, SegZeroSFTConfig),
        prog="sft.py",
        description=__doc__,
        flags={CHECK_FLAG: CHECK_HELP},
    )


def parse_and_check(argv: list[str] | None):
    """(SFTScriptArguments, SFTConfig, check_only) after every pre-flight check passed;
    RecipeError with all problems otherwise (`sys.argv` when `argv` is None)."""
    args, config, _, check_only = read_command_line(build_parser(), argv, [recipe_checks])
    problems = model_and_data_problems(args, config)
    if problems:
        raise RecipeError(problems)
    return args, config, check_only


# --------------------------------------------------------------------------- training


def load_sft_dataset(args: SFTScriptArguments, limit: int | None = None):
    """The training rows (the first `max_samples`, or `limit`) as prompt-completion pairs."""
    from segzero_training.conversation import sft_dataset
    from segzero_training.prepare_data import load_training_dataset

    dataset = load_training_dataset(args.dataset_path, args.dataset_split)
    count = min(n for n in (args.max_samples, limit, len(dataset)) if n is not None)
    if count < len(dataset):
        dataset = dataset.select(range(count))
    return sft_dataset(dataset, answer=args.answer, family=args.family())


def build_trainer(args: SFTScriptArguments, config: SFTConfig):
    """An SFTTrainer for the recipe: the model by path (loaded by TRL in `dtype`), its
    processor, the data as prompt-completion pairs with their images. TRL's default for such
    data (``completion_only_loss`` unset) trains on the answer only: the prompt is given."""
    from transformers import AutoProcessor
    from trl import SFTTrainer

    from segzero_model.reasoning.local import resolve_checkpoint

    with config.main_process_first(desc="training data"):
        dataset = load_sft_dataset(args)
    path = resolve_checkpoint(args.model_name_or_path)
    config.model_init_kwargs = args.model_init_kwargs(config.model_init_kwargs)
    return SFTTrainer(
        model=str(path),
        args=config,
        train_dataset=dataset,
        processing_class=AutoProcessor.from_pretrained(path),
        callbacks=[metrics_callback(config.output_dir)],
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args, config, check_only = parse_and_check(argv)
    except RecipeError as error:
        print(f"sft.py: {error}", file=sys.stderr)
        return EXIT_BAD_RECIPE
    if check_only:
        print("sft.py: pre-flight checks passed")
        return 0
    try:
        trainer = build_trainer(args, config)
        trainer.train(resume_from_checkpoint=resume_argument(config))
        output = save_final(trainer, config.output_dir, args, method="sft", thinking=False)
        logger.info("final model saved in %s", output)
        return 0
    finally:
        leave_process_group()


if __name__ == "__main__":
    sys.exit(main())
