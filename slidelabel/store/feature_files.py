"""The feature arrays of a slide: ``(N, D)`` float32 Zarr arrays, row ``i`` = superpixel ``i + 1``.

Written by :func:`slidelabel.pipelines.features.extract.extract_slide_features` (and the feature
importers); this module opens them, reads rows, and gives each array's per-slide statistics (for
the ``slide`` normalisation). Writers store the statistics in the array's attributes
(:func:`store_statistics`), so an epoch need not read a slide twice; an array without them (made
before) has them computed once per version of the file and process.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import zarr

from slidelabel.errors import OutputError, ParameterError
from slidelabel.pipelines.normalisation import SlideStatistics

#: Rows per Zarr chunk: 65,536 rows of 100 float32 features are 26 MB before compression.
CHUNK_ROWS = 65_536
#: Rows read at once when a whole array is scanned.
SCAN_ROWS = 65_536
#: Per-slide statistics kept in memory per process (a few KB each).
CACHED_STATISTICS = 256


def chunk_rows(n: int, n_features: int) -> int:
    """Rows per Zarr chunk of an ``(n, n_features)`` array: :data:`CHUNK_ROWS`, fewer for wide
    features (a 32 px patch has 4096) so that a chunk stays near the 26 MB of 100 features."""
    return max(1, min(n, CHUNK_ROWS, CHUNK_ROWS * 100 // n_features))


def open_features(path: Path) -> zarr.Array:
    """The ``(N, D)`` float32 feature array at ``path``, opened lazily (rows ``i`` = superpixel
    ``i + 1``; NaN rows for superpixels without pixels)."""
    try:
        return zarr.open_array(path, mode="r")
    except (OSError, ValueError, KeyError, zarr.errors.BaseZarrError) as error:
        raise OutputError(f"{path} is not a readable feature array ({error}); compute the features again") from None


def feature_rows(array: zarr.Array, rows: np.ndarray | slice) -> np.ndarray:
    """``(M, D)`` float32 features of ``rows`` (a slice, or increasing row indices = superpixel
    - 1), reading only the Zarr chunks that hold them."""
    if isinstance(rows, slice):
        return np.asarray(array[rows], np.float32)
    return np.asarray(array.get_orthogonal_selection((np.asarray(rows, np.int64), slice(None))), np.float32)


STATISTICS_ATTRIBUTE = "slide_statistics"


def scanned_statistics(array: zarr.Array) -> SlideStatistics:
    """The statistics of every finite row of ``array``, read :data:`SCAN_ROWS` at a time."""
    return SlideStatistics.of_chunks(
        feature_rows(array, slice(start, start + SCAN_ROWS)) for start in range(0, array.shape[0], SCAN_ROWS))


def store_statistics(array: zarr.Array) -> None:
    """Compute the array's per-slide statistics and keep them in its attributes (writers call
    this on the finished array, before it is moved into place); an array without finite rows
    gets none."""
    try:
        statistics = scanned_statistics(array)
    except ParameterError:
        return
    array.attrs[STATISTICS_ATTRIBUTE] = statistics.as_dict()


def slide_statistics(path: Path) -> SlideStatistics:
    """Mean and scale of every feature over the slide's superpixels with features: from the
    array's attributes, or read once per version (modification time) of the array at ``path``."""
    return _statistics(path, path.stat().st_mtime_ns)


# Memoisation, not state: an array never changes under the same path and mtime.
@lru_cache(maxsize=CACHED_STATISTICS)
def _statistics(path: Path, _mtime_ns: int) -> SlideStatistics:
    array = open_features(path)
    stored = array.attrs.get(STATISTICS_ATTRIBUTE)
    if isinstance(stored, dict) and len(stored.get("mean", ())) == array.shape[1]:
        return SlideStatistics.from_dict(stored)
    return scanned_statistics(array)
