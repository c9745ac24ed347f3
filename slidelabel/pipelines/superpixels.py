"""Seamless superpixels of images of any size, tile by tile, in bounded memory.

Two passes over a grid of core tiles (see :mod:`slidelabel.pipelines.slic` for the kernels):

1. *Cluster.* Each core tile plus a margin of about three seed steps is smoothed, halved and
   clustered by SLIC. Only the clusters whose seed lies in the core are kept, so every cluster
   gets exactly one final centre, computed with context on all sides.
2. *Assign.* Each core tile plus a margin of three steps is assigned at full resolution to the
   nearest final centres and made connected (:mod:`slidelabel.pipelines.connectivity`); where a
   hole touching the core comes too close to the window's edge, that side grows; the core is
   emitted.

Pass 2 is a function of the global centres alone, every superpixel lies within a step of its
centre and the window settles every hole that reaches the core, so adjacent tiles agree on every
pixel: there are no seams by construction, and the only difference from an untiled run is how
close the pass-1 centres come to the untiled ones. ``docs/superpixels.md`` has the argument.

Memory per worker is one window of ``(tile_size + 2 margin)^2`` pixels at a time; the centres
take 21 bytes per seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import cv2
import numpy as np

from slidelabel.pipelines.connectivity import connect
from slidelabel.pipelines.regions import ArrayRegions, RegionReader
from slidelabel.pipelines.slic import X, Y, SeedGrid, assign_window, cluster_window, rgb_to_lab
from slidelabel.pipelines.window_cache import WindowCache

#: A function giving the bool (height, width) mask of pixels to segment in a window (top, left, height, width).
MaskFunction = Callable[[int, int, int, int], np.ndarray]
#: A function giving the bool (H, W) tissue pixels of an RGB window.
TissueFunction = Callable[[np.ndarray], np.ndarray]
#: Called with (pass name, tiles done, tiles in the pass).
ProgressFunction = Callable[[str, int, int], None]

#: A side of a pass-2 window grows up to this multiple of ``assign_margin``.
MAX_ASSIGN_GROWTH = 4

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class SuperpixelParams:
    """How to cut an image into superpixels; sizes in working-level pixels."""

    step: int
    """Seed spacing: a superpixel covers about ``step x step`` pixels."""
    compactness: float = 20.0
    """SLIC's ``m``: higher gives squarer superpixels, lower follows colour edges more closely."""
    iterations: int = 5
    """SLIC rounds of assignment and update (more than 5 changes boundary recall by < 0.01)."""
    tile_size: int = 2048
    """Side of a core tile; memory grows with its square, not with the image."""
    margin_steps: float = 3.0
    """Context around a tile in pass 1, in seed steps."""
    min_size_fraction: float = 0.1
    """Pieces smaller than this fraction of ``step^2`` join a neighbour."""
    smoothing: float = 0.04
    """Gaussian blur before clustering, sigma in seed steps: superpixels follow tissue rather
    than every nucleus (at 0.04, stray pieces on the TCGA sample at 100 px steps fall from 19% to
    4% of pixels, for 0.02 less boundary recall on MoNuSeg)."""
    cluster_scale: int = 2
    """Pass 1 clusters a window downsampled by this factor (1 = full resolution); 2 halves the
    time with the same boundary recall, as the full-resolution pass 2 places the boundaries."""

    def __post_init__(self) -> None:
        if self.step < 2:
            raise ValueError(f"step must be at least 2 pixels, got {self.step}")
        if self.compactness <= 0:
            raise ValueError(f"compactness must be positive, got {self.compactness}")
        if self.cluster_scale < 1 or self.step < 2 * self.cluster_scale:
            raise ValueError(
                f"cluster_scale {self.cluster_scale} must be at least 1 and at most half the step {self.step}"
            )
        if self.iterations < 1:
            raise ValueError(f"iterations must be at least 1, got {self.iterations}")
        if self.tile_size < 2 * self.step:
            raise ValueError(f"tile_size {self.tile_size} must be at least twice the step {self.step}")
        if not 0 <= self.smoothing <= 0.5:
            raise ValueError(f"smoothing must be within [0, 0.5] steps, got {self.smoothing}")
        if self.margin_steps < 1:
            raise ValueError(f"margin_steps must be at least 1, got {self.margin_steps}")

    @property
    def sigma(self) -> float:
        """Gaussian blur sigma in working pixels."""
        return self.smoothing * self.step

    @property
    def exact_margin(self) -> int:
        """Context that settles a pixel in pass 2: a superpixel reaches one step (plus a pixel of
        search-box rounding) beyond its centre, which is one step from any pixel it claims, and
        the blur sees three sigmas further."""
        return 2 * self.step + 2 + math.ceil(3 * self.sigma)

    @property
    def assign_margin(self) -> int:
        """Context of a pass-2 window: one step more than :attr:`exact_margin`, for the holes that
        cross the core's edge."""
        return self.exact_margin + self.step

    @property
    def cluster_margin(self) -> int:
        """Context of a pass-1 window; never less than pass 2's, whose windows it caches."""
        return max(math.ceil(self.margin_steps * self.step), self.assign_margin)

    @property
    def min_size(self) -> int:
        return max(1, int(self.min_size_fraction * self.step**2))


@dataclass(frozen=True)
class Tile:
    """A core tile in working-level pixels."""

    top: int
    left: int
    height: int
    width: int

    def grown(self, margin: int, height: int, width: int) -> Tile:
        """This tile plus ``margin`` on each side, clipped to an image of ``height x width``."""
        return self.padded((margin,) * 4, height, width)

    def padded(self, margins: tuple[int, ...], height: int, width: int) -> Tile:
        """This tile plus (top, left, bottom, right) margins, clipped to ``height x width``."""
        top, left = max(self.top - margins[0], 0), max(self.left - margins[1], 0)
        bottom = min(self.top + self.height + margins[2], height)
        right = min(self.left + self.width + margins[3], width)
        return Tile(top, left, bottom - top, right - left)


@dataclass(frozen=True)
class Block:
    """Final superpixel ids of one core tile.

    ``labels``: (height, width) int32 global seed ids, 0 = no superpixel; ``tissue``: (height, width)
    bool tissue pixels, or None when no tissue test was given.
    """

    tile: Tile
    labels: np.ndarray
    tissue: np.ndarray | None


def core_tiles(height: int, width: int, tile_size: int) -> list[Tile]:
    """Core tiles covering ``height x width`` in raster order."""
    return [
        Tile(top, left, min(tile_size, height - top), min(tile_size, width - left))
        for top in range(0, height, tile_size)
        for left in range(0, width, tile_size)
    ]


def _crop(array: np.ndarray, window: Tile, part: Tile) -> np.ndarray:
    """The ``part`` of an array that covers ``window`` (both in the same global pixels)."""
    top, left = part.top - window.top, part.left - window.left
    return array[top : top + part.height, left : left + part.width]


def _everything(top: int, left: int, height: int, width: int) -> np.ndarray:
    return np.ones((height, width), bool)


def _downsample(rgb: np.ndarray, mask: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """Area-average the RGB and keep mask pixels whose block is mostly mask, by an integer ``scale``."""
    height, width = mask.shape
    size = (math.ceil(width / scale), math.ceil(height / scale))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    small_mask = cv2.resize(mask.astype(np.uint8) * 255, size, interpolation=cv2.INTER_AREA) >= 128
    return small, small_mask


def _blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of an (H, W, 3) uint8 image; sigma in pixels, 0 for none."""
    return cv2.GaussianBlur(rgb, (0, 0), sigma) if sigma > 0 else rgb


def _bounded_map(executor: Executor, fn: Callable[[T], R], items: Iterable[T], window: int) -> Iterator[R]:
    """``executor.map`` in order, with at most ``window`` results waiting, so memory stays bounded."""
    pending: list[Future[R]] = []
    for item in items:
        pending.append(executor.submit(fn, item))
        if len(pending) >= window:
            yield pending.pop(0).result()
    for future in pending:
        yield future.result()


class SuperpixelEngine:
    """Runs both passes over an image; ``blocks()`` yields the final ids tile by tile."""

    def __init__(
        self,
        reader: RegionReader,
        params: SuperpixelParams,
        *,
        segment_mask: MaskFunction | None = None,
        tissue: TissueFunction | None = None,
        cache: WindowCache | None = None,
    ) -> None:
        """``cache``: where pass 1 keeps the windows pass 2 needs; without one pass 2 reads again
        (right for images in memory, slow for slides)."""
        self.reader = reader
        self.cache = cache
        self.params = params
        self.segment_mask = segment_mask or _everything
        self.tissue = tissue
        self.grid = SeedGrid(params.step, reader.height, reader.width)
        self.centres = np.zeros((self.grid.size + 1, 5), np.float32)
        self.active = np.zeros(self.grid.size + 1, bool)
        self.drift = 0  # how far any final centre lies from its seed, in pixels (set after pass 1)

    def _read(self, window: Tile) -> np.ndarray:
        return self.reader.read(window.top, window.left, window.height, window.width)

    def _mask(self, window: Tile) -> np.ndarray:
        return self.segment_mask(window.top, window.left, window.height, window.width)

    def _has_mask(self, tile: Tile) -> bool:
        return bool(self._mask(tile).any())

    def cluster(self, tile: Tile) -> None:
        """Pass 1 for one core tile: store the final centres of the seeds inside it."""
        window = tile.grown(self.params.cluster_margin, self.reader.height, self.reader.width)
        rgb, mask = self._read(window), self._mask(window)
        if self.cache is not None and _crop(mask, window, tile).any():
            self.cache.put((tile.top, tile.left), _crop(rgb, window, self._assign_window(tile)))
        scale = self.params.cluster_scale
        if scale > 1:
            rgb, mask = _downsample(rgb, mask, scale)
        found = cluster_window(
            rgb_to_lab(_blur(rgb, self.params.sigma / scale)), mask, grid=self.grid, origin=(window.top, window.left),
            compactness=self.params.compactness, iterations=self.params.iterations, scale=scale,
        )
        rows = self.grid.seed_rows(tile.top, tile.top + tile.height)
        cols = self.grid.seed_cols(tile.left, tile.left + tile.width)
        owned = np.isin(found.ids, self.grid.ids(rows, cols).ravel())
        ids = found.ids[owned]
        self.centres[ids] = found.centres[owned]
        self.active[ids] = found.counts[owned] > 0

    def _max_drift(self) -> int:
        """The largest distance (per axis, whole pixels, rounded up) of a final centre from its seed."""
        ids = np.flatnonzero(self.active)
        if ids.size == 0:
            return 0
        rows, cols = np.divmod(ids - 1, self.grid.cols)
        step = self.params.step
        dy = np.abs(self.centres[ids, Y] - (rows + 0.5) * step)
        dx = np.abs(self.centres[ids, X] - (cols + 0.5) * step)
        return math.ceil(max(dy.max(), dx.max()))

    def _nearby_clusters(self, window: Tile) -> tuple[np.ndarray, np.ndarray]:
        """Active clusters whose search box can reach into ``window``: (ids, centres)."""
        step = self.params.step + 2  # a search box spans [floor(c - step), ceil(c + step)]
        reach = step + self.drift  # seeds whose cluster can have wandered that close
        rows = self.grid.seed_rows(window.top - reach, window.top + window.height + reach)
        cols = self.grid.seed_cols(window.left - reach, window.left + window.width + reach)
        ids = self.grid.ids(rows, cols).ravel()
        ids = ids[self.active[ids]]
        centres = self.centres[ids]
        y, x = centres[:, Y], centres[:, X]
        near = (
            (y >= window.top - step) & (y < window.top + window.height + step)
            & (x >= window.left - step) & (x < window.left + window.width + step)
        )
        return ids[near], centres[near]

    def assign(self, tile: Tile) -> Block:
        """Pass 2 for one core tile: its final, connected superpixel ids.

        Where a hole touching the core comes closer than ``exact_margin`` to a side of the
        window, that side grows by what is missing (plus a step) and the window is redone, until
        the core's ids are exact; a side stops at :data:`MAX_ASSIGN_GROWTH` times the margin so
        that memory stays bounded on any image.
        """
        limit = MAX_ASSIGN_GROWTH * self.params.assign_margin
        margins = (self.params.assign_margin,) * 4
        rgb = self.cache.take((tile.top, tile.left)) if self.cache is not None else None
        while True:
            window = tile.padded(margins, self.reader.height, self.reader.width)
            if rgb is None:
                rgb = self._read(window)
            labels, reach = self._connected_window(rgb, window, tile)
            missing = self._missing_context(reach, window) if reach is not None else (0, 0, 0, 0)
            grown = tuple(min(m + d + self.params.step, limit) if d else m for m, d in zip(margins, missing))
            if grown == margins:
                break
            margins, rgb = grown, None
        rgb_core = _crop(rgb, window, tile)
        tissue = self.tissue(rgb_core) if self.tissue is not None else None
        return Block(tile, _crop(labels, window, tile), tissue)

    def _connected_window(self, rgb: np.ndarray, window: Tile, tile: Tile) -> tuple[np.ndarray, tuple | None]:
        mask = self._mask(window)
        ids, centres = self._nearby_clusters(window)
        labels = assign_window(
            rgb_to_lab(_blur(rgb, self.params.sigma)), mask, ids=ids, centres=centres, step=self.params.step,
            compactness=self.params.compactness, origin=(window.top, window.left),
        )
        top, left = tile.top - window.top, tile.left - window.left
        core = (top, left, top + tile.height, left + tile.width)
        return connect(labels, mask, min_size=self.params.min_size, core=core)

    def _missing_context(self, reach: tuple[int, int, int, int], window: Tile) -> tuple[int, int, int, int]:
        """Pixels of context missing on each side (top, left, bottom, right) of ``window`` for
        holes spanning ``reach`` (window pixels) to stay ``exact_margin`` inside it; image edges
        need none."""
        margin = self.params.exact_margin
        top, left, bottom, right = reach
        at_bottom = window.top + window.height == self.reader.height
        at_right = window.left + window.width == self.reader.width
        return (
            0 if window.top == 0 else max(0, margin - top),
            0 if window.left == 0 else max(0, margin - left),
            0 if at_bottom else max(0, bottom - (window.height - margin)),
            0 if at_right else max(0, right - (window.width - margin)),
        )

    def _assign_window(self, tile: Tile) -> Tile:
        return tile.grown(self.params.assign_margin, self.reader.height, self.reader.width)

    def blocks(self, *, workers: int = 1, progress: ProgressFunction | None = None) -> Iterator[Block]:
        """Run pass 1 on every tile, then yield pass-2 blocks in raster order.

        ``workers`` threads run tiles in parallel (the kernels release the GIL).
        """
        tiles = core_tiles(self.reader.height, self.reader.width, self.params.tile_size)
        margin = self.params.cluster_margin
        to_cluster = [t for t in tiles if self._has_mask(t.grown(margin, self.reader.height, self.reader.width))]
        to_assign = [t for t in tiles if self._has_mask(t)]
        report = progress or (lambda name, done, total: None)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as executor:
            report("cluster", 0, len(to_cluster))
            for done, _ in enumerate(_bounded_map(executor, self.cluster, to_cluster, 2 * workers), 1):
                report("cluster", done, len(to_cluster))
            self.drift = self._max_drift()
            report("assign", 0, len(to_assign))
            for done, block in enumerate(_bounded_map(executor, self.assign, to_assign, 2 * workers), 1):
                yield block
                report("assign", done, len(to_assign))


def superpixel_array(rgb: np.ndarray, params: SuperpixelParams, *, mask: np.ndarray | None = None) -> np.ndarray:
    """Superpixels of an in-memory RGB image, with the tiled engine.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 image.
    params : superpixel parameters; a ``tile_size`` of at least ``max(H, W)`` gives an untiled run.
    mask : optional (H, W) bool, pixels to segment (default all).

    Returns
    -------
    (H, W) int32 global seed ids (not consecutive), 0 where no superpixel.
    """
    reader = ArrayRegions(rgb)
    segment_mask = None
    if mask is not None:
        if mask.shape != rgb.shape[:2]:
            raise ValueError(f"mask {mask.shape} does not match image {rgb.shape[:2]}")
        segment_mask = lambda top, left, h, w: mask[top : top + h, left : left + w]  # noqa: E731
    out = np.zeros(rgb.shape[:2], np.int32)
    for block in SuperpixelEngine(reader, params, segment_mask=segment_mask).blocks():
        t = block.tile
        out[t.top : t.top + t.height, t.left : t.left + t.width] = block.labels
    return out
