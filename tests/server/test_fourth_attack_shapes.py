"""Fourth attack on issue 13: a viewer's one polygon could take gigabytes. POST .../shapes/cover
(and the smart tool's outlines) filled a polygon with every row crossing of its edges in memory at
once: 20,000 random vertices over a 4,000-row window (a 700 KB body) made 27 million crossings,
2 GB and 3.8 s; and a tiny ``downsample`` counted a whole-slide shape at the working level, the
window of the whole label map held several times over."""

from __future__ import annotations

import shutil
import tracemalloc

import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.services import shapes
from slidelabel.services.tiles import label_map, superpixel_table
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Role


def _zigzag(vertices: int, height: int, width: int) -> np.ndarray:
    """(V, 2) random vertices over a ``height x width`` grid: a self-crossing scribble whose edges
    span a third of the rows on average."""
    rng = np.random.default_rng(0)
    return np.c_[rng.uniform(0, width, vertices), rng.uniform(0, height, vertices)]


def test_a_polygon_with_too_many_row_crossings_is_refused_before_it_is_filled():
    tracemalloc.start()
    try:
        with pytest.raises(ParameterError, match="fewer turns"):
            shapes.rasterise_polygon(_zigzag(shapes.MAX_VERTICES, 4000, 3000), 4000, 3000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10e6


def test_the_crossings_are_filled_in_chunks_with_the_same_pixels(monkeypatch):
    polygon = _zigzag(2000, 3000, 800)  # 2 million crossings, under the limit
    tracemalloc.start()
    try:
        chunked = shapes.rasterise_polygon(polygon, 3000, 800)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 60e6  # the grid (2.4 MB twice) and one chunk; 160 MB when filled at once
    monkeypatch.setattr(shapes, "CROSSINGS_CHUNK", shapes.MAX_CROSSINGS)
    np.testing.assert_array_equal(chunked, shapes.rasterise_polygon(polygon, 3000, 800))
    assert 0.05 < chunked.mean() < 0.95



def test_a_whole_slide_shape_is_counted_on_a_level_that_fits_the_pixel_budget(monkeypatch, cmu_superpixels):
    labels, table = label_map(cmu_superpixels), superpixel_table(cmu_superpixels)
    whole = np.array([[0, 0], [2220, 0], [2220, 2967], [0, 2967]], float)
    monkeypatch.setattr(shapes, "MAX_COVER_PX", 2**18)
    found = shapes.covered_superpixels(labels, table.bbox_level0, table.area_px, whole, downsample=1e-9)
    height, width = labels.shapes[found.level]
    assert found.level > 0 and height * width <= 2**18
    assert found.superpixels.size > 0.9 * table.ids.size


def test_the_cover_route_answers_422_for_a_scribble_and_the_coarser_level_for_a_huge_window(
        app, client, member_headers, project, slide_row, cmu_superpixels, monkeypatch):
    shutil.copytree(cmu_superpixels, ProjectFiles(app.state.settings.data_dir, project["id"]).superpixels(slide_row))
    url = f"/api/v1/projects/{project['id']}/slides/{slide_row}/shapes/cover"
    viewer = member_headers(Role.viewer)
    monkeypatch.setattr(shapes, "MAX_CROSSINGS", 2**16)
    scribble = client.post(url, headers=viewer, json={"polygon_level0": _zigzag(2000, 2967, 2220).tolist()})
    assert scribble.status_code == 422, scribble.text
    assert "fewer turns" in scribble.text
    monkeypatch.setattr(shapes, "MAX_COVER_PX", 2**18)
    whole = client.post(url, headers=viewer, json={"polygon_level0": [[0, 0], [2220, 0], [2220, 2967], [0, 2967]],
                                                   "downsample": 1e-9})
    assert whole.status_code == 200, whole.text
    assert whole.json()["level"] > 0
