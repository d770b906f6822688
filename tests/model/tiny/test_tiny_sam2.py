"""The tiny SAM2 writer: the real on-disk format, small, deterministic, loadable both ways."""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from segzero_model.segmentation.segmenter import Segmenter
from segzero_model.tiny.sam2 import CHECKPOINT_NAME, CONFIG_NAME, IMAGE_SIZE, write_tiny_sam2


def test_writes_a_hydra_config_and_an_official_checkpoint(tiny_sam2_dir):
    assert sorted(p.name for p in tiny_sam2_dir.iterdir()) == [CONFIG_NAME, CHECKPOINT_NAME]
    config = OmegaConf.load(tiny_sam2_dir / CONFIG_NAME)
    assert config.model._target_ == "sam2.modeling.sam2_base.SAM2Base"
    assert config.model.image_size == IMAGE_SIZE
    saved = torch.load(tiny_sam2_dir / CHECKPOINT_NAME, map_location="cpu", weights_only=True)
    assert list(saved) == ["model"]
    assert any(key.startswith("image_encoder.trunk.") for key in saved["model"])
    assert (tiny_sam2_dir / CHECKPOINT_NAME).stat().st_size < 4_000_000


def test_same_seed_same_weights(tmp_path, tiny_sam2_dir):
    again = write_tiny_sam2(tmp_path / "again", seed=0)
    other = write_tiny_sam2(tmp_path / "other", seed=1)
    first = torch.load(tiny_sam2_dir / CHECKPOINT_NAME, weights_only=True)["model"]
    second = torch.load(again / CHECKPOINT_NAME, weights_only=True)["model"]
    third = torch.load(other / CHECKPOINT_NAME, weights_only=True)["model"]
    key = "image_encoder.trunk.patch_embed.proj.weight"
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not torch.equal(first[key], third[key])


def test_from_pretrained_directory_loads_the_saved_weights(tiny_sam2_dir, tiny_segmenter):
    assert tiny_segmenter.device == "cpu"
    assert tiny_segmenter.model_id == str(tiny_sam2_dir)
    saved = torch.load(tiny_sam2_dir / CHECKPOINT_NAME, weights_only=True)["model"]
    loaded = tiny_segmenter._predictor.model.state_dict()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    assert not tiny_segmenter._predictor.model.training


def test_from_config_with_yaml_and_checkpoint(tiny_sam2_dir):
    segmenter = Segmenter.from_config(
        tiny_sam2_dir / CONFIG_NAME, tiny_sam2_dir / CHECKPOINT_NAME, device="cpu"
    )
    assert segmenter.model_id == str(tiny_sam2_dir / CHECKPOINT_NAME)
    decoder = segmenter._predictor.model.sam_mask_decoder
    assert decoder.dynamic_multimask_via_stability  # sam2's image-predictor override applied
