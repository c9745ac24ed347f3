"""Per-superpixel statistics accumulated block by block: area, bounding box, centroid, tissue."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from slidelabel.pipelines.superpixels import Block

_COUNT, _SUM_X, _SUM_Y, _MIN_X, _MIN_Y, _MAX_X, _MAX_Y, _TISSUE = range(8)
_BIG = np.iinfo(np.int64).max


@njit(cache=True, nogil=True)
def _accumulate(stats, labels, tissue, top, left, has_tissue):  # pragma: no cover
    height, width = labels.shape
    for y in range(height):
        gy = top + y
        for x in range(width):
            k = labels[y, x]
            if k <= 0:
                continue
            gx = left + x
            stats[k, 0] += 1
            stats[k, 1] += gx
            stats[k, 2] += gy
            stats[k, 3] = min(stats[k, 3], gx)
            stats[k, 4] = min(stats[k, 4], gy)
            stats[k, 5] = max(stats[k, 5], gx)
            stats[k, 6] = max(stats[k, 6], gy)
            if has_tissue and tissue[y, x]:
                stats[k, 7] += 1


@dataclass(frozen=True)
class SuperpixelSummary:
    """Statistics of the superpixels found, in working-level pixels, one row per superpixel.

    ``seed_ids``: (N,) int64 global seed ids, ascending; the superpixel's final id is its row + 1.
    ``bbox``: (N, 4) int64 x_min, y_min, x_max, y_max (max exclusive). ``centroid``: (N, 2) float64
    x, y of the mean pixel centre. ``area``: (N,) int64 pixels. ``tissue_fraction``: (N,) float32,
    NaN when no tissue test was made.
    """

    seed_ids: np.ndarray
    bbox: np.ndarray
    centroid: np.ndarray
    area: np.ndarray
    tissue_fraction: np.ndarray

    def lut(self, n_seeds: int) -> np.ndarray:
        """uint32 array mapping seed id -> final id (1..N), 0 for seeds with no superpixel."""
        lut = np.zeros(n_seeds + 1, np.uint32)
        lut[self.seed_ids] = np.arange(1, self.seed_ids.size + 1, dtype=np.uint32)
        return lut


class SuperpixelStatistics:
    """Accumulates :class:`Block` s into per-seed statistics (64 bytes per seed of the grid)."""

    def __init__(self, n_seeds: int) -> None:
        self.stats = np.zeros((n_seeds + 1, 8), np.int64)
        self.stats[:, [_MIN_X, _MIN_Y]] = _BIG
        self.has_tissue = True

    def add(self, block: Block) -> None:
        """Add the pixels of one block."""
        tissue = block.tissue
        if tissue is None:
            self.has_tissue = False
            tissue = np.zeros((1, 1), bool)
        _accumulate(self.stats, block.labels, tissue, block.tile.top, block.tile.left, block.tissue is not None)

    def summary(self) -> SuperpixelSummary:
        """The superpixels seen so far, in seed-id order."""
        seed_ids = np.flatnonzero(self.stats[:, _COUNT] > 0)
        s = self.stats[seed_ids]
        area = s[:, _COUNT]
        bbox = np.stack([s[:, _MIN_X], s[:, _MIN_Y], s[:, _MAX_X] + 1, s[:, _MAX_Y] + 1], axis=1)
        centroid = np.stack([s[:, _SUM_X] / area, s[:, _SUM_Y] / area], axis=1)
        if self.has_tissue:
            tissue_fraction = (s[:, _TISSUE] / area).astype(np.float32)
        else:
            tissue_fraction = np.full(area.size, np.nan, np.float32)
        return SuperpixelSummary(seed_ids, bbox, centroid, area, tissue_fraction)
