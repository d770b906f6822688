"""segzero_model.tiny.build_into_cache: a cache entry appears whole or not at all."""

import pytest

from segzero_model.tiny import build_into_cache


def built(path):
    return (path / "done").is_file()


def test_builds_once_into_place(tmp_path):
    calls = []

    def build(directory):
        calls.append(directory)
        (directory / "done").write_text("x")

    target = tmp_path / "cache" / "entry"
    assert build_into_cache(target, build, built) == target and built(target)
    assert build_into_cache(target, build, built) == target
    assert len(calls) == 1 and calls[0].parent == target.parent and calls[0] != target
    assert sorted(p.name for p in target.parent.iterdir()) == ["entry"]  # no staging left


def test_an_interrupted_build_leaves_nothing(tmp_path):
    def build(directory):
        (directory / "half").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_into_cache(tmp_path / "entry", build, built)
    assert list(tmp_path.iterdir()) == []


def test_a_copy_finished_first_by_another_process_is_used(tmp_path):
    target = tmp_path / "entry"

    def build(directory):  # meanwhile another process renamed its finished copy into place
        (directory / "done").write_text("mine")
        target.mkdir()
        (target / "done").write_text("theirs")
        (target / "other").write_text("x")  # a non-empty target: our rename fails

    assert build_into_cache(target, build, built) == target
    assert (target / "done").read_text() == "theirs" and len(list(tmp_path.iterdir())) == 1
