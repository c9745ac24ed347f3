"""Mergeable per-superpixel accumulators of per-pixel channels.

A :class:`Pools` holds, for each superpixel id it has seen, the pixel count and the per-channel
sums, sums of squares and (optionally) fixed-bin histograms. Pools of disjoint pixel sets merge
by adding, so a superpixel cut by tile borders gets exactly the statistics of the whole image:
means and standard deviations up to float64 rounding, histograms (hence percentiles) exactly.

Extraction fills these pools in one pass per block, with the exact context rings
(:mod:`~slidelabel.pipelines.features.window_pooling`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

#: Id compaction uses a lookup table when the ids of a window span at most this many times its
#: pixel count (ids of one tile are nearly contiguous), else a sort.
_LOOKUP_SPAN_PER_PIXEL = 4


@dataclass(frozen=True)
class HistogramBins:
    """Fixed histogram bins of the first ``len(low_K)`` channels (the others keep no histogram):
    channel ``k`` spans ``[low_K[k], high_K[k])`` in ``bins`` equal bins; values outside fall into
    the first or last bin."""

    low_K: np.ndarray
    high_K: np.ndarray
    bins: int = 32

    @property
    def channels(self) -> int:
        """How many channels, from the first, keep histograms."""
        return self.low_K.shape[0]

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ValueError(f"bins must be >= 1, got {self.bins}")
        if self.low_K.shape != self.high_K.shape or not np.all(self.high_K > self.low_K):
            raise ValueError(f"histogram ranges need high > low per channel, got {self.low_K}, {self.high_K}")


@numba.njit(cache=True, nogil=True)
def _accumulate(index_H_W, values_H_W_K, low_K, scale_K, sums_M_K, sumsq_M_K, hist_M_K_B):  # pragma: no cover
    bins = hist_M_K_B.shape[2]
    height, width, channels = values_H_W_K.shape
    for y in range(height):
        for x in range(width):
            m = index_H_W[y, x]
            if m < 0:
                continue
            for k in range(channels):
                value = np.float64(values_H_W_K[y, x, k])
                sums_M_K[m, k] += value
                sumsq_M_K[m, k] += value * value
                if bins > 0 and k < hist_M_K_B.shape[1]:
                    b = int(np.floor((value - low_K[k]) * scale_K[k]))
                    hist_M_K_B[m, k, min(max(b, 0), bins - 1)] += 1


@numba.njit(cache=True, nogil=True)
def _id_range(labels_H_W):  # pragma: no cover
    """(smallest, largest) id > 0 of ``labels_H_W``; (0, -1) if none."""
    low, high = np.iinfo(np.int64).max, -1
    for label in labels_H_W.ravel():
        if label > 0:
            low, high = min(low, np.int64(label)), max(high, np.int64(label))
    return (low, high) if high > 0 else (0, -1)


@numba.njit(cache=True, nogil=True)
def _compact_by_lookup(labels_H_W, low, high):  # pragma: no cover
    row_of = np.zeros(high - low + 1, np.int64)
    flat = labels_H_W.ravel()
    for label in flat:
        if label > 0:
            row_of[label - low] = 1
    ids_M = np.flatnonzero(row_of) + low
    row_of[ids_M - low] = np.arange(ids_M.size)
    index_P = np.empty(flat.size, np.int64)
    for p in range(flat.size):
        index_P[p] = row_of[flat[p] - low] if flat[p] > 0 else -1
    return ids_M, index_P.reshape(labels_H_W.shape)


def compact_ids(labels_H_W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids > 0 present in ``labels_H_W`` (sorted int64) and each pixel's row among them (-1 for 0)."""
    labels_H_W = np.ascontiguousarray(labels_H_W)
    low, high = _id_range(labels_H_W)
    if high < 0:
        return np.zeros(0, np.int64), np.full(labels_H_W.shape, -1, np.int64)
    if high - low < _LOOKUP_SPAN_PER_PIXEL * labels_H_W.size:
        return _compact_by_lookup(labels_H_W, low, high)
    labels_H_W = labels_H_W.astype(np.int64, copy=False)
    present = labels_H_W[labels_H_W > 0]
    ids_M, inverse = np.unique(present, return_inverse=True)
    index_H_W = np.full(labels_H_W.shape, -1, np.int64)
    index_H_W[labels_H_W > 0] = inverse
    return ids_M, index_H_W


@dataclass(frozen=True)
class Pools:
    """Sufficient statistics of ``K`` channels over the pixels of ``M`` superpixels.

    ``ids_M`` sorted int64 superpixel ids; ``counts_M`` int64 pixels; ``sums_M_K`` and ``sumsq_M_K``
    float64; ``hist_M_K_B`` integer counts per bin of :attr:`bins` of its first ``bins.channels``
    channels (``B`` = 0 without histograms): int64, or int32 in the pools of one window (which
    hold fewer pixels than that counts; :meth:`merged` and :meth:`aligned` give int64).
    """

    ids_M: np.ndarray
    counts_M: np.ndarray
    sums_M_K: np.ndarray
    sumsq_M_K: np.ndarray
    hist_M_K_B: np.ndarray
    bins: HistogramBins | None = None

    @classmethod
    def empty(cls, channels: int, bins: HistogramBins | None = None) -> Pools:
        """Pools of no superpixel."""
        n_bins, n_histograms = (bins.bins, bins.channels) if bins is not None else (0, channels)
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, channels)),
                   np.zeros((0, channels)), np.zeros((0, n_histograms, n_bins), np.int64), bins)

    @classmethod
    def of_pixels(cls, labels_H_W: np.ndarray, values_H_W_K: np.ndarray, *,
                  bins: HistogramBins | None = None) -> Pools:
        """Pool ``values_H_W_K`` (any float dtype) over the superpixels of ``labels_H_W`` (0 = none).

        Examples
        --------
        >>> pools = Pools.of_pixels(np.array([[1, 1, 2]]), np.array([[[0.], [2.], [5.]]]))
        >>> pools.means().ravel().tolist()
        [1.0, 5.0]
        """
        if labels_H_W.shape != values_H_W_K.shape[:2] or values_H_W_K.ndim != 3:
            raise ValueError(f"labels {labels_H_W.shape} do not match values {values_H_W_K.shape}")
        channels = values_H_W_K.shape[2]
        if bins is not None and (bins.low_K.ndim != 1 or bins.channels > channels):
            raise ValueError(f"histogram ranges are for {bins.low_K.shape} channels, values have {channels}")
        ids_M, index_H_W = compact_ids(labels_H_W)
        n_bins = bins.bins if bins is not None else 0
        sums_M_K = np.zeros((ids_M.size, channels))
        sumsq_M_K = np.zeros((ids_M.size, channels))
        hist_M_K_B = np.zeros((ids_M.size, bins.channels if bins is not None else channels, n_bins), np.int64)
        low_K = bins.low_K.astype(np.float64) if bins is not None else np.zeros(channels)
        scale_K = n_bins / (bins.high_K - bins.low_K) if bins is not None else np.zeros(channels)
        _accumulate(index_H_W, values_H_W_K, low_K, scale_K, sums_M_K, sumsq_M_K, hist_M_K_B)
        counts_M = np.bincount(index_H_W[index_H_W >= 0], minlength=ids_M.size).astype(np.int64)
        return cls(ids_M, counts_M, sums_M_K, sumsq_M_K, hist_M_K_B, bins)

    @staticmethod
    def merged(parts: list[Pools]) -> Pools:
        """One pool per id from pools of disjoint pixel sets (at least one part)."""
        ids = np.concatenate([part.ids_M for part in parts])
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if ids.size else np.zeros(0, np.int64)

        def add(arrays: list[np.ndarray], dtype: type | None = None) -> np.ndarray:
            stacked = np.concatenate(arrays, dtype=dtype)[order]
            return np.add.reduceat(stacked, starts, axis=0) if ids.size else stacked

        return Pools(
            ids[starts], add([p.counts_M for p in parts]), add([p.sums_M_K for p in parts]),
            add([p.sumsq_M_K for p in parts]), add([p.hist_M_K_B for p in parts], np.int64), parts[0].bins,
        )

    def split(self, keep_M: np.ndarray) -> tuple[Pools, Pools]:
        """(the pools where ``keep_M`` is True, the others)."""
        return self.where(keep_M), self.where(~keep_M)

    def where(self, keep_M: np.ndarray) -> Pools:
        """The pools where ``keep_M`` is True (copies of those rows only)."""
        return Pools(self.ids_M[keep_M], self.counts_M[keep_M], self.sums_M_K[keep_M],
                     self.sumsq_M_K[keep_M], self.hist_M_K_B[keep_M], self.bins)

    def aligned(self, ids_R: np.ndarray) -> Pools:
        """These pools for the sorted ids ``ids_R``; ids not seen get zero counts."""
        rows = np.searchsorted(self.ids_M, ids_R)
        found = rows < self.ids_M.size
        found[found] = self.ids_M[rows[found]] == ids_R[found]
        out = Pools.empty(self.sums_M_K.shape[1], self.bins)
        fields = {}
        for name in ("counts_M", "sums_M_K", "sumsq_M_K", "hist_M_K_B"):
            source, blank = getattr(self, name), getattr(out, name)
            array = np.zeros((ids_R.size, *blank.shape[1:]), blank.dtype)
            array[found] = source[rows[found]]
            fields[name] = array
        return Pools(ids_R, bins=self.bins, **fields)

    def means(self) -> np.ndarray:
        """(M, K) float64 means; NaN where the count is 0."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.sums_M_K / self.counts_M[:, None]

    def stds(self) -> np.ndarray:
        """(M, K) float64 population standard deviations; NaN where the count is 0."""
        mean_M_K = self.means()
        with np.errstate(invalid="ignore", divide="ignore"):
            variance_M_K = self.sumsq_M_K / self.counts_M[:, None] - mean_M_K**2
        # Cancellation can leave tiny negative variances for constant channels.
        return np.sqrt(np.maximum(variance_M_K, 0.0), where=~np.isnan(variance_M_K), out=variance_M_K)

    def percentiles(self, percents_Q: tuple[float, ...]) -> np.ndarray:
        """(M, K, Q) float64 percentiles (0-100) read from the histograms by linear interpolation
        within the bin that holds them; NaN where the count is 0."""
        if self.bins is None:
            raise ValueError("these pools keep no histograms")
        hist = self.hist_M_K_B
        cumulative_M_K_B = np.cumsum(hist, axis=2)
        width_K = (self.bins.high_K - self.bins.low_K) / self.bins.bins
        out_M_K_Q = np.full((*hist.shape[:2], len(percents_Q)), np.nan)
        for q, percent in enumerate(percents_Q):
            target_M_K = percent / 100.0 * self.counts_M[:, None].astype(np.float64)
            bin_M_K = np.argmax(cumulative_M_K_B >= target_M_K[..., None], axis=2)
            at_bin = np.take_along_axis(hist, bin_M_K[..., None], 2)[..., 0]
            before = np.take_along_axis(cumulative_M_K_B, bin_M_K[..., None], 2)[..., 0] - at_bin
            with np.errstate(invalid="ignore", divide="ignore"):
                fraction_M_K = np.clip((target_M_K - before) / at_bin, 0.0, 1.0)
            out_M_K_Q[..., q] = self.bins.low_K + (bin_M_K + fraction_M_K) * width_K
        out_M_K_Q[self.counts_M == 0] = np.nan
        return out_M_K_Q
