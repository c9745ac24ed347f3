"""The on-disk layout of one slide's superpixels: file names, manifest and slide hash.

A slide's folder holds :data:`LABELS_FILE` (the label map, :mod:`slidelabel.store.label_map`),
:data:`TABLE_FILE` (the table, :mod:`slidelabel.store.superpixel_table`) and :data:`MANIFEST_FILE`
(JSON, written last, so a folder with a manifest is complete). Every file is written atomically
(:mod:`slidelabel.store.atomic`). ``docs/outputs.md`` describes the formats for users.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from slidelabel.errors import OutputError, ParameterError, SlideNotFoundError
from slidelabel.store.atomic import write_json_atomic

LABELS_FILE = "labels.tiff"
TABLE_FILE = "superpixels.parquet"
MANIFEST_FILE = "manifest.json"


def write_manifest(path: Path, manifest: dict) -> None:
    """Write the manifest as JSON (sorted keys, indent 2), atomically.

    Write it after the label map and the table: a folder with a manifest is complete.
    """
    if not isinstance(manifest, dict):
        raise TypeError(f"manifest must be a dict, got {type(manifest).__name__}")
    write_json_atomic(path, manifest)


def read_manifest(path: Path) -> dict | None:
    """Return the manifest at ``path``, or None if there is none (the folder is incomplete).

    Raises
    ------
    OutputError
        If the file exists but is not a JSON object.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise OutputError(f"manifest {path} is unreadable ({error})") from error
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as error:
        raise OutputError(f"manifest {path} is not valid JSON ({error})") from error
    if not isinstance(manifest, dict):
        raise OutputError(f"manifest {path} must hold a JSON object, got {type(manifest).__name__}")
    return manifest


def file_sha256(path: Path, *, chunk_bytes: int = 8 << 20) -> str:
    """Return the hex SHA-256 of a slide file, read ``chunk_bytes`` at a time.

    Raises
    ------
    SlideNotFoundError
        If ``path`` is not an existing file.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be >= 1, got {chunk_bytes}")
    path = Path(path)
    if not path.is_file():
        raise SlideNotFoundError(path, "does not exist or is not a file")
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def slide_sha256(slide_path: Path, manifest: dict) -> str:
    """The SHA-256 of the slide a superpixel ``manifest`` was made from: the recorded one when the
    file's size and mtime match, else hashed; :class:`ParameterError` when ``slide_path`` is
    another file."""
    recorded = manifest.get("slide", {})
    stat = slide_path.stat()
    if (recorded.get("size_bytes"), recorded.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns):
        return recorded["sha256"]
    sha256 = file_sha256(slide_path)
    if sha256 != recorded.get("sha256"):
        raise ParameterError(f"{slide_path} is not the slide these superpixels were made from ({recorded.get('path')})")
    return sha256
