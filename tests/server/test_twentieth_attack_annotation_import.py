"""Twentieth attack, high: an annotator's label import (POST .../slides/{s}/import) of 55,000 thin
polygons each spanning the slide's width (9.0 MB) took 54 s, 29.7 CPU-s, on a slide of 73,274
superpixels: each shape gathered every centroid of its x-strip (the whole slide) and the bound
(``MAX_POINT_EDGE_TESTS``, "about 6 s") counted those at a point-edge test each; two such imports
held both export turns, and a viewer's exports were answered 503. Now a shape gathers the
centroids of the grid cells its box covers, and what the shapes cost (shapes, holes, rows of
cells, centroids gathered and tested, edges) is counted from the grid before any is tested:
past the bound the import is refused at once, with what to do."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image
from test_exports import slide_id, slide_labels, url  # noqa: F401 - fixtures
from test_imports import feature, rectangle

from slidelabel.errors import ParameterError
from slidelabel.services import shape_centroids
from slidelabel.services.shape_centroids import Shape, assign_shapes


@pytest.fixture(scope="module")
def cells(monuseg_dir) -> np.ndarray:
    """Level-0 centroids ``(N, 2)`` of the nucleus pixels of each 10 x 10 px block that has any, in
    the 30 MoNuSeg crops laid side by side (6 x 5 crops, 6000 x 5000 px): 130,146 real, clustered
    cells with gaps between them, as a slide's superpixels are."""
    parts = []
    y_P, x_P = (axis.ravel() for axis in np.mgrid[0:1000, 0:1000])
    for index, path in enumerate(sorted((monuseg_dir / "masks").glob("*.png"))):
        mask = np.asarray(Image.open(path)) > 127
        mask_P = (mask if mask.ndim == 2 else mask[..., 0]).ravel()
        block_P = (y_P // 10) * 100 + x_P // 10
        pixels_B, x_B, y_B = (np.bincount(block_P, weights=w, minlength=10_000) for w in (mask_P, mask_P * x_P, mask_P * y_P))
        held_B = pixels_B > 0
        parts.append(np.stack([x_B[held_B], y_B[held_B]], 1) / pixels_B[held_B, None]
                     + [1000 * (index % 6), 1000 * (index // 6)])
    return np.concatenate(parts)


def _reference(count: int, shapes: list[Shape], centroid_N_2: np.ndarray) -> np.ndarray:
    """Every shape tested against every centroid, later shapes winning."""
    assigned_S = np.zeros(count + 1, np.int64)
    for shape in shapes:
        inside = MplPath(shape.shell_K_2).contains_points(centroid_N_2)
        for hole in shape.holes:
            inside &= ~MplPath(hole).contains_points(centroid_N_2)
        assigned_S[np.flatnonzero(inside) + 1] = {"a": 1, "b": 2}[shape.name]
    return assigned_S


def _thin(count: int, width: float, height: float) -> list[Shape]:
    """The attack's shapes: 0.01 px high, the slide's width wide, spread over its height."""
    return [Shape("a", None, np.array([[0, y], [width, y], [width, y + 0.01], [0, y]]))
            for y in ((index * 7919) % height + 0.25 for index in range(count))]


@pytest.fixture
def gathered(monkeypatch) -> list[int]:
    """How many centroids each shape gathered from the grid."""
    sizes: list[int] = []
    candidates = shape_centroids.CentroidGrid.candidates

    def counted(self, first_2, last_2):
        found = candidates(self, first_2, last_2)
        sizes.append(found.size)
        return found

    monkeypatch.setattr(shape_centroids.CentroidGrid, "candidates", counted)
    return sizes


@pytest.fixture
def tested(monkeypatch) -> list[int]:
    """How many points each point-in-polygon test was given."""
    sizes: list[int] = []
    contains = shape_centroids.contains

    def counted(ring_K_2, points_M_2):
        sizes.append(len(points_M_2))
        return contains(ring_K_2, points_M_2)

    monkeypatch.setattr(shape_centroids, "contains", counted)
    return sizes


def test_thin_full_width_shapes_gather_only_the_centroids_about_their_box(cells, gathered):
    shapes = _thin(20_000, 6000, 5000)
    assigned_S = np.zeros(len(cells) + 1, np.int64)
    empty = assign_shapes(assigned_S, shapes, cells, {"a": 1})
    # Each shape gathered a row of cells (two centroids each on average), not its x-strip: all of them.
    assert len(gathered) <= len(shapes) and sum(gathered) < 0.02 * len(shapes) * len(cells)
    assert 0 < np.count_nonzero(assigned_S) and empty < len(shapes)
    some = shapes[::100]
    assigned_S = np.zeros(len(cells) + 1, np.int64)
    assign_shapes(assigned_S, some, cells, {"a": 1})
    assert np.array_equal(assigned_S, _reference(len(cells), some, cells))


def test_the_grid_labels_what_testing_every_centroid_labels(cells):
    rng = np.random.default_rng(20)
    shapes = []
    for index in range(150):
        centre, radius = rng.uniform(-200, [6200, 5200]), rng.uniform(2, 900)
        angles = np.sort(rng.uniform(0, 2 * np.pi, int(rng.integers(3, 60))))
        shell = centre + np.stack([np.cos(angles), np.sin(angles)], 1) * radius * rng.uniform(0.3, 1, (angles.size, 1))
        holes = (centre + rng.uniform(-radius / 2, radius / 2, (5, 2)),) if index % 4 == 0 else ()
        shapes.append(Shape("ab"[index % 2], None, shell, holes))
    x0 = cells[:, 0].min()
    shapes += [Shape("a", None, np.array([[x0, 0], [x0 + 300, 0], [x0 + 300, 5000], [x0, 5000]])),  # tall, at the edge
               Shape("b", None, np.array([[-1e300, -1e300], [1e300, -1e300], [0, 1e300]])),  # beyond every cell
               Shape("a", None, np.array([[7000, 10], [7100, 10], [7100, 90]])),  # beside every centroid
               *_thin(40, 6000, 5000)]
    assigned_S = np.zeros(len(cells) + 1, np.int64)
    empty = assign_shapes(assigned_S, shapes, cells, {"a": 1, "b": 2})
    expected_S = _reference(len(cells), shapes, cells)
    assert np.array_equal(assigned_S, expected_S)
    assert empty == sum(not _reference(len(cells), [shape], cells).any() for shape in shapes)


@pytest.mark.parametrize("centroid_N_2", [
    np.array([[5.0, 7.0]]),
    np.full((50, 2), 3.0),  # all at one point
    np.stack([np.linspace(0, 1e6, 5000), np.full(5000, 2.0)], 1),  # a line: no extent in y
    np.stack(np.meshgrid(np.arange(0.0, 100, 1), np.arange(0.0, 100, 1)), -1).reshape(-1, 2),  # on cell edges
    np.array([[np.nan, np.nan], [3.0, 3.0], [np.inf, 2.0], [5.0, 2.0]]),  # superpixels without a centroid
    np.full((3, 2), np.nan),
], ids=["one", "one-point", "line", "lattice", "some-not-finite", "none-finite"])
def test_degenerate_centroids_are_labelled_as_testing_every_one_labels(centroid_N_2):
    shapes = [Shape("a", None, np.array([[2.0, 1.0], [10, 1], [10, 8], [2, 8]])),
              Shape("b", None, np.array([[-1.0, 1.5], [6e5, 1.5], [6e5, 2.5], [-1, 2.5]])),
              Shape("a", None, np.array([[20.0, 20.0], [60, 20], [40, 61]]), (np.array([[30.0, 25], [50, 25], [40, 40]]),)),
              Shape("b", None, np.array([[2.5, 2.5], [3.5, 2.5], [3.5, 3.5], [2.5, 3.5]]))]
    assigned_S = np.zeros(len(centroid_N_2) + 1, np.int64)
    assign_shapes(assigned_S, shapes, centroid_N_2, {"a": 1, "b": 2})
    assert np.array_equal(assigned_S, _reference(len(centroid_N_2), shapes, centroid_N_2))


def test_what_each_shape_costs_beside_its_edges_counts_and_is_refused_before_any_is_tested(cells, tested):
    """100,000 triangles on a cell each: 3 edges times a few centroids, but 30 us of work each."""
    triangle = np.array([[-1.0, -1.0], [1, -1], [0, 1]])
    shapes = [Shape("a", None, triangle + cells[index % len(cells)]) for index in range(100_000)]
    with pytest.raises(ParameterError, match="simplify them") as refused:
        assign_shapes(np.zeros(len(cells) + 1, np.int64), shapes, cells, {"a": 1}, max_tests=10_000 * len(shapes))
    assert "import them a part at a time" in str(refused.value)
    assert tested == []


def test_a_costly_shape_late_in_the_file_is_refused_before_the_first_is_tested(cells, tested):
    square = np.array([[0.0, 0], [50, 0], [50, 50], [0, 50]])
    xs_K = np.linspace(0, 6000, 40_000)
    zigzag = np.concatenate([np.stack([xs_K, np.where(np.arange(xs_K.size) % 2, 5000.0, 0.0)], 1),
                             [[6000, 5000], [0, 5000]]])
    shapes = [*(Shape("a", None, square + 60 * index) for index in range(30)), Shape("b", None, zigzag)]
    with pytest.raises(ParameterError, match=r"more than the 100,000,000 an import may take"):
        assign_shapes(np.zeros(len(cells) + 1, np.int64), shapes, cells, {"a": 1, "b": 2}, max_tests=10**8)
    assert tested == []
    assign_shapes(np.zeros(len(cells) + 1, np.int64), shapes[:30], cells, {"a": 1}, max_tests=10**8)
    assert len(tested) > 0


def test_the_attack_input_on_a_slide_of_as_many_superpixels_fits_the_bound(cells, gathered):
    """55,000 thin full-width shapes over as many real cells as the CMU slide had superpixels
    (73,274): accepted, and each gathered about a row of cells (once: all 73,274)."""
    centroid_N_2 = cells[np.sort(np.random.default_rng(20).choice(len(cells), 73_274, replace=False))]
    shape_centroids.assign_shapes(np.zeros(len(centroid_N_2) + 1, np.int64), _thin(55_000, 6000, 5000), centroid_N_2,
                           {"a": 1})
    assert sum(gathered) < 0.02 * 55_000 * len(centroid_N_2)



@pytest.mark.postgresql
def test_an_import_past_the_bound_is_422_with_what_to_do_and_labels_nothing(app, client, project, slide_id,  # noqa: F811
                                                                             admin_headers, monkeypatch):
    monkeypatch.setattr(shape_centroids, "MAX_POINT_EDGE_TESTS", 10_000)
    document = {"type": "FeatureCollection", "features": [
        feature({"type": "Polygon", "coordinates": [rectangle(0, 0, 2220, 2967)]}, {"name": "tumour"})]}
    response = client.post(url(project, slide_id, "/import"), headers=admin_headers, json=document)
    assert response.status_code == 422, response.text
    assert "more than the 10,000 an import may take: simplify them" in response.json()["detail"]
    assert slide_labels(app, slide_id) == {}
