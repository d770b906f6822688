"""Shared fixtures: tiny, randomly initialised checkpoints in the real on-disk formats, loaded
through the same code users call with hub ids.

They are built once into the tiny-model cache (`$SEGZERO_CACHE`, default ~/.cache/segzero),
under a name that hashes the builders' source, so later runs reuse them and a changed builder
never meets a stale build.
"""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_cache():
    """The cache root holding the built tiny checkpoints (what `segzero infer --tiny` reads)."""
    from segzero_model.tiny import default_cache_dir, ensure_tiny_models

    ensure_tiny_models()
    return default_cache_dir()


@pytest.fixture(scope="session")
def tiny_model_dirs(tiny_cache):
    from segzero_model.tiny import ensure_tiny_models

    return ensure_tiny_models(tiny_cache)


@pytest.fixture(scope="session")
def tiny_qwen_dir(tiny_model_dirs):
    return tiny_model_dirs[0]


@pytest.fixture(scope="session")
def tiny_sam2_dir(tiny_model_dirs):
    return tiny_model_dirs[1]


@pytest.fixture(scope="session")
def tiny_reasoner(tiny_qwen_dir):
    from segzero_model.reasoner import Reasoner

    return Reasoner.from_pretrained(tiny_qwen_dir, device="cpu", max_new_tokens=128)


@pytest.fixture(scope="session")
def tiny_segmenter(tiny_sam2_dir):
    from segzero_model.segmenter import Segmenter

    return Segmenter.from_pretrained(tiny_sam2_dir, device="cpu")


@pytest.fixture(scope="session")
def training_data_dir(tmp_path_factory):
    """Four synthetic rows in the released training layout, saved as the released data are."""
    from datasets import DatasetDict

    from training.synthetic import synthetic_dataset

    path = tmp_path_factory.mktemp("training-data") / "synthetic"
    DatasetDict({"train": synthetic_dataset(4, seed=0)}).save_to_disk(str(path))
    return path
