"""Checks that run before training starts, so a run fails in seconds, not after hours.

Each check returns a list of problems (empty when fine); each problem names the key to change.
The training scripts collect all of them and report them together (`segzero_training.recipe`).
The two that cost users of the official code the most: batch sizes that do not divide, and an
image that the processor resizes (or a length limit that cuts its tokens), which silently
moves the square answer frame (`REASONING_SIZE` for Seg-Zero).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from segzero_model.reasoning.families import AnswerFormat, Frame
from segzero_model.reasoning.frames import REASONING_SIZE

QWEN_VL_TYPES = ("qwen2_5_vl", "qwen2_vl")
# The answers the rewards and SFT targets read: one object in pixels
# (segzero_model.rewards.single_object),
# a list of objects in pixels or 0..1000 (segzero_model.rewards.objects).
TRAINABLE_ANSWERS = (
    (AnswerFormat.SINGLE, Frame.ABSOLUTE),
    (AnswerFormat.LIST, Frame.ABSOLUTE),
    (AnswerFormat.LIST, Frame.RELATIVE_1000),
)
# Seg-Zero's ablation switches: defaults a list-answer family must keep (its rewards are
# VisionReasoner's, which have no soft or box-only/points-only versions).
_SINGLE_OBJECT_SWITCHES = (
    ("answer", "box_points"),
    ("format_reward", "strict"),
    ("accuracy_reward", "hard"),
    ("json_decoding", "released"),  # the list rewards json.loads the answer, as released
)


def world_size() -> int:
    """Processes of this run (``accelerate launch`` sets WORLD_SIZE; a plain python run is 1)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def model_problems(name: str, key: str = "model_name_or_path") -> list[str]:
    """The model must be a complete local checkpoint (or cached / downloadable hub id) of a
    model type some family serves (`families.SUPPORTED_MODEL_TYPES`); `family_problems` then
    says whether its family can be trained."""
    from segzero_model.errors import ModelNotFoundError
    from segzero_model.reasoning.families import SUPPORTED_MODEL_TYPES
    from segzero_model.reasoning.local import resolve_checkpoint

    try:
        path = resolve_checkpoint(name)
    except ModelNotFoundError as error:
        return [f"{key}: {error}"]
    model_type = json.loads((path / "config.json").read_text()).get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        return [
            f"{key}: {name!r} is a {model_type!r} model; Seg-Zero trains {SUPPORTED_MODEL_TYPES}"
        ]
    return []


def family_problems(args, method: str) -> tuple[object, list[str]]:
    """``(family, problems)`` of the run's model family (`ModelDataArguments.family`; family
    None when it cannot be chosen). `method` "grpo" or "sft". The family's answer must be one
    the rewards and SFT targets read (`TRAINABLE_ANSWERS`); a list-answer family keeps Seg-Zero's
    ablation switches at their defaults; SFT and thinking=false need a prompt without thinking."""
    try:
        family = args.family()
    except ValueError as error:
        return None, [f"model_family: {error}"]
    problems = []
    if (family.answer, family.frame) not in TRAINABLE_ANSWERS:
        problems.append(
            f"model_family: {family.name!r} answers {family.answer.value!r} in the "
            f"{family.frame.value!r} frame; training reads "
            f"{tuple((a.value, f.value) for a, f in TRAINABLE_ANSWERS)} (answer, frame)"
        )
    if family.answers_list:
        for key, default in _SINGLE_OBJECT_SWITCHES:
            value = getattr(args, key, default)
            if value != default:
                problems.append(
                    f"{key}: {value!r} is a Seg-Zero single-object ablation; {family.name!r} "
                    f"answers a list of objects and trains with VisionReasoner's rewards "
                    f"(keep {key}={default})"
                )
    thinking = method == "grpo" and getattr(args, "thinking", True)
    if not thinking and family.prompt_without_thinking is None:
        what = "SFT" if method == "sft" else "thinking=false"
        problems.append(
            f"model_family: {family.name!r} has no prompt without thinking, which {what} "
            "needs (write one as prompt_without_thinking in a family .yaml file)"
        )
    return family, problems


def model_family_problems(args, method: str) -> tuple[object, object, list[str]]:
    """``(family, processor, problems)``: `model_problems`, then `family_problems`, then
    `image_size_problems` with the base model's processor (family or processor None when
    not reached)."""
    problems = model_problems(args.model_name_or_path)
    if problems:
        return None, None, problems
    family, problems = family_problems(args, method)
    if family is None:
        return None, None, problems
    from transformers import AutoProcessor

    from segzero_model.reasoning.local import resolve_checkpoint

    processor = AutoProcessor.from_pretrained(resolve_checkpoint(args.model_name_or_path))
    return family, processor, problems + image_size_problems(processor, family.image_size)


def family_and_data_problems(args, method: str) -> tuple[object, object, int, list[str]]:
    """``(family, processor, image size, problems)`` of what GRPO and SFT both check:
    `model_family_problems`, then `dataset_problems` at the family's image size and answer
    form (Seg-Zero's when the family is not reached)."""
    family, processor, problems = model_family_problems(args, method)
    size = family.image_size if family is not None else REASONING_SIZE
    problems += dataset_problems(
        args.dataset_path,
        args.dataset_split,
        image_size=size,
        answer=family.answer if family is not None else AnswerFormat.SINGLE,
    )
    return family, processor, size, problems


def image_size_problems(processor, image_size: int) -> list[str]:
    """The processor must keep the family's square image as it is (`families.check_image_size`),
    else the answer's frame is not the image the model saw."""
    from segzero_model.reasoning.families import check_image_size

    try:
        check_image_size(processor, image_size)
    except ValueError as error:
        return [f"model_family: {error}"]
    return []


def dataset_problems(
    path: str | None,
    split: str,
    key: str = "dataset_path",
    image_size: int = REASONING_SIZE,
    answer: AnswerFormat | str = AnswerFormat.SINGLE,
) -> list[str]:
    """The training data must load (`prepare_data.load_training_dataset`), be non-empty and
    hold `image_size` square images (the model family's; `REASONING_SIZE` for Seg-Zero): the
    solutions are in that frame, so the images cannot be resized without them. A family
    answering one object (`answer` `AnswerFormat.SINGLE`, or its value) cannot train on
    solutions that list several (VisionReasoner's data)."""
    from segzero_model.targets import is_objects_solution
    from segzero_training.prepare_data import load_training_dataset

    if not path:
        return [f"{key} is not set: point it at a dataset made by training/prepare_data.py"]
    try:
        dataset = load_training_dataset(path, split)
    except (FileNotFoundError, ValueError) as error:
        hint = "dataset_split" if "split" in str(error) else key
        return [f"{hint}: {error}"]
    if len(dataset) == 0:
        return [f"{key}: split {split!r} of {path} has no rows"]
    size = dataset[0]["image"].size
    if size != (image_size, image_size):
        return [
            f"{key}: images must be {image_size}x{image_size} (the model family's image size, "
            f"the frame the solutions are in), the first is {size[0]}x{size[1]}; rebuild it with "
            "training/prepare_data.py (--image-size, or --resize for an existing dataset)"
        ]
    if AnswerFormat(answer) is AnswerFormat.SINGLE and is_objects_solution(dataset[0]["solution"]):
        return [
            f"{key}: its solutions are lists of objects (VisionReasoner's form), but the model "
            "family answers one object: train a list-answer family (vision_reasoner, qwen3_vl) "
            "on it, or use single-object data"
        ]
    return []


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The ``checkpoint-N`` directory with the highest N in `output_dir`, or None."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = [
        (int(match.group(1)), child)
        for child in folder.iterdir()
        if child.is_dir() and (match := re.fullmatch(r"checkpoint-(\d+)", child.name))
    ]
    return max(steps)[1] if steps else None


def output_dir_problems(output_dir: str, resume: object) -> list[str]:
    """Refuse to start over silently on top of an earlier run's checkpoints, or to resume from
    a checkpoint that does not exist."""
    latest = latest_checkpoint(output_dir)
    if resume in (None, False, "", "false", "False"):
        if latest is not None:
            return [
                f"output_dir {output_dir} already holds checkpoints (latest {latest.name}): set "
                "resume_from_checkpoint=true to continue that run, or choose another output_dir"
            ]
        return []
    if resume in (True, "true", "True"):
        if latest is None:
            return [
                f"resume_from_checkpoint=true but {output_dir} holds no checkpoint-N directory; "
                "unset it to start a new run"
            ]
        return []
    if not Path(str(resume)).is_dir():
        return [f"resume_from_checkpoint: {resume} is not a directory"]
    return []


def batch_problems(
    *,
    global_batch_size: int,
    num_generations: int,
    per_device_train_batch_size: int,
    gradient_accumulation_steps: int,
    processes: int,
) -> list[str]:
    """One optimizer step must train on exactly `global_batch_size` prompts x `num_generations`
    samples, and every micro-batch split must keep whole groups of one prompt's samples."""
    problems = []
    if num_generations < 2:
        problems.append(
            f"num_generations={num_generations}: GRPO compares samples of the same prompt, so it "
            "needs at least 2 (the paper uses 8; 16 for the final model)"
        )
        return problems
    wanted = global_batch_size * num_generations
    per_step = per_device_train_batch_size * processes
    have = per_step * gradient_accumulation_steps
    if have != wanted:
        hint = ""
        if wanted % per_step == 0:
            hint = f"; set gradient_accumulation_steps={wanted // per_step}"
        problems.append(
            f"global_batch_size={global_batch_size} prompts x num_generations={num_generations} = "
            f"{wanted} completions per step, but per_device_train_batch_size="
            f"{per_device_train_batch_size} x {processes} process(es) x "
            f"gradient_accumulation_steps={gradient_accumulation_steps} = {have}{hint}"
        )
    elif have % num_generations:
        problems.append(
            f"{have} completions per step do not split into groups of num_generations="
            f"{num_generations}"
        )
    return problems


def prompt_problems(
    processor,
    model_config,
    prompt: list[dict],
    *,
    max_completion_length: int,
    vllm_max_model_length: int | None = None,
    image_size: int = REASONING_SIZE,
) -> list[str]:
    """Tokenise one real prompt with its square image (`image_size`, the model family's: 840
    for Seg-Zero): the processor must keep the image at that size (else the model answers in
    another frame), and prompt + completion must fit every length limit, so no image token is
    ever cut."""
    from PIL import Image

    image = Image.new("RGB", (image_size, image_size))
    text = processor.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    batch = processor(text=[text], images=[image], return_tensors="pt")
    problems = []
    patch = getattr(processor.image_processor, "patch_size", 14)
    _, rows, cols = (int(v) for v in batch["image_grid_thw"][0])
    if (rows * patch, cols * patch) != (image_size, image_size):
        problems.append(
            f"the processor resizes the {image_size}x{image_size} image to "
            f"{cols * patch}x{rows * patch}: set max_pixels >= {image_size**2} and "
            f"min_pixels <= {image_size**2} in the model's preprocessor_config.json"
        )
    prompt_tokens = int(batch["input_ids"].shape[1])
    total = prompt_tokens + max_completion_length
    text_config = getattr(model_config, "text_config", model_config)
    limits = {"the model's max_position_embeddings": text_config.max_position_embeddings}
    if vllm_max_model_length is not None:
        limits["vllm_max_model_length"] = vllm_max_model_length
    for name, limit in limits.items():
        if limit is not None and total > limit:
            problems.append(
                f"a prompt takes {prompt_tokens} tokens (image included) and max_completion_length"
                f"={max_completion_length}: {total} > {name}={limit}; lower max_completion_length"
                + (" or raise vllm_max_model_length" if name == "vllm_max_model_length" else "")
            )
    return problems


def _enabled(section: object) -> object:
    return section.get("enabled", False) if isinstance(section, dict) else False


def deepspeed_problems(
    deepspeed: object,
    *,
    dtype: str,
    bf16: bool,
    fp16: bool,
    per_device_train_batch_size: int,
    gradient_accumulation_steps: int,
    processes: int,
) -> list[str]:
    """A DeepSpeed ZeRO config (path or dict) must exist, be ZeRO-2 or ZeRO-3, and agree with
    the model's dtype and the trainer's precision and batch sizes ("auto" always agrees)."""
    if not deepspeed:
        return []
    import importlib.util

    problems = []
    if importlib.util.find_spec("deepspeed") is None:
        problems.append("deepspeed is set but DeepSpeed is not installed: pip install deepspeed")
    if isinstance(deepspeed, dict):
        config = deepspeed
    else:
        path = Path(str(deepspeed))
        if not path.is_file():
            return problems + [f"deepspeed: config file {path} does not exist"]
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            return problems + [f"deepspeed: {path} is not valid JSON ({error})"]
    stage = (config.get("zero_optimization") or {}).get("stage")
    if stage not in (2, 3):
        problems.append(
            f"deepspeed: zero_optimization.stage is {stage!r}; use training/configs/zero2.json "
            "or zero3.json (ZeRO-2 or ZeRO-3)"
        )
    ds_bf16, ds_fp16 = _enabled(config.get("bf16")), _enabled(config.get("fp16"))
    if ds_bf16 is True and (not bf16 or dtype not in ("bfloat16", "auto")):
        problems.append(
            f"deepspeed: the config enables bf16 but the model is loaded as dtype={dtype} with "
            f"bf16={bf16}: set dtype=bfloat16 and bf16=true, or bf16.enabled 'auto' in the config"
        )
    if ds_fp16 is True and (not fp16 or dtype not in ("float16", "auto")):
        problems.append(
            f"deepspeed: the config enables fp16 but the model is loaded as dtype={dtype} with "
            f"fp16={fp16}: Qwen2.5-VL trains in bf16; set fp16.enabled 'auto' or false"
        )
    fixed = {
        "train_micro_batch_size_per_gpu": per_device_train_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "train_batch_size": per_device_train_batch_size * processes * gradient_accumulation_steps,
    }
    for name, expected in fixed.items():
        value = config.get(name, "auto")
        if value != "auto" and value != expected:
            problems.append(
                f"deepspeed: {name}={value} in the config but the trainer uses {expected}; "
                f'write "{name}": "auto" in the config'
            )
    return problems


def precision_problems(
    *, dtype: str, deepspeed: object, fsdp: object, learning_rate: float, lora: bool | None = None
) -> list[str]:
    """Without DeepSpeed or FSDP, which keep fp32 master weights, the optimizer updates the
    loaded weights themselves: in 16 bits an AdamW step of ~learning_rate is below their
    resolution (bf16 steps by ~1e-4 around 0.02) and is rounded away. With LoRA (`lora` True;
    None: the script has no LoRA) the loaded weights stay frozen and float32 adapters train
    (`segzero_training.lora`)."""
    if dtype in ("float32", "auto") or deepspeed or fsdp or lora:
        return []
    fixes = "set deepspeed=training/configs/zero2.json (fp32 master weights)"
    fixes += ", dtype=float32 (bf16=true still computes in bf16)"
    if lora is not None:
        fixes += ", or lora=true (the 16-bit base stays frozen, float32 adapters train)"
    return [
        f"dtype={dtype} without deepspeed or fsdp trains 16-bit weights directly, and AdamW "
        f"steps of ~learning_rate={learning_rate:g} round away: {fixes}"
    ]


# transformers' new names and their deprecated aliases: when both are given the alias is ignored.
RENAMED_TRAINING_KEYS = {
    "gradient_checkpointing": "activation_checkpointing",
    "gradient_checkpointing_kwargs": "activation_checkpointing_kwargs",
}


def alias_problems(given: set[str]) -> list[str]:
    """A key given under both names (e.g. the recipe file's new one, the old one on the command
    line) would be silently ignored in its old spelling."""
    return [
        f"{old} and {new} are both set; {old} (its deprecated name) would be ignored: set {new}"
        for old, new in RENAMED_TRAINING_KEYS.items()
        if old in given and new in given
    ]


def model_init_problems(model_init_kwargs: object) -> list[str]:
    """dtype and attention are the recipe's own keys; set twice, one would silently win."""
    init = model_init_kwargs
    if isinstance(init, str):  # TRL decodes a JSON string later; look inside it now
        try:
            init = json.loads(init)
        except json.JSONDecodeError:
            return [f"model_init_kwargs: {init!r} is not a JSON object"]
    init = init if isinstance(init, dict) else {}
    return [
        f"model_init_kwargs: set {key} as its own key ({key}=...), not in model_init_kwargs"
        for key in ("dtype", "attn_implementation")
        if key in init
    ]


def tiny_problems(tiny: bool, given: set[str]) -> list[str]:
    """tiny=true chooses the model; a model_name_or_path given as well would be ignored."""
    if tiny and "model_name_or_path" in given:
        return [
            "tiny=true trains the built-in tiny model, but model_name_or_path is set too: "
            "remove one of them"
        ]
    return []


def trainer_problems(values, given: set[str]) -> list[str]:
    """The checks every training script runs on its parsed values (a namespace with the script
    arguments and TRL's config): output directory, DeepSpeed config, weight precision, keys
    given under two names or inside model_init_kwargs, a model chosen twice."""
    problems = output_dir_problems(values.output_dir, values.resume_from_checkpoint)
    problems += tiny_problems(values.tiny, given)
    problems += deepspeed_problems(
        values.deepspeed,
        dtype=values.dtype,
        bf16=bool(values.bf16),
        fp16=bool(values.fp16),
        per_device_train_batch_size=values.per_device_train_batch_size,
        gradient_accumulation_steps=values.gradient_accumulation_steps,
        processes=world_size(),
    )
    problems += precision_problems(
        dtype=values.dtype,
        deepspeed=values.deepspeed,
        fsdp=values.fsdp,
        learning_rate=values.learning_rate,
        lora=getattr(values, "lora", None),  # None: a script without LoRA (sft.py)
    )
    problems += alias_problems(given)
    return problems + model_init_problems(values.model_init_kwargs)


def example_batch_problems(
    global_batch_size: int | None, per_device: int, accumulation: int, processes: int
) -> list[str]:
    """SFT: one optimizer step must train on `global_batch_size` examples, whatever the GPU
    count (None: not checked)."""
    have = per_device * processes * accumulation
    if global_batch_size is None or have == global_batch_size:
        return []
    hint = ""
    if global_batch_size % (per_device * processes) == 0:
        hint = f"; set gradient_accumulation_steps={global_batch_size // (per_device * processes)}"
    return [
        f"global_batch_size={global_batch_size} but per_device_train_batch_size={per_device} x "
        f"{processes} process(es) x gradient_accumulation_steps={accumulation} = {have}{hint}"
    ]
