"""Fourth attack on issue 13: one GeoJSON held the only slide worker for hours. The self-crossing
check of a segment import compares the edges of a ring whose y ranges overlap, so a serpentine
(edges side by side, each spanning the ring's height) costs the square of its vertices: 80,000
vertices (1.6 MB) took 57 s, 160,000 (2.8 MB, the server's import job) minutes, 2 million (40 MB)
past the 6 h time limit. Now the check stops after ``MAX_PAIR_TESTS`` comparisons per file and the
import is refused with a message; ordinary outlines of any size are checked as before."""

from __future__ import annotations

import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers.polygons import MAX_PAIR_TESTS, PolygonSet, self_crossing


def _rings(*rings_V_2: np.ndarray) -> PolygonSet:
    """One polygon per ring."""
    xy_V_2 = np.concatenate(rings_V_2)
    ends = np.cumsum([len(ring) for ring in rings_V_2]).astype(np.int64)
    bbox_P_4 = np.array([[*ring.min(axis=0), *ring.max(axis=0)] for ring in rings_V_2])
    return PolygonSet(xy_V_2, ends, np.arange(1, len(ends) + 1, dtype=np.int64), bbox_P_4)


def _serpentine(teeth: int, height: float = 1000.0) -> np.ndarray:
    """(4 teeth + 2, 2) a simple ring of ``teeth`` up-and-down strokes, all spanning ``height``."""
    xs = np.repeat(np.arange(2 * teeth, dtype=float), 2)
    ys = np.tile([0.0, height, height, 0.0], teeth)
    return np.vstack([np.c_[xs, ys], [[2 * teeth - 1, -10.0], [0.0, -10.0]]])


def test_a_serpentine_past_the_budget_is_refused_instead_of_checked_for_minutes():
    with pytest.raises(ParameterError, match="simplify"):
        self_crossing(_rings(_serpentine(20_000)))  # 80,002 vertices: 57 s before


def test_the_budget_is_for_the_whole_file_not_each_polygon():
    serpentine = _serpentine(50)  # about 18,000 comparisons each
    with pytest.raises(ParameterError, match="polygon 5 "):
        self_crossing(_rings(*[serpentine + 300.0 * k for k in range(40)]), max_pair_tests=100_000)
    assert not self_crossing(_rings(*[serpentine + 300.0 * k for k in range(4)]), max_pair_tests=100_000).any()


def test_large_ordinary_outlines_are_still_checked():
    angles = np.linspace(0, 2 * np.pi, 200_000, endpoint=False)
    circle = np.c_[5000 + 4000 * np.cos(angles), 5000 + 4000 * np.sin(angles)]
    bow_tie = np.array([[0.0, 0.0], [10.0, 10.0], [10.0, 0.0], [0.0, 10.0]])
    assert self_crossing(_rings(circle, bow_tie, _serpentine(500))).tolist() == [False, True, False]
    assert MAX_PAIR_TESTS >= 2**20
