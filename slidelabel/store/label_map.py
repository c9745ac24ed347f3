"""The superpixel label map: a pyramidal tiled TIFF of uint32 ids at the working level.

Written block by block through a temporary chunked store and read back window by window, so
nothing here holds a whole slide in memory. ``docs/outputs.md`` describes the format for users.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

import numpy as np
import tifffile
import zarr
import zarr.codecs
import zarr.storage

from slidelabel.errors import OutputError
from slidelabel.store.atomic import atomic_path

_MAX_ID = int(np.iinfo(np.uint32).max)
# Deflate, not zstd: zstd encoded ragged label tiles 3-8x faster at a similar size, but some
# TIFF readers (ImageJ's own, SCIFIO, libtiff before 4.0.10) cannot decode it. The horizontal
# predictor turns runs of one id into runs of zeros.
_TIFF_OPTIONS = {"compression": "zlib", "predictor": True, "photometric": "minisblack"}
# tifffile buffers 512 MB of tiles by default while encoding in threads; 16 MB keeps memory flat.
_TIFF_BUFFER_BYTES = 16 << 20
# Tiles fetched from the scratch store per read: 16 tiles of 256 x 256 uint32 are 4 MB.
_TILES_PER_READ = 16


class LabelMapWriter:
    """Writes the superpixel label map (uint32, 0 = no superpixel, 1..N = superpixel id) as a
    pyramidal tiled TIFF, block by block, in bounded memory.

    Blocks go to a compressed zarr array in a hidden scratch folder next to ``path``;
    :meth:`finish` streams that into the TIFF tile by tile, so memory depends on the block and
    tile size, never on the slide size. Use as a context manager: leaving the ``with`` block
    without :meth:`finish` (for instance through an exception) calls :meth:`abort`.

    Parameters
    ----------
    path : Path
        Final TIFF file; its folder must exist. Nothing appears under this name before
        :meth:`finish` succeeds.
    width, height : int
        Size of the map in working-level pixels.
    mpp : float or None
        Micrometres per working-level pixel, stored as TIFF resolution (pixels per centimetre, so
        large_image reports ``mm_x = mpp / 1000``); None writes no resolution.
    tile_size : int
        Edge of the square TIFF tiles in pixels, a multiple of 16.

    Examples
    --------
    >>> with LabelMapWriter(folder / LABELS_FILE, width=3001, height=2777, mpp=2.0) as writer:
    ...     for top, left, labels_h_w in blocks:  # doctest: +SKIP
    ...         writer.write_block(top, left, labels_h_w)
    ...     writer.finish(lut=new_id_by_old_id)
    """

    def __init__(
        self, path: Path, *, width: int, height: int, mpp: float | None, tile_size: int = 256
    ) -> None:
        if width < 1 or height < 1:
            raise ValueError(f"width and height must be >= 1 pixel, got {width} x {height}")
        if mpp is not None and not (np.isfinite(mpp) and mpp > 0):
            raise ValueError(f"mpp must be a positive number of micrometres or None, got {mpp}")
        if tile_size < 16 or tile_size % 16:
            raise ValueError(f"tile_size must be a positive multiple of 16, got {tile_size}")
        self.path = Path(path)
        self.width, self.height, self.mpp, self.tile_size = width, height, mpp, tile_size
        try:
            self._scratch = Path(
                tempfile.mkdtemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
            )
        except OSError as error:
            raise OutputError(f"cannot write {self.path}: {error.strerror or error}") from error
        # Removes the scratch folder even if the writer is dropped without finish() or abort().
        self._remove_scratch = weakref.finalize(
            self, shutil.rmtree, self._scratch, ignore_errors=True
        )
        self._base = _scratch_array(self._scratch / "level0", (height, width), tile_size)
        self._max_label = 0
        self._open = True

    def __enter__(self) -> LabelMapWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()

    def write_block(self, top: int, left: int, labels: np.ndarray) -> None:
        """Store one block of ids at working-level pixel (``top``, ``left``).

        Parameters
        ----------
        top, left : int
            Working-level pixel of the block's upper-left corner.
        labels : ndarray, shape (h, w), integer
            Ids in 0 .. 2**32 - 1. Blocks may arrive in any order and need not align with tiles;
            they must not overlap. Pixels no block covers stay 0.
        """
        self._check_open()
        labels = np.asarray(labels)
        if labels.ndim != 2 or labels.dtype.kind not in "iu":
            raise ValueError(
                f"labels must be a 2-D integer array, got {labels.ndim}-D {labels.dtype}"
            )
        h, w = labels.shape
        if top < 0 or left < 0 or top + h > self.height or left + w > self.width:
            raise ValueError(
                f"block of {w} x {h} px at left={left}, top={top} does not fit in the "
                f"{self.width} x {self.height} px map"
            )
        if labels.size == 0:
            return
        low, high = int(labels.min()), int(labels.max())
        if low < 0 or high > _MAX_ID:
            raise ValueError(f"labels must lie in 0..{_MAX_ID}, got {low}..{high}")
        try:
            self._base[top : top + h, left : left + w] = labels.astype(np.uint32, copy=False)
        except OSError as error:
            raise OutputError(f"cannot write scratch data for {self.path}: {error}") from error
        self._max_label = max(self._max_label, high)

    def finish(self, lut: np.ndarray | None = None) -> None:
        """Write the pyramidal TIFF to ``path`` atomically and remove the scratch folder.

        Parameters
        ----------
        lut : ndarray, shape (M,), integer, optional
            Renumbering applied on the way out: the file holds ``lut[old_id]``. ``M`` must exceed
            the largest id written and ``lut[0]`` must be 0 (background stays background).

        Notes
        -----
        Level k+1 takes every second pixel of level k (ids are never averaged); levels stop once
        the image fits in one tile. Tiles are ``tile_size`` square, deflate-compressed with the
        horizontal predictor, in a BigTIFF with the reduced levels as SubIFDs.
        """
        self._check_open()
        lut_checked = None if lut is None else self._checked_lut(lut)
        try:
            self._write_tiff(lut_checked)
        except OSError as error:
            raise OutputError(f"cannot write {self.path}: {error.strerror or error}") from error
        finally:
            self.abort()

    def abort(self) -> None:
        """Discard everything written so far; no file appears at ``path``. Safe to call twice."""
        self._open = False
        self._remove_scratch()

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError(f"the writer of {self.path} was already finished or aborted")

    def _checked_lut(self, lut: np.ndarray) -> np.ndarray:
        lut = np.asarray(lut)
        if lut.ndim != 1 or lut.dtype.kind not in "iu":
            raise ValueError(f"lut must be a 1-D integer array, got {lut.ndim}-D {lut.dtype}")
        if lut.size <= self._max_label:
            raise ValueError(f"lut has {lut.size} entries but the map holds id {self._max_label}")
        if lut[0] != 0:
            raise ValueError(f"lut[0] must be 0 so that background stays 0, got {lut[0]}")
        if lut.min() < 0 or lut.max() > _MAX_ID:
            raise ValueError(f"lut values must lie in 0..{_MAX_ID}, got {lut.min()}..{lut.max()}")
        return lut.astype(np.uint32, copy=False)

    def _write_tiff(self, lut: np.ndarray | None) -> None:
        shapes = _level_shapes(self.height, self.width, self.tile_size)
        source, source_lut = self._base, lut
        with atomic_path(self.path) as tmp, tifffile.TiffWriter(tmp, bigtiff=True) as tiff:
            for level, shape in enumerate(shapes):
                next_level = None
                if level + 1 < len(shapes):
                    next_level = _scratch_array(
                        self._scratch / f"level{level + 1}", shapes[level + 1], self.tile_size
                    )
                tiff.write(
                    _level_tiles(source, self.tile_size, lut=source_lut, next_level=next_level),
                    shape=shape,
                    dtype=np.uint32,
                    tile=(self.tile_size, self.tile_size),
                    subifds=(len(shapes) - 1 or None) if level == 0 else None,
                    subfiletype=1 if level else 0,
                    metadata=None,
                    buffersize=_TIFF_BUFFER_BYTES,
                    **_TIFF_OPTIONS,
                    **self._resolution(level),
                )
                # The next level is stored already renumbered, so the LUT is applied only once.
                source, source_lut = next_level, None

    def _resolution(self, level: int) -> dict[str, object]:
        if self.mpp is None:
            return {}
        pixels_per_cm = 1e4 / (self.mpp * 2**level)
        return {"resolution": (pixels_per_cm, pixels_per_cm), "resolutionunit": "CENTIMETER"}


def _scratch_array(folder: Path, shape: tuple[int, int], tile_size: int) -> zarr.Array:
    # A chunk is half a tile high and half a run of tiles wide: the half-resolution copy of one
    # run (see _level_tiles) fills exactly one chunk of the next level, so zarr never reads a
    # chunk back to merge a partial write, and a run is read as four chunks. Each chunk is a
    # file costing about a millisecond, so square tile-sized chunks were twice as slow.
    return zarr.create_array(
        store=zarr.storage.LocalStore(folder),
        shape=shape,
        chunks=(tile_size // 2, tile_size * _TILES_PER_READ // 2),
        dtype=np.uint32,
        fill_value=0,
        compressors=zarr.codecs.ZstdCodec(level=1),
    )


def _level_shapes(height: int, width: int, tile_size: int) -> list[tuple[int, int]]:
    shapes = [(height, width)]
    while max(shapes[-1]) > tile_size:
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def _level_tiles(
    source: zarr.Array,
    tile_size: int,
    *,
    lut: np.ndarray | None,
    next_level: zarr.Array | None,
) -> Iterator[np.ndarray]:
    """Yield the tiles of ``source`` (renumbered by ``lut``) in row-major order, and store
    every second pixel of them in ``next_level``, the level below in the pyramid.

    Reads a run of :data:`_TILES_PER_READ` tiles per zarr call because each call has a fixed
    cost that dominated when reading tile by tile.
    """
    height, width = source.shape
    run_width = tile_size * _TILES_PER_READ
    for top in range(0, height, tile_size):
        for run_left in range(0, width, run_width):
            run = source[top : top + tile_size, run_left : run_left + run_width]
            if lut is not None:
                run = lut[run]
            if next_level is not None:
                half = run[::2, ::2]
                y, x = top // 2, run_left // 2
                next_level[y : y + half.shape[0], x : x + half.shape[1]] = half
            for left in range(0, run.shape[1], tile_size):
                yield run[:, left : left + tile_size]


def read_labels(
    path: Path,
    *,
    left: int = 0,
    top: int = 0,
    width: int | None = None,
    height: int | None = None,
    level: int = 0,
) -> np.ndarray:
    """Read a window of a label map, decoding only the tiles it touches.

    Parameters
    ----------
    path : Path
        A :data:`LABELS_FILE` written by :class:`LabelMapWriter`.
    left, top : int
        Upper-left corner of the window in pixels of ``level``.
    width, height : int, optional
        Window size in pixels of ``level``; by default up to the right / bottom edge.
    level : int
        Pyramid level; level k is level 0 downsampled by 2**k.

    Returns
    -------
    ndarray, shape (height, width), uint32
        Superpixel ids, 0 where there is no superpixel.

    Raises
    ------
    ValueError
        If ``level`` does not exist or the window does not fit in it.
    OutputError
        If the file is missing, is not a uint32 label map, or is damaged.
    """
    with _open_label_map(path) as series:
        levels = series.levels
        if not 0 <= level < len(levels):
            raise ValueError(f"level must be in 0..{len(levels) - 1} for {path}, got {level}")
        level_height, level_width = levels[level].shape
        width = level_width - left if width is None else width
        height = level_height - top if height is None else height
        fits_x = 0 <= left and 0 <= width and left + width <= level_width
        fits_y = 0 <= top and 0 <= height and top + height <= level_height
        if not (fits_x and fits_y):
            raise ValueError(
                f"window of {width} x {height} px at left={left}, top={top} does not fit in "
                f"level {level} ({level_width} x {level_height} px) of {path}"
            )
        try:
            with series.aszarr(level=level) as store:
                return zarr.open_array(store, mode="r")[top : top + height, left : left + width]
        except (OSError, RuntimeError, ValueError) as error:
            # Codec errors (imagecodecs raises RuntimeErrors) mean damaged tiles: a truncated or
            # overwritten file.
            raise OutputError(f"label map {path} is damaged ({error})") from error


def label_map_shape(path: Path) -> tuple[int, int]:
    """Return ``(height, width)`` of level 0 of a label map, in working-level pixels.

    Raises
    ------
    OutputError
        If the file is missing or is not a uint32 label map.
    """
    with _open_label_map(path) as series:
        height, width = series.levels[0].shape
        return height, width


@contextmanager
def _open_label_map(path: Path) -> Iterator[tifffile.TiffPageSeries]:
    """Yield the image series of a label map, raising OutputError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise OutputError(f"label map {path} does not exist")
    try:
        tiff = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError) as error:
        raise OutputError(f"label map {path} is not a readable TIFF ({error})") from error
    with tiff:
        series = tiff.series[0] if tiff.series else None
        if series is None or series.axes != "YX" or series.dtype != np.uint32:
            found = "no image" if series is None else f"{series.dtype} {series.axes}"
            raise OutputError(f"{path} is not a label map: expected a uint32 YX image, got {found}")
        yield series
