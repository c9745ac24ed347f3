"""Shapes drawn over a slide, as superpixels: the superpixels a polygon or lasso covers by at least
half.

Coverage is counted on the label map itself, at the pyramid level the viewer shows (the one its
superpixel index tiles are cut from), so "covered by at least half" means what the pathologist
sees: a pixel counts as covered when its centre lies inside the polygon (even-odd rule), and a
superpixel is taken when its covered pixels are at least :data:`MIN_COVER` of all its pixels at
that level. A polygon over thousands of superpixels reads a window of the label map the size of
its bounding box (cached blocks), so the answer costs milliseconds once the viewer's tiles were cut.

Growing a region of like superpixels from one is :mod:`slidelabel.services.region_growing`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.services.tiles import LabelMap, label_map, superpixel_table

#: Share of a superpixel's pixels a shape must cover for the superpixel to take its category.
MIN_COVER = 0.5
#: Most vertices a drawn shape may have.
MAX_VERTICES = 20_000
#: Most row crossings a polygon's edges may make on the grid it is filled on: a lasso crosses each
#: row a few times, a zigzag of 20,000 vertices over 4,000 rows 27 million times (2 GB at once).
MAX_CROSSINGS = 2**22
#: Crossings filled in at a time (memory ~ 80 bytes each).
CROSSINGS_CHUNK = 2**18
#: Most label-map pixels a shape's coverage is counted on (memory ~ 6 bytes each): past it the
#: count moves to a coarser level. A viewer's screen shows a few million.
MAX_COVER_PX = 2**24
def rasterise_polygon(polygon_V_2: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixels of a ``height x width`` grid whose centre lies inside a polygon (even-odd rule).

    Parameters
    ----------
    polygon_V_2 : (V, 2) float ``x, y`` vertices in pixels of the grid (pixel ``(i, j)`` spans
        ``[j, j + 1) x [i, i + 1)``, its centre is ``(j + 0.5, i + 0.5)``); open or closed ring.
    height, width : size of the grid.

    Returns
    -------
    (height, width) bool.

    Notes
    -----
    A scanline fill: every edge adds one crossing per pixel row whose centre line it spans
    (half-open in y, so a vertex on a row is counted once), at the first pixel whose centre is
    right of the crossing; the cumulative parity along each row is the inside. Memory: one byte
    per pixel and :data:`CROSSINGS_CHUNK` crossings, time: the number of crossings plus the
    pixels. More than :data:`MAX_CROSSINGS` crossings are a :class:`ParameterError`.

    Examples
    --------
    >>> rasterise_polygon(np.array([[1, 1], [3, 1], [3, 3], [1, 3]]), 4, 4).astype(int)
    array([[0, 0, 0, 0],
           [0, 1, 1, 0],
           [0, 1, 1, 0],
           [0, 0, 0, 0]])
    """
    points_V_2 = np.asarray(polygon_V_2, np.float64)
    if points_V_2.ndim != 2 or points_V_2.shape[1] != 2 or len(points_V_2) < 3:
        raise ParameterError(f"a polygon needs at least 3 (x, y) vertices, got an array of shape {points_V_2.shape}")
    if not np.isfinite(points_V_2).all():
        raise ParameterError("polygon vertices must be finite numbers")
    a_E_2, b_E_2 = points_V_2, np.roll(points_V_2, -1, axis=0)
    y_lo, y_hi = np.minimum(a_E_2[:, 1], b_E_2[:, 1]), np.maximum(a_E_2[:, 1], b_E_2[:, 1])
    # Rows whose centre line y = i + 0.5 lies in [y_lo, y_hi).
    first = np.clip(np.ceil(y_lo - 0.5), 0, height).astype(np.int64)
    stop = np.clip(np.ceil(y_hi - 0.5), 0, height).astype(np.int64)
    runs_E = stop - first
    ends_E = np.cumsum(runs_E)
    if ends_E[-1] > MAX_CROSSINGS:
        raise ParameterError(f"the shape's edges cross the rows of its {height} x {width} px window {ends_E[-1]} times "
                             f"(at most {MAX_CROSSINGS}): draw a shape with fewer turns")
    toggles_H_W = np.zeros((height, width + 1), np.uint8)
    start = 0
    while start < len(runs_E):  # edges in chunks of about CROSSINGS_CHUNK crossings
        done = ends_E[start] - runs_E[start]  # crossings of the edges before this chunk
        end = max(start + 1, int(np.searchsorted(ends_E, done + CROSSINGS_CHUNK, "right")))
        edges = np.arange(start, end)
        edge_X = np.repeat(edges, runs_E[edges])
        row_X = first[edge_X] + np.arange(done, done + edge_X.size) - np.repeat(ends_E[edges] - runs_E[edges],
                                                                                  runs_E[edges])
        a_X_2, b_X_2 = a_E_2[edge_X], b_E_2[edge_X]
        t_X = (row_X + 0.5 - a_X_2[:, 1]) / (b_X_2[:, 1] - a_X_2[:, 1])
        x_X = a_X_2[:, 0] + t_X * (b_X_2[:, 0] - a_X_2[:, 0])
        np.add.at(toggles_H_W, (row_X, np.clip(np.ceil(x_X - 0.5), 0, width).astype(np.int64)), 1)
        start = end
    # uint8 sums wrap at 256, which keeps their parity; 0/1 bytes are read as bools in place.
    parity_H_W = np.cumsum(toggles_H_W[:, :width], axis=1, dtype=np.uint8)
    np.bitwise_and(parity_H_W, 1, out=parity_H_W)
    return parity_H_W.view(bool)


def _window_of(box: tuple[float, float, float, float], shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """``left, top, width, height`` of the pixels of a level that ``box`` (x0, y0, x1, y1 in the
    level's pixels) touches, clipped to the level's ``shape``; None when it misses the level."""
    left, top = max(0, int(np.floor(box[0]))), max(0, int(np.floor(box[1])))
    right, bottom = min(shape[1], int(np.ceil(box[2]))), min(shape[0], int(np.ceil(box[3])))
    return (left, top, right - left, bottom - top) if right > left and bottom > top else None


@dataclass(frozen=True)
class Cover:
    """What a shape covers: superpixel ids taken, and the label-map level it was counted at."""

    superpixels: np.ndarray
    level: int


def level_shown(labels: LabelMap, downsample: float) -> int:
    """The label-map level nearest (in scale) to ``downsample`` level-0 px per screen pixel: the
    resolution of the superpixel index tiles a viewer at that zoom draws."""
    if not downsample > 0:
        raise ParameterError(f"downsample must be > 0 level-0 px per screen pixel, got {downsample}")
    return int(np.clip(np.round(np.log2(max(downsample / labels.downsample, 1.0))), 0, len(labels.shapes) - 1))


def covered_superpixels(labels: LabelMap, bbox_level0_N_4: np.ndarray, area_px_N: np.ndarray,
                        polygon_level0_V_2: np.ndarray, *, downsample: float = 1.0,
                        min_cover: float = MIN_COVER) -> Cover:
    """The superpixels covered by at least ``min_cover`` of their pixels by a polygon.

    Parameters
    ----------
    labels : the slide's label map.
    bbox_level0_N_4 : (N, 4) ``x_min, y_min, x_max, y_max`` of superpixel ``i + 1`` in level-0
        px, max exclusive (the superpixel table's).
    area_px_N : (N,) pixels of each superpixel at the working level (the table's ``area_px``).
    polygon_level0_V_2 : (V, 2) vertices ``x, y`` in level-0 px.
    downsample : level-0 px per screen pixel of the view the shape was drawn on: coverage is
        counted on the label-map level nearest to it (:func:`level_shown`; the working level
        when it is finer), or a coarser one where the shape's bounding window has at most
        :data:`MAX_COVER_PX` pixels.
    min_cover : share (0-1] of a superpixel's pixels that must be inside.

    Returns
    -------
    :class:`Cover` with the ids in increasing order.
    """
    if not 0 < min_cover <= 1:
        raise ParameterError(f"min_cover must be in (0, 1], got {min_cover}")
    polygon_V_2 = np.asarray(polygon_level0_V_2, np.float64)
    if polygon_V_2.ndim != 2 or polygon_V_2.shape[1:] != (2,) or not 3 <= len(polygon_V_2) <= MAX_VERTICES:
        raise ParameterError(f"a shape needs 3 to {MAX_VERTICES} (x, y) vertices, got an array of shape "
                             f"{polygon_V_2.shape}")
    level = level_shown(labels, downsample)
    while True:  # the level shown, or the first coarser one where the shape's window fits MAX_COVER_PX
        scale = labels.downsample * 2**level  # level-0 px per pixel of the level
        shape = labels.shapes[level]
        points_V_2 = polygon_V_2 / scale
        window = _window_of((*points_V_2.min(axis=0), *points_V_2.max(axis=0)), shape)
        if window is None or window[2] * window[3] <= MAX_COVER_PX or level == len(labels.shapes) - 1:
            break
        level += 1
    none = Cover(np.zeros(0, np.int64), level)
    if window is None:
        return none
    left, top, width, height = window
    inside_H_W = rasterise_polygon(points_V_2 - (left, top), height, width)
    covered = np.bincount(labels.window(level, left, top, width, height)[inside_H_W])
    candidates_M = np.flatnonzero(covered)
    candidates_M = candidates_M[candidates_M > 0]
    if candidates_M.size == 0:
        return none
    if level == 0:
        total_M = area_px_N[candidates_M - 1]
    else:  # count all their pixels at this level, over their whole extent
        boxes_M_4 = bbox_level0_N_4[candidates_M - 1] / scale
        extent = _window_of((*boxes_M_4[:, :2].min(axis=0) - 1, *boxes_M_4[:, 2:].max(axis=0) + 1), shape)
        assert extent is not None  # the candidates were found inside the level
        total_M = np.bincount(labels.window(level, *extent).ravel(), minlength=candidates_M.max() + 1)[candidates_M]
    return Cover(candidates_M[covered[candidates_M] >= min_cover * total_M], level)


def slide_cover(folder: Path, polygon_level0_V_2: np.ndarray, *, downsample: float = 1.0) -> Cover:
    """:func:`covered_superpixels` on the finished superpixel folder of a slide."""
    table = superpixel_table(folder)
    return covered_superpixels(label_map(folder), table.bbox_level0, table.area_px, polygon_level0_V_2,
                               downsample=downsample)
