"""Model families, chosen in one place: what each kind of reasoning checkpoint is asked and how
its answer is read.

A `Family` fixes the prompt (query -> user text), the answer format (`AnswerFormat`: SINGLE,
one object with ``bbox``, ``points_1``, ``points_2``; LIST, a JSON list of objects with
``bbox_2d`` and ``point_2d``, where an empty list means "no object"; the keys are
`reply_format`'s), the answer's coordinate frame (`Frame`: ABSOLUTE, pixels of the square image
the reasoner sees; RELATIVE_1000, 0..`RELATIVE_SCALE` of the image's width and height) and that
square image's size. Code asks the entry (`Family.answers_list`, `Family.relative`,
`Family.frame_width`), never compares the kinds' names. The reasoner, the parser
(`answer_parser.parse_objects`) and `segzero infer` all read it from here, so a new family is
one entry in `FAMILIES` (or one YAML file, for a user's own fine-tune: `load_family_file`).

`family_for_checkpoint` picks the family of a checkpoint from its config's ``model_type`` and
its `prompt.RECIPE_FILE`, unless a family is named. Pure standard library plus PyYAML (only for
family files); no torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from functools import partial
from pathlib import Path

from segzero_model.reasoning.frames import REASONING_SIZE
from segzero_model.reasoning.prompts import (
    ANSWER_ONLY_TAGS,
    RECIPE_FILE,
    THINKING_TAGS,
    build_prompt,
    checkpoint_prompt_variant,
    reply_shape,
)
from segzero_model.reasoning.reply_format import LIST_BOX_KEY, LIST_POINT_KEY, list_answer_text

__all__ = [
    "ANSWER_FORMATS",
    "FAMILIES",
    "FRAMES",
    "QWEN3_VL_IMAGE_SIZE",
    "RELATIVE_SCALE",
    "SUPPORTED_MODEL_TYPES",
    "AnswerFormat",
    "Family",
    "Frame",
    "check_image_size",
    "family_for_checkpoint",
    "family_named",
    "load_family_file",
]


class AnswerFormat(StrEnum):
    """What a family's answer is; a family file names it by its value."""

    SINGLE = "single"  # one object: bbox, points_1, points_2 (Seg-Zero)
    LIST = "list"  # a JSON list of {bbox_2d, point_2d}; [] means "no object"


class Frame(StrEnum):
    """The frame a family's coordinates are in; a family file names it by its value."""

    ABSOLUTE = "absolute"  # pixels of the square image the reasoner sees
    RELATIVE_1000 = "relative_1000"  # 0..RELATIVE_SCALE of the image's width and height


ANSWER_FORMATS: tuple[str, ...] = tuple(kind.value for kind in AnswerFormat)
FRAMES: tuple[str, ...] = tuple(kind.value for kind in Frame)
RELATIVE_SCALE = 1000  # Frame.RELATIVE_1000: 0..1000 across the image


@dataclass(frozen=True)
class Family:
    """How one kind of checkpoint is prompted and how its answer is read."""

    name: str
    model_types: tuple[str, ...]  # config.model_type values it serves; () = any supported
    prompt: Callable[[str], str]  # query -> the user text (the image comes before it)
    answer: AnswerFormat  # given as an AnswerFormat or its value
    frame: Frame  # given as a Frame or its value
    image_size: int  # the square side, in pixels, every image is resized to
    round_pixels: bool = False  # round scaled coordinates half up (VisionReasoner's release)
    # query -> the user text asking for the answer alone (SFT, and GRPO with thinking=false);
    # None when the family has none (VisionReasoner's release asks only with thinking).
    prompt_without_thinking: Callable[[str], str] | None = None

    def __post_init__(self):
        if self.answer not in ANSWER_FORMATS:
            raise ValueError(
                f"family {self.name!r}: answer {self.answer!r} not in {ANSWER_FORMATS}"
            )
        if self.frame not in FRAMES:
            raise ValueError(f"family {self.name!r}: frame {self.frame!r} not in {FRAMES}")
        # A value ("list") becomes its member, so every reader gets the typed kind.
        object.__setattr__(self, "answer", AnswerFormat(self.answer))
        object.__setattr__(self, "frame", Frame(self.frame))
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                f"family {self.name!r}: image_size must be a positive int, got {size!r}"
            )

    @property
    def answers_list(self) -> bool:
        """Whether the answer is a list of objects (`AnswerFormat.LIST`), not one object."""
        return self.answer is AnswerFormat.LIST

    @property
    def relative(self) -> bool:
        """Whether the coordinates are relative (`Frame.RELATIVE_1000`), not the image's pixels."""
        return self.frame is Frame.RELATIVE_1000

    @property
    def frame_width(self) -> int:
        """The span of the answer's coordinates: the image size, or `RELATIVE_SCALE` when
        relative."""
        return RELATIVE_SCALE if self.relative else self.image_size


# --------------------------------------------------------------------------- VisionReasoner

# Byte-exact from dvlab-research/Seg-Zero, inference_scripts/infer_multi_object.py and
# evaluation_scripts/evaluation_visionreasoner.py (VisionReasoner): sentences joined with no
# space; "{Question}" and "{Answer}" are filled in by plain replacement.
VISION_REASONER_TEMPLATE = (
    'Please find "{Question}" with bboxs and points.'
    "Compare the difference between object(s) and find the most closely matched object(s)."
    f"{THINKING_TAGS}"
    "Output the bbox(es) and point(s) inside the interested object(s) in JSON format."
    f"i.e., {reply_shape('{Answer}')}"
)
VISION_REASONER_EXAMPLE = list_answer_text(
    [((10, 100, 200, 210), (30, 110)), ((225, 296, 706, 786), (302, 410))]
)


def vision_reasoner_question(query: str) -> str:
    """Lower-cased, with '.', '"', '?' and '!' stripped from both ends, as VisionReasoner's
    scripts do (Seg-Zero strips only '.')."""
    return query.lower().strip('."?!')


def vision_reasoner_prompt(query: str) -> str:
    return VISION_REASONER_TEMPLATE.replace("{Question}", vision_reasoner_question(query)).replace(
        "{Answer}", VISION_REASONER_EXAMPLE
    )


# --------------------------------------------------------------------------- Qwen3-VL


# Our own prompt (no released Seg-Zero checkpoint is a Qwen3-VL): the VisionReasoner shape, but
# in the 0..1000 relative frame that Qwen3-VL grounds in. Qwen3-VL's convention, per QwenLM's
# cookbooks (cookbooks/spatial_understanding.ipynb, as summarised at deepwiki.com/QwenLM/Qwen3-VL
# "Spatial understanding and 2D grounding", and QwenLM/Qwen3-VL issue #931): boxes and points
# are normalised to 0..1000 of the image's width and height, so pixel = v * W / 1000.
def _qwen3_vl_template(thinking: bool) -> str:
    example = list_answer_text([((12, 119, 238, 250), (36, 131))])
    return (
        'Please find "{question}" in the image.'
        "Compare the difference between objects and find every object that matches."
        f"{THINKING_TAGS if thinking else ANSWER_ONLY_TAGS}"
        "The answer is a JSON list with one item per matching object, each a "
        f"{LIST_BOX_KEY} [x1, y1, x2, y2] and a {LIST_POINT_KEY} [x, y] inside the object, in "
        f"relative coordinates from 0 to {RELATIVE_SCALE}; an empty list [] if nothing matches."
        f"i.e., {reply_shape(example, thinking)}"
    )


QWEN3_VL_TEMPLATE = _qwen3_vl_template(thinking=True)
# The same ask without thinking: the answer alone (SFT, and GRPO's no-CoT recipe).
QWEN3_VL_DIRECT_TEMPLATE = _qwen3_vl_template(thinking=False)

# A multiple of 32 (Qwen3-VL: 16-pixel patches merged 2x2). 896 = 56 patches a side, the
# nearest multiple of 32 above Seg-Zero's 840, so small objects keep at least the detail they
# had (832 would lose 8 pixels); 784 image tokens, fewer than Seg-Zero's 900.
QWEN3_VL_IMAGE_SIZE = 896


def qwen3_vl_prompt(query: str) -> str:
    return QWEN3_VL_TEMPLATE.replace("{question}", vision_reasoner_question(query))


def qwen3_vl_direct_prompt(query: str) -> str:
    return QWEN3_VL_DIRECT_TEMPLATE.replace("{question}", vision_reasoner_question(query))


# --------------------------------------------------------------------------- the registry

FAMILIES: dict[str, Family] = {
    family.name: family
    for family in (
        Family(
            "seg_zero",
            ("qwen2_5_vl", "qwen2_vl"),
            build_prompt,
            AnswerFormat.SINGLE,
            Frame.ABSOLUTE,
            REASONING_SIZE,
            prompt_without_thinking=partial(build_prompt, thinking=False),
        ),
        Family(
            "vision_reasoner",
            ("qwen2_5_vl",),
            vision_reasoner_prompt,
            AnswerFormat.LIST,
            Frame.ABSOLUTE,
            REASONING_SIZE,
            round_pixels=True,
        ),
        Family(
            "qwen3_vl",
            ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"),
            qwen3_vl_prompt,
            AnswerFormat.LIST,
            Frame.RELATIVE_1000,
            QWEN3_VL_IMAGE_SIZE,
            prompt_without_thinking=qwen3_vl_direct_prompt,
        ),
    )
}

# Which family a checkpoint gets, by model type, when none is named.
_DEFAULT_FAMILY = {"qwen2_5_vl": "seg_zero", "qwen2_vl": "seg_zero"} | {
    model_type: "qwen3_vl" for model_type in FAMILIES["qwen3_vl"].model_types
}
SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(_DEFAULT_FAMILY)

_FAMILY_FILE_SUFFIXES = (".yaml", ".yml")


def family_named(name: str) -> Family:
    """The built-in family `name`, or the family in a ``.yaml`` file `name` is the path of."""
    if isinstance(name, str) and name in FAMILIES:
        return FAMILIES[name]
    if isinstance(name, str | os.PathLike) and Path(name).suffix.lower() in _FAMILY_FILE_SUFFIXES:
        return load_family_file(name)
    raise ValueError(
        f"unknown model family {name!r}; choose one of {['auto', *FAMILIES]} "
        "or the path of a family .yaml file"
    )


def family_for_checkpoint(
    path_or_config: str | os.PathLike | dict | object, model_family: str | Family = "auto"
) -> Family:
    """The family a checkpoint is asked in.

    `path_or_config` is a checkpoint directory (its config.json and `prompt.RECIPE_FILE` are
    read), a config dict or a transformers config (anything with ``model_type``).
    `model_family` "auto" picks by the recipe's ``family`` key, else by model type; a name, a
    family .yaml path or a `Family` overrides. A seg_zero checkpoint keeps the prompt variant
    its recipe names (thinking, answer). ValueError, naming the choices, for an unknown model
    type or family, or a family that does not serve the checkpoint's model type.
    """
    model_type, recipe, directory = _describe(path_or_config)
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ValueError(
            f"model type {model_type!r} is not supported; expected one of {SUPPORTED_MODEL_TYPES}"
        )
    if isinstance(model_family, Family):
        family = model_family
    elif model_family == "auto":
        family = family_named(recipe.get("family", _DEFAULT_FAMILY[model_type]))
    else:
        family = family_named(model_family)
    if family.model_types and model_type not in family.model_types:
        raise ValueError(
            f"model family {family.name!r} serves {family.model_types} models, not "
            f"{model_type!r}; choose 'auto' or one of {_families_for(model_type)}"
        )
    if family.prompt is build_prompt and directory is not None:
        variant = checkpoint_prompt_variant(directory)
        family = replace(family, prompt=partial(build_prompt, **variant))
    return family


def _families_for(model_type: str) -> list[str]:
    return [f.name for f in FAMILIES.values() if not f.model_types or model_type in f.model_types]


def _describe(path_or_config) -> tuple[object, dict, Path | None]:
    """(model type, recipe dict, checkpoint directory or None) of a directory or a config."""
    if isinstance(path_or_config, str | os.PathLike):
        directory = Path(path_or_config)
        config_file = directory / "config.json"
        if not config_file.is_file():
            raise ValueError(f"{directory} has no config.json, so its model type is unknown")
        model_type = json.loads(config_file.read_text()).get("model_type")
        recipe_file = directory / RECIPE_FILE
        recipe = json.loads(recipe_file.read_text()) if recipe_file.is_file() else {}
        if not isinstance(recipe, dict):
            raise ValueError(f"{recipe_file}: expected a JSON object, got {recipe!r}")
        return model_type, recipe, directory
    if isinstance(path_or_config, dict):
        return path_or_config.get("model_type"), {}, None
    return getattr(path_or_config, "model_type", None), {}, None


# --------------------------------------------------------------------------- family files

_FILE_KEYS = {
    "name",
    "model_types",
    "prompt",
    "prompt_without_thinking",
    "answer",
    "frame",
    "image_size",
    "question",
}
# How the query is written into a custom prompt: as given, or normalised as a released family.
_QUESTION_STYLES: dict[str, Callable[[str], str]] = {
    "as_is": str,
    "seg_zero": lambda query: query.lower().strip("."),
    "vision_reasoner": vision_reasoner_question,
}


def _template_prompt(template: str, style: str, query: str) -> str:
    return template.replace("{question}", _QUESTION_STYLES[style](query))


def load_family_file(path: str | os.PathLike) -> Family:
    """A custom family from YAML, so a fine-tune with its own prompt needs no code change::

        prompt: "Find '{question}'. Answer in <answer> </answer> tags ..."  # required
        prompt_without_thinking: "..."  # optional: the answer alone (SFT, thinking=false)
        answer: single            # single | list
        frame: absolute           # absolute | relative_1000
        image_size: 840           # the square side; a multiple of the processor's patch*merge
        question: seg_zero        # as_is | seg_zero | vision_reasoner (default as_is)
        model_types: [qwen2_5_vl] # optional: refuse other checkpoints
        name: my-finetune         # optional (default: the file's name)

    ``{question}`` is replaced literally, so the template may hold JSON braces unescaped.
    ValueError naming the file and the bad key for anything else.
    """
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"model family file {path}: cannot read it ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ValueError(f"model family file {path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"model family file {path}: expected a mapping of keys, got {data!r}")
    unknown = sorted(str(key) for key in set(data) - _FILE_KEYS)
    if unknown:
        raise ValueError(
            f"model family file {path}: unknown keys {unknown}; valid: {sorted(_FILE_KEYS)}"
        )
    missing = sorted({"prompt", "answer", "frame", "image_size"} - set(data))
    if missing:
        raise ValueError(f"model family file {path}: missing keys {missing}")
    templates = {key: data[key] for key in ("prompt", "prompt_without_thinking") if key in data}
    for key, template in templates.items():
        if not isinstance(template, str) or "{question}" not in template:
            raise ValueError(f"model family file {path}: {key!r} must be text holding {{question}}")
    style = data.get("question", "as_is")
    if style not in _QUESTION_STYLES:
        raise ValueError(
            f"model family file {path}: 'question' {style!r} not in {list(_QUESTION_STYLES)}"
        )
    direct = templates.get("prompt_without_thinking")
    model_types = data.get("model_types", [])
    if not isinstance(model_types, list) or not set(model_types) <= set(SUPPORTED_MODEL_TYPES):
        raise ValueError(
            f"model family file {path}: 'model_types' {model_types!r} must be a list drawn "
            f"from {SUPPORTED_MODEL_TYPES}"
        )
    try:
        return Family(
            name=str(data.get("name", path.stem)),
            model_types=tuple(model_types),
            prompt=partial(_template_prompt, templates["prompt"], style),
            answer=data["answer"],
            frame=data["frame"],
            image_size=data["image_size"],
            prompt_without_thinking=(
                None if direct is None else partial(_template_prompt, direct, style)
            ),
        )
    except ValueError as exc:
        raise ValueError(f"model family file {path}: {exc}") from None


# --------------------------------------------------------------------------- pre-flight


def check_image_size(processor, image_size: int) -> None:
    """Refuse an `image_size` the processor would silently resize (the answer's frame would then
    not be the image the model saw): not a multiple of patch_size * merge_size, or outside its
    pixel limits. ValueError with the size the processor would use."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    images = processor.image_processor
    patch, merge = images.patch_size, images.merge_size
    factor = patch * merge
    low = _size_limit(images, "shortest_edge", "min_pixels")
    high = _size_limit(images, "longest_edge", "max_pixels")
    kwargs = {k: v for k, v in (("min_pixels", low), ("max_pixels", high)) if v is not None}
    resized = smart_resize(image_size, image_size, factor=factor, **kwargs)
    if tuple(resized) != (image_size, image_size):
        raise ValueError(
            f"image size {image_size} would be resized by the processor to {resized[1]}x"
            f"{resized[0]} (patch {patch} x merge {merge}: sides must be multiples of {factor}"
            f", pixels within [{low}, {high}]); use a model family whose image size fits, e.g. "
            f"{max(factor, round(image_size / factor) * factor)}"
        )


def _size_limit(images, size_key: str, attribute: str) -> int | None:
    size = getattr(images, "size", None)
    value = size.get(size_key) if isinstance(size, dict) else getattr(size, size_key, None)
    return value if value is not None else getattr(images, attribute, None)
