"""Pooling an extractor's channels over every superpixel of an image, reading the pixels once, tile
by tile (:func:`pool_image`, the driver of :mod:`slidelabel.pipelines.features.extract`).

Each core tile is read with a margin of context (the extractor's ``margin_px``, and the context
ring's width), its channels are computed block by block and pooled over the core only, in one
pass per block (:mod:`~slidelabel.pipelines.features.window_pooling`), and the pools of
superpixels cut by tile borders are merged. Tiles are read and pooled by :func:`tile_workers`
threads and merged in raster order, so the result does not depend on the number of threads.
Tiles go in raster order; after each tile the superpixels that no later tile can reach are
finished, turned into features and written, so memory holds the superpixels along the lower edge
of the current row of tiles, not a row's or the slide's (:func:`_finish_superpixels`). The
superpixels that lie wholly inside a tile, away from its edges, are turned into features by the
thread that pooled the tile, a few thousand at a time, so that a tile waiting its turn holds their
features (0.5 KB each for ``tissue``) rather than their pools (2.5 KB).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features.base import FeatureExtractor, RowWriter, SuperpixelPools, TileProgress, WindowReader
from slidelabel.pipelines.features.pooling import Pools
from slidelabel.pipelines.features.window_pooling import WindowAccumulators, pool_window_block
from slidelabel.pipelines.superpixels import Tile, core_tiles
from slidelabel.pipelines.torch_threads import available_cpus

#: Channels are computed in blocks of at most this side (px) plus margins, which bounds the
#: per-pixel stack: the filter bank's 32 float32 channels on (512 + 2 x 40)^2 px take 45 MB.
BLOCK_PX = 512
#: Finished superpixels turned into features at once: bounds the copies of their pools and the
#: percentiles' temporaries (the ``tissue`` extractor's histograms, 9 colour channels of 32 bins,
#: take 2.3 KB per superpixel, 4.7 MB for 2048).
FINISH_ROWS = 2048

#: Tiles read and pooled at once at most: decoding (OpenSlide), OpenCV and the numba kernels release
#: the GIL, so threads use the cores (and overlap reading one tile with pooling another).
MAX_WORKERS = 4

T = TypeVar("T")

#: Reads the RGB of a window (top, left, height, width); the last argument, bool (height, width),
#: marks the pixels that will be used: the others may be anything (a slide leaves glass white).
RgbReader = Callable[[int, int, int, int, np.ndarray], np.ndarray]
def _pool_window(extractor: FeatureExtractor, rgb: np.ndarray, labels: np.ndarray, core: Tile,
                 origin: tuple[int, int]) -> SuperpixelPools:
    """Pools of the pixels of ``core`` (window pixels) of a window whose corner is ``origin``
    (image px), its channels computed block by block (:data:`BLOCK_PX`) and pooled in one pass each."""
    height, width = labels.shape
    margin, grid = extractor.margin_px, extractor.grid_px
    acc = None
    for b in core_tiles(core.height, core.width, BLOCK_PX):
        block = Tile(core.top + b.top, core.left + b.left, b.height, b.width)
        # The channel window's corner goes onto the extractor's grid in image px (a CNN's cells are
        # then the same in every tile), taking up to grid_px - 1 px off its top and left margins.
        outer = block.padded((margin - (margin - origin[0] - block.top) % grid,
                              margin - (margin - origin[1] - block.left) % grid, margin, margin), height, width)
        channels_H_W_K = extractor.window_channels(rgb[outer.top : outer.top + outer.height,
                                                       outer.left : outer.left + outer.width])
        top, left = block.top - outer.top, block.left - outer.left
        if acc is None:
            acc = WindowAccumulators.of_labels(labels, channels_H_W_K.shape[2], extractor.histogram_bins)
        pool_window_block(acc, channels_H_W_K[top : top + block.height, left : left + block.width],
                          top=block.top, left=block.left, ring_px=extractor.ring_px, origin=origin)
        del channels_H_W_K  # else it stays alive while the next block's are computed (57 MB for tissue)
    if acc is None:
        raise ValueError(f"empty core {core}")
    return acc.pools()


def _merged(parts: list[SuperpixelPools]) -> SuperpixelPools:
    return SuperpixelPools(*(Pools.merged([getattr(p, name) for p in parts]) for name in ("pixels", "ring", "shape")))


def _aligned(pools: SuperpixelPools, ids_M: np.ndarray) -> SuperpixelPools:
    return SuperpixelPools(pools.pixels.aligned(ids_M), pools.ring.aligned(ids_M), pools.shape.aligned(ids_M))


def _used_pixels(labels_H_W: np.ndarray, reach_px: int) -> np.ndarray:
    """bool (H, W): the pixels within ``reach_px`` (Chebyshev) of a superpixel."""
    kernel = np.ones((2 * reach_px + 1, 2 * reach_px + 1), np.uint8)
    return cv2.dilate((labels_H_W > 0).view(np.uint8), kernel).view(bool)


@dataclass(frozen=True)
class _TilePools:
    """What one tile adds: the pools of its pixels (None on glass) but those of the superpixels
    it finished, the ids a later tile may still add to, beyond a ring's width of its lower edge
    (``below``) and of its right edge (``right``), and the features of the superpixels that no
    other tile reaches (``finished``: chunks of ids and their rows)."""

    pools: SuperpixelPools | None
    below: np.ndarray
    right: np.ndarray
    finished: list[tuple[np.ndarray, np.ndarray]]


def _edge_ids(labels_H_W: np.ndarray, core: Tile, reach: int) -> np.ndarray:
    """Sorted ids of the window pixels within ``reach`` px of an edge of ``core``, inside or out."""
    outer = core.grown(reach, *labels_H_W.shape)
    top, left = core.top + reach, core.left + reach
    bottom, right = max(core.top + core.height - reach, top), max(core.left + core.width - reach, left)
    o_bottom, o_right = outer.top + outer.height, outer.left + outer.width
    strips = [labels_H_W[outer.top : top, outer.left : o_right], labels_H_W[bottom : o_bottom, outer.left : o_right],
              labels_H_W[top : bottom, outer.left : left], labels_H_W[top : bottom, right : o_right]]
    return np.unique(np.concatenate([strip.ravel() for strip in strips]))


def _finish_inside(extractor: FeatureExtractor, pools: SuperpixelPools, edge_ids: np.ndarray
                   ) -> tuple[SuperpixelPools, list[tuple[np.ndarray, np.ndarray]]]:
    """(the pools of the superpixels in ``edge_ids`` or not seen in the core, the features of the
    others): those have all their pixels and ring pixels in this tile, so their features are
    those the merged pools would give, to the bit."""
    inside_M = pools.pixels.ids_M[~np.isin(pools.pixels.ids_M, edge_ids)]
    finished = []
    for start in range(0, inside_M.size, FINISH_ROWS):
        chunk_ids = inside_M[start : start + FINISH_ROWS]
        finished.append((chunk_ids, extractor.features(_aligned(pools, chunk_ids))))
    kept = [pool.where(~np.isin(pool.ids_M, inside_M)) for pool in (pools.pixels, pools.ring, pools.shape)]
    return SuperpixelPools(*kept), finished


def _pool_tile(extractor: FeatureExtractor, read_rgb: RgbReader, read_ids: WindowReader, tile: Tile, *,
               height: int, width: int, n_superpixels: int) -> _TilePools:
    """The pools of the pixels of ``tile`` and the ids near its lower and right edges."""
    margin = max(extractor.margin_px, extractor.ring_px + 1)
    window = tile.grown(margin, height, width)
    labels = np.asarray(read_ids(window.top, window.left, window.height, window.width), np.int64)
    if labels.max(initial=0) > n_superpixels:
        raise ValueError(f"superpixel id {labels.max()} in window {window} is above {n_superpixels}")
    core = Tile(tile.top - window.top, tile.left - window.left, tile.height, tile.width)
    pools, finished = None, []
    if labels.any():  # glass without superpixels is never read
        # A pixel counts if it is in a superpixel or its ring, or feeds their channels: those of
        # pixels margin_px away, or of a network's cells (grid_px) that far.
        used = _used_pixels(labels, extractor.ring_px + extractor.margin_px + extractor.grid_px)
        rgb = read_rgb(window.top, window.left, window.height, window.width, used)
        del used
        pools = _pool_window(extractor, rgb, labels, core, (window.top, window.left))
        del rgb
        # A superpixel more than a ring's width (and a pixel) inside every edge of the core gets
        # nothing from another tile, unless it is not connected (which the driver reports).
        pools, finished = _finish_inside(extractor, pools, _edge_ids(labels, core, extractor.ring_px + 1))
    # Ids within a ring's width of an edge (inside or out) may gain pixels or ring pixels from
    # the tile beyond it.
    ring = extractor.ring_px
    bottom, right = core.top + core.height, core.left + core.width
    below = labels[max(bottom - ring - 1, 0) : bottom + ring, core.left : right]
    beside = labels[max(core.top - ring, 0) : bottom + ring, max(right - ring - 1, 0) : right + ring]
    return _TilePools(pools, np.unique(below), np.unique(beside), finished)


def tile_workers() -> int:
    """Threads for the tiles: one per CPU this process may run on (its affinity, not the
    machine's count), at most :data:`MAX_WORKERS`. A worker pinned to one core gets one thread,
    which holds one tile's window and channels (about 250 MB for the ``tissue`` extractor) instead
    of two and gains no speed from a second."""
    return min(available_cpus(), MAX_WORKERS)


def _in_order(work: Callable[[Tile], T], tiles: list[Tile], workers: int) -> Iterator[T]:
    """``work(tile)`` of each tile, in order, computed by ``workers`` threads at most
    ``2 * workers`` tiles ahead of the consumer (reading one tile while pooling another)."""
    if workers <= 1:
        yield from map(work, tiles)
        return
    executor = ThreadPoolExecutor(workers, thread_name_prefix="slidelabel-features")
    try:
        ahead: deque[Future[T]] = deque()
        upcoming = iter(tiles)
        for tile in itertools.islice(upcoming, 2 * workers):
            ahead.append(executor.submit(work, tile))
        while ahead:
            result = ahead.popleft().result()
            for tile in itertools.islice(upcoming, 1):
                ahead.append(executor.submit(work, tile))
            yield result
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def pool_image(
    extractor: FeatureExtractor,
    read_rgb: RgbReader,
    read_ids: WindowReader,
    *,
    height: int,
    width: int,
    n_superpixels: int,
    write_rows: RowWriter,
    tile_size: int = 2048,
    progress: TileProgress | None = None,
    workers: int | None = None,
) -> None:
    """Features of the superpixels 1..``n_superpixels`` of a ``height`` x ``width`` image (working
    px), handed to ``write_rows`` as their superpixels are finished (each id once, in no order).

    ``read_rgb`` gives uint8 (h, w, 3) (see :data:`RgbReader`) and ``read_ids`` integer (h, w)
    superpixel ids of a window; with ``workers`` (default :func:`tile_workers`) > 1 both are
    called from that many threads at once. Tiles are read and
    pooled in parallel but merged in raster order, so the result does not depend on ``workers``.
    Superpixels must be connected: one seen again after it was finished is a ``ValueError``.
    """
    if tile_size < 16:
        raise ParameterError(f"tile_size must be >= 16 px, got {tile_size}")
    tiles = core_tiles(height, width, tile_size)
    results = _in_order(lambda tile: _pool_tile(extractor, read_rgb, read_ids, tile, height=height, width=width,
                                                n_superpixels=n_superpixels), tiles,
                        tile_workers() if workers is None else workers)
    with closing(results):  # on an error, stop the threads before returning
        _finish_superpixels(extractor, tiles, results, height=height, n_superpixels=n_superpixels,
                            write_rows=write_rows, progress=progress)


def _finish_superpixels(extractor: FeatureExtractor, tiles: list[Tile], results: Iterator[_TilePools], *,
                        height: int, n_superpixels: int, write_rows: RowWriter, progress: TileProgress | None) -> None:
    """Merge the tiles' pools in raster order and write each superpixel once no later tile can
    add to it.

    After a tile, a superpixel stays open when it came from the band of tiles above (it may reach
    any tile of this band), lies near the lower edge of a tile of this band so far (the next band
    may add to it) or near this tile's right edge (the next tile may); at the end of a band, only
    the lower edges count, and at the end of the image nothing does. So memory holds about a row
    of superpixels along the band's lower edge and a column along the tile's right edge, not a
    band's: the ``tissue`` extractor's pools take 3.7 KB per superpixel. Pools merge in the same
    order as a band at a time would, so the sums, hence the features, are the same to the bit.
    """
    finished = np.zeros(n_superpixels + 1, bool)
    pending: SuperpixelPools | None = None  # pools of the superpixels still open
    from_above = np.zeros(0, np.int64)
    below: list[np.ndarray] = []  # ids near the lower edges of this band's tiles so far
    for done, (tile, result) in enumerate(zip(tiles, results), 1):
        band_ends = done == len(tiles) or tiles[done].top != tile.top
        open_before = pending.ids() if pending is not None and result.finished else np.zeros(0, np.int64)
        for ids_M, feats_M_D in result.finished:
            seen_M = finished[ids_M] | np.isin(ids_M, open_before)
            if seen_M.any():
                raise ValueError(f"superpixel {ids_M[seen_M][0]} is not connected: seen again in the tile at "
                                 f"row {tile.top}, column {tile.left}")
            write_rows(ids_M, feats_M_D)
            finished[ids_M] = True
        below.append(result.below)
        if result.pools is not None:
            pending = result.pools if pending is None else _merged([pending, result.pools])
        if pending is not None:
            if band_ends:
                open_ids = below if tile.top + tile.height < height else []
            else:
                open_ids = [from_above, *below, result.right]
            pending = _finish(extractor, pending, np.concatenate(open_ids or [np.zeros(0, np.int64)]), finished,
                              write_rows, where=tile)
        if band_ends:
            from_above = pending.ids() if pending is not None else np.zeros(0, np.int64)
            below = []
        if progress is not None:
            progress(done, len(tiles))


def _finish(extractor: FeatureExtractor, pools: SuperpixelPools, open_ids: np.ndarray, finished: np.ndarray,
            write_rows: RowWriter, *, where: Tile) -> SuperpixelPools:
    """Write the features of the superpixels of ``pools`` that are not in ``open_ids``, mark them
    in ``finished`` and return the pools of the others."""
    ids_M = pools.ids()
    if finished[ids_M].any():
        raise ValueError(f"superpixel {ids_M[finished[ids_M]][0]} is not connected: seen again in the tile at "
                         f"row {where.top}, column {where.left}")
    keep_M = np.isin(ids_M, open_ids)
    finished_ids = ids_M[~keep_M]
    # A few thousand at a time: the percentiles' temporaries take as much as the pools.
    for start in range(0, finished_ids.size, FINISH_ROWS):
        chunk_ids = finished_ids[start : start + FINISH_ROWS]
        write_rows(chunk_ids, extractor.features(_aligned(pools, chunk_ids)))
    finished[finished_ids] = True
    return _aligned(pools, ids_M[keep_M])
