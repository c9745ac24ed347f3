"""Tracing region maps into polygons: exact cover, holes, diagonal contacts, tiling, simplification."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from scipy import ndimage

from slidelabel.services.polygons import Polygon, array_polygons, label_map_polygons, ring_area
from slidelabel.store.label_map import LabelMapWriter


def smooth_regions(seed: int, shape: tuple[int, int], count: int, dtype=np.int64, sigma: float | None = None
                   ) -> np.ndarray:
    """Blobby regions 0..count-1 (0 = background) from a random field smoothed by ``sigma``
    pixels (random in 0.7..3 when None)."""
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma or rng.uniform(0.7, 3))
    return np.digitize(field, np.quantile(field, np.linspace(0, 1, count + 1)[1:-1])).astype(dtype)


def coverage(polygons: dict[int, list[Polygon]], points_P_2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The region covering each point ``(P,)`` (0: none) and how many polygons cover it."""
    region, count = np.zeros(len(points_P_2), np.int64), np.zeros(len(points_P_2), np.int64)
    for value, parts in polygons.items():
        for part in parts:
            inside = MplPath(part.shell_K_2).contains_points(points_P_2)
            for hole in part.holes:
                inside &= ~MplPath(hole).contains_points(points_P_2)
            region[inside], count[inside] = value, count[inside] + 1
    return region, count


def pixel_centres(shape: tuple[int, int]) -> np.ndarray:
    ys, xs = np.mgrid[0:shape[0], 0:shape[1]]
    return np.column_stack([xs.ravel() + 0.5, ys.ravel() + 0.5])


def assert_valid(polygons: dict[int, list[Polygon]]) -> None:
    """Closed rings of at least a triangle, visiting no vertex twice; shells positive, holes
    negative and inside their shell (touching it at most at a vertex)."""
    for parts in polygons.values():
        for part in parts:
            for ring in (part.shell_K_2, *part.holes):
                assert len(ring) >= 4 and (ring[0] == ring[-1]).all()
                assert len({tuple(p) for p in ring[:-1].tolist()}) == len(ring) - 1
            assert ring_area(part.shell_K_2) > 0
            shell = {tuple(p) for p in part.shell_K_2.tolist()}
            for hole in part.holes:
                assert ring_area(hole) < 0
                inside = MplPath(part.shell_K_2).contains_points(hole)
                assert all(inside[i] or tuple(p) in shell for i, p in enumerate(hole.tolist()))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("dtype", [np.uint8, np.int32, np.uint32, np.int64])
def test_exact_polygons_cover_every_pixel_of_their_region_once(seed, dtype):
    regions = smooth_regions(seed, (23 + seed, 31), 2 + seed % 3, dtype)
    if seed % 2:
        regions = np.random.default_rng(seed).integers(0, 3, regions.shape).astype(dtype)
    polygons = array_polygons(regions, tolerance=0, tile_size=4 + seed)
    assert_valid(polygons)
    region, count = coverage(polygons, pixel_centres(regions.shape))
    assert (region == regions.ravel()).all()
    assert (count == (regions.ravel() != 0)).all()
    for value, parts in polygons.items():
        assert sum(part.area for part in parts) == np.count_nonzero(regions == value)


def test_holes_and_islands_in_holes():
    regions = np.ones((9, 9), np.int64)
    regions[2:7, 2:7] = 0
    regions[4, 4] = 1
    [outer, island] = array_polygons(regions, tolerance=0)[1]
    assert outer.area == 81 - 25 and island.area == 1
    assert len(outer.holes) == 1 and ring_area(outer.holes[0]) == -25 and not island.holes


def test_regions_touching_diagonally_stay_apart():
    checkerboard = np.array([[1, 2], [2, 1]])
    polygons = array_polygons(checkerboard, tolerance=0)
    assert [len(polygons[1]), len(polygons[2])] == [2, 2]
    # A ring whose cavity reaches the outside through a corner only: one shell with a hole that
    # touches it at that corner, each ring visiting the corner once.
    ring = np.array([[1, 1, 1],
                     [1, 0, 1],
                     [1, 1, 0]])
    polygons = array_polygons(ring, tolerance=0)
    assert_valid(polygons)
    [part] = polygons[1]
    assert part.area == 7 and len(part.holes) == 1
    assert [2, 2] in part.shell_K_2.tolist() and [2, 2] in part.holes[0].tolist()


def test_tiles_do_not_change_the_result():
    regions = smooth_regions(7, (60, 45), 4)
    whole = array_polygons(regions, tile_size=2048)
    for tile_size in (3, 16):
        tiled = array_polygons(regions, tile_size=tile_size)
        assert tiled.keys() == whole.keys()
        for value in whole:
            assert [p.shell_K_2.tolist() for p in tiled[value]] == [p.shell_K_2.tolist() for p in whole[value]]


@pytest.mark.parametrize("seed", range(4))
def test_simplified_neighbours_neither_overlap_nor_leave_gaps(seed):
    regions = smooth_regions(seed, (80, 70), 4, sigma=3) + 1  # every pixel in a region
    exact = array_polygons(regions, tolerance=0)
    simplified = array_polygons(regions, tolerance=1.0)
    assert_valid(simplified)
    # Every shared boundary is simplified once, so the parts still tile the map exactly.
    assert sum(p.area for parts in simplified.values() for p in parts) == regions.size
    vertices = sum(len(p.shell_K_2) + sum(map(len, p.holes)) for parts in simplified.values() for p in parts)
    exact_vertices = sum(len(p.shell_K_2) + sum(map(len, p.holes)) for parts in exact.values() for p in parts)
    assert vertices < 0.7 * exact_vertices
    for value, parts in simplified.items():
        rings = [ring for p in exact[value] for ring in (p.shell_K_2, *p.holes)]
        perimeter = sum(np.hypot(*np.diff(ring, axis=0).T).sum() for ring in rings)
        assert abs(sum(p.area for p in parts) - np.count_nonzero(regions == value)) <= perimeter
    # Points off the pixel grid (a diagonal may run through pixel centres) are covered once.
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, 1, (4000, 2)) * [regions.shape[1], regions.shape[0]]
    _, count = coverage(simplified, points)
    assert (count == 1).all()


def test_batches_of_regions_match_the_whole_map():
    regions = smooth_regions(3, (50, 40), 2) * np.arange(1, 2001).reshape(50, 40)  # ids, row-major
    whole = array_polygons(regions)
    batched: dict[int, list[Polygon]] = {}
    for low in range(1, 2001, 400):
        rows = np.flatnonzero(((regions >= low) & (regions < low + 400)).any(axis=1))
        if rows.size:
            batched.update(array_polygons(regions, rows=(rows[0] - 1, rows[-1] + 2), regions=(low, low + 400)))
    assert batched.keys() == whole.keys()
    assert all(np.array_equal(batched[k][0].shell_K_2, whole[k][0].shell_K_2) for k in whole)


def test_label_map_polygons_read_the_tiff_in_level0_pixels(tmp_path: Path):
    ids = np.arange(1, 13, dtype=np.uint32).reshape(3, 4).repeat(20, axis=0).repeat(25, axis=1)
    path = tmp_path / "labels.tiff"
    with LabelMapWriter(path, width=ids.shape[1], height=ids.shape[0], mpp=2.0) as writer:
        writer.write_block(0, 0, ids)
        writer.finish()
    region_of_id = np.array([0] + [1] * 6 + [2] * 6)
    polygons = label_map_polygons(path, region_of_id, downsample=2.5, tolerance=0, tile_size=32)
    assert polygons.keys() == {1, 2}
    assert polygons[1][0].shell_K_2.tolist() == [[0, 0], [250, 0], [250, 50], [125, 50], [125, 100], [0, 100], [0, 0]]
    assert sum(p.area for parts in polygons.values() for p in parts) == ids.size * 2.5**2
    with pytest.raises(ValueError, match="region_of_id has 5 entries"):
        label_map_polygons(path, region_of_id[:5], downsample=1)


@pytest.mark.parametrize("kwargs, message", [
    ({"downsample": 0}, "downsample must be a positive"), ({"tolerance": -1}, "tolerance must be >= 0"),
    ({"tile_size": 0}, "tile_size must be >= 1")])
def test_bad_options_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        array_polygons(np.ones((2, 2), np.int64), **kwargs)
    with pytest.raises(ValueError, match="2-D integer array"):
        array_polygons(np.ones((2, 2)))


def test_windows_of_rows_and_columns_match_the_whole_map():
    regions = smooth_regions(5, (60, 70), 2) * np.arange(1, 4201).reshape(60, 70)
    whole = array_polygons(regions)
    windowed: dict[int, list[Polygon]] = {}
    for low in range(1, 4201, 50):
        inside = (regions >= low) & (regions < low + 50)
        rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
        if rows.size:
            windowed.update(array_polygons(regions, rows=(rows[0] - 1, rows[-1] + 2), cols=(cols[0] - 1, cols[-1] + 2),
                                           regions=(low, low + 50)))
    assert windowed.keys() == whole.keys()
    for k in whole:
        assert [p.shell_K_2.tolist() for p in windowed[k]] == [p.shell_K_2.tolist() for p in whole[k]]
        assert [[h.tolist() for h in p.holes] for p in windowed[k]] == [[h.tolist() for h in p.holes] for p in whole[k]]
