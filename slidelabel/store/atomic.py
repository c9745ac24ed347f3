"""Atomic file writes: a reader sees either the old file, the complete new one, or none.

Every output is first written under a temporary name in the destination folder (same filesystem,
so the final :func:`os.replace` is atomic), flushed to disk, and only then renamed onto its
final name. A crash or exception at any point leaves no half-written file under the final name.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from slidelabel.errors import OutputError

__all__ = ["atomic_path", "remove_temporaries", "write_json_atomic"]


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it replaces ``path`` atomically.

    Parameters
    ----------
    path : Path
        Final destination. Its folder must exist.

    Yields
    ------
    Path
        A unique, already created empty file next to ``path`` whose name ends with ``path``'s
        suffix (``.labels.tiff.3f9c0a1b2d4e5f60.tmp.tiff``), so writers that choose a format
        from the extension still work. The caller writes (or overwrites) it and closes it before
        leaving the ``with`` block.

    Raises
    ------
    OutputError
        If the folder does not exist or cannot be written, or the writer removed the temporary
        file.

    Notes
    -----
    On normal exit the temporary file is fsynced, renamed onto ``path`` with :func:`os.replace`
    and the folder is fsynced, so the rename itself survives a power cut. If the body raises,
    the temporary file is removed and the exception propagates unchanged.

    Examples
    --------
    >>> with atomic_path(folder / "table.parquet") as tmp:  # doctest: +SKIP
    ...     pyarrow.parquet.write_table(table, tmp)
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp{path.suffix}")
    try:
        # Not tempfile.mkstemp: it creates files readable by their owner only, and the outputs
        # must get the usual permissions (0o666 less the umask) like any other new file.
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as error:
        raise OutputError(f"cannot write {path}: {error.strerror or error}") from error
    try:
        yield tmp
        _fsync_file(tmp)
        try:
            os.replace(tmp, path)
        except OSError as error:
            raise OutputError(f"cannot replace {path}: {error.strerror or error}") from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_json_atomic(path: Path, obj: object) -> None:
    """Write ``obj`` as JSON (sorted keys, indent 2, trailing newline) to ``path`` atomically.

    Parameters
    ----------
    path : Path
        Destination file; its folder must exist.
    obj : object
        Anything :func:`json.dumps` accepts. NaN and infinities are rejected because they are not
        JSON and other readers would choke on them.

    Raises
    ------
    TypeError
        If ``obj`` holds something JSON cannot represent (nothing is written).
    ValueError
        If ``obj`` holds NaN or an infinity (nothing is written).
    OutputError
        If the file cannot be written.
    """
    # Serialise before touching the disk so a bad object never leaves a temporary file behind.
    text = json.dumps(obj, sort_keys=True, indent=2, allow_nan=False) + "\n"
    with atomic_path(path) as tmp:
        try:
            tmp.write_text(text, encoding="utf-8")
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error.strerror or error}") from error


def replace_folder(new: Path, folder: Path) -> None:
    """Put the finished folder ``new`` in the place of ``folder`` (a real folder, a link to one,
    or nothing); the old one is removed only after the swap, so readers always find one."""
    old = folder.with_name(f".{folder.name}.{secrets.token_hex(8)}.old")
    if folder.is_symlink() or folder.exists():
        os.replace(folder, old)
    os.replace(new, folder)
    if old.is_symlink():
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)


def remove_temporaries(folder: Path) -> list[Path]:
    """Remove what interrupted writers left in ``folder``: hidden entries whose names contain
    ``.tmp`` (the temporary files of :func:`atomic_path` and the scratch folders of writers).
    Call it only where no other writer is working. Returns what was removed."""
    removed = []
    for entry in folder.glob(".*.tmp*") if folder.is_dir() else ():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _fsync_file(path: Path) -> None:
    try:
        with open(path, "rb+") as file:
            os.fsync(file.fileno())
    except FileNotFoundError as error:
        raise OutputError(f"the writer of {path} removed its own temporary file") from error


def _fsync_folder(folder: Path) -> None:
    # Makes the rename durable on POSIX; Windows cannot open a folder and renames there are
    # journalled by NTFS anyway.
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
