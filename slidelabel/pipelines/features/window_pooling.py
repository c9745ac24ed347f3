"""Pools of the superpixels of a window, filled block by block in two passes over the pixels.

:func:`pool_window_block` adds the pixels of one block of a window to per-window accumulators
(:class:`WindowAccumulators`): one pass adds each pixel to its superpixel's count, sums, sums of
squares, histogram bins and shape channels, run by run along the rows (a run of one id keeps its
sums in registers); a second adds the pixels near a boundary to the context ring of every other
superpixel within ``ring_px``. This replaced one ``Pools.of_pixels`` pass per pool (two for the
rings), each of which compacted the ids and converted the channels again.

The ring of a superpixel is exact: every pixel within ``ring_px`` (Chebyshev distance) of it but
not in it, counted once per superpixel however many meet there. (The earlier rings kept only the
largest and smallest id around a pixel, so a sliver at a junction could get no ring at all and
NaN ring means.)

Memory goes with the window's superpixels: histograms are kept only of the channels whose
percentiles are read (:attr:`HistogramBins.channels`, the 9 colour channels of ``context``, not
its 32 texture channels), as int32 counts (a window has fewer pixels than that counts), and
:meth:`WindowAccumulators.pools` hands the accumulators' own rows over instead of copying them:
the ``tissue`` extractor's accumulators take 2.5 KB per superpixel (were 12 KB, and twice that
with the copy), about 64 bytes per pixel for superpixels of 40 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

from slidelabel.pipelines.features.base import SHAPE_CHANNELS, SuperpixelPools
from slidelabel.pipelines.features.pooling import HistogramBins, Pools, compact_ids


@dataclass(frozen=True)
class WindowAccumulators:
    """Sums over the ``M`` superpixels of one window (``ids_M``, sorted), filled block by block."""

    ids_M: np.ndarray
    index_H_W: np.ndarray
    """int64 row of each window pixel's superpixel in ``ids_M``, -1 for none."""
    counts_M: np.ndarray
    sums_M_K: np.ndarray
    sumsq_M_K: np.ndarray
    hist_M_K_B: np.ndarray
    ring_counts_M: np.ndarray
    ring_sums_M_K: np.ndarray
    ring_sumsq_M_K: np.ndarray
    shape_sums_M_S: np.ndarray
    shape_sumsq_M_S: np.ndarray
    bins: HistogramBins | None

    @classmethod
    def of_labels(cls, labels_H_W: np.ndarray, channels: int, bins: HistogramBins | None) -> WindowAccumulators:
        """Empty accumulators for the superpixels of ``labels_H_W`` (0 = none) and ``channels`` channels,
        with histograms (int32) of the first ``bins.channels`` of them."""
        if bins is not None and (bins.low_K.ndim != 1 or bins.channels > channels):
            raise ValueError(f"histogram ranges are for {bins.low_K.shape} channels, values have {channels}")
        ids_M, index_H_W = compact_ids(labels_H_W)
        m, n_bins = ids_M.size, bins.bins if bins is not None else 0
        return cls(ids_M, index_H_W, np.zeros(m, np.int64), np.zeros((m, channels)), np.zeros((m, channels)),
                   np.zeros((m, bins.channels if bins is not None else channels, n_bins), np.int32),
                   np.zeros(m, np.int64), np.zeros((m, channels)),
                   np.zeros((m, channels)), np.zeros((m, SHAPE_CHANNELS)), np.zeros((m, SHAPE_CHANNELS)), bins)

    def pools(self) -> SuperpixelPools:
        """The pools of the superpixels that have pixels (or ring pixels) among those added.

        They are these accumulators' arrays, their rows moved up in place rather than copied (a
        copy would double the window's memory): add nothing after this."""
        seen, ringed = self.counts_M > 0, self.ring_counts_M > 0
        seen_R, ringed_R = np.flatnonzero(seen), np.flatnonzero(ringed)
        counts = _kept_rows(self.counts_M, seen_R)
        pixels = Pools(self.ids_M[seen], counts, _kept_rows(self.sums_M_K, seen_R),
                       _kept_rows(self.sumsq_M_K, seen_R), _kept_rows(self.hist_M_K_B, seen_R), self.bins)
        ring = Pools(self.ids_M[ringed], _kept_rows(self.ring_counts_M, ringed_R),
                     _kept_rows(self.ring_sums_M_K, ringed_R), _kept_rows(self.ring_sumsq_M_K, ringed_R),
                     np.zeros((ringed_R.size, self.sums_M_K.shape[1], 0), np.int64))
        shape = Pools(self.ids_M[seen], counts, _kept_rows(self.shape_sums_M_S, seen_R),
                      _kept_rows(self.shape_sumsq_M_S, seen_R), np.zeros((seen_R.size, SHAPE_CHANNELS, 0), np.int64))
        return SuperpixelPools(pixels, ring, shape)


#: Rows moved at once by :func:`_kept_rows`.
_MOVE_ROWS = 4096


def _kept_rows(array_M: np.ndarray, rows_R: np.ndarray) -> np.ndarray:
    """``array_M[rows_R]`` for ascending ``rows_R``, made by moving those rows up within
    ``array_M`` (overwriting it) a few thousand at a time: row ``i`` comes from row
    ``rows_R[i] >= i``, which no earlier move has overwritten."""
    if rows_R.size == array_M.shape[0]:
        return array_M
    for start in range(0, rows_R.size, _MOVE_ROWS):
        rows = rows_R[start : start + _MOVE_ROWS]
        array_M[start : start + rows.size] = array_M[rows]
    return array_M[: rows_R.size]


def pool_window_block(acc: WindowAccumulators, values_h_w_K: np.ndarray, *, top: int, left: int,
                      ring_px: int, origin: tuple[int, int]) -> None:
    """Add the pixels of the block of window rows ``top:top + h`` and columns ``left:left + w``
    to ``acc``, with their channels ``values_h_w_K`` (float32 or float64, ``(h, w, K)``).

    ``origin`` is the window's (top, left) in image px, for the shape's pixel coordinates. Ring
    membership and boundary pixels look at the window's labels up to ``ring_px`` (and 1) px
    around the block; the window's edge counts as no superpixel for rings and as the same id
    for boundaries. With ``ring_px`` 0 no ring is pooled.
    """
    h, w, channels = values_h_w_K.shape
    height, width = acc.index_H_W.shape
    if top < 0 or left < 0 or top + h > height or left + w > width or channels != acc.sums_M_K.shape[1]:
        raise ValueError(f"block {values_h_w_K.shape} at ({top}, {left}) does not fit window {acc.index_H_W.shape} "
                         f"of {acc.sums_M_K.shape[1]} channels")
    if ring_px < 0:
        raise ValueError(f"ring_px must be >= 0, got {ring_px}")
    bins = acc.bins
    low_K = bins.low_K.astype(np.float64) if bins is not None else np.zeros(channels)
    scale_K = bins.bins / (bins.high_K - bins.low_K) if bins is not None else np.zeros(channels)
    _pool_pixels(acc.index_H_W, top, left, values_h_w_K, low_K, scale_K, float(origin[0] + top),
                 float(origin[1] + left), acc.counts_M, acc.sums_M_K, acc.sumsq_M_K, acc.hist_M_K_B,
                 acc.shape_sums_M_S, acc.shape_sumsq_M_S)
    if ring_px:
        free_h_w, run_end_Y_X, y_lo, x_lo = _ring_free(acc.index_H_W, top, left, h, w, ring_px)
        _pool_rings(acc.index_H_W, top, left, values_h_w_K, free_h_w, run_end_Y_X, y_lo, x_lo, ring_px,
                    acc.ring_counts_M, acc.ring_sums_M_K, acc.ring_sumsq_M_K)


@numba.njit(cache=True, nogil=True)
def _ring_free(index_H_W, top, left, h, w, radius):  # pragma: no cover
    """(free_h_w, run_end_Y_X, y_lo, x_lo): whether each block pixel has only its own id within
    ``radius`` (so is in no ring), and for the window pixels ``radius`` around the block (from
    ``(y_lo, x_lo)``) the column where the run of their id along the row ends."""
    height, width = index_H_W.shape
    y_lo, y_hi = max(top - radius, 0), min(top + h + radius, height)
    x_lo, x_hi = max(left - radius, 0), min(left + w + radius, width)
    run_end_Y_X = np.empty((y_hi - y_lo, x_hi - x_lo), np.int64)
    for y in range(y_lo, y_hi):
        end = x_hi
        for x in range(x_hi - 1, x_lo - 1, -1):
            if x + 1 < x_hi and index_H_W[y, x + 1] != index_H_W[y, x]:
                end = x + 1
            run_end_Y_X[y - y_lo, x - x_lo] = end
    # changes_X[j]: how many horizontal id changes lie in columns x_lo + 1 .. x_lo + j of a row.
    changes_X = np.zeros(x_hi - x_lo, np.int32)
    mixed_Y_w = np.zeros((y_hi - y_lo, w), np.bool_)
    for y in range(y_lo, y_hi):
        for j in range(1, x_hi - x_lo):
            changes_X[j] = changes_X[j - 1] + (index_H_W[y, x_lo + j] != index_H_W[y, x_lo + j - 1])
        for x in range(left, left + w):
            a, b = max(x - radius, 0), min(x + radius, width - 1)
            mixed_Y_w[y - y_lo, x - left] = changes_X[b - x_lo] != changes_X[a - x_lo]
    free_h_w = np.zeros((h, w), np.bool_)
    # Per column, prefix counts of mixed rows and of vertical id changes.
    mixed_Y = np.zeros(y_hi - y_lo + 1, np.int32)
    vchanges_Y = np.zeros(y_hi - y_lo, np.int32)
    for x in range(left, left + w):
        for i in range(y_hi - y_lo):
            mixed_Y[i + 1] = mixed_Y[i] + mixed_Y_w[i, x - left]
            if i > 0:
                vchanges_Y[i] = vchanges_Y[i - 1] + (index_H_W[y_lo + i, x] != index_H_W[y_lo + i - 1, x])
        for y in range(top, top + h):
            a, b = max(y - radius, 0) - y_lo, min(y + radius, height - 1) - y_lo
            free_h_w[y - top, x - left] = mixed_Y[b + 1] == mixed_Y[a] and vchanges_Y[b] == vchanges_Y[a]
    return free_h_w, run_end_Y_X, y_lo, x_lo


@numba.njit(cache=True, nogil=True)
def _pool_pixels(index_H_W, top, left, values_h_w_K, low_K, scale_K, y0, x0, counts_M, sums_M_K, sumsq_M_K,
                 hist_M_K_B, shape_sums_M_S, shape_sumsq_M_S):  # pragma: no cover
    """Add each block pixel to its own superpixel's pools (channels, histograms and shape)."""
    height, width = index_H_W.shape
    h, w, channels = values_h_w_K.shape
    bins = hist_M_K_B.shape[2]
    hist_channels = hist_M_K_B.shape[1] if bins > 0 else 0  # the first channels keep histograms
    top_bin = np.float64(bins - 1)
    for i in range(h):
        y = top + i
        j = 0
        while j < w:  # runs of one id along the row: sums in registers, not through memory
            m = index_H_W[y, left + j]
            end = j + 1
            while end < w and index_H_W[y, left + end] == m:
                end += 1
            if m >= 0:
                counts_M[m] += end - j
                for k in range(channels):
                    total, total_sq = 0.0, 0.0
                    for jj in range(j, end):
                        value = np.float64(values_h_w_K[i, jj, k])
                        total += value
                        total_sq += value * value
                        if k < hist_channels:
                            # floor, clipped to the bins (int() truncates, which is floor from 0 up)
                            t = (value - low_K[k]) * scale_K[k]
                            hist_M_K_B[m, k, int(min(max(t, 0.0), top_bin))] += 1
                    sums_M_K[m, k] += total
                    sumsq_M_K[m, k] += total_sq
                for jj in range(j, end):
                    x = left + jj
                    edge = ((y > 0 and index_H_W[y - 1, x] != m) or (y + 1 < height and index_H_W[y + 1, x] != m)
                            or (x > 0 and index_H_W[y, x - 1] != m) or (x + 1 < width and index_H_W[y, x + 1] != m))
                    ys, xs = y0 + i, x0 + jj
                    for s, coordinate in enumerate((xs, ys, xs + ys, 1.0 if edge else 0.0)):
                        shape_sums_M_S[m, s] += coordinate
                        shape_sumsq_M_S[m, s] += coordinate * coordinate
            j = end


@numba.njit(cache=True, nogil=True)
def _pool_rings(index_H_W, top, left, values_h_w_K, free_h_w, run_end_Y_X, y_lo, x_lo, radius, ring_counts_M,
                ring_sums_M_K, ring_sumsq_M_K):  # pragma: no cover
    """Add each block pixel to the ring pools of every other superpixel within ``radius``."""
    height, width = index_H_W.shape
    h, w, channels = values_h_w_K.shape
    around = np.empty((2 * radius + 1) ** 2, np.int64)
    for i in range(h):
        y = top + i
        for j in range(w):
            if free_h_w[i, j]:
                continue
            x = left + j
            m = index_H_W[y, x]
            n = 0
            x_end = min(x + radius + 1, width)
            for yy in range(max(y - radius, 0), min(y + radius + 1, height)):
                xx = max(x - radius, 0)
                while xx < x_end:  # one look per run of equal ids
                    other = index_H_W[yy, xx]
                    xx = run_end_Y_X[yy - y_lo, xx - x_lo]
                    if other < 0 or other == m or other in around[:n]:
                        continue
                    around[n] = other
                    n += 1
            for r in around[:n]:
                ring_counts_M[r] += 1
                for k in range(channels):
                    value = np.float64(values_h_w_K[i, j, k])
                    ring_sums_M_K[r, k] += value
                    ring_sumsq_M_K[r, k] += value * value
