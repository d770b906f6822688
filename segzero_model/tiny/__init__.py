"""The built-in tiny checkpoints (random Qwen2.5-VL + random SAM2 in the real on-disk formats)
for the offline demo and the tests. Their output is meaningless: the tiny reasoner was only
taught to repeat one canned answer.

The builders live in `segzero_model.tiny.qwen` and `segzero_model.tiny.sam2`; this module caches
what they build, under a name that hashes their source.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

logger = logging.getLogger(__name__)

TINY_WARNING = (
    "WARNING: using the built-in TINY RANDOM models (--tiny). Their output is MEANINGLESS: "
    "the reasoner only repeats an answer it was trained to give, whatever the image."
)


# The builder modules next to this file, whose source `builder_fingerprint` hashes.
_BUILDERS = ("qwen.py", "sam2.py")


def default_cache_dir() -> Path:
    """$SEGZERO_CACHE, else $XDG_CACHE_HOME/segzero, else ~/.cache/segzero."""
    if os.environ.get("SEGZERO_CACHE"):
        return Path(os.environ["SEGZERO_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "segzero"


def builder_fingerprint() -> str:
    """A short hash of the tiny builders' source and of the prompt and reply format the tiny
    reasoner is taught on, so a cache built by other code is never used."""
    import segzero_model.reasoning.prompts
    import segzero_model.reasoning.reply_format

    digest = hashlib.sha256()
    for name in _BUILDERS:
        digest.update((Path(__file__).parent / name).read_bytes())
    for module in (segzero_model.reasoning.prompts, segzero_model.reasoning.reply_format):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


def write_tiny_models(directory: str | os.PathLike) -> tuple[Path, Path]:
    """Write both tiny checkpoints under `directory` (reasoner/ and segmenter/)."""
    from segzero_model.tiny.qwen import write_tiny_qwen
    from segzero_model.tiny.sam2 import write_tiny_sam2

    directory = Path(directory)
    return (
        write_tiny_qwen(directory / "reasoner"),
        write_tiny_sam2(directory / "segmenter"),
    )


def ensure_tiny_models(cache_dir: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """Return (reasoner_dir, segmenter_dir), building them once into the cache.

    Built in a temporary sibling and renamed into place, so an interrupted build is never
    mistaken for a finished one.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"tiny-{builder_fingerprint()}"

    def built(path: Path) -> bool:
        return (path / "reasoner").is_dir() and (path / "segmenter").is_dir()

    if not built(target):
        logger.warning("building the tiny checkpoints in %s (once, a minute or two)", target)
        build_into_cache(target, write_tiny_models, built)
    return target / "reasoner", target / "segmenter"


def qwen3_vl_fingerprint() -> str:
    """A short hash of the tiny Qwen3-VL builder's source and of what it imports (the tiny
    Qwen2.5-VL tokenizer and training helpers, the prompt in its tokenizer corpus). Its own key,
    so adding it left `builder_fingerprint`, and the caches built under it, unchanged."""
    import segzero_model.reasoning.prompts

    digest = hashlib.sha256()
    for name in ("qwen3.py", "qwen.py"):
        digest.update((Path(__file__).parent / name).read_bytes())
    digest.update(Path(segzero_model.reasoning.prompts.__file__).read_bytes())
    return digest.hexdigest()[:12]


def ensure_tiny_qwen3_vl(cache_dir: str | os.PathLike | None = None) -> Path:
    """Return the tiny Qwen3-VL checkpoint's directory, building it once into the cache."""
    from segzero_model.tiny.qwen3 import write_tiny_qwen3_vl

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"tiny-qwen3-vl-{qwen3_vl_fingerprint()}"

    def built(path: Path) -> bool:
        return (path / "config.json").is_file() and (path / "model.safetensors").is_file()

    if not built(target):
        logger.warning("building the tiny Qwen3-VL checkpoint in %s (once, minutes)", target)
        build_into_cache(target, write_tiny_qwen3_vl, built)
    return target


def tiny_models(
    model_family: str = "auto",
    segmentation_family: str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """(reasoner_dir, segmenter_dir): the tiny checkpoints for `model_family` and
    `segmentation_family`, the one choice every ``--tiny`` / ``tiny:=true`` path makes. A family
    with a tiny model of its own architecture gets it (qwen3_vl: the tiny Qwen3-VL, taught two
    objects for "all ...", none for "unicorn"); every other family (auto, seg_zero,
    vision_reasoner, a YAML file) the tiny Qwen2.5-VL. The segmenter is the tiny SAM2 of the
    sam2 package for auto and sam2, else that transformers family's tiny checkpoint."""
    reasoner, segmenter = ensure_tiny_models(cache_dir)
    own = _TINY_REASONER_OF_FAMILY.get(str(model_family))
    if segmentation_family not in ("auto", "sam2"):
        segmenter = ensure_tiny_segmenter(segmentation_family, cache_dir)
    return (own(cache_dir) if own else reasoner), segmenter


def ensure_tiny_segmenter(family: str, cache_dir: str | os.PathLike | None = None) -> Path:
    """The tiny checkpoint of transformers segmenter `family`, built once into the cache."""
    from segzero_model.tiny.segmenters import TINY_SEGMENTER_FAMILIES, write_tiny_segmenter

    if family not in TINY_SEGMENTER_FAMILIES:
        raise ValueError(
            f"no tiny segmenter for segmentation family {family!r}; there are sam2, "
            f"{', '.join(TINY_SEGMENTER_FAMILIES)}"
        )
    digest = hashlib.sha256((Path(__file__).parent / "segmenters.py").read_bytes())
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"tiny-{family}-{digest.hexdigest()[:12]}"

    def built(path: Path) -> bool:
        return (path / "config.json").is_file() and (path / "model.safetensors").is_file()

    return build_into_cache(target, lambda path: write_tiny_segmenter(path, family), built)


def build_into_cache(
    target: Path, build: Callable[[Path], object], built: Callable[[Path], bool]
) -> Path:
    """`build(directory)` into a temporary sibling of `target`, renamed into place when done, so
    an interrupted build is never mistaken for a finished one. A lock file beside it makes a
    second process (two nodes started with --tiny, two test workers) wait for the first build
    instead of building the same thing again; when another process finished first
    (`built(target)`), its copy is used."""
    if built(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.parent / f"{target.name}.lock"):
        if built(target):
            return target
        staging = Path(tempfile.mkdtemp(prefix=f"{target.name}-", dir=target.parent))
        try:
            build(staging)
            try:
                staging.rename(target)
            except OSError:
                if not built(target):
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def copy_tiny_models(directory: str | os.PathLike) -> tuple[Path, Path]:
    """Copy the (cached, built on first use) tiny checkpoints to `directory`."""
    directory = Path(directory)
    copies = []
    for source in ensure_tiny_models():
        copies.append(Path(shutil.copytree(source, directory / source.name, dirs_exist_ok=True)))
    return copies[0], copies[1]


# Families whose tiny reasoner is not the tiny Qwen2.5-VL: family name → its builder.
_TINY_REASONER_OF_FAMILY: dict[str, Callable[..., Path]] = {"qwen3_vl": ensure_tiny_qwen3_vl}
