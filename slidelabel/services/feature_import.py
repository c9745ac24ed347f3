"""Features made by other tools into the Zarr array a computed extractor writes.

The array (N x D float32, row ``i`` = segment ``i + 1``, NaN for segments no source row reaches)
carries the attributes of :func:`~slidelabel.pipelines.features.extract.extract_slide_features`
with the chosen ``name`` as its extractor, plus ``provenance`` (the source file, its format and
what was matched), so the learning loop, strategies and exports use it like a computed one. Rows
go first to a scratch file next to the output, written in any order, then to the array chunk by
chunk; the array appears under its name only when complete. What a killed attempt left (see
:func:`remove_unfinished`) goes at the next attempt, and at a worker's start.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr

from slidelabel import __version__
from slidelabel.errors import OutputError, ParameterError
from slidelabel.pipelines.features.extract import FORMAT, POOLING_VERSION
from slidelabel.pipelines.importers import FEATURE_FORMATS, choose
from slidelabel.pipelines.importers.feature_sources import Segments
from slidelabel.pipelines.normalisation import SlideStatistics
from slidelabel.pipelines.slide_files import SlideLimits
from slidelabel.services.segment_import import file_record
from slidelabel.store.atomic import replace_folder
from slidelabel.store.feature_files import STATISTICS_ATTRIBUTE, chunk_rows
from slidelabel.store.segment_sources import SOURCES_FILE, read_segment_sources
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, TABLE_FILE, read_manifest, slide_sha256
from slidelabel.store.superpixel_table import read_table

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The random token in scratch names (``secrets.token_hex(8)``), as a glob.
_TOKEN_GLOB = "[0-9a-f]" * 16


@dataclass(frozen=True)
class FeatureImportResult:
    """What an import wrote: the array at ``path``, its ``dim``ension, the ``segments`` with
    features out of ``total``, and ``counts`` from the source."""

    path: Path
    format: str
    dim: int
    segments: int
    total: int
    counts: dict[str, int]

    def summary(self) -> str:
        lines = [f"{self.segments:,} of {self.total:,} segments got {self.dim} features ({self.format}) -> {self.path}"]
        return "\n".join(lines + [f"  {n:,} {what}" for what, n in self.counts.items()])


def _segments(folder: Path, manifest: dict) -> Segments:
    working = manifest["working"]
    sources = read_segment_sources(folder / SOURCES_FILE) if (folder / SOURCES_FILE).exists() else None
    return Segments(int(manifest["superpixels"]), folder / LABELS_FILE, float(working["downsample"]),
                    int(working["height"]), int(working["width"]), read_table(folder / TABLE_FILE).bbox_level0, sources)


def remove_unfinished(folder: Path, name: str = "*") -> list[Path]:
    """Remove from ``folder`` what killed writes of the feature array ``name`` (``"*"``: of every
    array) left: scratch rows ``.<name>.<hex>.rows`` and unfinished arrays ``.<name>.zarr.<hex>.tmp``
    (computed extractions leave those too). Returns what was removed."""
    if not folder.is_dir():
        return []
    # The rows' token spelled out: ".uni.*.rows" would also take the rows of an array "uni.v2".
    leftovers = [*folder.glob(f".{name}.{_TOKEN_GLOB}.rows"), *folder.glob(f".{name}.zarr.*.tmp")]
    for leftover in leftovers:
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)
    return leftovers


def import_features(
    slide_path: str | Path,
    source_path: str | Path,
    segments_folder: str | Path,
    out_folder: str | Path,
    *,
    name: str,
    format: str = "auto",
    progress: Callable[[int, int], None] | None = None,
    limits: SlideLimits | None = None,
) -> FeatureImportResult:
    """Import the features of ``source_path`` for the segments in ``segments_folder`` as
    ``out_folder / f"{name}.zarr"``; the source may decode at most ``limits.max_chunk_bytes`` at
    once (default :class:`~slidelabel.pipelines.slide_files.SlideLimits`'s, a server passes its own).

    Raises
    ------
    ParameterError : a bad name or format, a source that is unreadable, lacks what its format
        needs or holds non-finite values, or ``slide_path`` is not the segments' slide.
    OutputError : ``segments_folder`` is unfinished, or the array cannot be written.
    """
    if not _NAME.match(name):
        raise ParameterError(f"feature name {name!r} must be 1-64 letters, digits, '.', '_' or '-' (e.g. uni-trident)")
    slide_path, source_path = Path(slide_path), Path(source_path)
    folder, out_path = Path(segments_folder), Path(out_folder) / f"{name}.zarr"
    manifest = read_manifest(folder / MANIFEST_FILE)
    if manifest is None:
        raise OutputError(f"{folder} holds no finished segments (no {MANIFEST_FILE}); import or compute them first")
    sha256 = slide_sha256(slide_path, manifest)
    fmt = choose(FEATURE_FORMATS, source_path, format)
    segments = _segments(folder, manifest)
    remove_unfinished(Path(out_folder), name)  # what a killed attempt left (3.3 GB of rows in the attack)
    source = fmt.open(source_path, limits=limits or SlideLimits())
    Path(out_folder).mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    tmp, scratch_path = out_path.with_name(f".{out_path.name}.{token}.tmp"), out_path.with_name(f".{name}.{token}.rows")
    n, dim = segments.count, len(source.feature_names)
    scratch = None
    try:
        scratch = _ScratchRows(scratch_path, n, dim)
        seen = np.zeros(n + 1, bool)

        def write_rows(ids_M: np.ndarray, feats_M_D: np.ndarray) -> None:
            if seen[ids_M].any():
                raise ParameterError(f"{source_path}: segment {int(ids_M[seen[ids_M]][0])} gets more than one row")
            seen[ids_M] = True
            scratch.write(ids_M - 1, feats_M_D)

        counts = source.write(segments, write_rows, progress)
        attributes = {
            "format": FORMAT, "extractor": name, "feature_names": source.feature_names,
            "superpixels": {key: manifest.get(key) for key in ("algorithm", "options", "working", "superpixels")},
            "slide_sha256": sha256, "pooling_version": POOLING_VERSION,
            "provenance": {"imported": True, "format": fmt.name, "source": file_record(source_path),
                           "slidelabel_version": __version__, "segments_with_features": int(seen.sum()),
                           **counts, **source.provenance},
        }
        _write_array(tmp, scratch, seen[1:], attributes)
        replace_folder(tmp, out_path)
    except OSError as error:
        raise OutputError(f"cannot write {out_path}: {error.strerror or error}") from error
    finally:
        if scratch is not None:
            scratch.close()
        shutil.rmtree(tmp, ignore_errors=True)
        scratch_path.unlink(missing_ok=True)
        source.close()
    return FeatureImportResult(out_path, fmt.name, dim, int(seen.sum()), n, counts)


class _ScratchRows:
    """``(n, dim)`` float32 rows in a plain file, written and read with ``pwrite``/``pread``: the
    written pages of a memory map count in the process's memory (4 GB for a million rows of 1024
    features), the page cache behind a file does not. Rows never written read as zeros."""

    def __init__(self, path: Path, n: int, dim: int) -> None:
        self.n, self.dim, self._row_bytes = n, dim, 4 * dim
        self._file = open(path, "w+b")
        self._file.truncate(n * self._row_bytes)

    def write(self, rows_M: np.ndarray, feats_M_D: np.ndarray) -> None:
        """Store ``feats_M_D`` as rows ``rows_M`` (0-based), one write per run of consecutive rows."""
        order_M = np.argsort(rows_M, kind="stable")
        rows_M, feats_M_D = rows_M[order_M], np.ascontiguousarray(feats_M_D[order_M], np.float32)
        breaks = np.flatnonzero(np.diff(rows_M) != 1) + 1
        for start, stop in zip([0, *breaks], [*breaks, rows_M.size]):
            os.pwrite(self._file.fileno(), feats_M_D[start:stop].data, int(rows_M[start]) * self._row_bytes)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` as a float32 ``(stop - start, dim)`` array."""
        data = os.pread(self._file.fileno(), (stop - start) * self._row_bytes, start * self._row_bytes)
        return np.frombuffer(bytearray(data), np.float32).reshape(stop - start, self.dim)

    def close(self) -> None:
        self._file.close()


def _write_array(path: Path, rows: _ScratchRows, written_N: np.ndarray, attributes: dict) -> None:
    """The array, chunk by chunk, with its per-slide statistics summed from the same chunks (as
    :func:`~slidelabel.store.feature_files.store_statistics` would, without reading the array
    back 65,536 rows, 256 MB of 1024 features, at a time)."""
    n, dim = rows.n, rows.dim
    chunk = chunk_rows(max(n, 1), dim)
    array = zarr.create_array(store=path, shape=(n, dim), chunks=(chunk, dim), dtype="float32",
                              fill_value=np.nan, attributes=attributes)

    def blocks() -> Iterator[np.ndarray]:
        for start in range(0, n, chunk):
            block = rows.read(start, min(start + chunk, n))
            block[~written_N[start : start + chunk]] = np.nan
            array[start : start + chunk] = block
            yield block

    try:
        array.attrs[STATISTICS_ATTRIBUTE] = SlideStatistics.of_chunks(blocks()).as_dict()
    except ParameterError:  # no finite row: no statistics, as store_statistics leaves it
        pass
