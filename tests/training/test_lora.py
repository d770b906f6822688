"""training/lora.py and training/memory.py: a LoRA GRPO run on the tiny Qwen2.5-VL (CPU) whose
merged result loads in `segzero infer`, the LoRA / QLoRA pre-flight refusals, and the memory
estimate of the 24 GB recipe checked against hand arithmetic on the released 3B config."""

from __future__ import annotations

import dataclasses
import json
import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import infer_trained, tiny_recipe

from segzero_model.reasoning.prompts import RECIPE_FILE
from segzero_model.reasoning.reply_format import completion_text
from segzero_training import grpo, lora, memory, preflight
from segzero_training.recipe import RecipeError

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "training" / "configs" / "lora_3b_24gb.yaml"
R, ALPHA = 4, 8  # the test run's rank and alpha: the update is ALPHA / R * B @ A
GIB = 1024**3


# --------------------------------------------------------------------------- the shared run


def distinct_text_reward(completions, **kwargs) -> list[float]:
    """A test reward that tells any two different completions apart (a hash of the text, in
    [0, 1)). The random tiny model's samples score 0 on every Seg-Zero reward, so without it a
    group's advantages would all be 0 and the adapters would get no gradient at all."""
    return [zlib.crc32(completion_text(c).encode()) / 2**32 for c in completions]


@dataclass(frozen=True)
class LoraRun:
    base: Path  # the base checkpoint (pure random tiny Qwen2.5-VL)
    output: Path  # the run's output_dir


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, training_data_dir) -> LoraRun:
    """Two GRPO steps with LoRA (rank 4, float32, gradient checkpointing on, TRL's default) on a
    random tiny Qwen2.5-VL, through `grpo.main` as a user runs it; shared by the tests below."""
    from segzero_model.rewards import registry as rewards
    from segzero_model.tiny.qwen import write_tiny_qwen

    root = tmp_path_factory.mktemp("lora")
    base = write_tiny_qwen(root / "base", canned_answer=None)
    output = root / "run"
    recipe = tiny_recipe(
        base, training_data_dir, output, "max_steps=2", "lora=true", f"lora_r={R}",
        f"lora_alpha={ALPHA}", "learning_rate=1e-3",
    )  # fmt: skip
    registry = rewards.get_reward_functions
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            rewards, "get_reward_functions", lambda names: [*registry(names), distinct_text_reward]
        )
        assert grpo.main(recipe) == 0
    return LoraRun(base, output)


def tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def on_disk(module: str) -> str:
    """The checkpoint key of a language-model module's weight: transformers names it
    model.language_model.layers... in memory, Qwen2.5-VL's files model.layers..."""
    return module.replace("model.language_model.", "model.", 1) + ".weight"


def adapter_pairs(adapter: dict) -> dict[str, tuple]:
    """{module name: (A, B)} of a saved PEFT adapter."""
    pairs = {}
    for key in adapter:
        if key.endswith(".lora_A.weight"):
            module = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
            pairs[module] = (adapter[key], adapter[key.replace(".lora_A.", ".lora_B.")])
    return pairs


def test_the_adapters_train_on_the_language_model_only(lora_run):
    output = lora_run.output
    logs = [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines()]
    steps = [log for log in logs if "reward" in log]
    assert [log["step"] for log in steps] == [1, 2]
    assert steps[0]["reward_std"] > 0  # the samples scored apart: a real gradient from step 1
    config = json.loads((output / lora.ADAPTER_DIR / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], config["peft_type"]) == (R, ALPHA, "LORA")
    pairs = adapter_pairs(tensors(output / lora.ADAPTER_DIR / "adapter_model.safetensors"))
    names = {module.rsplit(".", 1)[1] for module in pairs}
    assert names == set(lora.DEFAULT_TARGET_MODULES)
    assert len(pairs) == 2 * 7  # the tiny model's 2 decoder layers x 7 linear layers
    assert all(module.startswith("model.language_model.layers.") for module in pairs)
    for module, (a, b) in pairs.items():  # B starts at zero: each one moved
        assert a.shape[0] == R and b.shape[1] == R, module
        assert b.abs().max() > 0, f"{module}: lora_B is still zero"


def test_the_result_is_a_merged_plain_checkpoint(lora_run):
    """W + alpha / r * B @ A in every targeted layer, every other tensor (vision tower,
    embeddings, norms) exactly the base's, under the base checkpoint's own keys."""
    import torch

    output = lora_run.output
    assert not (output / "adapter_config.json").exists()  # else loaders take it for an adapter
    assert json.loads((output / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    base = tensors(lora_run.base / "model.safetensors")
    merged = tensors(output / "model.safetensors")
    assert set(merged) == set(base)
    assert not any("lora" in key or "base_layer" in key for key in merged)
    pairs = adapter_pairs(tensors(output / lora.ADAPTER_DIR / "adapter_model.safetensors"))
    targeted = {on_disk(module) for module in pairs}
    assert targeted <= set(base)
    for module, (a, b) in pairs.items():
        key = on_disk(module)
        update = ALPHA / R * (b @ a)
        torch.testing.assert_close(merged[key], base[key] + update, rtol=0, atol=1e-6)
        assert update.abs().max() > 1e-4, f"{key}: no update to merge"
    for key in set(base) - targeted:
        assert torch.equal(merged[key], base[key]), key
    recipe = json.loads((output / RECIPE_FILE).read_text())
    assert recipe["method"] == "grpo" and recipe["steps"] == 2
    assert (recipe["lora"], recipe["lora_r"], recipe["lora_alpha"]) == (True, R, ALPHA)
    assert recipe["load_in_4bit"] is False


def test_a_checkpoint_merges_to_the_same_model(lora_run, tmp_path, capsys):
    """checkpoint-N holds only the adapter; `python training/lora.py CHECKPOINT OUTPUT` makes it
    a plain checkpoint with the run's processor and recipe (here the final step's, so the
    same weights as the run's own merge)."""
    import torch

    checkpoint, merged = lora_run.output / "checkpoint-2", tmp_path / "merged"
    assert not (checkpoint / "model.safetensors").exists()
    assert lora.main([str(checkpoint), str(merged)]) == 0
    assert f"merged {checkpoint} into {merged}" in capsys.readouterr().out
    final = tensors(lora_run.output / "model.safetensors")
    again = tensors(merged / "model.safetensors")
    assert set(again) == set(final)
    assert all(torch.equal(again[key], final[key]) for key in final)
    assert (merged / RECIPE_FILE).read_text() == (lora_run.output / RECIPE_FILE).read_text()
    assert (merged / "processor_config.json").is_file()
    assert lora.main([str(checkpoint), str(merged)]) == 2  # never over an earlier result
    assert "exists and is not empty" in capsys.readouterr().err
    assert lora.main([str(lora_run.base), str(tmp_path / "other")]) == 2
    assert "holds no adapter_config.json" in capsys.readouterr().err


def test_the_merged_model_answers_in_segzero_infer(lora_run, tiny_sam2_dir, tmp_path, capsys):
    from segzero_model.reasoning.local import Reasoner

    reasoner = Reasoner.from_pretrained(lora_run.output, device="cpu", max_new_tokens=4)
    assert reasoner.generate([np.zeros((48, 64, 3), np.uint8)], ["the cup"])[0].num_tokens >= 1
    infer_trained(lora_run.output, tiny_sam2_dir, tmp_path / "result.json", family="seg_zero")


# --------------------------------------------------------------------------- adapters, 4-bit


def test_targets_are_the_language_models_linear_layers():
    names = lora.DEFAULT_TARGET_MODULES
    assert lora.is_target("model.language_model.layers.3.self_attn.q_proj", names)
    assert lora.is_target("model.language_model.layers.35.mlp.down_proj", names)
    assert not lora.is_target("model.visual.blocks.0.mlp.gate_proj", names)  # same name
    assert not lora.is_target("model.visual.merger.mlp.0", names)
    assert not lora.is_target("lm_head", names)
    assert not lora.is_target("model.language_model.layers.3.self_attn.q_proj_extra", names)


def test_adapters_on_a_16_bit_base_are_kept_in_float32(tiny_qwen_dir):
    """TRL casts a 4-bit base's adapters to bf16; `keep_adapters_in_float32` undoes it (on a
    bf16 base here, which the CPU can load) and the model still trains under bf16 autocast."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_qwen_dir, dtype=torch.bfloat16)
    model = get_peft_model(model, lora.lora_config(lora.LoraArguments(lora=True, lora_r=R)))
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * 2 * 7 and all(".lora_" in name for name in trainable)
    # PEFT's own default on an unquantised bf16 base (the 24 GB recipe): float32 adapters
    assert {p.dtype for p in model.parameters() if p.requires_grad} == {torch.float32}
    for parameter in model.parameters():
        if parameter.requires_grad:  # what TRL does for a quantised base
            parameter.data = parameter.data.to(torch.bfloat16)
    assert lora.keep_adapters_in_float32(model) == len(trainable)
    dtypes = {p.requires_grad: set() for p in model.parameters()}
    for parameter in model.parameters():
        dtypes[parameter.requires_grad].add(parameter.dtype)
    assert dtypes == {True: {torch.float32}, False: {torch.bfloat16}}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=torch.tensor([[1, 2, 3, 4]]), labels=torch.tensor([[1, 2, 3, 4]]))
    loss.loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 for g in grads)


def test_4bit_leaves_the_vision_tower_and_lm_head_unquantised():
    """Checked with transformers' own matching rule for llm_int8_skip_modules."""
    from transformers.quantizers.quantizers_utils import should_convert_module

    skip = lora.quantization_config().llm_int8_skip_modules
    assert should_convert_module("model.language_model.layers.0.mlp.gate_proj", skip)
    assert should_convert_module("model.language_model.layers.11.self_attn.q_proj", skip)
    assert not should_convert_module("model.visual.blocks.0.mlp.gate_proj", skip)
    assert not should_convert_module("model.visual.merger.mlp.0", skip)
    assert not should_convert_module("lm_head", skip)


def test_4bit_is_refused_without_lora_bitsandbytes_or_cuda(
    tiny_qwen_dir, training_data_dir, tmp_path, monkeypatch
):
    monkeypatch.setattr(lora, "cuda_available", lambda: False)
    monkeypatch.setattr(lora, "bitsandbytes_installed", lambda: False)
    recipe = tiny_recipe(tiny_qwen_dir, training_data_dir, tmp_path / "run", "load_in_4bit=true")
    with pytest.raises(RecipeError) as caught:
        grpo.parse_and_check(recipe)
    problems = caught.value.problems
    assert len(problems) == 3 and all(p.startswith("load_in_4bit=true") for p in problems)
    assert "set lora=true (QLoRA)" in problems[0]
    assert "bitsandbytes, which is not installed: pip install" in problems[1]
    assert "needs a CUDA GPU" in problems[2] and "set load_in_4bit=false" in problems[2]

    monkeypatch.setattr(lora, "bitsandbytes_installed", lambda: True)
    with pytest.raises(RecipeError) as caught:
        grpo.parse_and_check([*recipe, "lora=true"])
    (problem,) = caught.value.problems
    assert problem.startswith("load_in_4bit=true needs a CUDA GPU")


def test_bad_lora_keys_are_named():
    values = SimpleNamespace(
        lora=True, lora_r=0, lora_alpha=0, lora_dropout=1.0, lora_target_modules=[],
        load_in_4bit=False,
    )  # fmt: skip
    problems = lora.lora_problems(values)
    assert [p.split("=")[0].split(" ")[0] for p in problems] == [
        "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules",
    ]  # fmt: skip
    assert lora.lora_problems(SimpleNamespace(lora=False, load_in_4bit=False)) == []


def test_lora_lifts_the_16_bit_precision_refusal():
    """A frozen bf16 base with float32 adapters needs no DeepSpeed master weights."""
    keys = {"dtype": "bfloat16", "deepspeed": None, "fsdp": None, "learning_rate": 1e-5}
    (problem,) = preflight.precision_problems(**keys, lora=False)
    assert "or lora=true" in problem
    assert preflight.precision_problems(**keys, lora=True) == []
    (problem,) = preflight.precision_problems(**keys)  # sft.py: no lora key to suggest
    assert "lora" not in problem and "dtype=float32" in problem


# --------------------------------------------------------------------------- the 24 GB recipe


@pytest.fixture(scope="module")
def recipe_values(tiny_qwen_dir, training_data_dir, tmp_path_factory):
    """The shipped 24 GB recipe through the whole pre-flight, the tiny model in the 3B's place
    (the CPU: use_cpu=true for its bf16)."""
    args, config, check_only = grpo.parse_and_check(
        [
            "--config", str(RECIPE), f"model_name_or_path={tiny_qwen_dir}",
            f"dataset_path={training_data_dir}",
            f"output_dir={tmp_path_factory.mktemp('recipe') / 'run'}", "use_cpu=true", "--check",
        ]
    )  # fmt: skip
    assert check_only
    return args, config


def test_the_24gb_recipe_passes_preflight(recipe_values):
    args, config = recipe_values
    assert args.model_name_or_path.endswith("reasoner")  # the tiny stand-in
    assert (args.lora, args.lora_r, args.lora_alpha, args.load_in_4bit) == (True, 16, 32, False)
    assert args.lora_target_modules == list(lora.DEFAULT_TARGET_MODULES)
    assert args.dtype == "bfloat16" and config.bf16 and not config.deepspeed
    assert config.activation_checkpointing and not config.use_vllm
    assert (config.num_generations, config.max_completion_length) == (8, 1024)
    # the paper's 16 prompts x 8 samples per step on one GPU; 32 sequences generated at once
    assert config.per_device_train_batch_size * config.gradient_accumulation_steps == 16 * 8
    assert config.generation_batch_size == 32


@pytest.fixture(scope="module")
def size_3b(tiny_qwen_dir):
    """`ModelSize` of the released Qwen2.5-VL-3B config (counted on the meta device), LoRA at
    the recipe's rank 16 on the default targets."""
    from segzero_model.tiny.real_size import real_size_config

    config = real_size_config("3b", tiny_qwen_dir)
    return config, memory.model_size(config, lora.DEFAULT_TARGET_MODULES, 16)


def test_the_3b_parameter_counts_are_the_hand_counts(size_3b):
    _, size = size_3b
    h, i, layers, kv, vocab = 2048, 11008, 36, 2 * 128, 151936
    # q, k, v with biases, o without; gate, up, down; two RMSNorms
    layer = (h * h + h) + 2 * (h * kv + kv) + h * h + 3 * h * i + 2 * h
    vh, vi = 1280, 3420
    block = 2 * vh + (vh * 3 * vh + 3 * vh) + (vh * vh + vh) + 2 * (vh * vi + vi) + (vi * vh + vh)
    merger = vh + (4 * vh * 4 * vh + 4 * vh) + (4 * vh * h + h)
    vision = 3 * 2 * 14 * 14 * vh + 32 * block + merger  # patch embedding (no bias), blocks
    assert size.vision_parameters == vision == 668_684_288
    assert size.parameters == vocab * h + layers * layer + h + vision  # tied LM head
    assert size.parameters == 3_754_622_976  # the 3.75 B the hub lists
    assert size.quantized_parameters == layers * (2 * h * h + 2 * h * kv + 3 * h * i)
    # rank 16 x (in + out) of q, k, v, o, gate, up, down in each of the 36 layers
    assert size.lora_parameters == layers * 16 * (2 * (h + h) + 2 * (h + kv) + 3 * (h + i))
    assert size.lora_parameters == 29_933_568
    assert size.lora_inputs == 6 * h + i  # the inputs dropout copies: 6 of width h, down's i
    assert (size.layers, size.hidden, size.intermediate, size.kv_width) == (layers, h, i, kv)
    assert size.image_tokens(840) == 900 and size.patches(840) == 3600


def test_sizes_count_on_the_meta_device_even_with_zero3_registered(tiny_qwen_dir):
    """transformers builds models through DeepSpeed's zero.Init while a ZeRO-3 config is
    registered in the process (a ZeRO-3 recipe parsed earlier); the count must not, and must
    leave the registration as it was."""
    from transformers import AutoConfig
    from transformers.integrations.deepspeed import HfDeepSpeedConfig, is_deepspeed_zero3_enabled

    zero3 = HfDeepSpeedConfig(
        {
            "zero_optimization": {"stage": 3},
            "train_batch_size": 1,
            "train_micro_batch_size_per_gpu": 1,
        }
    )
    assert is_deepspeed_zero3_enabled()
    size = memory.model_size(AutoConfig.from_pretrained(tiny_qwen_dir), ["q_proj"], R)
    assert size.lora_parameters == 2 * R * (64 + 64)  # 2 layers, q_proj 64 -> 64
    assert is_deepspeed_zero3_enabled()
    del zero3


def test_the_24gb_recipe_estimate_is_the_hand_arithmetic(size_3b, recipe_values):
    """The recipe's shape (as parsed) on the 3B, every part by hand: 13.0 GiB, the number
    docs/training.md gives."""
    _, size = size_3b
    args, config = recipe_values
    run = memory.run_shape(args, config, weight_bytes=2, prompt_tokens=1049, image_size=840)
    assert (run.batch, run.generation_batch, run.completion_tokens) == (4, 32, 1024)
    assert run.lora and run.lora_dropout and not run.train_vision and run.generation
    estimate = memory.estimate_memory(size, run)
    p, lora_p, tokens = 3_754_622_976, 29_933_568, 1049 + 1024
    assert estimate.weights == p * 2  # bf16
    assert estimate.reference == 0  # the KL reference is the base with the adapters off
    assert estimate.adapters == estimate.gradients == lora_p * 4  # float32
    assert estimate.optimizer == lora_p * 4 * 2  # AdamW's two moments
    # 4 sequences: 36 checkpointed layer inputs + one decoder layer recomputed in full
    per_token = 36 * 2048 + (7 * 2048 + 2 * 256 + 4 * 11008) + (6 * 2048 + 11008)
    assert estimate.activations == 4 * tokens * per_token * 2
    assert estimate.log_probs == 4096 * 32768 * 2 + 4 * 1024 * 2048 * 4
    assert estimate.kv_cache == 36 * 2 * 256 * tokens * 32 * 2
    assert estimate.prefill == 32 * 1049 * (3 * 11008 + 2 * 2048) * 2  # > the vision MLP's
    assert estimate.prefill > 32 * 3600 * 3 * 3420 * 2
    assert estimate.generation > estimate.training  # generating 32 sequences is the peak
    assert estimate.total == estimate.state + GIB + estimate.kv_cache + estimate.prefill
    assert round(estimate.total / GIB, 1) == 13.0

    qlora = memory.estimate_memory(size, dataclasses.replace(run, load_in_4bit=True))
    quantized = 2_774_532_096
    assert qlora.weights == quantized * (0.5 + 1 / 64 + 4 / (64 * 256)) + (p - quantized) * 2
    assert round(qlora.total / GIB, 1) == 9.2


def test_full_fine_tuning_of_the_3b_in_float32_is_far_beyond_24gb(size_3b):
    """Without LoRA: weights, the KL reference copy, gradients and AdamW's moments, all float32,
    and the vision tower's activations."""
    _, size = size_3b
    run = memory.RunShape(
        weight_bytes=4, activation_bytes=2, batch=4, generation_batch=32, prompt_tokens=1049,
        completion_tokens=1024, image_size=840,
    )  # fmt: skip
    estimate = memory.estimate_memory(size, run)
    p = 3_754_622_976
    assert estimate.weights == estimate.reference == estimate.gradients == p * 4
    assert estimate.optimizer == 2 * p * 4 and estimate.adapters == 0
    frozen = memory.estimate_memory(size, dataclasses.replace(run, train_vision=False))
    vision = 4 * 3600 * (32 * 1280 + 9 * 1280 + 4 * 3420) * 2  # checkpointed blocks + one
    assert estimate.activations - frozen.activations == vision
    assert estimate.state / GIB > 69


class Records(logging.Handler):
    """The records of one logger, whatever its propagation (ROS's launch, when imported first,
    installs a logger class that does not propagate to pytest's caplog)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)

    def text(self, level: int = logging.INFO) -> str:
        return "\n".join(r.getMessage() for r in self.records if r.levelno == level)


def test_preflight_warns_or_refuses_by_the_visible_gpu(
    size_3b, recipe_values, tiny_qwen_dir, monkeypatch
):
    """The 3B's config with the recipe: a 24 GB GPU passes quietly, a 10 GB one is warned
    about, a 4 GB one (less than the weights) is refused; without a GPU it is only logged."""
    from transformers import AutoProcessor

    from segzero_training.conversation import training_messages

    config_3b, _ = size_3b
    args, config = recipe_values
    monkeypatch.setattr(config, "use_cpu", False)  # compare with the (pretended) GPU
    processor = AutoProcessor.from_pretrained(tiny_qwen_dir)
    prompt = training_messages("the object", args.family(), thinking=True, answer=args.answer)

    def problems(gpu_gib):
        gpu = None if gpu_gib is None else gpu_gib * GIB
        monkeypatch.setattr(memory, "visible_gpu_memory", lambda: gpu)
        records = Records()
        monkeypatch.setattr(memory.logger, "level", logging.INFO)
        memory.logger.addHandler(records)
        try:
            found = memory.memory_problems(args, config, config_3b, processor, prompt, 840)
        finally:
            memory.logger.removeHandler(records)
        return found, records

    found, records = problems(None)
    assert found == [] and records.text(logging.WARNING) == ""
    info = records.text(logging.INFO)  # the estimate is printed, part by part
    assert "13.0 GiB for 1049 prompt + 1024 completion tokens" in info and "kv_cache" in info
    found, records = problems(24)
    assert found == [] and records.text(logging.WARNING) == ""
    found, records = problems(10)
    assert found == [] and "may not fit: ~13.0 GiB estimated" in records.text(logging.WARNING)
    (refusal,), _ = problems(4)
    assert "alone need ~7.4 GiB" in refusal and "set lora=true" in refusal
    assert "load_in_4bit=true" in refusal
