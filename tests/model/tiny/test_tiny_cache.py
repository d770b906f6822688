"""segzero_model.tiny.build_into_cache: a cache entry appears whole or not at all."""

import time

import pytest

from segzero_model.tiny import build_into_cache


def built(path):
    return (path / "done").is_file()


def entries(folder):
    """What a build left in the cache folder, besides its lock file (which stays, as locks do)."""
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".lock")


def test_builds_once_into_place(tmp_path):
    calls = []

    def build(directory):
        calls.append(directory)
        (directory / "done").write_text("x")

    target = tmp_path / "cache" / "entry"
    assert build_into_cache(target, build, built) == target and built(target)
    assert build_into_cache(target, build, built) == target
    assert len(calls) == 1 and calls[0].parent == target.parent and calls[0] != target
    assert entries(target.parent) == ["entry"]  # no staging left


def test_an_interrupted_build_leaves_nothing(tmp_path):
    def build(directory):
        (directory / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_into_cache(tmp_path / "entry", build, built)
    assert entries(tmp_path) == []


def test_a_copy_finished_first_by_another_process_is_used(tmp_path):
    target = tmp_path / "entry"

    def build(directory):  # meanwhile another process renamed its finished copy into place
        (directory / "done").write_text("mine")
        target.mkdir()
        (target / "done").write_text("theirs")
        (target / "other").write_text("x")  # a non-empty target: our rename fails

    assert build_into_cache(target, build, built) == target
    assert (target / "done").read_text() == "theirs" and entries(tmp_path) == ["entry"]


def test_a_second_process_waits_for_the_first_build_instead_of_building_again(tmp_path):
    """Two builders of one entry at once (two test workers, two nodes started with --tiny):
    the second waits on the lock and uses the first one's copy."""
    import threading

    target = tmp_path / "entry"
    calls, first_started = [], threading.Event()

    def build(directory):
        calls.append(directory)
        first_started.set()
        time.sleep(1.0)  # the second caller arrives meanwhile; without the lock it builds too
        (directory / "done").write_text("x")

    first = threading.Thread(target=build_into_cache, args=(target, build, built))
    first.start()
    assert first_started.wait(30)
    assert build_into_cache(target, build, built) == target
    first.join(30)
    assert len(calls) == 1 and built(target)
    assert entries(tmp_path) == ["entry"]


def test_the_fingerprint_hashes_the_builders_in_the_tiny_package(tmp_path, monkeypatch):
    import hashlib
    import shutil
    from pathlib import Path

    import segzero_model.reasoning.prompts as prompt
    import segzero_model.reasoning.reply_format as reply
    import segzero_model.tiny as tiny
    import segzero_model.tiny.qwen as qwen
    import segzero_model.tiny.sam2 as sam2_builder

    package = Path(tiny.__file__).parent
    assert Path(qwen.__file__).parent == Path(sam2_builder.__file__).parent == package
    # The builders, and the prompt and reply format the tiny reasoner is trained on.
    sources = (qwen, sam2_builder, prompt, reply)
    expected = hashlib.sha256(
        b"".join(Path(module.__file__).read_bytes() for module in sources)
    ).hexdigest()[:12]
    assert tiny.builder_fingerprint() == expected
    # A changed builder gives another cache entry (checked on a copy of the package).
    copy = Path(shutil.copytree(package, tmp_path / "tiny"))
    (copy / "sam2.py").write_text((copy / "sam2.py").read_text() + "\n# changed\n")
    monkeypatch.setattr(tiny, "__file__", str(copy / "__init__.py"))
    assert tiny.builder_fingerprint() != expected


def test_the_builder_named_sam2_does_not_hide_the_sam2_package():
    import importlib
    from pathlib import Path

    import segzero_model
    import segzero_model.tiny.sam2 as builder

    real = importlib.import_module("sam2.build_sam")
    assert builder.__name__ == "segzero_model.tiny.sam2"
    assert Path(segzero_model.__file__).parent not in Path(real.__file__).parents
    assert hasattr(real, "HF_MODEL_ID_TO_FILENAMES")
