"""Export folders are removed with the process that made them, and only then (eighteenth attack,
medium: a second server started on the same data folder removed the first one's exports in
progress, and 6 of 71 of them answered 500)."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from slidelabel.store.export_folders import EXPORTS_FOLDER, new_export_folder, sweep_export_folders


def _export_then_wait(data_dir: Path, made, go) -> None:
    folder = new_export_folder(data_dir)
    (folder / "a.geojson").write_text("{}")
    made.put(str(folder))
    go.wait(60)


def _exporting(fork, data_dir: Path):
    """A process with an export in progress: the process, its export folder, what ends it."""
    made, go = fork.Queue(), fork.Event()
    process = fork.Process(target=_export_then_wait, args=(data_dir, made, go))
    process.start()
    return process, Path(made.get(timeout=30)), go


def test_a_sweep_removes_the_exports_of_ended_processes_and_its_own_but_not_a_living_ones(tmp_path):
    fork = multiprocessing.get_context("fork")
    living, in_progress, go = _exporting(fork, tmp_path)
    killed, left, _ = _exporting(fork, tmp_path)
    killed.kill()  # a server killed while it sent an export: its lock goes with it
    killed.join()
    before_locks = tmp_path / EXPORTS_FOLDER / "export-k1lled"  # a server's from before process folders
    before_locks.mkdir()
    own = new_export_folder(tmp_path)
    try:
        sweep_export_folders(tmp_path)
        assert in_progress.exists(), "another living server's export in progress was removed"
        assert not left.exists() and not before_locks.exists() and not own.exists()
    finally:
        go.set()
        living.join(30)
    assert in_progress.exists()  # no sweep since its process ended
    sweep_export_folders(tmp_path)
    assert list((tmp_path / EXPORTS_FOLDER).glob("*")) == []
    assert new_export_folder(tmp_path).is_dir()  # this process makes its folder again after a sweep
