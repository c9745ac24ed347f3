"""Shapes as superpixels: polygon rasterisation, the at-least-half coverage rule at several zoom
levels on the CMU sample's real superpixels, adjacency across tiles, and growing to similar."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as MplPath

from slidelabel.errors import ParameterError
from slidelabel.services import region_growing, shapes
from slidelabel.services.polygons import array_polygons
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize, compute_slide_superpixels
from slidelabel.services.tiles import label_map, superpixel_table
from slidelabel.store.label_map import read_labels
from slidelabel.store.superpixel_files import LABELS_FILE


@pytest.fixture(scope="module")
def cmu_superpixels(tmp_path_factory: pytest.TempPathFactory, cmu_slide: Path) -> Path:
    """Superpixels of the CMU sample at 10x (working downsample 2), 32 um: about 1,600."""
    folder = tmp_path_factory.mktemp("shapes") / "cmu"
    compute_slide_superpixels(cmu_slide, folder, SuperpixelOptions(size=SuperpixelSize.parse("32um")))
    return folder


def star(rng: np.random.Generator, centre: tuple[float, float], radius: float, vertices: int) -> np.ndarray:
    """A simple (non-self-intersecting) polygon: random radii at increasing angles."""
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * rng.uniform(0.35, 1.0, vertices)
    return np.stack([centre[0] + radii * np.cos(angles), centre[1] + radii * np.sin(angles)], axis=1)


def centres_inside(polygon_V_2: np.ndarray, height: int, width: int) -> np.ndarray:
    """The reference: matplotlib's point-in-polygon test at every pixel centre."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    return MplPath(polygon_V_2).contains_points(np.stack([xs.ravel(), ys.ravel()], axis=1)).reshape(height, width)


@pytest.mark.parametrize("seed, vertices", [(0, 3), (1, 12), (2, 500)])
def test_rasterisation_is_matplotlib_s_point_in_polygon_at_pixel_centres(seed, vertices):
    rng = np.random.default_rng(seed)
    polygon = star(rng, (61.3, 47.9), 55.0, vertices)  # reaches past the grid's edges
    assert np.array_equal(shapes.rasterise_polygon(polygon, 90, 110), centres_inside(polygon, 90, 110))


def test_rasterisation_counts_a_vertex_on_a_pixel_row_once():
    diamond = np.array([[5.0, 0.5], [9.5, 5.5], [5.0, 10.5], [0.5, 5.5]])  # vertices on row centres
    inside = shapes.rasterise_polygon(diamond, 11, 11)
    ys, xs = np.mgrid[0:11, 0:11] + 0.5
    distance = np.abs(xs - 5.0) + np.abs(ys - 5.5)  # the diamond is distance <= 4.5
    assert np.array_equal(inside[distance != 4.5], (distance < 4.5)[distance != 4.5])  # off the boundary: exact
    assert inside[5].tolist() == [True] * 9 + [False] * 2  # the row through two vertices: left edge in, right out


def test_rasterisation_refuses_fewer_than_three_vertices():
    with pytest.raises(ParameterError, match="at least 3"):
        shapes.rasterise_polygon(np.array([[0.0, 0.0], [1.0, 1.0]]), 4, 4)


def expected_cover(labels_H_W: np.ndarray, polygon_level_V_2: np.ndarray) -> set[int]:
    """Ids with at least half of their pixels' centres inside, counted over the whole level."""
    inside = centres_inside(polygon_level_V_2, *labels_H_W.shape)
    covered = np.bincount(labels_H_W[inside].ravel(), minlength=labels_H_W.max() + 1)
    total = np.bincount(labels_H_W.ravel(), minlength=labels_H_W.max() + 1)
    return {int(i) for i in np.flatnonzero((covered >= 0.5 * total) & (total > 0)) if i > 0}


@pytest.mark.parametrize("level", [0, 1, 2])
@pytest.mark.parametrize("seed", [3, 4])
def test_cover_takes_superpixels_at_least_half_inside_at_the_level_shown(cmu_superpixels, level, seed):
    labels = label_map(cmu_superpixels)
    table = superpixel_table(cmu_superpixels)
    scale = labels.downsample * 2**level
    polygon_level0 = star(np.random.default_rng(seed), (1100.0, 1500.0), 700.0, 500)
    found = shapes.covered_superpixels(labels, table.bbox_level0, table.area_px, polygon_level0, downsample=scale)
    assert found.level == level
    level_ids = read_labels(cmu_superpixels / LABELS_FILE, level=level)
    expected = expected_cover(level_ids, polygon_level0 / scale)
    assert len(expected) > 50
    assert set(found.superpixels.tolist()) == expected


def test_the_outline_of_superpixels_covers_exactly_them(cmu_superpixels):
    """A polygon traced around a superpixel's own pixels takes it and none of its neighbours."""
    labels_H_W = read_labels(cmu_superpixels / LABELS_FILE)
    table = superpixel_table(cmu_superpixels)
    labels = label_map(cmu_superpixels)
    for superpixel in np.random.default_rng(0).choice(np.unique(labels_H_W[labels_H_W > 0]), 8, replace=False):
        x0, y0, x1, y1 = (table.bbox_level0[superpixel - 1] // labels.downsample).astype(int).tolist()
        window = labels_H_W[y0:y1 + 1, x0:x1 + 1] == superpixel
        traced = array_polygons(window.astype(np.int32), downsample=labels.downsample, tolerance=0)[1]
        shell = max(traced, key=lambda p: p.area).shell_K_2 + np.array([x0, y0]) * labels.downsample
        found = shapes.covered_superpixels(labels, table.bbox_level0, table.area_px, shell)
        assert found.superpixels.tolist() == [superpixel]


def test_cover_of_a_shape_off_the_slide_is_empty(cmu_superpixels):
    labels = label_map(cmu_superpixels)
    table = superpixel_table(cmu_superpixels)
    polygon = np.array([[-500.0, -500.0], [-100.0, -500.0], [-100.0, -100.0]])
    assert shapes.covered_superpixels(labels, table.bbox_level0, table.area_px, polygon).superpixels.size == 0


def brute_force_pairs(labels_H_W: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels_H_W[:, :-1], labels_H_W[:, 1:]), (labels_H_W[:-1], labels_H_W[1:])):
        differ = (a != b) & (a > 0) & (b > 0)
        pairs |= {(min(p, q), max(p, q)) for p, q in zip(a[differ].tolist(), b[differ].tolist())}
    return pairs


def test_adjacency_tile_by_tile_is_the_whole_map_s(cmu_superpixels):
    labels = label_map(cmu_superpixels)
    count = superpixel_table(cmu_superpixels).ids.size
    adjacency = region_growing.adjacency_of(labels, count, tile_px=100)  # many tile borders
    found = {(i, int(j)) for i in range(1, count + 1) for j in adjacency.neighbours(i) if i < j}
    assert found == brute_force_pairs(read_labels(cmu_superpixels / LABELS_FILE))
    symmetric = {(int(j), i) for i in range(1, count + 1) for j in adjacency.neighbours(i)}
    assert symmetric == {(i, int(j)) for i in range(1, count + 1) for j in adjacency.neighbours(i)}


def test_slide_adjacency_is_kept_beside_the_label_map(cmu_superpixels, tmp_path):
    folder = tmp_path / "copy"
    folder.mkdir()
    for path in cmu_superpixels.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    first = region_growing.slide_adjacency(folder)
    assert (folder / region_growing.ADJACENCY_FILE).is_file()
    region_growing._cached_adjacency.cache_clear()
    again = region_growing.slide_adjacency(folder)  # read from the file
    assert np.array_equal(first.indptr, again.indptr) and np.array_equal(first.indices, again.indices)


def test_a_sweep_taking_the_adjacency_file_while_it_is_written_loses_only_the_cache(cmu_superpixels, tmp_path,
                                                                                  monkeypatch):
    """Ninth attack: a slide job's sweep of unfinished outputs (``.*.tmp*``) may remove the grow
    tool's temporary adjacency file while the API writes it; the tool answered with an error."""
    folder = tmp_path / "copy"
    folder.mkdir()
    for path in cmu_superpixels.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    savez = np.savez

    def swept_while_written(out, **arrays):
        savez(out, **arrays)
        Path(out.name).unlink()  # what sweep_unfinished_outputs does to a file changed before it began

    monkeypatch.setattr(region_growing.np, "savez", swept_while_written)
    region_growing._cached_adjacency.cache_clear()
    swept = region_growing.slide_adjacency(folder)
    monkeypatch.undo()
    assert not (folder / region_growing.ADJACENCY_FILE).exists()
    region_growing._cached_adjacency.cache_clear()
    kept = region_growing.slide_adjacency(folder)
    assert np.array_equal(swept.indptr, kept.indptr) and np.array_equal(swept.indices, kept.indices)


def chain(n: int) -> region_growing.Adjacency:
    """Superpixels 1 - 2 - ... - n in a row."""
    pairs = [(i, i + 1) for i in range(1, n)] + [(i + 1, i) for i in range(1, n)]
    pairs.sort()
    indptr = np.zeros(n + 2, np.int64)
    np.cumsum(np.bincount([p[0] for p in pairs], minlength=n + 1), out=indptr[1:])
    return region_growing.Adjacency(indptr, np.array([p[1] for p in pairs], np.int32))


def test_grow_stops_at_dissimilar_superpixels_and_at_the_step_limit():
    similar = np.array([False, True, True, True, False, True, True])  # id 4 breaks the chain
    ids, steps = region_growing.grow(chain(6), 2, similar, max_steps=10)
    assert sorted(ids.tolist()) == [1, 2, 3] and dict(zip(ids.tolist(), steps.tolist())) == {2: 0, 1: 1, 3: 1}
    ids, _ = region_growing.grow(chain(6), 5, np.ones(7, bool), max_steps=1)
    assert sorted(ids.tolist()) == [4, 5, 6]


def test_similar_by_prediction_needs_the_seed_s_category_and_certainty():
    predicted = np.array([7, 7, 8, 7, 0])
    certainty = np.array([0.9, 0.6, 0.95, 0.99, 0.0])
    assert region_growing.similar_by_prediction(predicted, certainty, 1, 0.8).tolist() == [False, True, False, False, True, False]


def test_similar_by_features_takes_the_nearest_share_and_never_rows_without_features():
    feats = np.array([[0.0, 0.0], [0.1, 0.0], [5.0, 5.0], [np.nan, 0.0], [0.2, 0.1]])
    assert region_growing.similar_by_features(region_growing.feature_distances(feats, 1), 0.5).tolist() == [False, True, True, False, False, False]
    assert region_growing.similar_by_features(region_growing.feature_distances(feats, 1), 0.75).tolist() == [False, True, True, False, False, True]
    with pytest.raises(ParameterError, match="no features"):
        region_growing.feature_distances(feats, 4)
