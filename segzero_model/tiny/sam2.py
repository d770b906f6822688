"""A tiny, randomly initialised SAM2 in the local directory format, for tests and offline demos.

Directory format (what `Segmenter.from_pretrained(directory)` reads):

    config.yaml   hydra model config, same structure as sam2's configs/sam2.1/*.yaml
                  (`model: {_target_: sam2.modeling.sam2_base.SAM2Base, ...}`)
    model.pt      `torch.save({"model": state_dict})`, the format of the released checkpoints

Any directory with exactly one `*.yaml` and one `*.pt` in that layout loads the same way, so a
fine-tuned model needs no conversion. The tiny model keeps every module of SAM2 (Hiera trunk,
FPN neck, memory attention and encoder, prompt encoder, mask decoder) with small widths and a
256-pixel input, so it runs the real code paths in milliseconds; its masks are noise.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_NAME = "config.yaml"
CHECKPOINT_NAME = "model.pt"

IMAGE_SIZE = 256  # a multiple of 32: Hiera halves the resolution three times after stride 4
_D_MODEL = 32  # FPN width = prompt/mask-decoder width
_MEM_DIM = 16  # memory encoder output width
_STRIDE16 = IMAGE_SIZE // 16  # side of the stride-16 feature map the decoder sees


def _sine(num_pos_feats: int) -> dict:
    return {
        "_target_": "sam2.modeling.position_encoding.PositionEmbeddingSine",
        "num_pos_feats": num_pos_feats,
        "normalize": True,
        "scale": None,
        "temperature": 10000,
    }


def _rope(kv_in_dim: int | None = None) -> dict:
    attention = {
        "_target_": "sam2.modeling.sam.transformer.RoPEAttention",
        "rope_theta": 10000.0,
        "feat_sizes": [_STRIDE16, _STRIDE16],
        "embedding_dim": _D_MODEL,
        "num_heads": 1,
        "downsample_rate": 1,
        "dropout": 0.1,
    }
    if kv_in_dim is not None:
        attention.update(rope_k_repeat=True, kv_in_dim=kv_in_dim)
    return attention


def tiny_sam2_config() -> dict:
    """The tiny model's config as a plain dict (the hiera_t config with shrunk dimensions)."""
    embed_dim = 8
    stage_dims = [embed_dim * 2**i for i in range(4)]  # Hiera doubles the width per stage
    return {
        "model": {
            "_target_": "sam2.modeling.sam2_base.SAM2Base",
            "image_encoder": {
                "_target_": "sam2.modeling.backbones.image_encoder.ImageEncoder",
                "scalp": 1,
                "trunk": {
                    "_target_": "sam2.modeling.backbones.hieradet.Hiera",
                    "embed_dim": embed_dim,
                    "num_heads": 1,
                    # Stage-first blocks pool their queries inside windows, so the one
                    # global-attention block sits second in stage 3, as in hiera_t.
                    "stages": [1, 1, 2, 1],
                    "global_att_blocks": [3],
                    "window_spec": [8, 4, 4, 4],
                    "window_pos_embed_bkg_spatial_size": [4, 4],
                },
                "neck": {
                    "_target_": "sam2.modeling.backbones.image_encoder.FpnNeck",
                    "position_encoding": _sine(_D_MODEL),
                    "d_model": _D_MODEL,
                    "backbone_channel_list": stage_dims[::-1],
                    "fpn_top_down_levels": [2, 3],
                    "fpn_interp_model": "nearest",
                },
            },
            "memory_attention": {
                "_target_": "sam2.modeling.memory_attention.MemoryAttention",
                "d_model": _D_MODEL,
                "pos_enc_at_input": True,
                "layer": {
                    "_target_": "sam2.modeling.memory_attention.MemoryAttentionLayer",
                    "activation": "relu",
                    "dim_feedforward": 2 * _D_MODEL,
                    "dropout": 0.1,
                    "pos_enc_at_attn": False,
                    "self_attention": _rope(),
                    "d_model": _D_MODEL,
                    "pos_enc_at_cross_attn_keys": True,
                    "pos_enc_at_cross_attn_queries": False,
                    "cross_attention": _rope(kv_in_dim=_MEM_DIM),
                },
                "num_layers": 1,
            },
            "memory_encoder": {
                "_target_": "sam2.modeling.memory_encoder.MemoryEncoder",
                "out_dim": _MEM_DIM,
                "in_dim": _D_MODEL,
                "position_encoding": _sine(_MEM_DIM),
                "mask_downsampler": {
                    "_target_": "sam2.modeling.memory_encoder.MaskDownSampler",
                    "embed_dim": _D_MODEL,
                    "kernel_size": 4,
                    "stride": 4,
                    "padding": 0,
                },
                "fuser": {
                    "_target_": "sam2.modeling.memory_encoder.Fuser",
                    "layer": {
                        "_target_": "sam2.modeling.memory_encoder.CXBlock",
                        "dim": _D_MODEL,
                        "kernel_size": 7,
                        "padding": 3,
                        "layer_scale_init_value": 1e-6,
                        "use_dwconv": True,
                    },
                    "num_layers": 1,
                },
            },
            "num_maskmem": 7,
            "image_size": IMAGE_SIZE,
            "sigmoid_scale_for_mem_enc": 20.0,
            "sigmoid_bias_for_mem_enc": -10.0,
            "use_mask_input_as_output_without_sam": True,
            "directly_add_no_mem_embed": True,
            "no_obj_embed_spatial": True,
            "use_high_res_features_in_sam": True,
            "multimask_output_in_sam": True,
            "iou_prediction_use_sigmoid": True,
            "use_obj_ptrs_in_encoder": True,
            "add_tpos_enc_to_obj_ptrs": True,
            "proj_tpos_enc_in_obj_ptrs": True,
            "use_signed_tpos_enc_to_obj_ptrs": True,
            "only_obj_ptrs_in_the_past_for_eval": True,
            "pred_obj_scores": True,
            "pred_obj_scores_mlp": True,
            "fixed_no_obj_ptr": True,
            "multimask_output_for_tracking": True,
            "use_multimask_token_for_obj_ptr": True,
            "multimask_min_pt_num": 0,
            "multimask_max_pt_num": 1,
            "use_mlp_for_obj_ptr_proj": True,
            "compile_image_encoder": False,
        }
    }


def write_tiny_sam2(directory: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write `config.yaml` and `model.pt` (about 2 MB) to `directory`; return the directory.

    The weights come from the model's own initialisers under `seed`, so two calls with the same
    seed write the same checkpoint; the caller's global RNG state is left untouched.
    """
    import torch
    from omegaconf import OmegaConf

    from segzero_model.segmentation.segmenter import build_sam2_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / CONFIG_NAME
    header = "# Tiny random SAM2 written by segzero_model.tiny.sam2 (tests only; masks are noise)\n"
    config_path.write_text(header + OmegaConf.to_yaml(OmegaConf.create(tiny_sam2_config())))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_sam2_model(config_path, device="cpu")
    torch.save({"model": model.state_dict()}, directory / CHECKPOINT_NAME)
    return directory
