"""Tests for slidelabel.store.atomic: all or nothing under the final name, no leftovers."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest

from slidelabel.errors import OutputError
from slidelabel.store.atomic import atomic_path, write_json_atomic


def test_atomic_path_replaces_target_and_leaves_nothing_else(tmp_path: Path) -> None:
    target = tmp_path / "table.parquet"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path
        assert tmp.suffix == ".parquet"
        assert tmp != target
        assert target.read_bytes() == b"old"  # untouched until the block succeeds
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert sorted(tmp_path.iterdir()) == [target]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_atomic_path_gives_new_files_the_usual_permissions(tmp_path: Path) -> None:
    target = tmp_path / "labels.tiff"
    umask = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644


def test_atomic_path_gives_unique_names(tmp_path: Path) -> None:
    target = tmp_path / "labels.tiff"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_bytes(b"1")
        second.write_bytes(b"2")
    assert target.read_bytes() == b"1"  # the outer block finishes last
    assert sorted(tmp_path.iterdir()) == [target]


def test_atomic_path_on_exception_keeps_old_file_and_removes_temporary(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("old")
    with pytest.raises(KeyError, match="boom"), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise KeyError("boom")
    assert target.read_text() == "old"
    assert sorted(tmp_path.iterdir()) == [target]


def test_atomic_path_on_exception_creates_no_file(tmp_path: Path) -> None:
    target = tmp_path / "new.bin"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"x")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_in_missing_folder_is_output_error(tmp_path: Path) -> None:
    with pytest.raises(OutputError, match="missing"), atomic_path(tmp_path / "missing" / "a.json"):
        pass


def test_atomic_path_when_writer_removed_temporary_is_output_error(tmp_path: Path) -> None:
    target = tmp_path / "a.json"
    with pytest.raises(OutputError, match="removed"), atomic_path(target) as tmp:
        tmp.unlink()
    assert list(tmp_path.iterdir()) == []


def test_write_json_atomic_sorted_indented(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    write_json_atomic(target, {"b": 1, "a": [1, 2], "c": {"z": None, "y": "é"}})
    text = target.read_text(encoding="utf-8")
    assert text == json.dumps(
        {"a": [1, 2], "b": 1, "c": {"y": "é", "z": None}}, sort_keys=True, indent=2
    ) + "\n"
    assert json.loads(text)["c"]["y"] == "é"


@pytest.mark.parametrize(
    ("obj", "error"), [({"a": object()}, TypeError), ({"a": float("nan")}, ValueError)]
)
def test_write_json_atomic_rejects_non_json_without_touching_disk(
    tmp_path: Path, obj: object, error: type[Exception]
) -> None:
    target = tmp_path / "m.json"
    target.write_text("{}")
    with pytest.raises(error):
        write_json_atomic(target, obj)
    assert target.read_text() == "{}"
    assert sorted(tmp_path.iterdir()) == [target]
