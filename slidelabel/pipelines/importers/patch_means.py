"""Per-segment features from patch features: each segment gets the mean of the patches it
overlaps, weighted by how many of its pixels each patch covers, computed tile by tile over the
label map.

Within a tile, the patch edges cut the plane into *cells* covered by a fixed set of patches.
Counting each segment's pixels per cell (one ``np.unique`` of runs of pixels) and summing the
covering patches' features per cell gives, for segment ``s``,
``sum_p w_sp f_p = sum_c n_sc F_c`` and ``sum_p w_sp = sum_c n_sc C_c``, where ``n_sc`` counts
its pixels in cell ``c``, ``F_c`` sums the features of the patches covering ``c`` and ``C_c``
counts them: no loop over patches per pixel, and overlapping patches are exact. A segment is
finished, and handed on, once every tile its bounding box reaches has been seen, so memory holds
the segments of one band of tiles, not the slide's. A tile's cells are at most its pixels: patches
one pixel apart would make (cells x D) sums of gigabytes, so past :data:`CELL_BYTES` the tile's
patches are summed in groups (the sums are linear in the patches).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numba import njit

from slidelabel.pipelines.importers.polygons import tile_buckets
from slidelabel.pipelines.superpixels import Tile, core_tiles

#: Reads the (M, D) features of the patches ``indices_M`` (ascending).
FeatureReader = Callable[[np.ndarray], np.ndarray]
#: Reads the uint32 ids of a working-level window (top, left, height, width).
LabelReader = Callable[[int, int, int, int], np.ndarray]
#: Receives finished segments: (ids_M, feats_M_D float32).
RowWriter = Callable[[np.ndarray, np.ndarray], None]
#: Most bytes of one call's cell sums, (cells, D + 1) float64. Patches on a grid make a few
#: thousand cells per tile (4,096 patches of 32 px: 33 MB for 1,024 features).
CELL_BYTES = 64 << 20


@dataclass
class _Open:
    """Sums of the segments still open: ``ids_M`` ascending, ``num_M_D``, ``den_M``."""

    ids_M: np.ndarray
    num_M_D: np.ndarray
    den_M: np.ndarray

    def add(self, ids_m: np.ndarray, num_m_D: np.ndarray, den_m: np.ndarray) -> None:
        ids = np.union1d(self.ids_M, ids_m)
        num = np.zeros((ids.size, num_m_D.shape[1]))
        den = np.zeros(ids.size)
        for part_ids, part_num, part_den in ((self.ids_M, self.num_M_D, self.den_M), (ids_m, num_m_D, den_m)):
            at = np.searchsorted(ids, part_ids)
            num[at] += part_num
            den[at] += part_den
        self.ids_M, self.num_M_D, self.den_M = ids, num, den

    def take(self, done_M: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        taken = self.ids_M[done_M], self.num_M_D[done_M], self.den_M[done_M]
        self.ids_M, self.num_M_D, self.den_M = self.ids_M[~done_M], self.num_M_D[~done_M], self.den_M[~done_M]
        return taken


def _edges(starts: np.ndarray, ends: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cell edges of one axis, and each patch's first and end cell on it."""
    edges = np.unique(np.concatenate([[0, size], starts, ends]))
    return edges, np.searchsorted(edges, starts), np.searchsorted(edges, ends)


@njit(cache=True, nogil=True)
def _runs(ids_H_W, row_cell, col_cell, nx, n_cells):  # pragma: no cover
    """Keys ``id * cells + cell`` of the runs of pixels along rows with one segment id (> 0)
    and one cell, and each run's length: a tile's million pixels become a few runs per segment
    and row, so that counting pixels per (segment, cell) sorts runs, not pixels."""
    height, width = ids_H_W.shape
    keys = np.empty(height * width, np.int64)
    lengths = np.empty(height * width, np.int64)
    n = 0
    for r in range(height):
        base = np.int64(row_cell[r]) * nx
        previous = np.int64(-1)
        for c in range(width):
            segment = ids_H_W[r, c]
            if segment <= 0:
                previous = -1
                continue
            key = np.int64(segment) * np.int64(n_cells) + base + col_cell[c]
            if key == previous:
                lengths[n - 1] += 1
            else:
                keys[n] = key
                lengths[n] = 1
                n += 1
                previous = key
    return keys[:n], lengths[:n]


def _tile_sums(ids_H_W: np.ndarray, rect_P_4: np.ndarray, feats_P_D: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids_m, sum of w f (m, D), sum of w (m,)) of the segments in one tile; ``rect_P_4`` are the
    patches' x0, y0, x1, y1 in tile pixels, clipped and non-empty. Summed over groups of patches
    whose cell sums fit :data:`CELL_BYTES`."""
    groups = _patch_groups(rect_P_4, feats_P_D.shape[1], *ids_H_W.shape)
    if len(groups) == 1:
        return _group_sums(ids_H_W, rect_P_4, feats_P_D)
    sums = _Open(np.zeros(0, np.int64), np.zeros((0, feats_P_D.shape[1])), np.zeros(0))
    for group in groups:
        sums.add(*_group_sums(ids_H_W, rect_P_4[group], feats_P_D[group]))
    return sums.ids_M, sums.num_M_D, sums.den_M


def _cell_bytes(rect_P_4: np.ndarray, dim: int, height: int, width: int) -> int:
    """Bytes of the cell sums of patches ``rect_P_4`` in a ``height`` x ``width`` tile."""
    nx = np.unique(np.concatenate([[0, width], rect_P_4[:, 0], rect_P_4[:, 2]])).size - 1
    ny = np.unique(np.concatenate([[0, height], rect_P_4[:, 1], rect_P_4[:, 3]])).size - 1
    return nx * ny * (dim + 1) * 8


def _patch_groups(rect_P_4: np.ndarray, dim: int, height: int, width: int) -> list[np.ndarray]:
    """Indices of groups of patches whose cell sums each fit :data:`CELL_BYTES`: all patches in
    one group when they fit, else halves of them in (y, x) order, halved again until they fit (a
    patch alone makes at most 9 cells)."""
    pending, groups = [np.lexsort((rect_P_4[:, 0], rect_P_4[:, 1]))], []
    while pending:
        group = pending.pop()
        if group.size == 1 or _cell_bytes(rect_P_4[group], dim, height, width) <= CELL_BYTES:
            groups.append(group)
        else:
            pending += [group[group.size // 2 :], group[: group.size // 2]]
    return groups


def _group_sums(ids_H_W: np.ndarray, rect_P_4: np.ndarray, feats_P_D: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_tile_sums` of one group of patches."""
    height, width = ids_H_W.shape
    xs, cx0, cx1 = _edges(rect_P_4[:, 0], rect_P_4[:, 2], width)
    ys, cy0, cy1 = _edges(rect_P_4[:, 1], rect_P_4[:, 3], height)
    nx, ny = xs.size - 1, ys.size - 1
    cell_sums = _cell_sums(cy0, cy1, cx0, cx1, feats_P_D, ny, nx)
    col_cell = np.searchsorted(xs, np.arange(width), side="right") - 1
    row_cell = np.searchsorted(ys, np.arange(height), side="right") - 1
    run_keys, run_lengths = _runs(ids_H_W, row_cell, col_cell, nx, ny * nx)
    keys, inverse = np.unique(run_keys, return_inverse=True)
    counts = np.bincount(inverse, weights=run_lengths, minlength=keys.size).astype(np.int64)
    ids, cells = np.divmod(keys, ny * nx)
    first = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    sums = _segment_sums(first, cells, counts, cell_sums)
    return ids[first], sums[:, :-1], sums[:, -1]


@njit(cache=True, nogil=True)
def _cell_sums(cy0, cy1, cx0, cx1, feats_P_D, ny, nx):  # pragma: no cover
    """float64 (ny * nx, D + 1): the features of the patches covering each cell, summed, and
    (last column) how many patches cover it. A patch covers few cells (one when patches do not
    overlap), so adding it to each is cheaper than a difference array and its prefix sums."""
    n_patches, dim = feats_P_D.shape
    sums = np.zeros((ny * nx, dim + 1))
    for p in range(n_patches):
        for r in range(cy0[p], cy1[p]):
            for c in range(cx0[p], cx1[p]):
                cell = r * nx + c
                for d in range(dim):
                    sums[cell, d] += feats_P_D[p, d]
                sums[cell, dim] += 1.0
    return sums


@njit(cache=True, nogil=True)
def _segment_sums(first, cells, counts, cell_sums):  # pragma: no cover
    """float64 (m, D + 1): per segment (its pairs start at ``first``), the sum over its cells of
    the pixel count times the cell's sums."""
    n_groups, n_pairs, width = first.size, cells.size, cell_sums.shape[1]
    sums = np.zeros((n_groups, width))
    for g in range(n_groups):
        stop = first[g + 1] if g + 1 < n_groups else n_pairs
        for k in range(first[g], stop):
            weight = float(counts[k])
            for d in range(width):
                sums[g, d] += weight * cell_sums[cells[k], d]
    return sums


def area_weighted_means(
    read_ids: LabelReader,
    read_features: FeatureReader,
    *,
    corners_level0_P_2: np.ndarray,
    patch_level0: float,
    downsample: float,
    height: int,
    width: int,
    bbox_level0_N_4: np.ndarray,
    write_rows: RowWriter,
    tile_size: int = 2048,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Area-weighted mean patch features of every segment of a label map.

    Parameters
    ----------
    read_ids, read_features : see :data:`LabelReader`, :data:`FeatureReader`.
    corners_level0_P_2 : (P, 2) x, y of each patch's top-left corner in level-0 px.
    patch_level0 : side of the square patches in level-0 px.
    downsample : level-0 px per label-map px; ``height``, ``width``: the label map's size.
    bbox_level0_N_4 : (N, 4) segment boxes (the superpixel table), to know when one is finished.
    write_rows : receives each segment overlapping a patch once; the others are never written.

    Returns
    -------
    int : segments written.
    """
    d = float(downsample)
    boxes_P_4 = np.concatenate([corners_level0_P_2, corners_level0_P_2 + patch_level0], axis=1).astype(np.float64)
    # Pixel-centre rule: pixel c is in [x0, x1) when its centre (c + 0.5) d is.
    rect_P_4 = np.ceil(boxes_P_4 / d - 0.5).astype(np.int64)
    tiles = core_tiles(height, width, tile_size)
    tiles_x = -(-width // tile_size)
    starts, patches = tile_buckets(boxes_P_4, downsample=d, tile_size=tile_size, tiles_x=tiles_x,
                                   tiles_y=-(-height // tile_size))
    last_row_N = (np.ceil(bbox_level0_N_4[:, 3] / d).astype(np.int64) - 1) // tile_size
    last_col_N = (np.ceil(bbox_level0_N_4[:, 2] / d).astype(np.int64) - 1) // tile_size
    dim = None
    open_sums: _Open | None = None
    written = 0
    for index, tile in enumerate(tiles):
        band, column = divmod(index, tiles_x)
        which = patches[starts[index] : starts[index + 1]]
        sums = _tile_patch_sums(read_ids, read_features, tile, rect_P_4, which) if which.size else None
        if sums is not None:
            if open_sums is None:
                dim = sums[1].shape[1]
                open_sums = _Open(np.zeros(0, np.int64), np.zeros((0, dim)), np.zeros(0))
            open_sums.add(*sums)
        if open_sums is not None and open_sums.ids_M.size:
            rows, cols = last_row_N[open_sums.ids_M - 1], last_col_N[open_sums.ids_M - 1]
            ids, num, den = open_sums.take((rows < band) | ((rows == band) & (cols <= column)))
            covered = den > 0
            if covered.any():
                write_rows(ids[covered], (num[covered] / den[covered, None]).astype(np.float32))
                written += int(covered.sum())
        if progress is not None:
            progress(index + 1, len(tiles))
    return written


def _tile_patch_sums(read_ids: LabelReader, read_features: FeatureReader, tile: Tile, rect_P_4: np.ndarray,
                     which: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    rect = rect_P_4[which] - [tile.left, tile.top, tile.left, tile.top]
    rect[:, [0, 2]] = np.clip(rect[:, [0, 2]], 0, tile.width)
    rect[:, [1, 3]] = np.clip(rect[:, [1, 3]], 0, tile.height)
    keep = (rect[:, 2] > rect[:, 0]) & (rect[:, 3] > rect[:, 1])
    if not keep.any():
        return None
    ids_H_W = read_ids(tile.top, tile.left, tile.height, tile.width)
    if not ids_H_W.any():
        return None
    # Per tile, not per band of tiles: a band is 256 MB of 1024-wide features, a tile 16 MB.
    return _tile_sums(ids_H_W, rect[keep], read_features(which[keep]))
