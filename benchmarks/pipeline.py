"""Per-stage latency of the Seg-Zero pipeline, printed as one JSON object.

    python benchmarks/pipeline.py                      # tiny checkpoints (CPU or GPU)
    python benchmarks/pipeline.py --arch 3b --device cuda --new-tokens 256

`--arch tiny` uses the built-in tiny checkpoints. `--arch 3b` / `--arch 7b` build the real-size
Qwen2.5-VL architectures (the released Seg-Zero models are 3B and 7B) and SAM2 hiera-large with
random weights (nothing can be downloaded), save them in the on-disk formats and load them
through the same code users call, so `load` includes reading the weights. Random weights never
emit EOS on purpose, so every generation is forced to exactly `--new-tokens` tokens.

Stages: load (reasoner, segmenter), vision + prefill (time to the first generated token),
decode (tokens per second after the first), SAM2 image embedding and SAM2 mask decoding.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from segzero_model.reasoner import Reasoner
from segzero_model.segmenter import Segmenter

# Text and vision sizes of the released Qwen2.5-VL checkpoints (config.json on the hub).
QWEN25_VL_SIZES = {
    "3b": {
        "text": dict(
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
            vocab_size=151936,
        ),
        "vision": dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=2048,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
        ),
    },
    "7b": {
        "text": dict(
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            vocab_size=152064,
        ),
        "vision": dict(
            depth=32,
            hidden_size=1280,
            intermediate_size=3420,
            num_heads=16,
            out_hidden_size=3584,
            window_size=112,
            fullatt_block_indexes=[7, 15, 23, 31],
        ),
    },
}
SAM2_LARGE_CONFIG = "configs/sam2.1/sam2.1_hiera_l.yaml"


def real_size_config(arch: str, tiny_dir: Path):
    """The tiny checkpoint's config with `arch`'s sizes, keeping the tiny tokenizer's
    special-token ids (so the tiny processor can feed the real-size model)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_dir)
    sizes = QWEN25_VL_SIZES[arch]
    text_config = getattr(config, "text_config", config)
    for key, value in sizes["text"].items():
        setattr(text_config, key, value)
    layers = sizes["text"]["num_hidden_layers"]
    if getattr(text_config, "layer_types", None) is not None:  # one entry per layer
        text_config.layer_types = ["full_attention"] * layers
    if hasattr(text_config, "max_window_layers"):
        text_config.max_window_layers = layers
    if hasattr(text_config, "head_dim"):
        text_config.head_dim = sizes["text"]["hidden_size"] // sizes["text"]["num_attention_heads"]
    for key, value in sizes["vision"].items():
        setattr(config.vision_config, key, value)
    config.tie_word_embeddings = arch == "3b"  # as in the released 3B / 7B configs
    text_config.tie_word_embeddings = config.tie_word_embeddings
    return config


def write_real_size_reasoner(arch: str, tiny_dir: Path, out_dir: Path, dtype) -> Path:
    """Save a random Qwen2.5-VL of `arch`'s size with the tiny tokenizer and processor."""
    import shutil

    import torch
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(real_size_config(arch, tiny_dir), dtype=dtype)
    model.save_pretrained(out_dir)
    for path in tiny_dir.iterdir():
        if path.suffix != ".safetensors" and path.name != "config.json" and path.is_file():
            shutil.copy(path, out_dir / path.name)
    return out_dir


def write_random_sam2(config_name: str, out_path: Path) -> Path:
    import torch
    from sam2.build_sam import build_sam2

    model = build_sam2(config_name, ckpt_path=None, device="cpu")
    torch.save({"model": model.state_dict()}, out_path)
    return out_path


def synchronize(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def timed(sync_device, function, /, *args, **kwargs):
    """Call `function(*args, **kwargs)`; return its value and wall seconds (GPU synchronised)."""
    synchronize(sync_device)
    started = time.perf_counter()
    value = function(*args, **kwargs)
    synchronize(sync_device)
    return value, time.perf_counter() - started


def describe_device(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=["tiny", "3b", "7b"], default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="queries per generate call")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args()

    import torch

    from segzero_model.device import resolve_device, resolve_dtype
    from segzero_model.tiny import ensure_tiny_models

    device = resolve_device(args.device)
    tiny_reasoner, tiny_segmenter = ensure_tiny_models()
    with tempfile.TemporaryDirectory(prefix="segzero-bench-") as scratch:
        if args.arch == "tiny":
            reasoner_source, segmenter_args = tiny_reasoner, (tiny_segmenter,)
        else:
            dtype = resolve_dtype(device)
            reasoner_source = write_real_size_reasoner(
                args.arch, tiny_reasoner, Path(scratch) / "reasoner", dtype
            )
            segmenter_args = (
                SAM2_LARGE_CONFIG,
                write_random_sam2(SAM2_LARGE_CONFIG, Path(scratch) / "sam2_large.pt"),
            )

        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        reasoner, load_reasoner = timed(
            device, Reasoner.from_pretrained, reasoner_source, device=device
        )
        if len(segmenter_args) == 1:
            segmenter, load_segmenter = timed(
                device, Segmenter.from_pretrained, segmenter_args[0], device=device
            )
        else:
            segmenter, load_segmenter = timed(
                device, Segmenter.from_config, *segmenter_args, device=device
            )

        rng = np.random.default_rng(0)
        prefill, decode_rate, embed, mask = [], [], [], []
        for repeat in range(args.repeats + 1):  # the first round warms up and is not counted
            images = [
                rng.integers(0, 256, (args.height, args.width, 3), dtype=np.uint8)
                for _ in range(args.batch)
            ]
            generations, _ = timed(
                device,
                reasoner.generate,
                images,
                ["the red cup"] * args.batch,
                max_new_tokens=args.new_tokens,
                min_new_tokens=args.new_tokens,
            )
            _, embed_seconds = timed(device, segmenter.set_image, images[0])
            box = (10, 10, args.width // 2, args.height // 2)
            points = [(args.width // 4, args.height // 4)] * 2
            _, mask_seconds = timed(device, segmenter.predict, box, points)
            if repeat == 0:
                continue
            generation = generations[0]
            prefill.append(generation.prefill_seconds)
            decode_rate.append(
                args.batch * max(generation.num_tokens - 1, 1) / generation.decode_seconds
            )
            embed.append(embed_seconds)
            mask.append(mask_seconds)

    report = {
        "benchmark": "pipeline",
        "date": datetime.date.today().isoformat(),
        "arch": args.arch,
        "device": describe_device(device),
        "dtype": str(reasoner.dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "image": f"{args.width}x{args.height}",
        "batch": args.batch,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "generated_tokens": generations[0].num_tokens,
        "load_reasoner_s": round(load_reasoner, 3),
        "load_segmenter_s": round(load_segmenter, 3),
        "vision_prefill_s_median": round(statistics.median(prefill), 4),
        "decode_tokens_per_s_median": round(statistics.median(decode_rate), 2),
        "sam2_embedding_s_median": round(statistics.median(embed), 4),
        "sam2_decode_s_median": round(statistics.median(mask), 4),
    }
    if device.startswith("cuda"):
        report["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    text = json.dumps(report, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
