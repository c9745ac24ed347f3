"""Fifth attack on issue 13: an annotator's label import (POST .../slides/{s}/import) cost the
shapes' vertices times the superpixels in their boxes, and every shape scanned every centroid.
Over a slide of 134,091 imported cells a 200,000-vertex zigzag (1.6 MB of GeoJSON) took 33 s of
an API thread (10 MB: about 200 s), and 10,000 tiny shapes 36 s. Now a shape's centroids come
from the strip of its x range (10,000 tiny shapes: 0.26 s) and past ``MAX_POINT_EDGE_TESTS``
steps the import is refused with a message."""

from __future__ import annotations

import time

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from slidelabel.errors import ParameterError
from slidelabel.services.shape_centroids import Shape, assign_shapes


def _polygon(rng: np.random.Generator, centre: np.ndarray, radius: float, sides: int) -> np.ndarray:
    angles = np.sort(rng.uniform(0, 2 * np.pi, sides))
    return centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radius * rng.uniform(0.5, 1, (sides, 1))


def _reference(count: int, shapes: list[Shape], centroid_N_2: np.ndarray, category_of: dict[str, int]) -> np.ndarray:
    """Every shape tested against every centroid, later shapes winning."""
    assigned_S = np.zeros(count + 1, np.int64)
    for shape in shapes:
        inside = MplPath(shape.shell_K_2).contains_points(centroid_N_2)
        for hole in shape.holes:
            inside &= ~MplPath(hole).contains_points(centroid_N_2)
        assigned_S[np.flatnonzero(inside) + 1] = category_of[shape.name]
    return assigned_S


def test_the_strip_of_each_shape_labels_what_testing_every_centroid_labels():
    rng = np.random.default_rng(13)
    centroid_N_2 = rng.uniform(0, 1000, (20_000, 2))
    centroid_N_2[:50, 0] = 500.0  # ties in x at a shape's edge
    shapes = []
    for index in range(60):
        centre, radius = rng.uniform(0, 1000, 2), rng.uniform(5, 300)
        holes = [_polygon(rng, centre, radius / 3, 12)] if index % 3 == 0 else []
        shapes.append(Shape("ab"[index % 2], None, _polygon(rng, centre, radius, int(rng.integers(3, 40))), holes))
    shapes.append(Shape("a", None, np.array([[500.0, 0], [600, 0], [600, 1000], [500, 1000]]), []))
    category_of = {"a": 1, "b": 2}
    assigned_S = np.zeros(len(centroid_N_2) + 1, np.int64)
    empty = assign_shapes(assigned_S, shapes, centroid_N_2, category_of)
    assert np.array_equal(assigned_S, _reference(len(centroid_N_2), shapes, centroid_N_2, category_of))
    assert np.count_nonzero(assigned_S) > 1000 and 0 <= empty < len(shapes)


def test_many_small_shapes_do_not_each_scan_every_centroid():
    centroid_N_2 = np.random.default_rng(0).uniform(0, 3000, (134_091, 2))
    square = np.array([[0.0, 0], [3, 0], [3, 3], [0, 3]])
    shapes = [Shape("c", None, square + (7 * (i % 420), 7 * (i // 420)), []) for i in range(10_000)]
    start = time.perf_counter()
    assign_shapes(np.zeros(134_092, np.int64), shapes, centroid_N_2, {"c": 3})
    assert time.perf_counter() - start < 5  # each scanning every centroid: 36 s


def test_an_import_past_the_step_bound_is_refused_at_once():
    centroid_N_2 = np.random.default_rng(1).uniform(0, 3000, (50_000, 2))
    xs_K = np.linspace(0, 3000, 100_000)
    zigzag = np.concatenate([np.stack([xs_K, np.where(np.arange(xs_K.size) % 2, 3000.0, 0.0)], 1),
                             [[3000, 3000], [0, 3000]]])
    start = time.perf_counter()
    with pytest.raises(ParameterError, match="simplify them"):
        assign_shapes(np.zeros(50_001, np.int64), [Shape("b", None, zigzag, [])], centroid_N_2, {"b": 2},
                       max_tests=2**30)
    assert time.perf_counter() - start < 1
