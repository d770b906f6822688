"""Segmenter on the tiny random SAM2: shapes, the embedding cache, prompt checks, model lookup."""

from __future__ import annotations

import shutil
import socket

import numpy as np
import pytest
import torch
from conftest import count_embeddings

from segzero_model.errors import ModelNotFoundError
from segzero_model.segmentation import segmenter as segmenter_module
from segzero_model.segmentation.segmenter import Segmenter, build_sam2_model, resolve_sam2
from segzero_model.tiny.sam2 import CHECKPOINT_NAME, CONFIG_NAME


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture
def fresh_segmenter(tiny_sam2_dir):
    return Segmenter.from_pretrained(tiny_sam2_dir, device="cpu")


# --- masks --------------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width", [(1, 1), (37, 91), (480, 640), (2000, 50)])
def test_mask_is_bool_at_image_size(tiny_segmenter, height, width):
    assert tiny_segmenter.set_image(_image(height, width))
    box = (0.0, 0.0, width - 1.0, height - 1.0)
    for prompt in [(box, None), (None, [(width / 2, height / 2)]), (box, [(0.0, 0.0), (1, 1)])]:
        mask, score = tiny_segmenter.predict(*prompt)
        assert mask.dtype == np.bool_ and mask.shape == (height, width)
        assert type(score) is float and 0.0 <= score <= 1.0


def test_predict_is_repeatable_and_box_corner_order_does_not_matter(tiny_segmenter):
    tiny_segmenter.set_image(_image(60, 80))
    mask, score = tiny_segmenter.predict((10, 5, 50, 40), [(20, 20)])
    again, again_score = tiny_segmenter.predict((50, 40, 10, 5), [(20, 20)])
    assert np.array_equal(mask, again) and score == again_score


# --- embedding cache ----------------------------------------------------------------------------


def test_same_content_reuses_the_embedding(tiny_segmenter, monkeypatch):
    embeddings = count_embeddings(tiny_segmenter, monkeypatch)
    image = _image(48, 64, seed=1)
    assert tiny_segmenter.set_image(image) is True
    assert tiny_segmenter.set_image(image.copy()) is False
    assert len(embeddings) == 1
    assert tiny_segmenter.set_image(np.ascontiguousarray(image[:, ::-1])) is True
    changed = image.copy()
    changed[0, 0, 0] ^= 1
    assert tiny_segmenter.set_image(changed) is True
    assert len(embeddings) == 3


def test_key_identifies_the_image(tiny_segmenter, monkeypatch):
    embeddings = count_embeddings(tiny_segmenter, monkeypatch)
    assert tiny_segmenter.set_image(_image(48, 64, seed=2), key=(17, 500)) is True
    # The key wins over the content: same stamp means same frame.
    assert tiny_segmenter.set_image(_image(48, 64, seed=3), key=(17, 500)) is False
    assert len(embeddings) == 1
    assert tiny_segmenter.set_image(_image(48, 64, seed=3), key=(17, 600)) is True
    assert len(embeddings) == 2


def test_reused_embedding_gives_the_same_mask(tiny_segmenter):
    image = _image(50, 70, seed=4)
    tiny_segmenter.set_image(image)
    first = tiny_segmenter.predict((5, 5, 60, 40), None)
    tiny_segmenter.set_image(_image(50, 70, seed=5))
    other = tiny_segmenter.predict((5, 5, 60, 40), None)
    tiny_segmenter.set_image(image)
    assert tiny_segmenter.set_image(image) is False
    again = tiny_segmenter.predict((5, 5, 60, 40), None)
    assert np.array_equal(first[0], again[0]) and first[1] == again[1]
    assert first[1] != other[1]


# --- argument checks ----------------------------------------------------------------------------


def test_predict_before_set_image(fresh_segmenter):
    with pytest.raises(RuntimeError, match="set_image"):
        fresh_segmenter.predict((0, 0, 5, 5), None)


@pytest.mark.parametrize(
    "box, points",
    [
        (None, None),
        (None, []),
        ((0, 0, 5), None),
        ((0, 0, 5, float("nan")), None),
        (None, [(1, 2, 3)]),
        (None, [1, 2]),
    ],
)
def test_bad_prompts(tiny_segmenter, box, points):
    tiny_segmenter.set_image(_image(20, 20))
    with pytest.raises(ValueError):
        tiny_segmenter.predict(box, points)


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((20, 20, 3), np.float32),
        np.zeros((20, 20), np.uint8),
        np.zeros((20, 20, 4), np.uint8),
        np.zeros((0, 20, 3), np.uint8),
        [[[0, 0, 0]]],
    ],
)
def test_bad_images(tiny_segmenter, image):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        tiny_segmenter.set_image(image)


def test_close_frees_the_model(fresh_segmenter):
    fresh_segmenter.set_image(_image(20, 20))
    fresh_segmenter.close()
    with pytest.raises(RuntimeError, match="closed"):
        fresh_segmenter.set_image(_image(20, 20))
    fresh_segmenter.close()  # idempotent


# --- model lookup -------------------------------------------------------------------------------


def test_directory_lookup(tiny_sam2_dir):
    assert resolve_sam2(tiny_sam2_dir) == (
        tiny_sam2_dir / CONFIG_NAME,
        tiny_sam2_dir / CHECKPOINT_NAME,
    )


def test_missing_directory_and_incomplete_directories(tmp_path, tiny_sam2_dir):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        Segmenter.from_pretrained(tmp_path / "nowhere", device="cpu")
    with pytest.raises(ModelNotFoundError, match="0 .pt checkpoints"):
        Segmenter.from_pretrained(tmp_path, device="cpu")
    shutil.copy(tiny_sam2_dir / CHECKPOINT_NAME, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(ModelNotFoundError, match="from_config"):  # no yaml, unknown .pt name
        Segmenter.from_pretrained(tmp_path, device="cpu")


def test_released_checkpoint_name_selects_its_config(tmp_path, tiny_sam2_dir, monkeypatch):
    released = {"test/tiny-sam2": (str(tiny_sam2_dir / CONFIG_NAME), "tiny_release.pt")}
    monkeypatch.setattr(segmenter_module, "_released", lambda: released)
    checkpoint = tmp_path / "tiny_release.pt"
    shutil.copy(tiny_sam2_dir / CHECKPOINT_NAME, checkpoint)
    assert Segmenter.from_pretrained(checkpoint, device="cpu").model_id == str(checkpoint)
    assert resolve_sam2(tmp_path) == (str(tiny_sam2_dir / CONFIG_NAME), checkpoint)


def test_hub_id_found_in_the_local_cache(tmp_path, tiny_sam2_dir, monkeypatch):
    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--test--tiny-sam2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    shutil.copy(tiny_sam2_dir / CHECKPOINT_NAME, repo / "snapshots" / commit / "tiny.pt")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    released = {"test/tiny-sam2": (str(tiny_sam2_dir / CONFIG_NAME), "tiny.pt")}
    monkeypatch.setattr(segmenter_module, "_released", lambda: released)
    assert Segmenter.from_pretrained("test/tiny-sam2", device="cpu").model_id == "test/tiny-sam2"


def test_hub_id_not_cached_fails_without_touching_the_network(tmp_path, monkeypatch):
    """Offline, or with the hub unreachable, the lookup fails at once: no connection is even
    attempted (the hub client's retries are what made it slow)."""
    from huggingface_hub import constants

    connections = []

    def no_connection(sock, address):
        connections.append(address)
        raise OSError(f"test: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", no_connection)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))  # never the user's cache
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # never a real download
    with pytest.raises(ModelNotFoundError, match="hf download facebook/sam2.1-hiera-large"):
        Segmenter.from_pretrained("facebook/sam2.1-hiera-large", device="cpu")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    probes = []
    monkeypatch.setattr(segmenter_module, "_hub_reachable", lambda: probes.append(1) or False)
    with pytest.raises(ModelNotFoundError, match="cannot be reached"):
        Segmenter.from_pretrained("facebook/sam2.1-hiera-large", device="cpu")
    assert probes == [1]  # one probe decides, no download is tried
    with pytest.raises(ModelNotFoundError, match="released hub id"):
        Segmenter.from_pretrained("facebook/sam2.1-hiera-lrage", device="cpu")
    assert probes == [1] and connections == []


def test_the_hub_probe_is_one_request_with_a_short_timeout(monkeypatch):
    import huggingface_hub

    requests = []

    class Session:
        def head(self, url, timeout):
            requests.append(timeout)
            raise OSError("unreachable")

    monkeypatch.setattr(huggingface_hub, "get_session", lambda: Session())
    assert segmenter_module._hub_reachable() is False
    assert requests == [segmenter_module._HUB_PROBE_TIMEOUT_S] and requests[0] <= 5


def test_config_lookup(tiny_sam2_dir):
    assert segmenter_module._config_file("configs/sam2.1/sam2.1_hiera_l.yaml").is_file()
    assert segmenter_module._config_file("sam2/sam2_hiera_s.yaml").is_file()
    with pytest.raises(ModelNotFoundError, match="packaged config"):
        Segmenter.from_config("configs/sam3/nothing.yaml", tiny_sam2_dir / CHECKPOINT_NAME)
    with pytest.raises(ModelNotFoundError, match="checkpoint"):
        Segmenter.from_config(tiny_sam2_dir / CONFIG_NAME, tiny_sam2_dir / "nothing.pt")


def test_not_a_model_config(tmp_path):
    (tmp_path / "other.yaml").write_text("trainer: {epochs: 3}\n")
    with pytest.raises(ValueError, match="model._target_"):
        build_sam2_model(tmp_path / "other.yaml")


# --- strict weights -----------------------------------------------------------------------------


def _broken_checkpoint(tiny_sam2_dir, path, edit):
    state = torch.load(tiny_sam2_dir / CHECKPOINT_NAME, weights_only=True)["model"]
    edit(state)
    torch.save({"model": state}, path)
    return path


def test_checkpoint_with_wrong_keys(tmp_path, tiny_sam2_dir):
    def rename(state):
        state["not_sam2.weight"] = state.pop("sam_mask_decoder.iou_token.weight")

    checkpoint = _broken_checkpoint(tiny_sam2_dir, tmp_path / "renamed.pt", rename)
    with pytest.raises(ValueError, match=r"1 missing keys \[sam_mask_decoder.iou_token.weight\]"):
        Segmenter.from_config(tiny_sam2_dir / CONFIG_NAME, checkpoint, device="cpu")


def test_checkpoint_with_wrong_shapes(tmp_path, tiny_sam2_dir):
    def grow(state):
        state["no_mem_embed"] = torch.zeros(1, 1, 999)

    checkpoint = _broken_checkpoint(tiny_sam2_dir, tmp_path / "grown.pt", grow)
    with pytest.raises(ValueError, match="(?s)does not match config.*no_mem_embed"):
        Segmenter.from_config(tiny_sam2_dir / CONFIG_NAME, checkpoint, device="cpu")


def test_checkpoint_that_is_not_a_state_dict(tmp_path, tiny_sam2_dir):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read SAM2 checkpoint"):
        Segmenter.from_config(tiny_sam2_dir / CONFIG_NAME, tmp_path / "junk.pt", device="cpu")


# --- a real architecture ------------------------------------------------------------------------


@pytest.mark.slow
def test_packaged_config_with_a_released_checkpoint_name(tmp_path):
    """hiera_t with random weights, saved under its released name: about 15 s on 2 CPU cores."""
    model = build_sam2_model("configs/sam2.1/sam2.1_hiera_t.yaml")
    checkpoint = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, checkpoint)
    del model
    segmenter = Segmenter.from_pretrained(checkpoint, device="cpu")
    assert segmenter.set_image(_image(30, 40))
    mask, score = segmenter.predict((2, 2, 30, 20), [(10, 10)])
    assert mask.shape == (30, 40) and mask.dtype == np.bool_ and isinstance(score, float)
