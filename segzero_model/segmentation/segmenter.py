"""SAM2 as Seg-Zero's mask head: the reasoner's box and points in, one bool mask out.

The image embedding is the expensive part, so it is computed once per image (`set_image`) and
reused by every `predict` on that image; only the latest image's embedding is kept.

Models load from a local directory (a config `.yaml` next to a `.pt` checkpoint, see
`segzero_model.tiny.sam2`), a released checkpoint file (`sam2.1_hiera_large.pt`), or a hub id
(`facebook/sam2.1-hiera-large`, read from the local Hugging Face cache when it is there).
All of them are built by `build_sam2_model`, from the YAML with hydra, as sam2 itself does.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
import warnings
from collections.abc import Hashable, Sequence
from pathlib import Path

import numpy as np

from segzero_model.device import inference_mode, resolve_device
from segzero_model.errors import ModelNotFoundError

logger = logging.getLogger(__name__)

_LOCAL_HINT = "pass a directory holding a config .yaml and a .pt checkpoint"
# sam2's image-predictor settings (build_sam applies them as hydra overrides): when the single
# mask is unstable the decoder falls back to the best of its three masks.
_DECODER_ARGS = {
    "dynamic_multimask_via_stability": True,
    "dynamic_multimask_stability_delta": 0.05,
    "dynamic_multimask_stability_thresh": 0.98,
}
_HUB_PROBE_TIMEOUT_S = 3.0  # huggingface_hub retries for ~25 s when the hub is unreachable


def _released() -> dict[str, tuple[str, str]]:
    """Hub id → (packaged config name, checkpoint file name), from sam2 itself."""
    from sam2.build_sam import HF_MODEL_ID_TO_FILENAMES

    return HF_MODEL_ID_TO_FILENAMES


def resolve_sam2(model: str | os.PathLike) -> tuple[str | Path, Path]:
    """(config, checkpoint) for a directory, a released checkpoint file or a hub id.

    The config is a YAML path or a packaged config name; raises ModelNotFoundError.
    """
    path = Path(model).expanduser()
    if path.is_dir():
        return _resolve_directory(path)
    if path.is_file():
        return _packaged_config_for(path), path
    released = _released()
    if str(model) in released:
        config, filename = released[str(model)]
        return config, _download(str(model), filename)
    if re.fullmatch(r"[\w.-]+/[\w.-]+", str(model)) and path.suffix not in (".pt", ".yaml"):
        raise ModelNotFoundError(
            f"SAM2 model {str(model)!r} is neither a local path nor a released hub id "
            f"({', '.join(sorted(released))}); {_LOCAL_HINT}"
        )
    raise ModelNotFoundError(f"SAM2 model path {str(model)!r} does not exist; {_LOCAL_HINT}")


def _resolve_directory(path: Path) -> tuple[str | Path, Path]:
    configs = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    checkpoints = sorted(path.glob("*.pt"))
    if len(checkpoints) != 1:
        raise ModelNotFoundError(
            f"SAM2 directory {path} holds {len(checkpoints)} .pt checkpoints, expected one; "
            f"{_LOCAL_HINT}"
        )
    if len(configs) == 1:
        return configs[0], checkpoints[0]
    if not configs:  # a bare released checkpoint, e.g. from `hf download ... --local-dir`
        return _packaged_config_for(checkpoints[0]), checkpoints[0]
    names = ", ".join(c.name for c in configs)
    raise ModelNotFoundError(
        f"SAM2 directory {path} holds several configs ({names}); keep one or use "
        "Segmenter.from_config(config, checkpoint)"
    )


def _packaged_config_for(checkpoint: Path) -> str:
    by_file = {filename: config for config, filename in _released().values()}
    if checkpoint.name not in by_file:
        raise ModelNotFoundError(
            f"cannot tell the config of SAM2 checkpoint {checkpoint}: {checkpoint.name!r} is not "
            f"a released name ({', '.join(sorted(by_file))}); put a config .yaml next to it or "
            "use Segmenter.from_config(config, checkpoint)"
        )
    return by_file[checkpoint.name]


def _download(model_id: str, filename: str) -> Path:
    """The checkpoint from the HF cache, else from the hub; fails in seconds when offline."""
    from huggingface_hub import hf_hub_download, is_offline_mode
    from huggingface_hub.errors import LocalEntryNotFoundError

    hint = (
        f"download it on a connected machine (`hf download {model_id} {filename}`) or {_LOCAL_HINT}"
    )
    try:
        return Path(hf_hub_download(model_id, filename, local_files_only=True))
    except LocalEntryNotFoundError:
        pass
    if is_offline_mode():
        raise ModelNotFoundError(
            f"SAM2 {model_id} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; {hint}"
        )
    if not _hub_reachable():
        raise ModelNotFoundError(
            f"SAM2 {model_id} is not in the Hugging Face cache and the hub cannot be reached; "
            f"{hint}"
        )
    logger.info("downloading %s from %s", filename, model_id)
    try:
        return Path(hf_hub_download(model_id, filename))
    except Exception as exc:  # network, auth, disk: all mean "not available here"
        raise ModelNotFoundError(f"could not download SAM2 {model_id}: {exc}; {hint}") from exc


def _hub_reachable() -> bool:
    """One request with a short timeout, through huggingface_hub's client (honours proxies)."""
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=_HUB_PROBE_TIMEOUT_S)
    except Exception:
        return False
    return True


def _config_file(config: str | os.PathLike) -> Path:
    """A YAML path as given, or a packaged name such as configs/sam2.1/sam2.1_hiera_l.yaml."""
    path = Path(config).expanduser()
    if path.is_file():
        return path
    import sam2

    package = Path(sam2.__file__).parent
    for candidate in (package / str(config), package / "configs" / str(config)):
        if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
            return candidate
    packaged = sorted({name for name, _ in _released().values()})
    raise ModelNotFoundError(
        f"SAM2 config {str(config)!r} is neither a YAML file nor a packaged config "
        f"({', '.join(packaged)})"
    )


def build_sam2_model(
    config: str | os.PathLike,
    checkpoint: str | os.PathLike | None = None,
    *,
    device: str = "cpu",
):
    """SAM2Base from a config (YAML path or packaged name), weights loaded strictly, in eval mode.

    The decoder gets sam2's image-predictor overrides. Configs are code (hydra instantiates
    their `_target_`s): load only ones you trust. Checkpoints load with `weights_only=True`.
    """
    from hydra.utils import instantiate
    from omegaconf import DictConfig, OmegaConf

    path = _config_file(config)
    if checkpoint is not None and not Path(checkpoint).is_file():  # before a slow instantiate
        raise ModelNotFoundError(f"SAM2 checkpoint {checkpoint} not found; {_LOCAL_HINT}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as exc:
        raise ValueError(f"cannot read SAM2 config {path}: {exc}") from exc
    if not isinstance(cfg, DictConfig) or OmegaConf.select(cfg, "model._target_") is None:
        raise ValueError(f"{path} is not a SAM2 model config: it has no `model._target_`")
    OmegaConf.update(cfg, "model.sam_mask_decoder_extra_args", _DECODER_ARGS, merge=True)
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    if checkpoint is not None:
        _load_weights(model, Path(checkpoint), path)
    return model.to(device).eval()


def _load_weights(model, checkpoint: Path, config: Path) -> None:
    import torch

    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot read SAM2 checkpoint {checkpoint}: {exc}") from exc
    # Released checkpoints are {"model": state_dict}; a bare state dict is accepted too.
    state = saved.get("model", saved) if isinstance(saved, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"SAM2 checkpoint {checkpoint} holds no state dict")
    mismatch = f"SAM2 checkpoint {checkpoint} does not match config {config}"
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise ValueError(f"{mismatch}: {exc}") from exc
    if missing or unexpected:
        raise ValueError(
            f"{mismatch}: {len(missing)} missing keys {_some(missing)}, "
            f"{len(unexpected)} unexpected keys {_some(unexpected)}"
        )


def _some(keys: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}]"


def check_image(image: np.ndarray) -> None:
    """Every family's segmenter takes the same images: HxWx3 uint8 RGB."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be an HxWx3 uint8 RGB numpy array, got {type(image)}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
        raise ValueError(
            f"image must be an HxWx3 uint8 RGB array, got shape {image.shape} dtype {image.dtype}"
        )


def image_digest(image: np.ndarray) -> str:
    """Content key for images without a caller key (about 1 ms for 640x480)."""
    digest = hashlib.blake2b(repr(image.shape).encode(), digest_size=16)
    digest.update(np.ascontiguousarray(image).data)
    return digest.hexdigest()


def as_box(box) -> np.ndarray | None:
    """A prompt box as float32 XYXY (corners sorted), or None; ValueError when malformed."""
    if box is None:
        return None
    array = np.asarray(box, dtype=np.float32)
    if array.shape != (4,) or not np.isfinite(array).all():
        raise ValueError(f"box must be 4 finite numbers (x1, y1, x2, y2), got {box!r}")
    x1, y1, x2, y2 = array
    # SAM encodes the corners as top-left / bottom-right; a swapped box means the same region.
    return np.array([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)], dtype=np.float32)


def as_points(points) -> np.ndarray | None:
    """Prompt points as a float32 (N, 2) array, or None for none; ValueError when malformed."""
    if points is None or len(points) == 0:
        return None
    array = np.asarray(points, dtype=np.float32)
    if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
        raise ValueError(f"points must be a sequence of finite (x, y) pairs, got {points!r}")
    return array


class Segmenter:
    """A SAM2 image predictor with a one-image embedding cache.

    Build it with `from_pretrained` or `from_config`. `device` is the resolved torch device
    ('cpu', 'cuda', 'cuda:1'); `model_id` is what it was loaded from.
    """

    def __init__(self, model, *, device: str, model_id: str):
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        self.device = device
        self.model_id = model_id
        with warnings.catch_warnings():  # sam2's transforms use the deprecated torch.jit.script
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", FutureWarning)
            self._predictor = SAM2ImagePredictor(model)
        # The predictor hard-codes the feature-map sides of 1024-pixel models; derive them from
        # the model so smaller inputs (the tiny test model) reshape correctly.
        side = model.image_size // model.backbone_stride
        self._predictor._bb_feat_sizes = [(side * 4, side * 4), (side * 2, side * 2), (side, side)]
        self._image_key: tuple | None = None

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike, *, device: str = "auto") -> Segmenter:
        """Load a local directory, a released `.pt` file or a hub id (see `resolve_sam2`)."""
        device = resolve_device(device)
        config, checkpoint = resolve_sam2(model)
        return cls._load(config, checkpoint, device, str(model))

    @classmethod
    def from_config(
        cls, config: str | os.PathLike, checkpoint: str | os.PathLike, *, device: str = "auto"
    ) -> Segmenter:
        """Load a checkpoint with an explicit config: a YAML path or a packaged config name."""
        device = resolve_device(device)
        return cls._load(config, Path(checkpoint).expanduser(), device, str(checkpoint))

    @classmethod
    def _load(cls, config, checkpoint: Path, device: str, model_id: str) -> Segmenter:
        start = time.perf_counter()
        model = build_sam2_model(config, checkpoint, device=device)
        logger.info("loaded SAM2 %s on %s in %.1f s", model_id, device, time.perf_counter() - start)
        return cls(model, device=device, model_id=model_id)

    @property
    def model(self):
        """The SAM2Base model (what a StreamingTracker on the same weights is built on)."""
        return self._open_predictor().model

    def new_tracker(self):
        """A `StreamingTracker` on these weights (the image predictor never runs the memory
        modules, so the two share one model)."""
        from segzero_model.segmentation.streaming_tracker import StreamingTracker

        return StreamingTracker(self.model, device=self.device)

    def set_image(self, image: np.ndarray, key: Hashable | None = None) -> bool:
        """Embed `image` (HxWx3 uint8 RGB) unless it is the image embedded last.

        `key` identifies the image (e.g. a frame stamp); without one the array's content is
        hashed. Returns True when an embedding was computed, False when the cached one is reused.
        """
        predictor = self._open_predictor()
        check_image(image)
        cache_key = ("key", key) if key is not None else ("digest", image_digest(image))
        if cache_key == self._image_key:
            return False
        self._image_key = None  # a failed embedding must not leave the previous one usable
        with inference_mode(self.device):
            predictor.set_image(image)
        self._image_key = cache_key
        return True

    def predict(
        self,
        box: tuple[float, float, float, float] | None,
        points: Sequence[tuple[float, float]] | None,
    ) -> tuple[np.ndarray, float]:
        """Mask for an XYXY `box` and/or positive `points`, in the image's pixels.

        Asks SAM2 for three masks and returns the one with the highest predicted score, as a
        bool (H, W) array at the image's size, and that score.
        """
        predictor = self._open_predictor()
        if self._image_key is None:
            raise RuntimeError("Segmenter.predict needs an image: call set_image(image) first")
        box_array, point_array = as_box(box), as_points(points)
        if box_array is None and point_array is None:
            raise ValueError("predict needs a box, points or both; got neither")
        labels = None if point_array is None else np.ones(len(point_array), dtype=np.int32)
        with inference_mode(self.device):
            masks, scores, _ = predictor.predict(
                point_coords=point_array,
                point_labels=labels,
                box=box_array,
                multimask_output=True,
            )
        best = int(np.argmax(scores))
        return masks[best].astype(bool), float(scores[best])

    def close(self) -> None:
        """Free the model and the cached embedding (and the CUDA cache on a GPU)."""
        self._predictor = None
        self._image_key = None
        if self.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _open_predictor(self):
        if self._predictor is None:
            raise RuntimeError(f"Segmenter for {self.model_id} is closed")
        return self._predictor
