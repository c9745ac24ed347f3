"""A label import tests superpixel centroids against its polygons a chunk at a time: matplotlib's
point-in-polygon test holds the GIL for a whole call, and one 15,000-vertex polygon over 284,500
superpixels held it 7.4 s at once (the eighth attack: every other request of the API waited)."""

from __future__ import annotations

import numpy as np
from matplotlib.path import Path as MplPath

from slidelabel.services import shape_centroids


def test_polygon_tests_come_in_bounded_calls_with_the_same_answer(monkeypatch):
    rng = np.random.default_rng(0)
    angles_K = np.linspace(0, 2 * np.pi, 3_001)[:-1]
    ring_K_2 = np.stack([500 + 400 * np.cos(angles_K) * (1 + 0.05 * (np.arange(3_000) % 2)),
                         500 + 400 * np.sin(angles_K)], axis=1)
    points_M_2 = rng.uniform(0, 1000, size=(25_000, 2))
    expected_M = MplPath(ring_K_2).contains_points(points_M_2)

    calls: list[int] = []
    real = MplPath.contains_points

    def counted(self, points, *args, **kwargs):
        calls.append(len(points) * len(self.vertices))
        return real(self, points, *args, **kwargs)

    monkeypatch.setattr(shape_centroids, "POINT_EDGE_TESTS_PER_CALL", 10_000_000)
    monkeypatch.setattr(MplPath, "contains_points", counted)
    inside_M = shape_centroids.contains(ring_K_2, points_M_2)
    assert np.array_equal(inside_M, expected_M) and expected_M.any() and not expected_M.all()
    assert len(calls) > 1 and max(calls) <= 10_000_000, calls
    assert shape_centroids.contains(ring_K_2, points_M_2[:0]).shape == (0,)
