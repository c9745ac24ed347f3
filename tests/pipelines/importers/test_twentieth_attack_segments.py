"""Twentieth attack: a GeoJSON of millions of tiny polygons was read whole before MAX_SEGMENTS was
checked (9 M squares, 1 GB: worker RSS 2.95 GB), and N squares each covering the whole slide were
each drawn over the whole slide (2,000: 13.2 Gpx). Polygons and vertices are now counted as they are
read, and the drawing work is bounded before any pixel is drawn."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers import geojson as geojson_module
from slidelabel.pipelines.importers import segments
from slidelabel.pipelines.importers.geojson import read_geojson
from slidelabel.pipelines.importers.segments import GeoJsonSource, ImportOptions, SlideGeometry

SLIDE = SlideGeometry(2220, 2967)


def square(x0: float, y0: float, x1: float, y1: float) -> dict:
    return {"type": "Feature", "geometry": {"type": "Polygon",
                                            "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]}}


def write(path: Path, features: list[dict], tail: str = "]}") -> Path:
    """A FeatureCollection; ``tail`` other than "]}" leaves the file broken after the features."""
    path.write_text('{"type": "FeatureCollection", "features": [' + ",".join(map(json.dumps, features)) + tail)
    return path


def tiny_squares(n: int) -> list[dict]:
    return [square(k % 2000, k // 2000, k % 2000 + 1, k // 2000 + 1) for k in range(n)]


def test_polygon_count_is_bounded_while_reading(tmp_path):
    # Broken JSON after 50 squares: a reader that stops at the bound never reaches it.
    path = write(tmp_path / "many.geojson", tiny_squares(50), tail=", {broken")
    with pytest.raises(ParameterError, match="more than 10 polygons") as error:
        read_geojson(path, max_polygons=10)
    assert "not valid GeoJSON" not in str(error.value)
    with pytest.raises(ParameterError, match="not valid GeoJSON"):  # without the bound it reads on
        read_geojson(path)


def test_polygon_count_bound_counts_slow_path_features_too(tmp_path):
    # A z coordinate sends a Feature through json's parser rather than the fast path.
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        [[k, 0, 1], [k + 1, 0, 1], [k + 1, 1, 1], [k, 1, 1]]]}} for k in range(30)]
    path = write(tmp_path / "z.geojson", features, tail=", {broken")
    with pytest.raises(ParameterError, match="more than 5 polygons"):
        read_geojson(path, max_polygons=5)


def test_vertex_count_is_bounded_while_reading(tmp_path):
    path = write(tmp_path / "vertices.geojson", tiny_squares(50), tail=", {broken")
    with pytest.raises(ParameterError, match="more than 100 vertices") as error:
        read_geojson(path, max_vertices=100)
    assert "simplif" in str(error.value)


def test_source_refuses_past_max_segments_before_reading_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(segments, "MAX_SEGMENTS", 20)
    path = write(tmp_path / "cells.geojson", tiny_squares(40), tail=", {broken")
    with pytest.raises(ParameterError, match="more than 20 polygons"):
        GeoJsonSource(path, SLIDE, ImportOptions())


def test_read_polygons_unchanged_and_within_bounds(tmp_path, monkeypatch):
    """Small batches (several parts gathered into the result) give what one batch gives."""
    features = tiny_squares(7) + [square(5.5, 6.25, 40, 30)] + [{"type": "Feature", "geometry": {
        "type": "MultiPolygon", "coordinates": [[[[0, 0], [9, 0], [9, 9]], [[1, 1], [2, 1], [2, 2]]],
                                                [[[20, 20], [30, 20], [30, 30]]]]}}]
    path = write(tmp_path / "mixed.geojson", features)
    whole = read_geojson(path, max_polygons=9, max_vertices=7 * 5 + 5 + 9)
    monkeypatch.setattr(geojson_module, "_BATCH", 2)
    batched = read_geojson(path)
    for name in ("xy_V_2", "ring_end_R", "polygon_ring_end_P", "bbox_P_4"):
        np.testing.assert_array_equal(getattr(whole.polygons, name), getattr(batched.polygons, name))
    np.testing.assert_array_equal(whole.feature_index_P, batched.feature_index_P)
    assert whole.polygons.size == 9
    np.testing.assert_array_equal(whole.polygons.bbox_P_4[8], [0, 0, 30, 30])
    np.testing.assert_array_equal(whole.polygons.bbox_P_4[7], [5.5, 6.25, 40, 30])


def test_whole_slide_layers_are_refused_before_drawing(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(segments, "fill_polygons", lambda *a, **k: drawn.append(1) or 0)
    path = write(tmp_path / "layers.geojson", [square(-d, -d, SLIDE.width + d, SLIDE.height + d) for d in range(2000)])
    with pytest.raises(ParameterError, match="layers") as error:
        GeoJsonSource(path, SLIDE, ImportOptions())
    assert "2,000" in str(error.value) and "downsample" in str(error.value)
    assert not drawn
    # At downsample 16 the same polygons cost 256 times less, and are drawn.
    assert GeoJsonSource(path, SLIDE, ImportOptions(downsample=16)).n_raw == 2000


def test_a_few_region_layers_pass(tmp_path):
    regions = [square(0, 0, SLIDE.width, SLIDE.height), square(100, 100, 2000, 2800), square(500, 500, 1500, 1500)]
    source = GeoJsonSource(write(tmp_path / "regions.geojson", regions), SLIDE, ImportOptions())
    assert source.n_raw == 3


def test_many_vertices_across_many_rows_are_refused(tmp_path):
    # A comb of 12,000 vertices, every edge spanning a tall slide: each of its 200,000 rows crosses them all
    # (2.4 G edge tests; too few edges side by side for the self-crossing check's bound).
    slide, n = SlideGeometry(500, 200_000), 6_000
    x = np.repeat(np.linspace(0, slide.width, n), 2)
    y = np.tile([0, slide.height, slide.height, 0], n // 2)
    comb = {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [np.stack([x, y], 1).tolist()]}}
    with pytest.raises(ParameterError, match="vertices"):
        GeoJsonSource(write(tmp_path / "comb.geojson", [comb]), slide, ImportOptions(even_odd=True))


def test_traced_nuclei_pass(tmp_path, monuseg_pair):
    _, mask = monuseg_pair(1)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [
        c[:, 0, :].tolist() + [c[0, 0].tolist()]]}} for c in contours if len(c) >= 3]
    source = GeoJsonSource(write(tmp_path / "nuclei.geojson", features), SlideGeometry(*mask.shape[::-1]),
                           ImportOptions(even_odd=True))
    assert source.n_raw == len(features) > 100


def test_tile_buckets_match_every_polygons_tiles():
    """The leaner bucketing (int32 cells, offsets only for polygons over several tiles) gives each
    tile exactly the polygons whose bounding box reaches it, ascending."""
    from slidelabel.pipelines.importers.polygons import tile_buckets

    rng = np.random.default_rng(0)
    low = rng.uniform(-300, 1300, (400, 2))
    bbox = np.concatenate([low, low + rng.exponential([[20, 20]] * 200 + [[400, 400]] * 200)], 1)
    tiles_x, tiles_y, size = 5, 4, 256
    starts, polygons = tile_buckets(bbox, downsample=1.0, tile_size=size, tiles_x=tiles_x, tiles_y=tiles_y)
    for t in range(tiles_x * tiles_y):
        column, row = t % tiles_x, t // tiles_x
        x = np.clip(np.floor(bbox[:, 0]) // size, 0, tiles_x - 1), np.clip(np.ceil(bbox[:, 2]) // size, 0, tiles_x - 1)
        y = np.clip(np.floor(bbox[:, 1]) // size, 0, tiles_y - 1), np.clip(np.ceil(bbox[:, 3]) // size, 0, tiles_y - 1)
        expected = np.flatnonzero((x[0] <= column) & (column <= x[1]) & (y[0] <= row) & (row <= y[1]))
        np.testing.assert_array_equal(polygons[starts[t] : starts[t + 1]], expected)
