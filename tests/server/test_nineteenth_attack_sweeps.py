"""Sweeps remove only what no living process holds, and each API process runs them as it starts
(nineteenth attack, medium).

- A second ``serve`` on the same data folder removed every unfinished upload: the first server's
  uploads in progress were lost (answered 404). An upload now holds a lock on its file while it is
  received and checked; a sweep removes only the files whose lock it can take.
- With ``--http-workers 2`` an API process killed (SIGKILL) left its export folders and unfinished
  uploads until the whole server stopped. The API process uvicorn starts in its place now sweeps
  them as it starts.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from pathlib import Path

from fastapi.testclient import TestClient

from slidelabel.services.project_imports import receive_source
from slidelabel.services.uploads import UNFINISHED_PREFIX, UploadReceiver, sweep_unfinished_uploads
from slidelabel.settings import Settings
from slidelabel.store.export_folders import EXPORTS_FOLDER, new_export_folder

FORK = multiprocessing.get_context("fork")
BOUNDARY = "b0undary"
HEAD = (f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="cells.geojson"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n").encode()
TAIL = f"\r\n--{BOUNDARY}--\r\n".encode()
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
FIRST, SECOND = b"a" * 100_000, b"b" * 100_000


def _slow_source_upload(data_dir: str, events, go) -> None:
    """A real upload of a slide's source file (the service the route calls) whose body stops half way
    until ``go``; it reports its unfinished file, then where the service kept the file (or its error)."""
    settings = Settings(data_dir=Path(data_dir), db=f"sqlite:///{data_dir}/unused.sqlite", broker="memory://")

    async def body():
        yield HEAD
        yield FIRST
        unfinished = list((Path(data_dir) / "projects").rglob(f"{UNFINISHED_PREFIX}*"))
        events.put(("half", [str(path) for path in unfinished]))
        await asyncio.to_thread(go.wait, 120)
        yield SECOND
        yield TAIL

    async def upload() -> Path:
        return await receive_source(body(), content_type=CONTENT_TYPE, content_length=None, settings=settings,
                                    project_id=1, slide_id=1)

    try:
        events.put(("kept", str(asyncio.run(upload()))))
    except Exception as error:  # noqa: BLE001 - reported to the test
        events.put(("error", f"{type(error).__name__}: {error}"))


def _received_then_checked(data_dir: str, events, go) -> None:
    """An upload received in full, then checked (as a slide is read before it is kept) until ``go``."""
    folder = Path(data_dir) / "uploads" / "1"
    receiver = UploadReceiver(CONTENT_TYPE, folder, limit_bytes=1 << 20, declared_bytes=None)
    try:
        for chunk in (HEAD, FIRST, SECOND, TAIL):
            receiver.feed(chunk)
        _name, received = receiver.finish()
        events.put(("checking", str(received)))
        go.wait(120)
        kept = folder / "cells.geojson"
        os.replace(received, kept)  # what adding the slide does once it was checked
        events.put(("kept", str(kept)))
    except Exception as error:  # noqa: BLE001 - reported to the test
        events.put(("error", f"{type(error).__name__}: {error}"))
    finally:
        receiver.discard()


def _start(target, data_dir: Path):
    events, go = FORK.Queue(), FORK.Event()
    process = FORK.Process(target=target, args=(str(data_dir), events, go))
    process.start()
    return process, events, go


def _next(events, kind: str) -> str:
    got, value = events.get(timeout=60)
    assert got == kind, (got, value)
    return value


def test_a_sweep_from_another_process_leaves_an_upload_being_received_and_removes_an_abandoned_one(tmp_path):
    data_dir = tmp_path / "data"
    abandoned = data_dir / "uploads" / "3" / f"{UNFINISHED_PREFIX}0123456789abcdef-half.svs"
    abandoned.parent.mkdir(parents=True)
    abandoned.write_bytes(b"x" * 1000)  # a server's that stopped: no process holds it
    living, events, go = _start(_slow_source_upload, data_dir)
    try:
        (unfinished,) = _next(events, "half")
        removed = sweep_unfinished_uploads(data_dir)  # a second server starting on the same data folder
        assert removed == [abandoned] and not abandoned.exists()
        assert Path(unfinished).exists(), "the sweep removed an upload in progress"
        go.set()
        kept = Path(_next(events, "kept"))
    finally:
        go.set()
        living.join(60)
    assert kept.read_bytes() == FIRST + SECOND
    assert not list(data_dir.rglob(f"{UNFINISHED_PREFIX}*"))


def test_an_upload_keeps_its_file_while_it_is_checked_and_a_killed_ones_file_is_swept(tmp_path):
    data_dir = tmp_path / "data"
    checking, events, go = _start(_received_then_checked, data_dir)
    try:
        received = Path(_next(events, "checking"))
        assert sweep_unfinished_uploads(data_dir) == []
        assert received.exists(), "the sweep removed an upload received in full, while it was checked"
        go.set()
        assert Path(_next(events, "kept")).read_bytes() == FIRST + SECOND
    finally:
        go.set()
        checking.join(60)

    killed, events, go = _start(_slow_source_upload, data_dir)
    (unfinished,) = _next(events, "half")
    os.kill(killed.pid, signal.SIGKILL)  # its lock goes with it
    killed.join(60)
    assert sweep_unfinished_uploads(data_dir) == [Path(unfinished)]
    assert not Path(unfinished).exists()


def _export_then_wait(data_dir: str, events, go) -> None:
    folder = new_export_folder(Path(data_dir))
    (folder / "a.geojson").write_text("{}")
    events.put(("made", str(folder)))
    go.wait(120)


def test_an_api_process_removes_at_its_start_what_ended_processes_left_and_nothing_living_ones_hold(app, settings):
    data_dir = settings.data_dir
    killed, events, _ = _start(_export_then_wait, data_dir)
    dead_export = Path(_next(events, "made"))
    os.kill(killed.pid, signal.SIGKILL)  # an API process killed in the middle of an export
    killed.join(60)
    living, living_events, living_go = _start(_export_then_wait, data_dir)
    uploading, upload_events, upload_go = _start(_slow_source_upload, data_dir)
    try:
        living_export = Path(_next(living_events, "made"))
        (in_progress,) = _next(upload_events, "half")
        abandoned = data_dir / "uploads" / "1" / f"{UNFINISHED_PREFIX}0123456789abcdef-half.svs"
        abandoned.parent.mkdir(parents=True, exist_ok=True)
        abandoned.write_bytes(b"x" * 1000)
        assert dead_export.exists()

        with TestClient(app):  # the replacement API process starts
            assert not dead_export.exists() and not dead_export.parent.exists(), "a dead process's exports were kept"
            assert not abandoned.exists(), "an abandoned upload was kept"
            assert living_export.exists(), "a living process's export was removed"
            assert Path(in_progress).exists(), "a living process's upload was removed"
        upload_go.set()
        assert Path(_next(upload_events, "kept")).read_bytes() == FIRST + SECOND
    finally:
        living_go.set()
        upload_go.set()
        living.join(60)
        uploading.join(60)
    assert [path.name for path in (data_dir / EXPORTS_FOLDER).iterdir()] == [living_export.parent.name]
