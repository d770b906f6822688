"""What opens a pipeline, defined once: `PipelineOptions`, a dataclass of the options with their
defaults and help. The `segzero` command and `training/evaluate.py` declare their options from
it (`add_pipeline_arguments`), the benchmarks their shared ones, and the node's parameter table
(`segzero_ros.params`) its model parameters, so a default or a help text changes in one place.

Help texts name other options as ``{reasoning_url}``: each surface fills in its own spelling
(``--reasoning-url`` on a command line, ``reasoning_url`` for a ROS parameter). Pure: no torch.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEFAULT_REASONING_MODEL = "Ricky06662/Seg-Zero-7B"
DEFAULT_SEGMENTATION_MODEL = "facebook/sam2.1-hiera-large"
DEFAULT_TIMEOUT = 60.0  # seconds without data from a reasoning server (connect, tokens)
DEFAULT_API_KEY_ENV = "SEGZERO_REASONING_API_KEY"
DEFAULT_PREFIX_CACHE_SIZE = 2  # frames whose prompt prefix a local reasoner keeps
DEFAULT_MAX_NEW_TOKENS = 1024
DTYPES = ("auto", "bfloat16", "float16", "float32")


def _option(
    default: Any,
    help: str,
    *,
    minimum: float | None = None,
    choices: str = "",
    metavar: str | None = None,
):
    """One option: its default and help, plus the bounds the node's parameter table checks."""
    return field(
        default=default,
        metadata={"help": help, "minimum": minimum, "choices": choices, "metavar": metavar},
    )


@dataclass(frozen=True)
class PipelineOptions:
    """Everything that opens a `SegZeroPipeline`: which models, where, and how they run."""

    reasoning_model: str = _option(
        DEFAULT_REASONING_MODEL,
        "Reasoning model (Qwen2.5-VL, Qwen2-VL, Qwen3-VL, Qwen3.5): a Hugging Face hub id or a "
        "local directory; with {reasoning_url}, the name the server serves it under.",
        metavar="MODEL",
    )
    model_family: str = _option(
        "auto",
        "How the reasoning model is prompted and its answer read (docs/inference.md, Model "
        "families): auto (from the checkpoint's model type and segzero_recipe.json), seg_zero, "
        "vision_reasoner, qwen3_vl, or the path of a family YAML file.",
        metavar="FAMILY",
    )
    reasoning_url: str = _option(
        "",
        "The reasoning model on an OpenAI-compatible server (vLLM, SGLang, transformers serve): "
        "its base URL, e.g. http://gpu-host:8000/v1; {reasoning_model} is then the name the "
        'server serves it under and nothing but SAM2 is loaded here. "": load '
        "{reasoning_model} here. With {model_family} auto a remote model is asked as seg_zero "
        "unless {reasoning_model} is a local checkpoint directory.",
        metavar="URL",
    )
    reasoning_timeout: float = _option(
        DEFAULT_TIMEOUT,
        "With {reasoning_url}: seconds without data from the server (connecting, waiting for the "
        "first token, between tokens) after which the query is answered ERROR. Refused "
        "connections and HTTP 5xx are retried twice first.",
        minimum=0.001,
        metavar="S",
    )
    reasoning_api_key_env: str = _option(
        DEFAULT_API_KEY_ENV,
        "With {reasoning_url}: the environment variable that holds the server's API key, sent "
        'as a Bearer token when set ("": never send one). The key itself is never an option '
        "nor logged.",
        metavar="NAME",
    )
    segmentation_model: str = _option(
        DEFAULT_SEGMENTATION_MODEL,
        "Segmentation model: a hub id or a local checkpoint of {segmentation_family} (sam2: a "
        "released .pt or a directory with one config .yaml and one .pt; the transformers "
        "families: a directory with config.json, model.safetensors and the processor's config).",
        metavar="MODEL",
    )
    segmentation_family: str = _option(
        "auto",
        "Which library segments and tracks (docs/inference.md, Segmenter families): auto (from "
        "the checkpoint: config.json's model_type, else the sam2 package), sam2 (the sam2 "
        "package), sam2_hf (SAM2.1 in transformers' format), edgetam, sam3_tracker.",
        choices="auto, sam2, sam2_hf, edgetam, sam3_tracker",
        metavar="FAMILY",
    )
    device: str = _option(
        "auto",
        "Device for both models: auto (CUDA when visible, else CPU), cpu, cuda or cuda:N.",
        choices="auto, cpu, cuda, cuda:N",
    )
    dtype: str = _option(
        "auto",
        "Model dtype: auto (bfloat16 on CUDA, float32 on the CPU), bfloat16, float16 or float32.",
        choices=", ".join(DTYPES),
    )
    max_new_tokens: int = _option(
        DEFAULT_MAX_NEW_TOKENS,
        "Most tokens the reasoning model may generate per query.",
        minimum=1,
        metavar="N",
    )
    prefix_cache_size: int = _option(
        DEFAULT_PREFIX_CACHE_SIZE,
        "Camera frames whose prompt prefix (the image's vision encoding and KV cache) the "
        "reasoning model keeps, so that further queries on the same frame prefill only their "
        "own tokens (the answers are the same); 0 turns this off. Not used with {compile} or "
        "{reasoning_url}.",
        minimum=0,
        metavar="N",
    )
    compile: bool = _option(
        False,
        "Decode with a static KV cache and torch.compile (for CUDA; the first queries wait for "
        "the compilation). Turns {prefix_cache_size} off; not with {reasoning_url}.",
    )

    def with_tiny_models(self) -> PipelineOptions:
        """These options with the built-in tiny checkpoints of this family in place of the
        models (`segzero_model.tiny.tiny_models`: built once, then cached)."""
        from segzero_model.tiny import tiny_models

        reasoner, segmenter = tiny_models(self.model_family, self.segmentation_family)
        return dataclasses.replace(
            self, reasoning_model=str(reasoner), segmentation_model=str(segmenter)
        )


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(PipelineOptions))


def option_field(name: str) -> dataclasses.Field:
    """The dataclass field of option `name` (KeyError for an unknown name)."""
    return {f.name: f for f in dataclasses.fields(PipelineOptions)}[name]


def option_help(name: str, spell) -> str:
    """Option `name`'s help, with the other options it names spelled by `spell(name)`."""
    return option_field(name).metadata["help"].format(**{n: spell(n) for n in OPTION_NAMES})


def flag(name: str) -> str:
    """An option's command-line flag: ``reasoning_url`` → ``--reasoning-url``."""
    return "--" + name.replace("_", "-")


def add_pipeline_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    names: tuple[str, ...] = OPTION_NAMES,
    **defaults: Any,
) -> None:
    """Declare the options `names` on `parser` as flags, with the dataclass's defaults (or those
    given by keyword, for a script whose default differs, e.g. a benchmark's ``device="cpu"``)
    and help; read them back with `options_from_args`."""
    unknown = set(defaults) - set(names)
    if unknown:
        raise ValueError(f"defaults for options not declared: {sorted(unknown)}")
    for name in names:
        spec = option_field(name)
        default = defaults.get(name, spec.default)
        help = option_help(name, flag)
        if spec.type in (bool, "bool"):
            parser.add_argument(flag(name), action="store_true", default=default, help=help)
            continue
        kind = {"int": int, "float": float}.get(spec.type, str)
        shown = f"{default:g}" if isinstance(default, float) else default
        parser.add_argument(
            flag(name),
            type=kind,
            default=default,
            metavar=spec.metadata["metavar"],
            help=f"{help} (default: {shown if shown != '' else 'none'})",
        )


def options_from_args(args: argparse.Namespace, **overrides: Any) -> PipelineOptions:
    """The `PipelineOptions` a parsed command line holds (options it does not declare keep the
    dataclass's defaults); `overrides` replace single values."""
    values = {n: getattr(args, n) for n in OPTION_NAMES if hasattr(args, n)}
    return PipelineOptions(**(values | overrides))
