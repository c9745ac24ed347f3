"""Where the API builds an export before it sends it: ``<data>/exports/process-<pid>-<x>/<random>/``,
one folder per download, removed once the download ends (sent, given up by the client, or cut off
by a stopping server).

Each API process builds its exports in a folder of its own, on which it holds a lock (``flock``)
while it lives. A server killed while it built or sent one cannot remove it, so ``serve`` removes
the folders whose process has gone, before it answers and again when it stops, and each API
process does as it starts (one that uvicorn starts in place of a killed one removes what that one
left, nineteenth attack): no export folder outlives for long the process that made it, and a
second server started on the same data folder (a restart that overlaps the old server, two API
containers on one volume) removes none of the first one's exports in progress (before, it
removed them all: 6 of 71 exports answered 500, the eighteenth attack).

Under the data folder, not the system's temporary folder, so that the sweep finds exactly the
folders of this data folder's servers and no other server's.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

#: The folder of export folders, under the data folder.
EXPORTS_FOLDER = "exports"
#: The file of a process folder that its process holds locked while it lives.
LOCK_FILE = ".lock"
#: Seconds a process folder being made (``.process-*``, not yet locked) is left alone by sweeps.
MAKING_S = 60.0

_OWN: dict[Path, tuple[int, Path, int]] = {}  # data folder -> (pid, process folder, locked descriptor)
_OWN_LOCK = threading.Lock()


def new_export_folder(data_dir: Path) -> Path:
    """A new, empty folder (mode 0700) for one export, in this process's folder under
    ``data_dir``/:data:`EXPORTS_FOLDER`."""
    return Path(tempfile.mkdtemp(prefix="export-", dir=_process_folder(data_dir)))


def sweep_export_folders(data_dir: Path, *, own: bool = True) -> list[Path]:
    """Remove the export folders under ``data_dir`` of processes that have ended, and with
    ``own`` this process's own (call it so when this process sends no more exports); the removed
    folders."""
    removed = []
    for path in sorted((data_dir / EXPORTS_FOLDER).glob("*")):
        if path.is_dir() and ((own and _release_own(data_dir, path)) or _abandoned(path)):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _process_folder(data_dir: Path) -> Path:
    """This process's folder under ``data_dir``, made and locked at its first export (again in a
    forked child, and after a sweep removed it)."""
    with _OWN_LOCK:
        own = _OWN.get(data_dir)
        if own is not None and own[0] == os.getpid() and own[1].is_dir():
            return own[1]
        parent = data_dir / EXPORTS_FOLDER
        parent.mkdir(parents=True, exist_ok=True)
        making = Path(tempfile.mkdtemp(prefix=".process-", dir=parent))
        descriptor = os.open(making / LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        folder = making.rename(parent / f"process-{os.getpid()}-{making.name.removeprefix('.process-')}")
        _OWN[data_dir] = (os.getpid(), folder, descriptor)
        return folder


def _release_own(data_dir: Path, path: Path) -> bool:
    """Whether ``path`` is this process's folder, its lock then given up."""
    with _OWN_LOCK:
        own = _OWN.get(data_dir)
        if own is None or own[0] != os.getpid() or own[1] != path:
            return False
        del _OWN[data_dir]
        os.close(own[2])
        return True


def _abandoned(path: Path) -> bool:
    """Whether no process holds ``path``'s lock: its process has ended (or it is no process
    folder, such as those of servers before locks; or one left half made a while ago)."""
    if path.name.startswith(".process-"):
        with contextlib.suppress(OSError):
            return time.time() - path.stat().st_mtime > MAKING_S
        return False
    try:
        descriptor = os.open(path / LOCK_FILE, os.O_RDWR)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)
    return True
