"""What the GRPO and SFT scripts share around their TRL trainer: the model and data arguments,
reading the command line, the metrics file, resuming, the final save that `segzero infer`
loads, and leaving torchrun's process group."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from segzero_model.reasoning.prompts import RECIPE_FILE
from segzero_model.reasoning.reply_format import DEFAULT_VARIANT, VARIANTS

logger = logging.getLogger(__name__)

EXIT_BAD_RECIPE = 2
METRICS_FILE = "metrics.jsonl"
CHECK_FLAG = "--check"
CHECK_HELP = "only run the pre-flight checks (no weights are loaded), then exit"


@dataclass
class ModelDataArguments:
    """The base model, the training data and the answer variant (fields both scripts take)."""

    model_name_or_path: str = field(
        default="Qwen/Qwen2.5-VL-3B-Instruct",
        metadata={"help": "Base model: a hub id or a local checkpoint directory."},
    )
    dataset_path: str | None = field(
        default=None,
        metadata={"help": "Training data saved by training/prepare_data.py (or the released)."},
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of dataset_path."})
    max_samples: int | None = field(
        default=None, metadata={"help": "Train on the first N rows only (quick runs)."}
    )
    dtype: Literal["bfloat16", "float16", "float32", "auto"] = field(
        default="bfloat16",
        metadata={
            "help": "Dtype the model is loaded in; without DeepSpeed also the dtype of the "
            "weights the optimizer updates (bf16=true computes in bf16 either way)."
        },
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "e.g. flash_attention_2 or sdpa; None: transformers'."}
    )
    answer: str = field(
        default=DEFAULT_VARIANT,
        metadata={
            "help": "What the model answers (Table 2 ablation).",
            "choices": list(VARIANTS),  # the one list: segzero_model.reasoning.reply_format
        },
    )
    model_family: str = field(
        default="auto",
        metadata={
            "help": "Model family (segzero_model.reasoning.families): the prompt, answer format "
            "and image "
            "size trained with; auto: the base model's (by its model_type and recipe), else "
            "seg_zero, vision_reasoner, qwen3_vl or a family .yaml file."
        },
    )
    tiny: bool = field(
        default=False,
        metadata={
            "help": "Train the built-in tiny random Qwen2.5-VL instead of model_name_or_path: a "
            "smoke test of the whole loop in a minute on a CPU (the model learns nothing useful)."
        },
    )

    def use_tiny_model(self) -> None:
        """With tiny=true, point model_name_or_path at the built-in tiny checkpoint of the run's
        model_family (built once into the tiny-model cache, `segzero_model.tiny.tiny_models`)."""
        if self.tiny:
            from segzero_model.tiny import TINY_WARNING, tiny_models

            logger.warning(TINY_WARNING)
            self.model_name_or_path = str(tiny_models(self.model_family)[0])

    def family(self):
        """The `segzero_model.reasoning.families.Family` this run trains in: `model_family` for
        the base model (ValueError naming the choices for an unknown family or one that does
        not serve the base model's type)."""
        from segzero_model.reasoning.families import family_for_checkpoint
        from segzero_model.reasoning.local import resolve_checkpoint

        return family_for_checkpoint(resolve_checkpoint(self.model_name_or_path), self.model_family)

    def family_record(self) -> str:
        """What `RECIPE_FILE` records as ``family`` (read back by `family_for_checkpoint`): the
        family's name, or the absolute path of a family .yaml file."""
        if Path(self.model_family).suffix.lower() in (".yaml", ".yml"):
            return str(Path(self.model_family).expanduser().resolve())
        return self.family().name

    def model_init_kwargs(self, given: dict | None) -> dict:
        """The trainer's model_init_kwargs: the user's, with this recipe's dtype and attention."""
        init = dict(given or {})
        init["dtype"] = self.dtype
        if self.attn_implementation:
            init["attn_implementation"] = self.attn_implementation
        return init


def read_command_line(parser, argv: list[str] | None, checks) -> tuple:
    """``(args, config, given, check_only)`` from the command line (`sys.argv` when None) read
    by `parser` (`segzero_training.recipe.recipe_parser`), after `checks`; RecipeError lists every
    problem. ``--help`` prints the help and exits 0, as argparse does."""
    import sys

    from segzero_training.recipe import parse_recipe, split_command_line

    command_line = split_command_line(sys.argv[1:] if argv is None else argv, parser)
    if command_line.help:
        parser.print_help()
        raise SystemExit(0)
    args, config, given = parse_recipe(parser, command_line, checks=checks)
    args.use_tiny_model()
    return args, config, given, CHECK_FLAG in command_line.flags


def metrics_callback(output_dir: str):
    """A TrainerCallback appending every log (rewards, lengths, loss, KL) to metrics.jsonl, one
    JSON object per line with its step: the curves, without TensorBoard or W&B."""
    from transformers import TrainerCallback

    class MetricsFileCallback(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs:
                path = Path(output_dir) / METRICS_FILE
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as file:
                    file.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return MetricsFileCallback()


def resume_argument(config) -> str | bool | None:
    """What Trainer.train(resume_from_checkpoint=...) takes: True = the latest checkpoint."""
    value = config.resume_from_checkpoint
    if value in (None, "", "false", "False"):
        return None
    return True if value in ("true", "True") else value


def leave_process_group() -> None:
    """Under torchrun: end the process group before exit. Left to the interpreter's exit, gloo's
    threads can outlive it and a rank aborts ("terminate called without an active exception")
    after the run has finished and saved."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def save_final(trainer, output_dir: str, args: ModelDataArguments, **recipe) -> Path:
    """Model + processor in Hugging Face format, the trainer state (log history), and
    `RECIPE_FILE`: the method, base model, data and prompt variant that produced them (the
    reasoner reads the variant back). A LoRA run (``args.lora``) saves its merged model there
    and its adapter in ``output_dir/adapter`` (`segzero_training.lora.save_merged`)."""
    output = Path(output_dir)
    if getattr(args, "lora", False):
        from segzero_training.lora import save_merged

        save_merged(trainer, output, args)
    else:
        trainer.save_model(str(output))
    trainer.save_state()
    if trainer.accelerator.is_main_process:
        values = asdict(args)
        record = {
            "base_model": values.pop("model_name_or_path"),
            "steps": trainer.state.global_step,
            "family": args.family_record(),
            **recipe,
            **values,
        }
        (output / RECIPE_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return output
