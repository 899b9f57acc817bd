"""Atomic writes (entrobust.io): complete file or old file, never a temp file left behind."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import entrobust.io
from entrobust.io import atomic_path, atomic_write_bytes, atomic_write_json, atomic_write_text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_bytes_round_trip(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "deep" / "dir" / "blob.bin"  # parents are created
    assert atomic_write_bytes(path, data) == path
    assert path.read_bytes() == data
    assert sorted(p.name for p in path.parent.iterdir()) == ["blob.bin"]


def test_text_and_json(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "ε = 8/255\n")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "ε = 8/255\n"
    atomic_write_json(tmp_path / "b.json", {"x": [1, 2], "y": None})
    assert json.loads((tmp_path / "b.json").read_text()) == {"x": [1, 2], "y": None}
    atomic_write_text(tmp_path / "a.txt", "replaced")
    assert (tmp_path / "a.txt").read_text() == "replaced"


def test_unserializable_json_touches_nothing(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "r.json", {"ok": 1})
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "r.json", {"bad": object()})
    assert json.loads((tmp_path / "r.json").read_text()) == {"ok": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_failure_inside_block_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "result.bin"
    atomic_write_bytes(path, b"old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(path) as tmp:
            assert tmp.parent == path.parent and tmp != path
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.bin"]


def test_failed_rename_leaves_no_temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.txt"
    atomic_write_text(path, "old")

    def broken_replace(src: object, dst: object) -> None:
        raise OSError("no space left")

    monkeypatch.setattr(entrobust.io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="no space"):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.txt"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_new_file_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # not mkstemp's private 0o600


def test_writer_using_its_own_handle(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write("a\nb\n")
        assert not path.exists()  # nothing visible until the block succeeds
    assert path.read_text() == "a\nb\n"


def test_atomic_rewrite_keeps_the_file_mode(tmp_path: Path) -> None:
    """A private (0600) file stays private when rewritten atomically or published from a stage."""
    import stat

    from entrobust.io import atomic_write_text, publish, stage_bytes

    p = tmp_path / "secret.json"
    atomic_write_text(p, "{}")
    os.chmod(p, 0o600)
    atomic_write_text(p, '{"a": 1}')
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    publish(stage_bytes(p, b"{}"), p)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    assert sorted(x.name for x in tmp_path.iterdir()) == ["secret.json"]
