"""Tiled superpixels against untiled ones on real tissue: same superpixels, no seams."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.io import imread
from skimage.measure import label as components

from slidelabel.pipelines.regions import ArrayRegions
from slidelabel.pipelines.slic import SeedGrid
from slidelabel.pipelines.superpixels import MAX_ASSIGN_GROWTH, SuperpixelEngine, SuperpixelParams, superpixel_array

TILE = 256


@pytest.fixture(scope="module")
def tissue(cmu_slide) -> np.ndarray:
    """A 1024 x 1280 region of real H&E skin at 1 um/px."""
    from slidelabel.pipelines.slides import Slide

    with Slide(cmu_slide) as slide:
        scale = slide.working_scale(mpp=1.0)
        return slide.read_region(40, 200, 1024, 1280, downsample=scale.downsample)


@pytest.fixture(scope="module")
def runs(tissue):
    params = dict(step=32)
    untiled = superpixel_array(tissue, SuperpixelParams(**params, tile_size=2048))
    tiled = superpixel_array(tissue, SuperpixelParams(**params, tile_size=TILE))
    return untiled, tiled


def naive_tiling(rgb: np.ndarray, step: int) -> np.ndarray:
    """Superpixels of each tile on its own: the seams the engine must not have (negative control)."""
    out = np.zeros(rgb.shape[:2], np.int64)
    offset = 0
    for top in range(0, rgb.shape[0], TILE):
        for left in range(0, rgb.shape[1], TILE):
            part = superpixel_array(rgb[top : top + TILE, left : left + TILE], SuperpixelParams(step=step, tile_size=TILE))
            out[top : top + TILE, left : left + TILE] = np.where(part > 0, part + offset, 0)
            offset += int(part.max()) + 1
    return out


def seam_ratio(labels: np.ndarray) -> float:
    """Boundary density on tile-grid lines divided by that on lines halfway between them."""
    vertical = labels[:, 1:] != labels[:, :-1]  # boundary between column x-1 and x, at index x-1
    horizontal = labels[1:, :] != labels[:-1, :]
    on = [vertical[:, x - 1].mean() for x in range(TILE, labels.shape[1], TILE)]
    on += [horizontal[y - 1, :].mean() for y in range(TILE, labels.shape[0], TILE)]
    off = [vertical[:, x - 1].mean() for x in range(TILE // 2, labels.shape[1], TILE)]
    off += [horizontal[y - 1, :].mean() for y in range(TILE // 2, labels.shape[0], TILE)]
    return float(np.mean(on) / np.mean(off))


def border_area_ratio(labels: np.ndarray) -> float:
    """Mean area of superpixels touching a tile-grid line (either side) over that of the others."""
    ids, areas = np.unique(labels[labels > 0], return_counts=True)
    lines = np.zeros(labels.shape, bool)
    for offset in (TILE - 1, TILE):
        lines[:, offset::TILE] = True
        lines[offset::TILE, :] = True
    crossing = np.isin(ids, np.unique(labels[lines]))
    return float(areas[crossing].mean() / areas[~crossing].mean())


def test_tiled_run_gives_the_untiled_superpixels(runs):
    untiled, tiled = runs
    # Ids name global seeds, so they compare directly.
    assert (tiled == untiled).mean() > 0.98
    n_untiled, n_tiled = len(np.unique(untiled)), len(np.unique(tiled))
    assert abs(n_tiled - n_untiled) <= 0.01 * n_untiled


def test_every_superpixel_is_one_connected_component(runs):
    for labels in runs:
        ids = np.unique(labels[labels > 0])
        assert components(labels, connectivity=1, background=0).max() == ids.size


def test_no_seams_along_the_tile_grid(runs, tissue):
    untiled, tiled = runs
    assert seam_ratio(tiled) < 1.5
    assert seam_ratio(tiled) == pytest.approx(seam_ratio(untiled), abs=0.25)
    # The measure does see seams when tiles are cut independently.
    assert seam_ratio(naive_tiling(tissue, 30)) > 10


def border_shape_ratio(labels: np.ndarray) -> float:
    """Mean isoperimetric quotient (4 pi area / perimeter^2) at tile borders over that inside."""
    from skimage.measure import regionprops

    lines = np.zeros(labels.shape, bool)
    for offset in (TILE - 1, TILE):
        lines[:, offset::TILE] = True
        lines[offset::TILE, :] = True
    at_border = set(np.unique(labels[lines]).tolist())
    quotient = {r.label: 4 * np.pi * r.area / max(r.perimeter, 1) ** 2 for r in regionprops(labels.astype(np.int32))}
    border = [q for k, q in quotient.items() if k in at_border]
    inside = [q for k, q in quotient.items() if k not in at_border]
    return float(np.mean(border) / np.mean(inside))


def test_superpixels_at_tile_borders_are_like_those_inside(runs):
    untiled, tiled = runs
    assert border_area_ratio(tiled) == pytest.approx(border_area_ratio(untiled), rel=0.05)
    assert border_area_ratio(tiled) > 0.85
    assert border_shape_ratio(tiled) == pytest.approx(border_shape_ratio(untiled), rel=0.05)
    assert border_shape_ratio(tiled) > 0.85


def test_runs_are_deterministic_and_independent_of_workers(tissue):
    params = SuperpixelParams(step=32, tile_size=TILE)
    first = superpixel_array(tissue, params)
    engine = SuperpixelEngine(ArrayRegions(tissue), params)
    second = np.zeros_like(first)
    for block in engine.blocks(workers=2):
        t = block.tile
        second[t.top : t.top + t.height, t.left : t.left + t.width] = block.labels
    np.testing.assert_array_equal(first, second)


def test_mask_limits_superpixels_to_it(tissue):
    mask = np.zeros(tissue.shape[:2], bool)
    mask[100:600, 200:900] = True
    labels = superpixel_array(tissue, SuperpixelParams(step=32, tile_size=TILE), mask=mask)
    assert (labels[~mask] == 0).all()
    assert (labels[mask] > 0).mean() > 0.99


def test_windows_stay_bounded_whatever_the_image_size():
    class Recording(ArrayRegions):
        largest = 0

        def read(self, top, left, height, width):
            Recording.largest = max(Recording.largest, height * width)
            return super().read(top, left, height, width)

    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(1500, 1700, 3), dtype=np.uint8)
    params = SuperpixelParams(step=16, tile_size=256)
    list(SuperpixelEngine(Recording(image), params).blocks())
    side = params.tile_size + 2 * max(params.cluster_margin, MAX_ASSIGN_GROWTH * params.assign_margin)
    assert Recording.largest <= side * side


def test_superpixels_follow_nuclei_better_than_a_square_grid(monuseg_dir):
    from slidelabel.pipelines.segmentation_quality import boundary_recall, truth_segments

    name = sorted((monuseg_dir / "images").glob("*.png"))[0].name
    rgb = imread(monuseg_dir / "images" / name)[..., :3]
    truth = truth_segments(imread(monuseg_dir / "masks" / name) > 0)
    labels = superpixel_array(rgb, SuperpixelParams(step=20))
    grid = (np.arange(1000)[:, None] // 20) * 50 + np.arange(1000)[None, :] // 20
    assert boundary_recall(labels, truth) > boundary_recall(grid, truth) + 0.2


@pytest.mark.parametrize(("start", "stop", "expected"), [(0, 100, (0, 5)), (10, 30, (0, 1)), (-50, 5, (0, 0)), (190, 400, (9, 10))])
def test_seed_ranges_name_the_seeds_inside_a_span(start, stop, expected):
    grid = SeedGrid(step=20, height=200, width=200)  # seeds at 10, 30, ..., 190
    assert grid.seed_rows(start, stop) == expected


@pytest.mark.parametrize("bad", [dict(step=1), dict(step=8, compactness=0), dict(step=8, iterations=0),
                                 dict(step=64, tile_size=100), dict(step=8, cluster_scale=5)])
def test_bad_parameters_are_refused_with_the_value(bad):
    with pytest.raises(ValueError, match=str(list(bad.values())[-1])):
        SuperpixelParams(**bad)
