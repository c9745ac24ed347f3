"""Which superpixels each imported shape labels: those whose centroid it contains (and none of its
holes contains), the later shape winning where shapes overlap, within a bound on the work.

The centroids near a shape are found in a grid of cells about its box, so a thin shape as wide as
the slide reads one row of cells, not every centroid of its x range; what the shapes will cost is
counted from the cells before any is tested, and an import past :data:`MAX_POINT_EDGE_TESTS` is
refused first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path as MplPath

from slidelabel.errors import ParameterError

#: Most point-in-polygon steps one import takes: each centroid near a shape times the shape's
#: vertices, and what gathering them and each shape costs besides (:data:`_SHAPE_STEPS` etc.),
#: about 6 s of an API thread (a zigzag whose every edge spans the slide: 10 s). A 200,000-vertex
#: zigzag over a slide of 134,091 cells (1.6 MB of GeoJSON) took 33 s, 10,000 tiny shapes 36 s
#: when each scanned every centroid, and 55,000 thin shapes as wide as a slide of 73,274
#: superpixels 19.2 s when each gathered the centroids of its x-strip (now 1.4 s: 2.0e9 steps).
MAX_POINT_EDGE_TESTS = 2**32


@dataclass(frozen=True)
class Shape:
    """A classified polygon in level-0 pixels: ``shell_K_2`` and ``holes`` ((K, 2) float64)."""

    name: str
    color: str | None
    shell_K_2: np.ndarray
    holes: tuple[np.ndarray, ...] = ()


#: Point-edge tests in one call of matplotlib's point-in-polygon test, which holds the GIL while it
#: runs: about 30 ms, so that the API's other threads are answered between calls (a 15,000-vertex
#: polygon over 284,500 superpixels held it 7.4 s at once, and everyone else waited).
POINT_EDGE_TESTS_PER_CALL = 20_000_000


def contains(ring_K_2: np.ndarray, points_M_2: np.ndarray) -> np.ndarray:
    """Which of ``points_M_2`` lie inside the polygon ``ring_K_2`` (bool ``(M,)``), tested a chunk
    of points at a time (:data:`POINT_EDGE_TESTS_PER_CALL`)."""
    path, chunk = MplPath(ring_K_2), max(1, POINT_EDGE_TESTS_PER_CALL // max(len(ring_K_2), 1))
    return np.concatenate([path.contains_points(points_M_2[start:start + chunk])
                           for start in range(0, len(points_M_2), chunk)] or [np.zeros(0, bool)])


#: What a shape costs beside its point-in-polygon tests, in point-edge tests (about 1.4 ns each):
#: its Python and numpy steps (about 30 us, 20 us more when its box spans more than one row of
#: grid cells; one beside every centroid, about 1 us), each hole's (about 15 us), each row of cells
#: its box spans, each centroid of those cells gathered and checked against the box, and each
#: centroid tested, for each ring (matplotlib's cost per point besides its edges: a 4-edge ring
#: costs 12 ns per point-edge test, a 200-edge one 1.4 ns).
_SHAPE_STEPS, _ROWS_STEPS, _SHAPE_BESIDE_STEPS, _HOLE_STEPS = 20_000, 15_000, 1_000, 10_000
_ROW_STEPS, _CANDIDATE_STEPS, _POINT_STEPS = 100, 20, 30


@dataclass(frozen=True)
class CentroidGrid:
    """Centroids bucketed in square cells of about two each over their extent: cell ``row *
    columns + column`` holds ``order_N[starts[cell]:starts[cell + 1]]``; ``sums_R_C[r, c]`` counts
    those of the cells above and left of (r, c) (a summed-area table), so that the centroids in a
    box's cells are counted without reading them."""

    low_2: np.ndarray
    high_2: np.ndarray
    cell: float
    columns: int
    order_N: np.ndarray
    starts: np.ndarray
    sums_R_C: np.ndarray

    @classmethod
    def of(cls, centroid_N_2: np.ndarray) -> CentroidGrid:
        """The grid of ``centroid_N_2``'s finite centroids (at least one; a superpixel without one
        is in no shape)."""
        id_F = np.flatnonzero(np.isfinite(centroid_N_2).all(axis=1))
        centroid_N_2 = centroid_N_2[id_F]
        low_2, high_2 = centroid_N_2.min(axis=0), centroid_N_2.max(axis=0)
        extent_2 = high_2 - low_2
        # At most 4,096 cells a side, so a line of centroids gives no more cells than centroids.
        cell = max(math.sqrt(max(extent_2[0], 1.0) * max(extent_2[1], 1.0) / max(len(centroid_N_2) / 2, 1)),
                   float(extent_2.max()) / 4095, 1e-9)
        columns, rows = (int(extent_2[axis] // cell) + 1 for axis in (0, 1))
        cell_N_2 = np.minimum((centroid_N_2 - low_2) // cell, [columns - 1, rows - 1]).astype(np.int64)
        key_N = cell_N_2[:, 1] * columns + cell_N_2[:, 0]
        counts = np.bincount(key_N, minlength=rows * columns)
        sums_R_C = np.zeros((rows + 1, columns + 1), np.int64)
        sums_R_C[1:, 1:] = counts.reshape(rows, columns).cumsum(0).cumsum(1)
        return cls(low_2, high_2, cell, columns, id_F[np.argsort(key_N, kind="stable")],
                   np.concatenate([[0], np.cumsum(counts)]), sums_R_C)

    def cells(self, low_M_2: np.ndarray, high_M_2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The first and last cell ((M, 2) column, row) of each of M boxes and how many centroids
        those cells hold (0 for a box beside them all)."""
        limit = [self.columns - 1, self.sums_R_C.shape[0] - 2]
        first_M_2 = np.clip((low_M_2 - self.low_2) // self.cell, 0, limit).astype(np.int64)
        last_M_2 = np.clip((high_M_2 - self.low_2) // self.cell, 0, limit).astype(np.int64)
        (c0, r0), (c1, r1), sums = first_M_2.T, (last_M_2 + 1).T, self.sums_R_C
        held_M = sums[r1, c1] - sums[r0, c1] - sums[r1, c0] + sums[r0, c0]
        beside_M = ((high_M_2 < self.low_2) | (low_M_2 > self.high_2)).any(axis=1)
        return first_M_2, last_M_2, np.where(beside_M, 0, held_M)

    def candidates(self, first_2: np.ndarray, last_2: np.ndarray) -> np.ndarray:
        """The centroids in the cells from ``first_2`` to ``last_2`` (column, row), a row at a time."""
        row_cell_R = np.arange(first_2[1], last_2[1] + 1) * self.columns
        begin_R, end_R = self.starts[row_cell_R + first_2[0]], self.starts[row_cell_R + last_2[0] + 1]
        if begin_R.size == 1:
            return self.order_N[begin_R[0]:end_R[0]]
        length_R = end_R - begin_R
        return self.order_N[np.repeat(begin_R - (np.cumsum(length_R) - length_R), length_R)
                            + np.arange(int(length_R.sum()))]


def assign_shapes(assigned_S: np.ndarray, shapes: list[Shape], centroid_N_2: np.ndarray,
                   category_of: dict[str, int], *, max_tests: int | None = None) -> int:
    """Set ``assigned_S[s]`` to the category of the last shape containing superpixel ``s``'s
    centroid; returns how many shapes contained none. The centroids near a shape are those of
    the grid cells its box covers (:class:`CentroidGrid`); what the shapes will cost is counted
    from the cells first, and past ``max_tests`` point-edge tests (:data:`MAX_POINT_EDGE_TESTS`;
    :data:`_SHAPE_STEPS` etc. included) the import is refused with a :class:`ParameterError`
    before any shape is tested."""
    max_tests = MAX_POINT_EDGE_TESTS if max_tests is None else max_tests
    if not shapes or not np.isfinite(centroid_N_2).all(axis=1).any():
        return len(shapes)
    grid = CentroidGrid.of(centroid_N_2)
    shells = [shape.shell_K_2 for shape in shapes]
    bounds = np.cumsum([0, *(len(shell) for shell in shells)])[:-1]
    points_V_2 = np.concatenate(shells)
    low_M_2, high_M_2 = np.minimum.reduceat(points_V_2, bounds), np.maximum.reduceat(points_V_2, bounds)
    first_M_2, last_M_2, held_M = grid.cells(low_M_2, high_M_2)
    rings_M = np.array([1 + len(shape.holes) for shape in shapes], np.int64)
    edges_M = np.array([sum(len(ring) for ring in (shape.shell_K_2, *shape.holes)) for shape in shapes], np.int64)
    rows_M = last_M_2[:, 1] - first_M_2[:, 1] + 1
    steps_M = np.where(held_M > 0, _SHAPE_STEPS + (rows_M > 1) * _ROWS_STEPS + rows_M * _ROW_STEPS
                       + (rings_M - 1) * _HOLE_STEPS + held_M * (_CANDIDATE_STEPS + rings_M * _POINT_STEPS + edges_M),
                       _SHAPE_BESIDE_STEPS)
    if (steps := int(steps_M.sum())) > max_tests:
        raise ParameterError(
            f"the shapes would take about {steps:,} point-in-polygon steps over this slide's superpixels "
            f"(for each shape: the superpixels about its box times its vertices, and about {_SHAPE_STEPS:,} "
            f"more), more than the {max_tests:,} an import may take: simplify them (QuPath: Objects > "
            "Annotations... > Simplify shape) or import them a part at a time")
    empty = int(np.count_nonzero(held_M == 0))
    for index in np.flatnonzero(held_M).tolist():
        shape, low_2, high_2 = shapes[index], low_M_2[index], high_M_2[index]
        candidate = grid.candidates(first_M_2[index], last_M_2[index])
        point_C_2 = centroid_N_2[candidate]
        near = candidate[(point_C_2[:, 0] >= low_2[0]) & (point_C_2[:, 0] <= high_2[0])
                         & (point_C_2[:, 1] >= low_2[1]) & (point_C_2[:, 1] <= high_2[1])]
        inside = contains(shape.shell_K_2, centroid_N_2[near])
        for hole in shape.holes:
            inside &= ~contains(hole, centroid_N_2[near])
        empty += not inside.any()
        assigned_S[near[inside] + 1] = category_of[shape.name]
    return empty
