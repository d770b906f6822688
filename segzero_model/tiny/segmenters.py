"""Tiny, randomly initialised segmenters of the transformers families (sam2_hf, edgetam,
sam3_tracker) in the released on-disk format, for tests and offline demos.

Each directory is what the hub repositories hold: `config.json` of the *video* model (its
weights include the image model's, so `Sam2Model` and `Sam2VideoModel` both load from it, as
from `facebook/sam2.1-hiera-large`), `model.safetensors` and `processor_config.json`. Every
module is there (backbone, FPN, prompt encoder, mask decoder, memory attention and encoder)
with small widths at the released input size, so the real code paths run in a fraction of a
second; the masks are noise.
"""

from __future__ import annotations

import os
from pathlib import Path

_WIDTH = 128  # FPN = prompt encoder = mask decoder = memory attention width (> the
# memory's 64 channels, which transformers fixes: object pointers are split into 64-wide tokens)
_DIMS = [8, 16, 32, 64]  # the backbone's four stages


def _decoder_and_memory() -> dict:
    """The prompt encoder, mask decoder and memory settings every family shares."""
    return {
        "prompt_encoder_config": {"hidden_size": _WIDTH},
        "mask_decoder_config": {
            "hidden_size": _WIDTH,
            "mlp_dim": 64,
            "num_attention_heads": 1,
            "iou_head_hidden_dim": _WIDTH,
        },
        "memory_attention_hidden_size": _WIDTH,
        "memory_attention_num_layers": 1,
        "memory_attention_feed_forward_hidden_size": 64,
        "memory_encoder_hidden_size": _WIDTH,
        "mask_downsampler_embed_dim": _WIDTH,
        "memory_fuser_embed_dim": _WIDTH,
        "memory_fuser_intermediate_dim": 64,
        # A short memory (released: 7 frames, 16 pointers), so a test of a few frames already
        # runs past it and shows that the tracker forgets only what is no longer read.
        "num_maskmem": 3,
        "max_object_pointers_in_encoder": 4,
    }


def _sam2_hf():
    from transformers import Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor

    vision = {
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": _DIMS[0],
            "embed_dim_per_stage": _DIMS,
            "blocks_per_stage": [1, 1, 2, 1],
            "num_attention_heads_per_stage": [1, 1, 1, 1],
            "window_size_per_stage": [8, 4, 4, 4],
            "global_attention_blocks": [3],
            "window_positional_embedding_background_size": [4, 4],
        },
        "backbone_channel_list": _DIMS[::-1],
        "fpn_hidden_size": _WIDTH,
    }
    config = Sam2VideoConfig(vision_config=vision, **_decoder_and_memory())
    return Sam2VideoModel(config), released_processor(Sam2VideoProcessor)


def _repvit_backbone(**sizes):
    """EdgeTAM's RepViT-M1 backbone config (`sizes`: timm's embed_dim / depth; none for the
    released sizes). EdgeTamConfig()'s own default misspells the key ("archirecture") and so
    builds a ResNet-50: name the architecture, as the released config.json does."""
    from transformers import TimmWrapperConfig

    return TimmWrapperConfig(
        architecture="repvit_m1",
        do_pooling=False,
        model_args={"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3], **sizes},
    )


def _edgetam():
    from transformers import (
        EdgeTamVideoConfig,
        EdgeTamVideoModel,
        EdgeTamVisionConfig,
        Sam2VideoProcessor,
    )

    backbone = _repvit_backbone(embed_dim=_DIMS, depth=[1, 1, 1, 1])
    vision = EdgeTamVisionConfig(
        backbone_config=backbone, backbone_channel_list=_DIMS[::-1], fpn_hidden_size=_WIDTH
    )
    memory = _decoder_and_memory()
    memory.update(
        memory_attention_num_layers=1,
        perceiver_resampler_mlp_intermediate_size=64,
        perceiver_resampler_num_layers=1,
        memory_attention_mlp_hidden_size=64,
    )
    del memory["memory_attention_feed_forward_hidden_size"]  # EdgeTAM calls it mlp_hidden_size
    config = EdgeTamVideoConfig(vision_config=vision, **memory)
    return EdgeTamVideoModel(config), released_processor(Sam2VideoProcessor)


def _sam3_tracker():
    from transformers import (
        Sam3TrackerVideoConfig,
        Sam3TrackerVideoModel,
        Sam3TrackerVideoProcessor,
    )

    vision = {
        "model_type": "sam3_vision_model",
        "backbone_config": {
            "model_type": "sam3_vit_model",
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 1,
            "global_attn_indexes": [1],
        },
        "fpn_hidden_size": _WIDTH,
    }
    config = Sam3TrackerVideoConfig(vision_config=vision, **_decoder_and_memory())
    return Sam3TrackerVideoModel(config), released_processor(Sam3TrackerVideoProcessor, side=1008)


_BUILDERS = {"sam2_hf": _sam2_hf, "edgetam": _edgetam, "sam3_tracker": _sam3_tracker}
TINY_SEGMENTER_FAMILIES = tuple(_BUILDERS)


def _released_sam2_hf():
    import transformers as t

    return t.Sam2VideoModel(t.Sam2VideoConfig()), released_processor(t.Sam2VideoProcessor)


def _released_edgetam():
    import transformers as t

    vision = t.EdgeTamVisionConfig(backbone_config=_repvit_backbone())
    model = t.EdgeTamVideoModel(t.EdgeTamVideoConfig(vision_config=vision))
    return model, released_processor(t.Sam2VideoProcessor)


def _released_sam3_tracker():
    import transformers as t

    model = t.Sam3TrackerVideoModel(t.Sam3TrackerVideoConfig())
    return model, released_processor(t.Sam3TrackerVideoProcessor, side=1008)


# The released architectures at random weights (transformers' default configs; sam2_hf's is
# SAM2.1 hiera-tiny), with their processors: for benchmarks.
_RELEASED_BUILDERS = {
    "sam2_hf": _released_sam2_hf,
    "edgetam": _released_edgetam,
    "sam3_tracker": _released_sam3_tracker,
}


def write_tiny_segmenter(
    directory: str | os.PathLike, family: str, *, seed: int = 0, real_size: bool = False
) -> Path:
    """Write the tiny checkpoint of transformers segmenter `family` into `directory` (with
    `real_size`, the released architecture at random weights: for benchmarks)."""
    import torch

    if family not in _BUILDERS:
        raise ValueError(f"no tiny segmenter for {family!r}; there are {TINY_SEGMENTER_FAMILIES}")
    directory = Path(directory)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, processor = (_RELEASED_BUILDERS if real_size else _BUILDERS)[family]()
    model.eval().save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory


def released_processor(processor_class, side: int = 1024):
    """The family's processor as released: `side`-pixel input (SAM2 and EdgeTAM 1024, the SAM3
    tracker 1008), masks at a quarter of it."""
    import transformers

    sam3 = side == 1008
    image_class = transformers.Sam3ImageProcessor if sam3 else transformers.Sam2ImageProcessor
    size, mask = {"height": side, "width": side}, {"height": side // 4, "width": side // 4}
    image_processor = image_class(size=size, mask_size=mask)
    video_processor = transformers.Sam2VideoVideoProcessor(size=size)
    return processor_class(image_processor=image_processor, video_processor=video_processor)
