"""SLIC superpixel kernels (Achanta et al., TPAMI 2012) seeded on a global grid.

The kernels work on one window of a larger image. Seeds sit on a grid that is fixed in global
(working-level) coordinates: seed ``(row, col)`` starts at ``((row + 0.5) * step, (col + 0.5) * step)``.
Because a cluster is named by its seed, the same cluster has the same name in every window that
contains it; this is what lets :mod:`slidelabel.pipelines.superpixels` stitch windows without seams.

Distances are the SLIC ones: ``d = dLab^2 + (dxy / step)^2 * compactness^2`` with CIELAB colour
(L in 0..100) and pixel coordinates, each cluster searching a ``2 step x 2 step`` box around its
centre. Everything is float32 and single-threaded per call; the kernels release the GIL so windows
can run in parallel threads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numba import njit

#: Columns of a centres array: CIELAB colour then position in pixels of the window (or of the
#: whole working level when stored globally).
L, A, B, Y, X = range(5)


@dataclass(frozen=True)
class SeedGrid:
    """The global seed grid of an image of ``height x width`` working pixels.

    Seed ``(row, col)`` has id ``row * cols + col + 1``; id 0 means "no superpixel".
    """

    step: int
    height: int
    width: int

    @property
    def rows(self) -> int:
        return max(1, math.ceil(self.height / self.step))

    @property
    def cols(self) -> int:
        return max(1, math.ceil(self.width / self.step))

    @property
    def size(self) -> int:
        """Number of seeds (the largest id)."""
        return self.rows * self.cols

    def _seed_range(self, start: int, stop: int, count: int) -> tuple[int, int]:
        first = min(max(0, math.ceil(start / self.step - 0.5)), count)
        last = min(max(first, math.ceil(stop / self.step - 0.5)), count)
        return first, last

    def seed_rows(self, start: int, stop: int) -> tuple[int, int]:
        """Rows ``[first, last)`` of the seeds whose y lies in ``[start, stop)``."""
        return self._seed_range(start, stop, self.rows)

    def seed_cols(self, start: int, stop: int) -> tuple[int, int]:
        """Columns ``[first, last)`` of the seeds whose x lies in ``[start, stop)``."""
        return self._seed_range(start, stop, self.cols)

    def ids(self, rows: tuple[int, int], cols: tuple[int, int]) -> np.ndarray:
        """Ids of the seeds in ``rows x cols`` as an int64 array of shape (n_rows, n_cols)."""
        r = np.arange(rows[0], rows[1], dtype=np.int64)[:, None]
        c = np.arange(cols[0], cols[1], dtype=np.int64)[None, :]
        return r * self.cols + c + 1


#: 8-bit CIELAB (OpenCV) to CIELAB units: L * 100 / 255, a - 128, b - 128.
_L_SCALE = np.float32(100 / 255)
_AB_OFFSET = np.float32(128)


def rgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """8-bit CIELAB of an RGB image, as OpenCV encodes it.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 array

    Returns
    -------
    (H, W, 3) uint8 array: L * 255 / 100, a + 128, b + 128. The kernels convert to CIELAB units
    as they read, so a window costs 3 bytes a pixel instead of 12; the 0.4-unit quantisation of
    L is far below the colour differences SLIC separates.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be a (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2Lab)


@njit(cache=True, nogil=True, fastmath=True)
def _assign(lab, mask, centres, active, step, spatial_weight, labels, dist):  # pragma: no cover
    """One SLIC assignment: each active cluster claims the mask pixels of its search box that are
    closer to it than to any cluster seen before. Unclaimed mask pixels keep label -1."""
    height, width = mask.shape
    for y in range(height):
        for x in range(width):
            # Pixels outside the mask start at a distance no cluster can beat: no branch in the hot loop.
            dist[y, x] = np.inf if mask[y, x] else -1.0
            labels[y, x] = -1
    for k in range(centres.shape[0]):
        if not active[k]:
            continue
        cl, ca, cb, cy, cx = centres[k, 0], centres[k, 1], centres[k, 2], centres[k, 3], centres[k, 4]
        y_lo = max(int(math.floor(cy - step)), 0)
        y_hi = min(int(math.ceil(cy + step)) + 1, height)
        x_lo = max(int(math.floor(cx - step)), 0)
        x_hi = min(int(math.ceil(cx + step)) + 1, width)
        for y in range(y_lo, y_hi):
            dy = y - cy
            dy2 = dy * dy * spatial_weight
            for x in range(x_lo, x_hi):
                dl = lab[y, x, 0] * _L_SCALE - cl
                da = lab[y, x, 1] - _AB_OFFSET - ca
                db = lab[y, x, 2] - _AB_OFFSET - cb
                dx = x - cx
                d = dl * dl + da * da + db * db + dy2 + dx * dx * spatial_weight
                if d < dist[y, x]:
                    dist[y, x] = d
                    labels[y, x] = k


@njit(cache=True, nogil=True)
def _update(lab, labels, centres, counts):  # pragma: no cover
    """Move every cluster to the mean colour and position of its pixels; empty clusters stay."""
    n = centres.shape[0]
    sums = np.zeros((n, 5), np.float64)
    counts[:] = 0
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            k = labels[y, x]
            if k < 0:
                continue
            sums[k, 0] += lab[y, x, 0] * _L_SCALE
            sums[k, 1] += lab[y, x, 1] - _AB_OFFSET
            sums[k, 2] += lab[y, x, 2] - _AB_OFFSET
            sums[k, 3] += y
            sums[k, 4] += x
            counts[k] += 1
    for k in range(n):
        if counts[k] > 0:
            for c in range(5):
                centres[k, c] = sums[k, c] / counts[k]


@njit(cache=True, nogil=True)
def _initial_labels(mask, origin_y, origin_x, scale, step, row0, rows, col0, cols, labels):  # pragma: no cover
    """Label each mask pixel with the local index of its grid cell, clipped to the window's seeds.

    The window is downsampled by ``scale``; origin and step are in full-resolution pixels."""
    height, width = mask.shape
    for y in range(height):
        r = min(max((origin_y + y * scale) // step - row0, 0), rows - 1)
        for x in range(width):
            if mask[y, x]:
                c = min(max((origin_x + x * scale) // step - col0, 0), cols - 1)
                labels[y, x] = r * cols + c
            else:
                labels[y, x] = -1


@dataclass(frozen=True)
class WindowClusters:
    """Clusters of one window after SLIC iterations.

    ``ids``: (K,) int64 global seed ids; ``centres``: (K, 5) float32 in global working pixels
    (columns L, a, b, y, x); ``counts``: (K,) int64 pixels per cluster in the window.
    """

    ids: np.ndarray
    centres: np.ndarray
    counts: np.ndarray


def cluster_window(
    lab: np.ndarray,
    mask: np.ndarray,
    *,
    grid: SeedGrid,
    origin: tuple[int, int],
    compactness: float,
    iterations: int,
    scale: int = 1,
) -> WindowClusters:
    """Run SLIC on one window and return its clusters.

    Parameters
    ----------
    lab : (H, W, 3) uint8 8-bit CIELAB of the window (:func:`rgb_to_lab`), downsampled by ``scale``.
    mask : (H, W) bool, pixels to segment, downsampled likewise.
    grid : the global seed grid (full resolution).
    origin : (top, left) of the window in global full-resolution working pixels.
    compactness : weight of spatial against colour distance (SLIC's ``m``).
    iterations : number of assignment/update rounds.
    scale : full-resolution pixels per window pixel; clustering a downsampled window is faster
        and the centres it finds are what the full-resolution assignment needs.
    """
    top, left = origin
    height, width = mask.shape
    rows = grid.seed_rows(top, top + height * scale)
    cols = grid.seed_cols(left, left + width * scale)
    ids = grid.ids(rows, cols).ravel()
    n_rows, n_cols = rows[1] - rows[0], cols[1] - cols[0]
    centres = np.zeros((ids.size, 5), np.float32)
    counts = np.zeros(ids.size, np.int64)
    if ids.size == 0 or not mask.any():
        return WindowClusters(ids[:0], centres[:0], counts[:0])
    labels = np.empty((height, width), np.int32)
    dist = np.empty((height, width), np.float32)
    _initial_labels(mask, top, left, scale, grid.step, rows[0], n_rows, cols[0], n_cols, labels)
    _update(lab, labels, centres, counts)
    step = np.float32(grid.step / scale)
    spatial_weight = np.float32((compactness / step) ** 2)
    for _ in range(iterations):
        _assign(lab, mask, centres, counts > 0, step, spatial_weight, labels, dist)
        _update(lab, labels, centres, counts)
    # A window pixel y covers full-resolution pixels [y * scale, (y + 1) * scale).
    centres[:, Y] = top + (centres[:, Y] + 0.5) * scale - 0.5
    centres[:, X] = left + (centres[:, X] + 0.5) * scale - 0.5
    return WindowClusters(ids, centres, counts)


def assign_window(
    lab: np.ndarray,
    mask: np.ndarray,
    *,
    ids: np.ndarray,
    centres: np.ndarray,
    step: int,
    compactness: float,
    origin: tuple[int, int],
) -> np.ndarray:
    """Label every mask pixel of a window with the nearest of the given (final) cluster centres.

    Parameters
    ----------
    lab, mask : the window, as in :func:`cluster_window`.
    ids : (K,) int64 global ids of the clusters, ascending (ties go to the lower id).
    centres : (K, 5) float32 centres in global working pixels.
    origin : (top, left) of the window in global working pixels.

    Returns
    -------
    (H, W) int32 array of global ids; 0 outside the mask, -1 for mask pixels no cluster reached.
    """
    local = centres.astype(np.float32, copy=True)
    local[:, Y] -= origin[0]
    local[:, X] -= origin[1]
    labels = np.empty(mask.shape, np.int32)
    dist = np.empty(mask.shape, np.float32)
    spatial_weight = np.float32((compactness / step) ** 2)
    active = np.ones(len(ids), np.bool_)
    _assign(lab, mask, local, active, np.float32(step), spatial_weight, labels, dist)
    _to_ids(labels, mask, np.asarray(ids, np.int32))
    return labels


@njit(cache=True, nogil=True)
def _to_ids(labels, mask, ids):  # pragma: no cover
    """Global ids from local cluster indices, in place: 0 outside the mask, -1 where no cluster reached."""
    height, width = labels.shape
    for y in range(height):
        for x in range(width):
            k = labels[y, x]
            labels[y, x] = 0 if not mask[y, x] else (ids[k] if k >= 0 else -1)
