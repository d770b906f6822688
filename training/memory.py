"""The GPU memory a GRPO run needs, estimated before anything is loaded (pre-flight).

`estimate_memory` is pure arithmetic on the model's sizes (`ModelSize`: parameter counts by
part, counted on the meta device from its config, and the widths) and the run's shape
(`RunShape`, from the recipe), per training process, in bytes:

- **weights**: every parameter in ``dtype`` (bf16: 2 bytes); with ``load_in_4bit`` the
  language model's linear weights in NF4 with double quantisation (0.516 bytes each), the rest
  (embeddings, norms, vision tower, LM head) in ``dtype``;
- **reference**: full fine-tuning with ``beta`` > 0 loads a second copy as the KL reference;
  LoRA needs none (the reference is the model with its adapters off);
- **adapters, gradients, optimizer**: the trainable parameters (LoRA's A and B in float32; for
  full fine-tuning every weight but a frozen vision tower, in ``dtype``), one gradient each and
  AdamW's two moments in the parameter's dtype;
- **activations** of one micro-batch (``per_device_train_batch_size`` sequences of prompt +
  ``max_completion_length`` tokens): with gradient checkpointing each decoder layer's input
  (layers x tokens x hidden) plus one layer recomputed in full during backward (per token
  7 x hidden + 2 x kv width + 4 x intermediate, plus the LoRA-targeted inputs that dropout
  copies), without it every layer in full; a trained vision tower adds the same per patch;
  attention through sdpa or flash attention (no tokens x tokens matrix);
- **log-probs**: TRL 1.16 never holds the whole logits: its chunked kernel projects 4,096
  tokens x 32,768 vocabulary entries at a time, plus the float32 gradient of the hidden states;
- **KV cache**: transformers' generate holds keys and values for the whole generation batch
  (``per_device_train_batch_size`` x ``steps_per_generation`` sequences): layers x 2 x kv
  heads x head dim x (prompt + completion) x sequences x bytes; with **prefill**, the largest
  transient of generation's first forward (the MLP's gate, up and product over every prompt
  token, or the vision tower's MLP over every patch); none with vLLM;
- **overhead**: 1 GiB for the CUDA context and what is not itemised (the generation batch's
  pixel values, allocator slack).

Total = weights + reference + adapters + gradients + optimizer + overhead + the larger of
training (activations + log-probs) and generation (KV cache + prefill), which do not overlap.
It is an estimate from the shapes, not a measurement: it is meant to say in seconds whether a
run has a chance on a GPU, not to replace watching ``nvidia-smi``.

`memory_problems` (called by the GRPO pre-flight) logs the estimate and compares it with the
visible GPU: a total above the GPU's memory is a warning (the estimate may be pessimistic, and
``max_completion_length`` is a bound rarely reached); weights and optimizer state alone above
it make the run impossible and are refused. Under DeepSpeed or FSDP, which shard these over the
processes, there is no estimate (the arithmetic here is for one process holding everything).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, fields

logger = logging.getLogger(__name__)

GIB = 1024**3
# bitsandbytes NF4 with double quantisation: 4 bits per weight, an 8-bit absmax per block of
# 64 weights and a float32 absmax per 256 of those blocks.
NF4_BYTES = 0.5 + 1 / 64 + 4 / (64 * 256)
OVERHEAD = GIB
# TRL 1.16's chunked log-prob kernel (trl/kernels/chunked_logprob.py): tokens x vocabulary
# entries projected at a time.
LOGPROB_TOKENS = 4096
LOGPROB_VOCAB = 32768


@dataclass(frozen=True)
class ModelSize:
    """A model's parameter counts by part and the widths the activation terms need."""

    parameters: int  # all (tied weights once)
    vision_parameters: int  # the vision tower (model.visual)
    quantized_parameters: int  # the language model's linear weights: what 4-bit loading packs
    lora_parameters: int  # A and B of every targeted layer at the run's rank
    lora_inputs: int  # per decoder layer: the targeted layers' input widths (dropout copies)
    layers: int
    hidden: int
    intermediate: int
    kv_width: int  # key/value heads x head dim
    vocab: int
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    patch_size: int
    merge_size: int

    def patches(self, image_size: int) -> int:
        """Vision patches of one square image of `image_size` pixels."""
        return (image_size // self.patch_size) ** 2

    def image_tokens(self, image_size: int) -> int:
        """Language-model tokens of one square image (patches merged merge x merge)."""
        return self.patches(image_size) // self.merge_size**2


@dataclass(frozen=True)
class RunShape:
    """What the recipe sets that the memory depends on (per training process)."""

    weight_bytes: int  # the loaded dtype: 2 for bf16 / fp16, 4 for float32
    activation_bytes: int  # 2 under bf16 / fp16 autocast (or a 4-bit base), else weight_bytes
    batch: int  # per_device_train_batch_size: sequences per forward / backward
    generation_batch: int  # sequences generated at once (x steps_per_generation)
    prompt_tokens: int  # image tokens included
    completion_tokens: int  # max_completion_length
    image_size: int
    lora: bool = False
    lora_dropout: bool = False
    load_in_4bit: bool = False
    train_vision: bool = True
    reference_model: bool = True  # beta > 0
    gradient_checkpointing: bool = True
    generation: bool = True  # transformers' generate on this GPU (False: vLLM)


@dataclass(frozen=True)
class MemoryEstimate:
    """The parts of `estimate_memory`, in bytes."""

    weights: float
    reference: float
    adapters: float
    gradients: float
    optimizer: float
    activations: float
    log_probs: float
    kv_cache: float
    prefill: float
    overhead: float

    @property
    def state(self) -> float:
        """What stays for the whole run: weights, reference, adapters, gradients, optimizer."""
        return self.weights + self.reference + self.adapters + self.gradients + self.optimizer

    @property
    def training(self) -> float:
        return self.activations + self.log_probs

    @property
    def generation(self) -> float:
        return self.kv_cache + self.prefill

    @property
    def total(self) -> float:
        return self.state + self.overhead + max(self.training, self.generation)

    def report(self) -> str:
        """One line per part and the total, in GiB."""
        lines = [f"  {f.name:<12}{getattr(self, f.name) / GIB:8.2f} GiB" for f in fields(self)]
        lines.append(
            f"  total       {self.total / GIB:8.2f} GiB (state + overhead + the larger of "
            f"training {self.training / GIB:.2f} and generation {self.generation / GIB:.2f})"
        )
        return "\n".join(lines)


def estimate_memory(size: ModelSize, run: RunShape) -> MemoryEstimate:
    """The GPU memory of one training process (see the module docstring for each part)."""
    p, a = size.parameters, run.activation_bytes
    if run.load_in_4bit:
        weights = size.quantized_parameters * NF4_BYTES
        weights += (p - size.quantized_parameters) * run.weight_bytes
    else:
        weights = p * run.weight_bytes
    reference = p * run.weight_bytes if run.reference_model and not run.lora else 0
    if run.lora:
        trainable, trainable_bytes = size.lora_parameters, 4
    else:
        trainable = p - (0 if run.train_vision else size.vision_parameters)
        trainable_bytes = run.weight_bytes
    adapters = trainable * trainable_bytes if run.lora else 0

    tokens = run.batch * (run.prompt_tokens + run.completion_tokens)
    layer = 7 * size.hidden + 2 * size.kv_width + 4 * size.intermediate
    if run.lora and run.lora_dropout:
        layer += size.lora_inputs
    if run.gradient_checkpointing:
        activations = tokens * (size.layers * size.hidden + layer) * a
    else:
        activations = tokens * size.layers * layer * a
    if run.train_vision:
        patches = run.batch * size.patches(run.image_size)
        block = 9 * size.vision_hidden + 4 * size.vision_intermediate
        depth = size.vision_depth
        if run.gradient_checkpointing:
            activations += patches * (depth * size.vision_hidden + block) * a
        else:
            activations += patches * depth * block * a

    completions = run.batch * run.completion_tokens
    log_probs = min(completions, LOGPROB_TOKENS) * min(size.vocab, LOGPROB_VOCAB) * a
    log_probs += completions * size.hidden * 4

    kv_cache = prefill = 0
    if run.generation:
        sequences, length = run.generation_batch, run.prompt_tokens + run.completion_tokens
        kv_cache = size.layers * 2 * size.kv_width * length * sequences * a
        language = sequences * run.prompt_tokens * (3 * size.intermediate + 2 * size.hidden)
        vision = sequences * size.patches(run.image_size) * 3 * size.vision_intermediate
        prefill = max(language, vision) * a
    return MemoryEstimate(
        weights=weights,
        reference=reference,
        adapters=adapters,
        gradients=trainable * trainable_bytes,
        optimizer=2 * trainable * trainable_bytes,
        activations=activations,
        log_probs=log_probs,
        kv_cache=kv_cache,
        prefill=prefill,
        overhead=OVERHEAD,
    )


# --------------------------------------------------------------------------- from the recipe


def model_size(model_config, target_modules, lora_r: int) -> ModelSize:
    """`ModelSize` of a Qwen2.5-VL / Qwen3-VL config: the parameters counted on the meta
    device (nothing allocated), LoRA's on the layers `segzero_training.lora` targets."""
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.integrations import deepspeed

    from segzero_training.lora import NOT_QUANTIZED, VISION_TOWER, is_target

    # transformers builds every model through DeepSpeed's zero.Init while a ZeRO-3 config is
    # registered (any ZeRO-3 TrainingArguments alive in the process): not on the meta device.
    registered = deepspeed._hf_deepspeed_config_weak_ref
    deepspeed.unset_hf_deepspeed_config()
    try:
        with torch.device("meta"):
            model = AutoModelForImageTextToText.from_config(model_config)
    finally:
        deepspeed._hf_deepspeed_config_weak_ref = registered
    unique = {id(p): p for p in model.parameters()}
    vision = {id(p): p for n, p in model.named_parameters() if VISION_TOWER in n.split(".")}
    quantized = lora = lora_inputs = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if is_target(name, target_modules):
            lora += lora_r * (module.in_features + module.out_features)
            lora_inputs += module.in_features if ".layers.0." in name else 0
        if not any(name == skip or name.startswith(f"{skip}.") for skip in NOT_QUANTIZED):
            quantized += module.weight.numel()
    text = model_config.get_text_config()
    vision_config = model_config.vision_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    return ModelSize(
        parameters=sum(p.numel() for p in unique.values()),
        vision_parameters=sum(p.numel() for p in vision.values()),
        quantized_parameters=quantized,
        lora_parameters=lora,
        lora_inputs=lora_inputs,
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        kv_width=text.num_key_value_heads * head_dim,
        vocab=text.vocab_size,
        vision_depth=vision_config.depth,
        vision_hidden=vision_config.hidden_size,
        vision_intermediate=vision_config.intermediate_size,
        patch_size=vision_config.patch_size,
        merge_size=vision_config.spatial_merge_size,
    )


def dtype_bytes(dtype: str, model_config) -> int:
    """Bytes per weight of the recipe's ``dtype`` ("auto": the checkpoint's own)."""
    import torch

    if dtype == "auto":
        dtype = getattr(model_config, "dtype", None) or "float32"
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    return torch.empty((), dtype=dtype).element_size()


def run_shape(args, config, *, weight_bytes: int, prompt_tokens: int, image_size: int):
    """`RunShape` of the recipe: `args` (SegZeroArguments) and `config` (GRPOConfig)."""
    autocast = bool(config.bf16 or config.fp16 or args.load_in_4bit)
    processes = max(int(getattr(config, "world_size", 1) or 1), 1)
    if config.generation_batch_size:
        generation_batch = config.generation_batch_size // processes
    else:
        generation_batch = config.per_device_train_batch_size * (config.steps_per_generation or 1)
    checkpointing = getattr(config, "activation_checkpointing", None)
    if checkpointing is None:
        checkpointing = config.gradient_checkpointing
    return RunShape(
        weight_bytes=weight_bytes,
        activation_bytes=2 if autocast else weight_bytes,
        batch=config.per_device_train_batch_size,
        generation_batch=generation_batch,
        prompt_tokens=prompt_tokens,
        completion_tokens=config.max_completion_length,
        image_size=image_size,
        lora=args.lora,
        lora_dropout=args.lora_dropout > 0,
        load_in_4bit=args.load_in_4bit,
        train_vision=not args.lora and not args.freeze_vision_tower,
        reference_model=config.beta != 0,
        gradient_checkpointing=bool(checkpointing),
        generation=not config.use_vllm,
    )


def prompt_tokens(processor, prompt: list[dict], image_size: int) -> int:
    """Tokens of one training prompt with its square image, as the processor makes them."""
    from PIL import Image

    text = processor.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    image = Image.new("RGB", (image_size, image_size))
    return int(processor(text=[text], images=[image], return_tensors="pt")["input_ids"].shape[1])


def visible_gpu_memory() -> int | None:
    """Total memory of this process's GPU (``LOCAL_RANK``), None without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    index = int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count()
    return torch.cuda.get_device_properties(index).total_memory


def memory_problems(args, config, model_config, processor, prompt, image_size: int) -> list[str]:
    """Log the run's `estimate_memory`, and compare it with the visible GPU (none: nothing to
    compare): a total above the GPU's memory (less vLLM's share when colocated) is a warning;
    weights and optimizer state alone above it are refused, naming the keys that shrink them.
    Not estimated under DeepSpeed or FSDP, which shard the state over the processes."""
    if config.deepspeed or config.fsdp:
        logger.info("no memory estimate: DeepSpeed / FSDP shard the state over the processes")
        return []
    size = model_size(model_config, args.lora_target_modules, args.lora_r)
    tokens = prompt_tokens(processor, prompt, image_size)
    run = run_shape(
        args,
        config,
        weight_bytes=dtype_bytes(args.dtype, model_config),
        prompt_tokens=tokens,
        image_size=image_size,
    )
    estimate = estimate_memory(size, run)
    logger.info(
        "GPU memory estimate per process (not a measurement; training/memory.py): %.1f GiB for "
        "%d prompt + %d completion tokens, %d sequences per backward, %d generated at once\n%s",
        estimate.total / GIB,
        tokens,
        run.completion_tokens,
        run.batch,
        run.generation_batch,
        estimate.report(),
    )
    gpu = None if getattr(config, "use_cpu", False) else visible_gpu_memory()
    if gpu is None:
        return []
    usable, what = gpu, f"the visible GPU's {gpu / GIB:.1f} GiB"
    if config.use_vllm and config.vllm_mode == "colocate":
        usable = gpu * (1 - config.vllm_gpu_memory_utilization)
        what += f" less vLLM's vllm_gpu_memory_utilization={config.vllm_gpu_memory_utilization}"
    if estimate.state > usable:
        return [
            f"the weights and optimizer state alone need ~{estimate.state / GIB:.1f} GiB, more "
            f"than {what}: set lora=true (adapters only), load_in_4bit=true (with lora), or "
            "spread the state over several GPUs with deepspeed"
        ]
    if estimate.total > usable:
        logger.warning(
            "the run may not fit: ~%.1f GiB estimated, %s. Lower per_device_train_batch_size "
            "(raising gradient_accumulation_steps), steps_per_generation or "
            "max_completion_length, or set lora=true / load_in_4bit=true",
            estimate.total / GIB,
            what,
        )
    return []
