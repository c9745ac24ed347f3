"""The superpixel table: one Parquet row per superpixel, coordinates in level-0 pixels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from slidelabel.errors import OutputError
from slidelabel.store.atomic import atomic_path

@dataclass(frozen=True)
class SuperpixelTable:
    """One row per superpixel; arrays of length N, row i describes superpixel id ``ids[i]``.

    Coordinates are level-0 (base) slide pixels; areas are counted at the working level.

    Attributes
    ----------
    ids : ndarray, shape (N,), uint32
        Exactly 1..N, ascending, so row ``i`` is the superpixel with id ``i + 1`` in the map.
    bbox_level0 : ndarray, shape (N, 4), int64
        ``x_min, y_min, x_max, y_max`` in level-0 pixels, max exclusive.
    centroid_level0 : ndarray, shape (N, 2), float64
        ``x, y`` in level-0 pixels.
    area_px : ndarray, shape (N,), int64
        Working-level pixels in the superpixel, >= 1.
    area_um2 : ndarray, shape (N,), float64, or None
        Area in square micrometres; None when the slide has no pixel size.
    tissue_fraction : ndarray, shape (N,), float32
        Share of the superpixel's pixels that are tissue, in [0, 1].
    """

    ids: np.ndarray
    bbox_level0: np.ndarray
    centroid_level0: np.ndarray
    area_px: np.ndarray
    area_um2: np.ndarray | None
    tissue_fraction: np.ndarray


# Every table has these; area_um2 comes between area_px and tissue_fraction when it is known.
_REQUIRED_COLUMNS = (
    "id", "x_min", "y_min", "x_max", "y_max", "centroid_x", "centroid_y", "area_px",
    "tissue_fraction",
)


def write_table(path: Path, table: SuperpixelTable) -> None:
    """Write ``table`` to ``path`` as Parquet, atomically.

    Columns: ``id`` (uint32), ``x_min, y_min, x_max, y_max`` (int64), ``centroid_x, centroid_y``
    (float64), ``area_px`` (int64), ``area_um2`` (float64, only when known), ``tissue_fraction``
    (float32).

    Raises
    ------
    ValueError
        If a field has the wrong shape, type or values; the message names the field.
    OutputError
        If the file cannot be written.
    """
    checked = _checked_columns(table)
    bbox, centroid = checked.pop("bbox_level0"), checked.pop("centroid_level0")
    columns = {
        "id": checked["ids"],
        "x_min": bbox[:, 0],
        "y_min": bbox[:, 1],
        "x_max": bbox[:, 2],
        "y_max": bbox[:, 3],
        "centroid_x": centroid[:, 0],
        "centroid_y": centroid[:, 1],
        "area_px": checked["area_px"],
    }
    if checked["area_um2"] is not None:
        columns["area_um2"] = checked["area_um2"]
    columns["tissue_fraction"] = checked["tissue_fraction"]
    arrow_table = pa.table({name: pa.array(values) for name, values in columns.items()})
    with atomic_path(path) as tmp:
        try:
            pq.write_table(arrow_table, tmp, compression="zstd")
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error}") from error


def read_table(path: Path) -> SuperpixelTable:
    """Read a :data:`TABLE_FILE` written by :func:`write_table`.

    Raises
    ------
    OutputError
        If the file is missing, not Parquet, lacks a column or holds invalid values.
    """
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"superpixel table {path} does not exist")
    try:
        arrow_table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise OutputError(f"superpixel table {path} is not readable Parquet ({error})") from error
    names = set(arrow_table.column_names)
    missing = sorted(set(_REQUIRED_COLUMNS) - names)
    if missing:
        raise OutputError(f"superpixel table {path} lacks the columns {', '.join(missing)}")

    def column(name: str) -> np.ndarray:
        return arrow_table.column(name).to_numpy()

    table = SuperpixelTable(
        ids=column("id"),
        bbox_level0=np.stack([column(n) for n in ("x_min", "y_min", "x_max", "y_max")], axis=1),
        centroid_level0=np.stack([column("centroid_x"), column("centroid_y")], axis=1),
        area_px=column("area_px"),
        area_um2=column("area_um2") if "area_um2" in names else None,
        tissue_fraction=column("tissue_fraction"),
    )
    try:
        return SuperpixelTable(**_checked_columns(table))
    except ValueError as error:
        raise OutputError(f"superpixel table {path} is invalid: {error}") from error


def _checked_columns(table: SuperpixelTable) -> dict[str, np.ndarray | None]:
    """Return the fields of ``table`` in their documented dtypes, or raise ValueError."""
    ids = _field(table.ids, "ids", None, "iu")
    n = len(ids)
    if not np.array_equal(ids, np.arange(1, n + 1)):
        raise ValueError(f"ids must be exactly 1..N (N = {n}), ascending")
    bbox = _field(table.bbox_level0, "bbox_level0", (n, 4), "iu")
    if n and ((bbox[:, :2] < 0).any() or (bbox[:, 2:] <= bbox[:, :2]).any()):
        raise ValueError("bbox_level0 needs 0 <= x_min < x_max and 0 <= y_min < y_max")
    centroid = _field(table.centroid_level0, "centroid_level0", (n, 2), "iuf")
    area_px = _field(table.area_px, "area_px", (n,), "iu")
    if n and area_px.min() < 1:
        raise ValueError("area_px must be >= 1 pixel")
    area_um2 = None
    if table.area_um2 is not None:
        area_um2 = _field(table.area_um2, "area_um2", (n,), "iuf")
        if n and not (area_um2 > 0).all():
            raise ValueError("area_um2 must be > 0 (or None when the pixel size is unknown)")
    tissue = _field(table.tissue_fraction, "tissue_fraction", (n,), "iuf")
    if n and not ((tissue >= 0) & (tissue <= 1)).all():
        raise ValueError("tissue_fraction must lie in [0, 1]")
    if n and not np.isfinite(centroid).all():
        raise ValueError("centroid_level0 must be finite")
    return {
        "ids": ids.astype(np.uint32),
        "bbox_level0": bbox.astype(np.int64),
        "centroid_level0": centroid.astype(np.float64),
        "area_px": area_px.astype(np.int64),
        "area_um2": None if area_um2 is None else area_um2.astype(np.float64),
        "tissue_fraction": tissue.astype(np.float32),
    }


def _field(values: object, name: str, shape: tuple[int, ...] | None, kinds: str) -> np.ndarray:
    """``values`` as an array of ``shape`` (None: any 1-D) whose dtype kind is in ``kinds``."""
    array = np.asarray(values)
    if shape is None and array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"{name} has shape {array.shape}, expected {shape} (N = len(ids))")
    if array.dtype.kind not in kinds:
        kind = "integer" if kinds == "iu" else "numeric"
        raise ValueError(f"{name} must be {kind}, got dtype {array.dtype}")
    return array
