"""LoRA and QLoRA GRPO: low-rank adapters on the language model, and the merged export.

    python training/grpo.py --config training/configs/lora_3b_24gb.yaml       # one 24 GB GPU
    python training/grpo.py --config ... lora=true load_in_4bit=true         # QLoRA (CUDA)
    python training/lora.py runs/lora_3b_24gb/checkpoint-200 runs/lora_3b_24gb-200  # merge one

With ``lora: true`` TRL's `GRPOTrainer` wraps the base model in PEFT adapters (`peft_config`):
every weight of the base model stays frozen, and only rank-``lora_r`` matrices A (r x in) and
B (out x r, zero at the start) beside each targeted linear layer train, adding
``lora_alpha / lora_r * B @ A`` to its weight. The adapters are kept in float32 whatever the
base's dtype, so AdamW's small steps are not rounded away (a bf16 base is fine: it is frozen).
With ``beta`` > 0 the KL reference is the same model with its adapters switched off, so no
second copy of the model is loaded.

Targets: the ``lora_target_modules`` (by default all seven linear layers of each decoder layer:
attention q, k, v, o and the MLP's gate, up, down) of the **language model only**. The vision
tower gets no adapters and stays frozen: Seg-Zero's reward teaches reasoning and the answer's
format and coordinates, which the language model writes from the image features; leaving the
tower out also keeps its activations (3,600 patches per 840x840 image, 32 blocks) out of the
backward pass, the memory a small GPU lacks. Full fine-tuning (``lora: false``) still trains
the tower, for those who have the memory.

``load_in_4bit: true`` (QLoRA) loads the language model's linear weights in 4-bit NF4 through
bitsandbytes (double quantisation, bf16 compute); the vision tower and the LM head stay in
``dtype``. It needs a CUDA GPU and bitsandbytes (``pip install -e '.[qlora]'``), and LoRA; the
pre-flight checks say so, naming the key.

The result (`save_merged`): the adapter in ``OUTPUT_DIR/adapter`` (PEFT's format), and in
``OUTPUT_DIR`` itself the merged model, W + alpha/r * B @ A in every targeted layer, as a plain
Hugging Face checkpoint with the processor and ``segzero_recipe.json``, so ``segzero infer``,
``training/evaluate.py`` and the node load it as any other checkpoint. The merge reloads the
base model on the CPU in ``dtype``, never quantised: an adapter trained on a 4-bit base is
merged into the full-precision base (QLoRA's usual export; the merged model differs from the
trained one by the base's quantisation error). An intermediate ``checkpoint-N`` holds only the
adapter (and the optimizer state); ``python training/lora.py CHECKPOINT OUTPUT`` (`main`) merges
it the same way into a checkpoint that loads anywhere.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

# The linear layers of a Qwen2.5-VL / Qwen3-VL decoder layer.
DEFAULT_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
VISION_TOWER = "visual"  # the vision tower's module (model.visual) in transformers 5
ADAPTER_DIR = "adapter"  # OUTPUT_DIR/adapter: the trained adapter, in PEFT's format
# Kept out of 4-bit: the vision tower (image features the answer's coordinates come from; 0.67 B
# parameters, so 4-bit would save ~1 GB) and the LM head (transformers keeps it by default).
NOT_QUANTIZED = ("model.visual", "lm_head")


@dataclass
class LoraArguments:
    """LoRA / QLoRA: low-rank adapters on the language model (training/lora.py)."""

    lora: bool = field(
        default=False,
        metadata={
            "help": "Train LoRA adapters on the language model instead of every weight; the "
            "merged model is saved in output_dir, the adapter in output_dir/adapter."
        },
    )
    lora_r: int = field(default=16, metadata={"help": "LoRA rank r (with lora=true)."})
    lora_alpha: int = field(
        default=32, metadata={"help": "LoRA alpha: the update is lora_alpha / lora_r * B @ A."}
    )
    lora_dropout: float = field(
        default=0.05, metadata={"help": "Dropout on the adapters' inputs (0 <= p < 1)."}
    )
    lora_target_modules: list[str] = field(
        default_factory=lambda: list(DEFAULT_TARGET_MODULES),
        metadata={
            "help": "Names of the language model's linear layers that get adapters (the vision "
            "tower never does)."
        },
    )
    load_in_4bit: bool = field(
        default=False,
        metadata={
            "help": "QLoRA: load the language model's linear weights in 4-bit NF4 (bitsandbytes, "
            "CUDA only; needs lora=true)."
        },
    )


def target_pattern(names) -> str:
    """The regular expression (PEFT's `target_modules` as a string: matched against the whole
    module name) for the linear layers called `names` outside the vision tower."""
    alternatives = "|".join(re.escape(name) for name in names)
    return rf"(?!(?:.*\.)?{VISION_TOWER}\.).*\.(?:{alternatives})"


def is_target(module_name: str, names) -> bool:
    """Whether PEFT puts an adapter on the linear layer `module_name` (as named in the base
    model: ``model.language_model.layers.0.self_attn.q_proj``)."""
    return re.fullmatch(target_pattern(names), module_name) is not None


def lora_config(args: LoraArguments):
    """The PEFT `LoraConfig` of the recipe."""
    from peft import LoraConfig

    return LoraConfig(
        r=args.lora_r,
        lora_alpha=args.lora_alpha,
        lora_dropout=args.lora_dropout,
        target_modules=target_pattern(args.lora_target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )


def quantization_config():
    """QLoRA's 4-bit loading: NF4 with double quantisation and bf16 compute, the vision tower
    and the LM head left as they are (`NOT_QUANTIZED`)."""
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=list(NOT_QUANTIZED),
    )


def trainer_arguments(args: LoraArguments) -> dict:
    """What `GRPOTrainer` takes for the recipe's LoRA: ``peft_config`` (and
    ``quantization_config`` with load_in_4bit); nothing without lora."""
    if not args.lora:
        return {}
    extra = {"peft_config": lora_config(args)}
    if args.load_in_4bit:
        extra["quantization_config"] = quantization_config()
    return extra


def keep_adapters_in_float32(model) -> int:
    """Cast the trainable parameters (the adapters) back to float32; returns how many tensors
    were cast. TRL casts a quantised model's adapters to bf16, where AdamW steps of ~1e-5 on
    weights of ~0.02 (resolution ~1e-4) round away; under bf16 autocast they still compute in
    bf16. PEFT's own default (autocast_adapter_dtype) is float32 too."""
    import torch

    cast = 0
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype != torch.float32:
            parameter.data = parameter.data.float()
            cast += 1
    return cast


def prepare_trainer(trainer, args: LoraArguments) -> None:
    """After `GRPOTrainer` is built, before train() builds the optimizer: float32 adapters on a
    4-bit base (`keep_adapters_in_float32`; not under DeepSpeed, whose ZeRO-3 wants the base's
    dtype, and which keeps float32 master weights itself), and the trainable share in the log."""
    if not args.lora:
        return
    if args.load_in_4bit and not trainer.is_deepspeed_enabled:
        keep_adapters_in_float32(trainer.model)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    logger.info(
        "LoRA: %d trainable parameters of %d (%.2f%%)", trainable, total, 100 * trainable / total
    )


# --------------------------------------------------------------------------- pre-flight


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def bitsandbytes_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def lora_problems(values) -> list[str]:
    """The LoRA keys must make an adapter (rank, alpha, dropout, targets); 4-bit loading needs
    LoRA (a quantised base cannot be trained itself), bitsandbytes and a CUDA GPU."""
    if not values.lora and not values.load_in_4bit:
        return []
    problems = []
    if values.lora:
        if values.lora_r < 1:
            problems.append(f"lora_r={values.lora_r}: the LoRA rank must be >= 1 (16 is usual)")
        if values.lora_alpha <= 0:
            problems.append(f"lora_alpha={values.lora_alpha} must be > 0 (usually 2 x lora_r)")
        if not 0 <= values.lora_dropout < 1:
            problems.append(f"lora_dropout={values.lora_dropout} must be in [0, 1)")
        if not values.lora_target_modules:
            problems.append(
                "lora_target_modules is empty: name the linear layers that get adapters, e.g. "
                + " ".join(DEFAULT_TARGET_MODULES)
            )
    if values.load_in_4bit:
        if not values.lora:
            problems.append(
                "load_in_4bit=true quantises the base model, which cannot then be trained "
                "itself: set lora=true (QLoRA) or load_in_4bit=false"
            )
        if not bitsandbytes_installed():
            problems.append(
                "load_in_4bit=true needs bitsandbytes, which is not installed: pip install -e "
                "'.[qlora]' (or set load_in_4bit=false)"
            )
        if not cuda_available():
            problems.append(
                "load_in_4bit=true needs a CUDA GPU (bitsandbytes' 4-bit weights), and none is "
                "visible: set load_in_4bit=false"
            )
    return problems


# --------------------------------------------------------------------------- the result


def adapter_base(adapter_dir: str | Path) -> Path:
    """The local checkpoint of the base model a PEFT adapter records (its
    ``base_model_name_or_path``, resolved as `segzero infer` resolves a model)."""
    from peft import PeftConfig

    from segzero_model.reasoning.local import resolve_checkpoint

    return resolve_checkpoint(PeftConfig.from_pretrained(str(adapter_dir)).base_model_name_or_path)


def merge_adapter(
    adapter_dir: str | Path, output_dir: str | Path, *, base: str | Path | None = None, dtype="auto"
) -> Path:
    """Merge the PEFT adapter in `adapter_dir` (``OUTPUT_DIR/adapter`` or a ``checkpoint-N``)
    into its base model and save the result in Hugging Face format in `output_dir` (weights and
    config only). The base (`base`, else `adapter_base`) is loaded on the CPU in `dtype`
    ("auto": the checkpoint's own), never quantised."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from segzero_model.reasoning.local import resolve_checkpoint

    base = resolve_checkpoint(str(base)) if base else adapter_base(adapter_dir)
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch_dtype, device_map="cpu")
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(output_dir))
    return Path(output_dir)


def save_merged(trainer, output_dir: str | Path, args) -> Path:
    """The end of a LoRA run: the adapter in ``output_dir/adapter`` (with the processor), then
    (main process) the merged model and the processor in `output_dir`, so the run's result
    loads as a plain checkpoint (`merge_adapter`)."""
    from segzero_model.reasoning.local import resolve_checkpoint

    output = Path(output_dir)
    adapter = output / ADAPTER_DIR
    trainer.save_model(str(adapter))
    if trainer.accelerator.is_main_process:
        merge_adapter(
            adapter, output, base=resolve_checkpoint(args.model_name_or_path), dtype=args.dtype
        )
        trainer.processing_class.save_pretrained(str(output))
        logger.info("LoRA adapter in %s, merged model in %s", adapter, output)
    return output


def main(argv: list[str] | None = None) -> int:
    """``python training/lora.py ADAPTER OUTPUT [--base MODEL] [--dtype DTYPE]``: merge a LoRA
    run's adapter (a ``checkpoint-N`` or ``OUTPUT_DIR/adapter``) into a plain checkpoint, with
    the processor saved beside the adapter and the run's ``segzero_recipe.json`` when there is
    one (in the adapter's folder or the one above it)."""
    from transformers import AutoProcessor

    from segzero_model.reasoning.local import resolve_checkpoint
    from segzero_model.reasoning.prompts import RECIPE_FILE

    parser = argparse.ArgumentParser(
        prog="lora.py", description="Merge a LoRA adapter into its base model (training/lora.py)."
    )
    parser.add_argument("adapter", type=Path, help="checkpoint-N or OUTPUT_DIR/adapter")
    parser.add_argument("output", type=Path, help="new directory for the merged checkpoint")
    parser.add_argument("--base", help="base model (default: the adapter's own record of it)")
    parser.add_argument(
        "--dtype", default="auto", choices=["auto", "bfloat16", "float16", "float32"],
        help="dtype of the merged weights (default: the base checkpoint's)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if not (args.adapter / "adapter_config.json").is_file():
        print(f"lora.py: {args.adapter} holds no adapter_config.json", file=sys.stderr)
        return 2
    if args.output.exists() and any(args.output.iterdir()):
        print(f"lora.py: {args.output} exists and is not empty", file=sys.stderr)
        return 2
    merge_adapter(args.adapter, args.output, base=args.base, dtype=args.dtype)
    processor = args.adapter  # a checkpoint-N and OUTPUT_DIR/adapter hold the run's processor
    if not (processor / "processor_config.json").is_file():
        processor = resolve_checkpoint(args.base) if args.base else adapter_base(args.adapter)
    AutoProcessor.from_pretrained(processor).save_pretrained(str(args.output))
    for folder in (args.adapter, args.adapter.parent):
        if (folder / RECIPE_FILE).is_file():
            shutil.copy(folder / RECIPE_FILE, args.output / RECIPE_FILE)
            break
    print(f"lora.py: merged {args.adapter} into {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
