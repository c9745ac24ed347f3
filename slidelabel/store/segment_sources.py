"""Where imported segments came from: one Parquet row per segment, written next to the table.

Columns: ``id`` (uint32, the segment's id in the label map, 1..N), ``source_id`` (int64, the id
the source gave it: a GeoJSON Feature's 0-based index in the file, a mask's value, a Histomics
Label pixelmap's 0-based index) and, when the source had classes, ``class_name`` (string, null
for a segment without one). ``docs/outputs.md`` describes it for users.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from slidelabel.errors import OutputError
from slidelabel.store.atomic import atomic_path

SOURCES_FILE = "imported_segments.parquet"


@dataclass(frozen=True)
class SegmentSources:
    """``ids_N`` (uint32 1..N), ``source_ids_N`` (int64) and ``class_names_N`` (None when the
    source had no classes; else a list with None for segments without one)."""

    ids_N: np.ndarray
    source_ids_N: np.ndarray
    class_names_N: list[str | None] | None

    def ids_of(self, source_ids_M: np.ndarray) -> np.ndarray:
        """Segment id of each source id, 0 for source ids no segment has."""
        source_ids_M = np.asarray(source_ids_M, np.int64)
        if self.source_ids_N.size == 0:
            return np.zeros(source_ids_M.size, np.int64)
        order = np.argsort(self.source_ids_N, kind="stable")
        ordered = self.source_ids_N[order]
        at = np.clip(np.searchsorted(ordered, source_ids_M), 0, ordered.size - 1)
        return np.where(ordered[at] == source_ids_M, self.ids_N[order][at], 0).astype(np.int64)


def write_segment_sources(path: Path, sources: SegmentSources) -> None:
    """Write ``sources`` as Parquet, atomically."""
    columns = {"id": pa.array(np.asarray(sources.ids_N, np.uint32)),
               "source_id": pa.array(np.asarray(sources.source_ids_N, np.int64))}
    if sources.class_names_N is not None:
        columns["class_name"] = pa.array(sources.class_names_N, pa.string()).dictionary_encode()
    with atomic_path(Path(path)) as tmp:
        try:
            pq.write_table(pa.table(columns), tmp, compression="zstd")
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error}") from error


def read_segment_sources(path: Path) -> SegmentSources:
    """Read a :data:`SOURCES_FILE`; :class:`OutputError` if it is missing or not one."""
    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise OutputError(f"{path} is missing or not readable Parquet ({error})") from error
    if not {"id", "source_id"} <= set(table.column_names):
        raise OutputError(f"{path} lacks the columns id and source_id")
    names = table.column("class_name").to_pylist() if "class_name" in table.column_names else None
    return SegmentSources(table.column("id").to_numpy(), table.column("source_id").to_numpy(), names)
