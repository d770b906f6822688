"""GRPO training of the Seg-Zero reasoning model: pure RL from rule-based rewards (TRL).

    python training/grpo.py --config training/configs/seg_zero_3b.yaml [--key value ...]
    accelerate launch --num_processes 8 training/grpo.py --config ... [--key value ...]
    python training/grpo.py --config ... --check     # only the pre-flight checks
    python training/grpo.py --help                   # every key, with its help and default
    python training/grpo.py --config training/configs/smoke.yaml   # a 1-minute CPU run

The model gets each training image (840x840) and the prompt of `segzero_model.reasoning.prompts`
(or of the recipe's ``model_family``, `segzero_model.reasoning.families`, at its image size),
samples ``num_generations`` completions per prompt and is pushed towards the ones the rewards score
higher: Seg-Zero's for one object (`segzero_model.rewards.single_object`), VisionReasoner's for a
family that answers a list of objects (`segzero_model.rewards.objects`, in the family's frame:
pixels, or 0..1000 for Qwen3-VL); SAM2 plays no part in training. Keys are the fields of
`SegZeroArguments` (model, data and the paper's ablation switches) and of TRL's `GRPOConfig`,
whose defaults here are the paper's (`SegZeroGRPOConfig`); ``key=value`` is accepted for
``--key value`` (`segzero_training.recipe`).

Before anything is loaded for training, every check of `segzero_training.preflight` runs and all
problems are reported at once (exit code 2). During training TRL logs each reward's mean
(``rewards/<name>_reward/mean``) and the completion length (``completions/mean_length``) every
step, the curves of the paper's Figures 7 and 8; they are also appended to
``OUTPUT_DIR/metrics.jsonl``. Checkpoints (``checkpoint-N``) resume with
``--resume_from_checkpoint true``. The final model and processor are saved in Hugging Face
format in ``output_dir`` with ``segzero_recipe.json`` beside them, ready for
``segzero infer --reasoning-model OUTPUT_DIR``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from typing import Literal

from trl import GRPOConfig

from segzero_training import lora, preflight
from segzero_training.lora import LoraArguments
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
from segzero_training.validation import (
    ValidatingGRPOTrainer,
    ValidationArguments,
    best_checkpoint,
    build_validation,
    configure_schedule,
    placeholder_eval_dataset,
    validation_problems,
)
from segzero_training.vllm_checks import vllm_available, vllm_problems

logger = logging.getLogger(__name__)


@dataclass
class SegZeroArguments(ModelDataArguments, ValidationArguments, LoraArguments):
    """What to train, on what, which of the paper's reward recipes, and what to validate on."""

    global_batch_size: int = field(
        default=16,
        metadata={
            "help": "Prompts per optimizer step (the paper's batch size); each is sampled "
            "num_generations times."
        },
    )
    thinking: bool = field(
        default=True,
        metadata={"help": "False: no <think> in the prompt and no thinking reward (no-CoT)."},
    )
    format_reward: Literal["strict", "soft"] = field(
        default="strict",
        metadata={
            "help": "strict: the exact answer keys; soft: any key containing bbox / point "
            "(Table 4)."
        },
    )
    accuracy_reward: Literal["hard", "soft"] = field(
        default="hard",
        metadata={
            "help": "hard: 1 or 0 by a threshold (IoU > 0.5, L1 < 10 px, ...); soft: graded "
            "(the IoU itself, ...) (Table 3)."
        },
    )
    json_decoding: Literal["released", "tolerant"] = field(
        default="released",
        metadata={
            "help": "How the single-object rewards read the reply's JSON: released (the first "
            "{...} of the reply, json.loads, as the released rewards: single quotes score 0) or "
            "tolerant (the answer's first object, single quotes and trailing commas forgiven)."
        },
    )
    freeze_vision_tower: bool = field(
        default=False,
        metadata={"help": "Train only the language model; the vision encoder stays as loaded."},
    )

    def reward_names(self) -> tuple[str, ...]:
        """Seg-Zero's recipe from the paper's switches, or VisionReasoner's rewards when the
        model family answers a list of objects."""
        from segzero_model.rewards.registry import object_recipe_rewards, recipe_rewards

        if self.family().answers_list:
            return object_recipe_rewards(thinking=self.thinking)
        return recipe_rewards(
            thinking=self.thinking,
            format=self.format_reward,
            accuracy=self.accuracy_reward,
            answer=self.answer,
        )


@dataclass
class SegZeroGRPOConfig(GRPOConfig):
    """TRL's GRPOConfig with the paper's defaults (Section 4.1 and the official recipe).
    Gradient checkpointing is on by TRL's own default."""

    learning_rate: float = new_default(GRPOConfig, "learning_rate", 1e-6)
    weight_decay: float = new_default(GRPOConfig, "weight_decay", 0.01)
    beta: float = new_default(GRPOConfig, "beta", 0.005, help="KL coefficient to the reference.")
    num_generations: int | None = new_default(GRPOConfig, "num_generations", 8)
    temperature: float = new_default(GRPOConfig, "temperature", 1.0)
    max_completion_length: int | None = new_default(GRPOConfig, "max_completion_length", 1024)
    per_device_train_batch_size: int = new_default(GRPOConfig, "per_device_train_batch_size", 8)
    gradient_accumulation_steps: int = new_default(GRPOConfig, "gradient_accumulation_steps", 16)
    bf16: bool | None = new_default(GRPOConfig, "bf16", True)
    logging_steps: float = new_default(GRPOConfig, "logging_steps", 1)
    save_steps: float = new_default(GRPOConfig, "save_steps", 50)
    report_to: None | str | list[str] = new_default(GRPOConfig, "report_to", "none")
    output_dir: str | None = new_default(GRPOConfig, "output_dir", "runs/seg_zero")


# --------------------------------------------------------------------------- pre-flight


def recipe_checks(values, given: set[str]) -> list[str]:
    """Checks on the parsed values alone (no model or data loaded): batch arithmetic, those of
    every training script (`preflight.trainer_problems`), LoRA's."""
    problems = preflight.batch_problems(
        global_batch_size=values.global_batch_size,
        num_generations=values.num_generations or 0,
        per_device_train_batch_size=values.per_device_train_batch_size,
        gradient_accumulation_steps=values.gradient_accumulation_steps,
        processes=preflight.world_size(),
    )
    problems += preflight.trainer_problems(values, given)
    problems += lora.lora_problems(values)
    return problems


def model_and_data_problems(args: SegZeroArguments, config: GRPOConfig) -> list[str]:
    """Checks that load the model's config and processor and the dataset (not the weights):
    the model family must answer in a form the rewards read, its image size one the processor
    keeps, the data in that size and form."""
    family, processor, size, problems = preflight.family_and_data_problems(args, "grpo")
    if problems:
        return problems
    from transformers import AutoConfig

    from segzero_model.reasoning.local import resolve_checkpoint
    from segzero_training.conversation import training_messages
    from segzero_training.memory import memory_problems

    model_config = AutoConfig.from_pretrained(resolve_checkpoint(args.model_name_or_path))
    prompt = training_messages("the object", family, thinking=args.thinking, answer=args.answer)
    return preflight.prompt_problems(
        processor,
        model_config,
        prompt,
        max_completion_length=config.max_completion_length,
        vllm_max_model_length=config.vllm_max_model_length if config.use_vllm else None,
        image_size=size,
    ) + memory_problems(args, config, model_config, processor, prompt, size)


def build_parser():
    """The command line: TRL's parser of the two dataclasses, plus --config and --check."""
    return recipe_parser(
        (SegZeroArguments, SegZeroGRPOConfig),
        prog="grpo.py",
        description=__doc__,
        flags={CHECK_FLAG: CHECK_HELP},
    )


def training_dataset(args: SegZeroArguments):
    """The rows GRPOTrainer samples from: the prompts of the recipe's family and variant, and
    the columns its rewards read (``image_size``, ``json_decoding``) as TRL passes them."""
    from segzero_training.conversation import grpo_dataset
    from segzero_training.prepare_data import load_training_dataset

    dataset = load_training_dataset(args.dataset_path, args.dataset_split)
    if args.max_samples is not None:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    return grpo_dataset(
        dataset,
        thinking=args.thinking,
        answer=args.answer,
        family=args.family(),
        json_decoding=args.json_decoding,
    )


def parse_and_check(argv: list[str] | None):
    """(SegZeroArguments, SegZeroGRPOConfig, check_only) after every pre-flight check passed;
    RecipeError with all problems otherwise (`sys.argv` when `argv` is None)."""
    args, config, given, check_only = read_command_line(build_parser(), argv, [recipe_checks])
    if "use_vllm" not in given:
        config.use_vllm = vllm_available()
    configure_schedule(args, config)
    problems = vllm_problems(config) + model_and_data_problems(args, config)
    problems += validation_problems(args, config)
    if problems:
        raise RecipeError(problems)
    return args, config, check_only


# --------------------------------------------------------------------------- training


def build_trainer(args: SegZeroArguments, config: GRPOConfig):
    """A GRPOTrainer for the recipe: the model (by path, loaded by TRL in `dtype`), the data as
    prompts, the recipe's reward functions, left padding."""
    from transformers import AutoProcessor
    from trl import GRPOTrainer

    from segzero_model.reasoning.local import resolve_checkpoint
    from segzero_model.rewards.registry import get_reward_functions

    dataset = training_dataset(args)
    path = resolve_checkpoint(args.model_name_or_path)
    config.model_init_kwargs = args.model_init_kwargs(config.model_init_kwargs)
    processor = AutoProcessor.from_pretrained(path, padding_side="left")
    validation = build_validation(args, config, processor)
    extra = {}
    if validation is not None:  # greedy answers on the held-out set every eval_steps
        extra = {
            "validation": validation,
            "eval_dataset": placeholder_eval_dataset(validation.count),
        }
    trainer = (GRPOTrainer if validation is None else ValidatingGRPOTrainer)(
        model=str(path),
        reward_funcs=get_reward_functions(args.reward_names()),
        args=config,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[metrics_callback(config.output_dir)],
        **extra,
        **lora.trainer_arguments(args),  # peft_config (and 4-bit loading) with lora=true
    )
    lora.prepare_trainer(trainer, args)
    if args.freeze_vision_tower:  # before train() builds the optimizer
        frozen = [p for name, p in trainer.model.named_parameters() if ".visual." in f".{name}"]
        for parameter in frozen:
            parameter.requires_grad_(False)
        logger.info("vision tower frozen: %d parameter tensors", len(frozen))
    return trainer


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        args, config, check_only = parse_and_check(argv)
    except RecipeError as error:
        print(f"grpo.py: {error}", file=sys.stderr)
        return EXIT_BAD_RECIPE
    logger.info("rewards: %s; vLLM generation: %s", ", ".join(args.reward_names()), config.use_vllm)
    if check_only:
        print("grpo.py: pre-flight checks passed")
        return 0
    try:
        return train_and_save(args, config)
    finally:
        leave_process_group()


def train_and_save(args, config) -> int:
    trainer = build_trainer(args, config)
    trainer.train(resume_from_checkpoint=resume_argument(config))
    best = best_checkpoint(trainer.state)
    output = save_final(
        trainer,
        config.output_dir,
        args,
        method="grpo",
        rewards=list(args.reward_names()),
        best_checkpoint=best,
    )
    logger.info("final model saved in %s", output)
    if best is not None:
        logger.info(
            "best checkpoint by %s: %s (%.4f at step %s)",
            config.metric_for_best_model,
            best["checkpoint"],
            best["metric"],
            best["step"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
