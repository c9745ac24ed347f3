"""Polygons of a segmentation in flat arrays, rasterised tile by tile into segment ids.

A million nuclei are a few hundred megabytes of vertices, never a million Python objects: all
vertices sit in one ``(V, 2)`` array, rings and polygons are ranges of it (``ring_end``,
``polygon_ring_end``). A polygon is all rings of one segment (the shells and holes of a Polygon or
of every part of a MultiPolygon), filled by the **even-odd rule** over all of them: holes stay
empty, and a ring that crosses itself is filled where an odd number of its edges lie to the left.

Pixels follow the centre rule: working pixel ``(r, c)`` belongs to a polygon when its centre,
level-0 point ``((c + 0.5) d, (r + 0.5) d)`` for downsample ``d``, lies inside (edges on the
left and top count as inside). So a polygon traced along pixel edges, as QuPath exports them,
gives back exactly its pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from slidelabel.errors import ParameterError

#: Most edge pairs the self-crossing check compares in one file (a few seconds): it compares the
#: edges whose y ranges overlap, so a serpentine whose edges all span its height (80,000 vertices,
#: 1.6 MB of GeoJSON) took 57 s, and the time grows with the square of the vertices.
MAX_PAIR_TESTS = 2**27


@dataclass(frozen=True)
class PolygonSet:
    """P polygons (segments) with V vertices in R rings, coordinates in level-0 pixels.

    Attributes
    ----------
    xy_V_2 : (V, 2) float64 x, y of every vertex, ring after ring.
    ring_end_R : (R,) int64, ring ``k`` is ``xy_V_2[ring_end_R[k - 1]:ring_end_R[k]]``.
    polygon_ring_end_P : (P,) int64, polygon ``p`` has rings ``polygon_ring_end_P[p - 1]:polygon_ring_end_P[p]``.
    bbox_P_4 : (P, 4) float64 x_min, y_min, x_max, y_max of each polygon's vertices.
    """

    xy_V_2: np.ndarray
    ring_end_R: np.ndarray
    polygon_ring_end_P: np.ndarray
    bbox_P_4: np.ndarray

    @property
    def size(self) -> int:
        return int(self.polygon_ring_end_P.size)


def tile_buckets(bbox_P_4: np.ndarray, *, downsample: float, tile_size: int, tiles_x: int,
                 tiles_y: int) -> tuple[np.ndarray, np.ndarray]:
    """Which polygons each tile of the working grid must draw: ``(starts, polygons)``.

    Tile ``t`` (row-major, ``tiles_x`` per row, ``tile_size`` working px) draws polygons
    ``polygons[starts[t]:starts[t + 1]]``, in ascending order (so later polygons still win).
    """
    def cells(column: int, rounding, tiles: int) -> np.ndarray:
        """(P,) int32 tile row or column of one bbox column: 4 bytes a polygon, not a (P, 4) int64."""
        return np.clip(rounding(bbox_P_4[:, column] / downsample) // tile_size, 0, tiles - 1).astype(np.int32)

    x0, y0 = cells(0, np.floor, tiles_x), cells(1, np.floor, tiles_y)
    span_x = cells(2, np.ceil, tiles_x) - x0 + 1
    per_polygon = (cells(3, np.ceil, tiles_y) - y0 + 1) * span_x
    # Each polygon's first tile, repeated once for each tile it spans (ascending polygon).
    tile = np.repeat(y0 * tiles_x + x0, per_polygon)
    del x0, y0
    several = np.flatnonzero(per_polygon > 1)
    if several.size:
        # k-th tile of polygon p: row offset k // span_x, column offset k % span_x; only polygons
        # that span several tiles need it.
        spans = per_polygon[several].astype(np.int64)
        first_entry = (np.cumsum(per_polygon, dtype=np.int64) - per_polygon)[several]
        k = np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans)
        width = np.repeat(span_x[several], spans)
        tile[np.repeat(first_entry, spans) + k] += (k // width * tiles_x + k % width).astype(np.int32)
        del spans, first_entry, k, width
    polygons = np.repeat(np.arange(bbox_P_4.shape[0], dtype=np.int32), per_polygon)
    order = np.argsort(tile, kind="stable")  # stable: ascending polygons within a tile
    starts = np.zeros(tiles_x * tiles_y + 1, np.int64)
    np.cumsum(np.bincount(tile, minlength=tiles_x * tiles_y), out=starts[1:])
    return starts, polygons[order]


def _fill(ids_H_W, top, left, downsample, xy, ring_end, polygon_ring_end, bbox, polygons, values):  # pragma: no cover
    height, width = ids_H_W.shape
    crossings = np.empty(64, np.float64)
    overlap_px = 0
    for p in polygons:
        first_ring = polygon_ring_end[p - 1] if p > 0 else 0
        row_a = max(0, int(np.ceil(bbox[p, 1] / downsample - 0.5)) - top)
        row_b = min(height, int(np.ceil(bbox[p, 3] / downsample - 0.5)) - top)
        first_vertex = ring_end[first_ring - 1] if first_ring > 0 else 0
        n_edges = ring_end[polygon_ring_end[p] - 1] - first_vertex
        if n_edges > crossings.size:
            crossings = np.empty(2 * n_edges, np.float64)
        for r in range(row_a, row_b):
            y = (top + r + 0.5) * downsample
            n = 0
            for ring in range(first_ring, polygon_ring_end[p]):
                start = ring_end[ring - 1] if ring > 0 else 0
                end = ring_end[ring]
                for i in range(start, end):
                    j = i + 1 if i + 1 < end else start
                    y0, y1 = xy[i, 1], xy[j, 1]
                    if (y0 <= y) != (y1 <= y):
                        x = xy[i, 0] + (y - y0) * (xy[j, 0] - xy[i, 0]) / (y1 - y0)
                        k = n  # insertion sort: a row crosses few edges
                        while k > 0 and crossings[k - 1] > x:
                            crossings[k] = crossings[k - 1]
                            k -= 1
                        crossings[k] = x
                        n += 1
            for q in range(0, n - 1, 2):
                col_a = max(0, int(np.ceil(crossings[q] / downsample - 0.5)) - left)
                col_b = min(width, int(np.ceil(crossings[q + 1] / downsample - 0.5)) - left)
                for c in range(col_a, col_b):
                    if ids_H_W[r, c] != 0:
                        overlap_px += 1
                    ids_H_W[r, c] = values[p]
    return overlap_px


def fill_polygons(ids_H_W: np.ndarray, polygons: PolygonSet, which: np.ndarray, values_P: np.ndarray, *,
                  top: int, left: int, downsample: float) -> int:
    """Draw the polygons ``which`` (ascending: a later one overwrites an earlier one) into the
    working-level window ``ids_H_W`` whose corner is (``top``, ``left``), with ``values_P[p]``.

    Returns the number of pixels that were drawn over a pixel already set.
    """
    return int(_fill(ids_H_W, top, left, float(downsample), polygons.xy_V_2, polygons.ring_end_R,
                     polygons.polygon_ring_end_P, polygons.bbox_P_4, which.astype(np.int64), values_P))


@njit(cache=True)
def _orientation(ax, ay, bx, by, cx, cy):  # pragma: no cover
    value = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
    return 1 if value > 0 else (-1 if value < 0 else 0)


@njit(cache=True, nogil=True)
def _ring_crosses_itself(xy, start, end, budget):  # pragma: no cover
    """(crosses, edge pairs compared); stops, not crossing, past ``budget`` pairs."""
    n = end - start
    tests = 0
    if n < 4:
        return False, tests
    y_low = np.empty(n)
    y_high = np.empty(n)
    for e in range(n):
        i, j = start + e, start + (e + 1) % n
        y_low[e], y_high[e] = min(xy[i, 1], xy[j, 1]), max(xy[i, 1], xy[j, 1])
    order = np.argsort(y_low)
    # Sweep in y: only edges whose y ranges overlap can cross.
    for a in range(n):
        ea = order[a]
        i0, i1 = start + ea, start + (ea + 1) % n
        for b in range(a + 1, n):
            eb = order[b]
            if y_low[eb] > y_high[ea]:
                break
            tests += 1
            if tests > budget:
                return False, tests
            j0, j1 = start + eb, start + (eb + 1) % n
            o1 = _orientation(xy[i0, 0], xy[i0, 1], xy[i1, 0], xy[i1, 1], xy[j0, 0], xy[j0, 1])
            o2 = _orientation(xy[i0, 0], xy[i0, 1], xy[i1, 0], xy[i1, 1], xy[j1, 0], xy[j1, 1])
            o3 = _orientation(xy[j0, 0], xy[j0, 1], xy[j1, 0], xy[j1, 1], xy[i0, 0], xy[i0, 1])
            o4 = _orientation(xy[j0, 0], xy[j0, 1], xy[j1, 0], xy[j1, 1], xy[i1, 0], xy[i1, 1])
            if o1 * o2 < 0 and o3 * o4 < 0:
                return True, tests
    return False, tests


@njit(cache=True, nogil=True)
def _self_crossing(xy, ring_end, polygon_ring_end, budget):  # pragma: no cover
    """(P,) int8: 1 crosses itself, 0 not, -1 for the polygon where ``budget`` ran out (the
    rest are not checked)."""
    out = np.zeros(polygon_ring_end.size, np.int8)
    for p in range(polygon_ring_end.size):
        first_ring = polygon_ring_end[p - 1] if p > 0 else 0
        for ring in range(first_ring, polygon_ring_end[p]):
            crosses, tests = _ring_crosses_itself(xy, ring_end[ring - 1] if ring > 0 else 0, ring_end[ring], budget)
            budget -= tests
            if budget < 0:
                out[p] = -1
                return out
            if crosses:
                out[p] = 1
                break
    return out


def self_crossing(polygons: PolygonSet, *, max_pair_tests: int = MAX_PAIR_TESTS) -> np.ndarray:
    """(P,) bool: polygons with a ring whose edges properly cross each other (touching at a
    vertex or running along each other does not count). :class:`ParameterError` when that takes
    more than ``max_pair_tests`` comparisons of edges side by side in y."""
    found = _self_crossing(polygons.xy_V_2, polygons.ring_end_R, polygons.polygon_ring_end_P, max_pair_tests)
    if (found < 0).any():
        raise ParameterError(f"polygon {int(np.argmax(found < 0))} (counting from 0) has too many edges side by side "
                             f"to check that it does not cross itself (over {max_pair_tests:,} pairs of edges): "
                             "simplify the polygons (e.g. shapely's simplify) and import them again")
    return found > 0
