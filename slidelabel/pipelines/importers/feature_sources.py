"""Features made by other tools, turned into rows of a slide's segments.

- :class:`PatchFeatures`: TRIDENT or CLAM patch features, an HDF5 file with ``coords`` (P, 2)
  (level-0 top-left corners) and ``features`` (P, D). The patch side in level-0 pixels is the
  ``coords`` attribute ``patch_size_level0`` (TRIDENT), else ``patch_size`` at ``patch_level``
  times that level's ``downsample`` (CLAM; level 0 needs no downsample). Segments get the
  area-weighted mean of the patches they overlap (:mod:`.patch_means`).
- :class:`TableFeatures`: a Parquet or CSV table with an ``id`` column (slidelabel's segment ids)
  or a ``source_id`` column (the ids of the segment source, see
  :mod:`slidelabel.store.segment_sources`); every other column is a feature and must be numeric.
- :class:`HistomicsFeatures`: Histomics Label's ``feature.h5``, ``images`` (M, D) with
  ``used_indices`` (M,), the 0-based segment index of each row (all segments in order without it).

Values must be finite: a NaN or infinity is an error naming the file and the row. Segments no row
reaches (no overlapping patch, no table row) stay NaN, as computed extractors leave segments
without pixels, and the learning loop skips them.

Every reader checks, before it reads a value, that rows hold at most :data:`MAX_FEATURE_DIM`
features and that the file does not declare far more data than it holds (:func:`check_declared`):
an HDF5 dataset left at its fill value, or a Parquet column of one repeated value, costs nothing
on disk, while the import's memory and time grow with the rows and features declared. Values must
be numbers of a fixed width (a table's key an integer), and an HDF5 dataset's chunk, which is
decoded whole to read any of its values, may decode to at most ``limits.max_chunk_bytes``
(:func:`check_datasets`; a slide's strips and tiles have the same limit). Of a file's own
descriptions only what the import reads is kept in the array's attributes (its ``zarr.json``,
parsed by every listing of the imports): the few ``coords`` attributes in :data:`PATCH_ATTRIBUTES`,
each checked by its declared size before its value is read, and column names of at most
:data:`MAX_NAME_CHARS` characters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers.patch_means import area_weighted_means
from slidelabel.pipelines.slide_files import SlideLimits
from slidelabel.store.label_map import read_labels
from slidelabel.store.segment_sources import SegmentSources

if TYPE_CHECKING:
    import h5py

#: Rows read from a file at a time, at most: fewer for wide rows (see :func:`batch_rows`).
BATCH_ROWS = 65_536
#: Bytes of float64 features read from a file at a time, at most.
BATCH_BYTES = 64 << 20
#: Most features per row (D) imported: foundation models give 384 to 2,560 (UNI2-h 1,536,
#: Virchow2 2,560), so several concatenated fit; memory grows with D (a tile of 10,000 segments
#: holds 10,000 x D float64 sums: 650 MB at this cap).
MAX_FEATURE_DIM = 8_192
#: A file may declare at most this many times its own size of data (rows x columns x bytes per
#: value), plus :data:`DECLARED_ALLOWANCE_BYTES`: compressed float features shrink by under 2x.
MAX_EXPANSION = 100
DECLARED_ALLOWANCE_BYTES = 64 << 20
MiB = 1 << 20
#: Rows of patch features this far apart or closer are read in one go, the rows between discarded.
_READ_GAP_ROWS = 64
#: The ``coords`` attributes read and kept in the provenance: the patch side's (TRIDENT, CLAM) and
#: TRIDENT's magnifications; any other attribute is never read. The twenty-third attack kept every
#: attribute whole: an 8M-float one made a 242 MB zarr.json (job 30 CPU-s, 1.53 GB) that each
#: GET .../imports then parsed for 3.5 s.
PATCH_ATTRIBUTES = ("patch_size_level0", "patch_size", "patch_level", "downsample", "level0_magnification",
                    "target_magnification", "overlap")
#: Numbers one of :data:`PATCH_ATTRIBUTES` may hold, at most (CLAM's ``downsample`` holds 2).
MAX_ATTRIBUTE_VALUES = 4
#: Characters of a table's column name (a feature's name, kept in the array's attributes), at
#: most: CellProfiler's longest are under 100.
MAX_NAME_CHARS = 128
#: Bytes of an imported feature array's metadata (``zarr.json``) its listing parses, at most: an
#: import writes at most :data:`MAX_FEATURE_DIM` names of :data:`MAX_NAME_CHARS` characters (12.6 MB
#: as JSON escapes of 4-byte characters), their statistics (0.4 MB) and a provenance of a few KB.
#: The twenty-third attack's 242 MB (written before these limits) took 3.5 s to parse per request.
MAX_ARRAY_METADATA_BYTES = 16 << 20
#: Receives rows: (ids_M segment ids 1..N, feats_M_D float32).
RowWriter = Callable[[np.ndarray, np.ndarray], None]


@dataclass(frozen=True)
class Segments:
    """The segments features are imported for: ``count`` N, the label map (``labels_path`` at
    ``downsample``, ``height`` x ``width`` px), ``bbox_level0_N_4`` from the table and, for
    imported segments, their ``sources``."""

    count: int
    labels_path: Path
    downsample: float
    height: int
    width: int
    bbox_level0_N_4: np.ndarray
    sources: SegmentSources | None


def check_width(path: Path, dim: int) -> None:
    """:class:`ParameterError` unless rows of ``dim`` features fit :data:`MAX_FEATURE_DIM`."""
    if dim > MAX_FEATURE_DIM:
        raise ParameterError(f"{path}: {dim:,} features per row, more than the {MAX_FEATURE_DIM:,} slidelabel "
                             f"imports (foundation models give 384-2,560); reduce them first (e.g. PCA to 512) "
                             f"or check that the file's features are rows x features")


def check_declared(path: Path, declared_bytes: int) -> None:
    """:class:`ParameterError` when the file at ``path`` declares ``declared_bytes`` (rows x
    columns x bytes per value, summed over its datasets) out of proportion to its size on disk
    (see :data:`MAX_EXPANSION`)."""
    size = path.stat().st_size
    if declared_bytes > MAX_EXPANSION * size + DECLARED_ALLOWANCE_BYTES:
        raise ParameterError(f"{path}: declares {declared_bytes / MiB:,.0f} MiB of features but the file holds "
                             f"{size:,} bytes: its values were never written (an HDF5 fill value) or repeat one "
                             f"value; write the real features into the file")


def stored_member(path: Path, file: h5py.File, name: str) -> h5py.Dataset | h5py.Group | None:
    """What the top-level ``name`` of ``file`` holds, None when there is no such name;
    :class:`ParameterError` when it is a link (soft, or to another file), looked at without
    following it: a 968-byte file whose datasets linked to another HDF5 file of the server imported
    that file's values, and a link to a FIFO blocked a worker past its cancel (the twenty-fourth
    attack)."""
    import h5py

    link = file.get(name, getlink=True)
    if link is None:
        return None
    if not isinstance(link, h5py.HardLink):
        to = "another file" if isinstance(link, h5py.ExternalLink) else "another name"
        raise ParameterError(f"{path}: {name} is a link to {to}; slidelabel reads the datasets stored in the file "
                             "itself: store them there (e.g. h5py's Group.copy)")
    return file[name]


def check_datasets(path: Path, datasets: dict[str, h5py.Dataset], limits: SlideLimits) -> None:
    """:class:`ParameterError` unless each of ``datasets`` is an HDF5 dataset holding numbers
    (integers or floats) in the file itself (not in external files or other HDF5 files: a virtual
    dataset's) and, stored in chunks, a chunk decodes to at most ``limits.max_chunk_bytes``: HDF5
    decodes a whole chunk to read any value of it, and a chunk may be far larger than the dataset
    it belongs to."""
    import h5py

    for name, dataset in datasets.items():
        if not isinstance(dataset, h5py.Dataset):
            raise ParameterError(f"{path}: {name} is a {type(dataset).__name__}, not a dataset")
        if dataset.is_virtual or dataset.external:
            how = "a virtual dataset" if dataset.is_virtual else "external storage"
            raise ParameterError(f"{path}: {name} is stored in other files ({how}); slidelabel reads values "
                                 f"stored in the file itself")
        if dataset.dtype.kind not in "iuf":
            raise ParameterError(f"{path}: {name} holds {dataset.dtype} values; slidelabel reads numbers "
                                 f"(integers or floats) only")
        chunk_bytes = math.prod(dataset.chunks) * dataset.dtype.itemsize if dataset.chunks else 0
        if chunk_bytes > limits.max_chunk_bytes:
            chunks = " x ".join(f"{n:,}" for n in dataset.chunks)
            raise ParameterError(f"{path}: {name} is stored in chunks of {chunks} {dataset.dtype.name}, "
                                 f"{chunk_bytes / MiB:,.0f} MiB decoded each, more than the "
                                 f"{limits.max_chunk_bytes / MiB:,.0f} MiB this server decodes at once "
                                 f"(SLIDELABEL_MAX_DECODED_MB): HDF5 decodes a whole chunk to read any value of it; "
                                 f"write the file with smaller chunks (e.g. h5py's chunks=(1, D) or chunks=True)")


def batch_rows(dim: int) -> int:
    """Rows of ``dim`` float64 features to read at a time: :data:`BATCH_ROWS`, fewer for wide rows
    so that a batch stays within :data:`BATCH_BYTES`."""
    return max(1, min(BATCH_ROWS, BATCH_BYTES // (8 * max(dim, 1))))


def _checked(path: Path, rows_M: np.ndarray, feats_M_D: np.ndarray) -> np.ndarray:
    finite = np.isfinite(feats_M_D).all(axis=1)
    if not finite.all():
        row = int(rows_M[np.argmin(finite)])
        raise ParameterError(f"{path}: row {row} holds NaN or infinite features; fill or drop it (slidelabel needs "
                             f"finite features, and leaves segments without any row empty)")
    return feats_M_D.astype(np.float32, copy=False)


def _open_hdf5(path: Path):
    """The HDF5 file at ``path``, read-only; :class:`ParameterError` when it is not one."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise ParameterError(f"{path} is not a readable HDF5 file ({error})") from None


class PatchFeatures:
    """TRIDENT / CLAM patch features (see the module's docstring); a dataset's chunks may decode
    to at most ``limits.max_chunk_bytes`` each (a server's
    :func:`~slidelabel.services.slides.slide_limits`)."""

    def __init__(self, path: Path, *, limits: SlideLimits | None = None) -> None:
        self.path = Path(path)
        self._limits = limits or SlideLimits()
        self._file = _open_hdf5(self.path)
        try:
            coords, features = self._datasets()
            attributes = _number_attributes(self.path, coords, PATCH_ATTRIBUTES)
            self.patch_level0 = self._patch_side(attributes)
        except ParameterError:
            self.close()
            raise
        self.corners_P_2 = np.asarray(coords[:], np.float64)
        self._features = features
        self.feature_names = [f"feature_{j}" for j in range(features.shape[1])]
        self.provenance = {"patches": int(coords.shape[0]), "patch_size_level0": self.patch_level0,
                           "coords_attributes": {name: value.tolist() for name, value in attributes.items()}}

    def _datasets(self) -> tuple[h5py.Dataset, h5py.Dataset]:
        """The ``coords`` and ``features`` datasets, checked (shapes, width, values, chunks,
        declared size)."""
        coords, features = (stored_member(self.path, self._file, name) for name in ("coords", "features"))
        if coords is None or features is None:
            missing = " and ".join(name for name, found in (("coords", coords), ("features", features)) if found is None)
            raise ParameterError(f"{self.path} has no {missing} dataset: a TRIDENT/CLAM patch-feature file holds "
                                 f"coords (P x 2, level-0 top-left corners) and features (P x D)")
        check_datasets(self.path, {"coords": coords, "features": features}, self._limits)
        if coords.ndim != 2 or coords.shape[1] != 2 or features.ndim != 2 or features.shape[0] != coords.shape[0]:
            raise ParameterError(f"{self.path}: coords {coords.shape} and features {features.shape} must be "
                                 f"P x 2 and P x D")
        check_width(self.path, features.shape[1])
        check_declared(self.path, _declared_bytes(coords) + _declared_bytes(features))
        return coords, features

    def _patch_side(self, attrs: dict[str, np.ndarray]) -> float:
        """The patch side in level-0 pixels from ``attrs`` (of :func:`_number_attributes`)."""
        first = {name: float(np.ravel(value)[0]) for name, value in attrs.items()}
        if "patch_size_level0" in first:
            return first["patch_size_level0"]
        if "patch_size" in first and int(first.get("patch_level", 0)) == 0:
            return first["patch_size"]
        if "patch_size" in first and "downsample" in first:
            return first["patch_size"] * first["downsample"]
        raise ParameterError(f"{self.path}: cannot tell the patches' size in level-0 pixels: coords needs the "
                             f"attribute patch_size_level0 (TRIDENT) or patch_size with patch_level 0 or downsample (CLAM)")

    def _read(self, indices_M: np.ndarray) -> np.ndarray:
        """Rows ``indices_M`` (ascending), read as runs of nearby rows rather than one by one
        (a tile's patches are a run per row of patches)."""
        parts, start = [], 0
        breaks = np.flatnonzero(np.diff(indices_M) > _READ_GAP_ROWS) + 1
        for stop in [*breaks, indices_M.size]:
            run = indices_M[start:stop]
            # In the file's own dtype (float32 for TRIDENT), not float64.
            block = np.asarray(self._features[int(run[0]) : int(run[-1]) + 1])
            contiguous = block.shape[0] == run.size
            parts.append(_checked(self.path, run, block if contiguous else block[run - run[0]]))
            start = stop
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def write(self, segments: Segments, write_rows: RowWriter,
              progress: Callable[[int, int], None] | None) -> dict[str, int]:
        """Hand every segment a patch overlaps to ``write_rows``; returns counts for the record."""
        written = area_weighted_means(
            lambda t, l, h, w: read_labels(segments.labels_path, left=l, top=t, width=w, height=h),
            self._read, corners_level0_P_2=self.corners_P_2, patch_level0=self.patch_level0,
            downsample=segments.downsample, height=segments.height, width=segments.width,
            bbox_level0_N_4=segments.bbox_level0_N_4, write_rows=write_rows, progress=progress)
        return {"segments overlapping a patch": written}

    def close(self) -> None:
        self._file.close()


def _declared_bytes(dataset: h5py.Dataset) -> int:
    """Bytes an HDF5 dataset declares: its shape's product times its values' size (Python ints:
    no overflow)."""
    return math.prod(dataset.shape) * dataset.dtype.itemsize


def _number_attributes(path: Path, dataset: h5py.Dataset, names: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The attributes ``names`` that ``dataset`` has, each 1 to :data:`MAX_ATTRIBUTE_VALUES`
    numbers (a 0-d or 1-d array); :class:`ParameterError` for one that is not, told by its
    declared type and shape before its value is read. Other attributes are never read."""
    found = {}
    for name in names:
        if name not in dataset.attrs:
            continue
        declared = dataset.attrs.get_id(name)
        size = 0 if declared.shape is None else math.prod(declared.shape)  # None: an empty attribute
        if declared.dtype.kind not in "iuf" or not 1 <= size <= MAX_ATTRIBUTE_VALUES:
            raise ParameterError(f"{path}: coords attribute {name} holds {_described(declared.dtype, size)}; "
                                 f"slidelabel reads it as a number (at most {MAX_ATTRIBUTE_VALUES}, as CLAM's "
                                 f"downsample): write it as one")
        found[name] = np.asarray(dataset.attrs[name])
    return found


def _described(dtype: np.dtype, size: int) -> str:
    """What an HDF5 attribute of ``size`` values of ``dtype`` holds, in words."""
    import h5py

    if size == 0:
        return "no value"
    if h5py.check_string_dtype(dtype):
        return "str" if size == 1 else f"{size:,} str values"
    return f"{size:,} values" if dtype.kind in "iuf" else f"{dtype} values"


def _keyed_rows(path: Path, segments: Segments, keys_M: np.ndarray, by_source: bool, first_row: int,
                feats_M_D: np.ndarray, write_rows: RowWriter) -> int:
    """Write rows keyed by segment or source ids; returns the rows that match no segment."""
    rows_M = np.arange(first_row, first_row + keys_M.size)
    feats_M_D = _checked(path, rows_M, feats_M_D)
    if by_source:
        if segments.sources is None:
            raise ParameterError(f"{path} is keyed by source_id, but these segments were not imported")
        ids_M = segments.sources.ids_of(keys_M)
    else:
        ids_M = np.where((keys_M >= 1) & (keys_M <= segments.count), keys_M, 0).astype(np.int64)
    matched = ids_M > 0
    if matched.any():
        write_rows(ids_M[matched], feats_M_D[matched])
    return int((~matched).sum())


def _row_bytes(schema: pa.Schema) -> int:
    """Bytes of one row of a table of integer and float columns (checked before: a column of
    variable width, such as text, may decode to any size)."""
    return sum(field.type.bit_width // 8 for field in schema)


def uncompressed_bytes(metadata: pq.FileMetaData) -> int:
    """Bytes a Parquet file's column chunks declare once decompressed (its row groups'
    ``total_byte_size``): its pages are inflated to this before their values are decoded."""
    return sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))


def parquet_rows(path: Path, metadata: pq.FileMetaData) -> int:
    """Rows of the Parquet file at ``path``: its row groups' sum, which is what a reader reads.
    :class:`ParameterError` when the footer's own count differs (pyarrow never compares them: in
    the twenty-third attack a 1.58 MB file claiming 1 row held 200M, 4 CPU-s and 270 MB to read,
    growing ~2.5 CPU-s per MB of file)."""
    rows = sum(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    if rows != metadata.num_rows:
        raise ParameterError(f"{path}: its footer counts {metadata.num_rows:,} row(s) but its row groups hold "
                             f"{rows:,}: the file is damaged or was altered; write it again (e.g. pandas' to_parquet)")
    return rows


def _is_number(data_type: pa.DataType) -> bool:
    return pa.types.is_integer(data_type) or pa.types.is_floating(data_type)


class TableFeatures:
    """A Parquet or CSV table of features keyed by ``id`` or ``source_id`` (integers), its other
    columns numbers; ``limits`` is taken for symmetry with the HDF5 readers."""

    def __init__(self, path: Path, *, limits: SlideLimits | None = None) -> None:
        self.path = Path(path)
        schema = self._schema()
        names = schema.names
        key = "id" if "id" in names else "source_id" if "source_id" in names else None
        if key is None:
            raise ParameterError(f"{self.path} needs an id column (segment ids 1..N) or a source_id column "
                                 f"(the ids of the imported segments' source)")
        self.key = key
        self.feature_names = [name for name in names if name != key]
        check_width(self.path, len(self.feature_names))
        self._check_names(names)
        # Checked in the schema, before a value is read: a text key of one long string repeated
        # (a dictionary) costs nothing on disk and its length in every row once read.
        key_type = schema.field(key).type
        if not pa.types.is_integer(key_type):
            ids = "1..N" if key == "id" else "the ids of the imported segments' source"
            raise ParameterError(f"{self.path}: key column {key} is {key_type}, expected integer segment ids "
                                 f"({ids}, e.g. int64); write the ids as integers")
        bad = [f"{f.name} ({f.type})" for f in schema if f.name != key and not _is_number(f.type)]
        if bad or not self.feature_names:
            raise ParameterError(f"{self.path}: feature columns must be numbers (integers or floats); "
                                 + (f"not: {', '.join(bad)}" if bad else "the table has none besides its key"))
        if self._parquet:
            # A CSV holds its values as text: never less than it declares.
            metadata = pq.read_metadata(self.path)
            rows = parquet_rows(self.path, metadata)
            check_declared(self.path, max(rows * _row_bytes(schema), uncompressed_bytes(metadata)))
        self.provenance = {"key": key, "columns": len(self.feature_names)}

    def _check_names(self, names: list[str]) -> None:
        """:class:`ParameterError` when a column name is longer than :data:`MAX_NAME_CHARS`."""
        longest = max(names, key=len)
        if len(longest) > MAX_NAME_CHARS:
            raise ParameterError(f"{self.path}: a column name of {len(longest):,} characters ({longest[:40]!r}...), "
                                 f"more than the {MAX_NAME_CHARS} slidelabel keeps as a feature's name; rename it")

    @property
    def _parquet(self) -> bool:
        return self.path.suffix.lower() == ".parquet"

    def _batches(self) -> Iterator[pa.RecordBatch]:
        try:
            if self._parquet:
                yield from pq.ParquetFile(self.path).iter_batches(batch_size=batch_rows(len(self.feature_names)))
            else:
                yield from pa_csv.open_csv(self.path, read_options=pa_csv.ReadOptions(block_size=16 << 20))
        except (OSError, pa.ArrowException) as error:
            raise ParameterError(f"{self.path} is not a readable table ({error})") from None

    def _schema(self) -> pa.Schema:
        try:
            if self._parquet:
                return pq.read_schema(self.path)
            with pa_csv.open_csv(self.path) as reader:
                return reader.schema
        except (OSError, pa.ArrowException) as error:
            raise ParameterError(f"{self.path} is not a readable table ({error})") from None

    def write(self, segments: Segments, write_rows: RowWriter,
              progress: Callable[[int, int], None] | None) -> dict[str, int]:
        unmatched, first = 0, 0
        for batch in self._batches():
            keys = batch.column(self.key).to_numpy(zero_copy_only=False).astype(np.int64)
            feats = np.stack([batch.column(n).to_numpy(zero_copy_only=False).astype(np.float64)
                              for n in self.feature_names], axis=1)
            unmatched += _keyed_rows(self.path, segments, keys, self.key == "source_id", first, feats, write_rows)
            first += batch.num_rows
        return {"rows matching no segment": unmatched}

    def close(self) -> None:
        pass


class HistomicsFeatures:
    """Histomics Label's ``feature.h5`` (see the module's docstring); ``limits`` as for
    :class:`PatchFeatures`."""

    def __init__(self, path: Path, *, limits: SlideLimits | None = None) -> None:
        self.path = Path(path)
        self._limits = limits or SlideLimits()
        self._file = _open_hdf5(self.path)
        try:
            self._images, self._indices = self._datasets()
        except ParameterError:
            self.close()
            raise
        images = self._images
        self.feature_names = [f"feature_{j}" for j in range(images.shape[1])]
        self.provenance = {"rows": int(images.shape[0]), "used_indices": self._indices is not None}

    def _datasets(self) -> tuple[h5py.Dataset, h5py.Dataset | None]:
        """The ``images`` dataset and ``used_indices`` (None without), checked (shape, width,
        values, chunks, declared size)."""
        images, indices = (stored_member(self.path, self._file, name) for name in ("images", "used_indices"))
        check_datasets(self.path, ({} if images is None else {"images": images})
                       | ({} if indices is None else {"used_indices": indices}), self._limits)
        if images is None or images.ndim != 2:
            shape = None if images is None else images.shape
            raise ParameterError(f"{self.path}: expected an images dataset of feature vectors (M x D), got {shape}; "
                                 f"image patches cannot be imported, compute features from the slide instead")
        check_width(self.path, images.shape[1])
        check_declared(self.path, _declared_bytes(images) + (0 if indices is None else _declared_bytes(indices)))
        return images, indices

    def write(self, segments: Segments, write_rows: RowWriter,
              progress: Callable[[int, int], None] | None) -> dict[str, int]:
        unmatched, step = 0, batch_rows(self._images.shape[1])
        for start in range(0, self._images.shape[0], step):
            stop = min(start + step, self._images.shape[0])
            keys = np.asarray(self._indices[start:stop], np.int64) if self._indices is not None else np.arange(start, stop)
            feats = np.asarray(self._images[start:stop], np.float64)
            unmatched += _keyed_rows(self.path, segments, keys, True, start, feats, write_rows)
        return {"rows matching no segment": unmatched}

    def close(self) -> None:
        self._file.close()
