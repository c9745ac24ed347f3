"""The GeoJSON reader's fast path (coordinates parsed from bytes) gives what json gives: the same
polygons, classes and skips, on traced MoNuSeg nuclei and on Features it must hand to json."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from slidelabel.pipelines.importers import json_coordinates
from slidelabel.pipelines.importers.geojson import read_geojson

RING = [[0, 0], [10.5, 0], [10.5, 10.25], [0, 10], [0, 0]]


def polygon(coordinates: list, properties: dict | None = None, kind: str = "Polygon") -> dict:
    return {"type": "Feature", "geometry": {"type": kind, "coordinates": coordinates}, "properties": properties or {}}


def nuclei_features(monuseg_pair) -> list[dict]:
    """Outlines of the nuclei of a MoNuSeg mask, at quarter-pixel coordinates, classed by parity."""
    _, mask = monuseg_pair(1)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    return [polygon([(c[:, 0, :] * 0.25 + 1000.25).round(2).tolist() + [(c[0, 0] * 0.25 + 1000.25).tolist()]],
                    {"classification": {"name": "Tumor" if k % 2 else "Stroma"}})
            for k, c in enumerate(contours) if len(c) >= 3]


def odd_features() -> list[dict]:
    """Features the fast path must leave to json (and a few it must take)."""
    return [
        polygon([RING], {"classification": {"name": "Tumor", "color": [1, 2, 3]}, "coordinates": [1, 2]}),
        polygon([[[1e1, 2], [30, 2], [30, 40], [1e1, 2]]]),  # an exponent
        polygon([[[-0, -0.0], [30, 2], [30, 40], [-0.0, 2]]]),  # signed zeros
        polygon([[[1, 2, 3], [30, 2, 3], [30, 40, 3]]]),  # a z
        polygon([RING, [[2, 2], [4, 2], [4, 4]]], {"classification": "Stroma"}),  # a hole
        polygon([[RING], [[[20, 20], [30, 20], [30, 30]]]], {"classification": {"names": ["A", "B"]}}, "MultiPolygon"),
        polygon([]),
        polygon([[[1, 2], [3, 4]]]),  # a ring of 2 points
        polygon([[[1.123456789012345678, 2], [3, 4], [5, 9]]]),  # more digits than a double holds
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}},
        {"type": "Feature", "geometry": None, "properties": {"note": 'a "coordinates" in a string'}},
        polygon([[RING]]),  # nested as a MultiPolygon, typed Polygon
        polygon([[[0.1, 0.2], [0.30000000000000004, 0.2], [0.3, 0.7]]]),
        {"geometry": {"coordinates": [RING], "type": "Polygon"}, "type": "Feature", "id": "keys in another order"},
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[[1, 2], [3, 4], [5, 6]]], "bbox": [1, 2]}},
        {"type": "NotAFeature", "geometry": {"type": "Polygon", "coordinates": [RING]}},
    ]


def assert_same(fast, slow) -> None:
    for name in ("xy_V_2", "ring_end_R", "polygon_ring_end_P", "bbox_P_4"):
        np.testing.assert_array_equal(getattr(fast.polygons, name), getattr(slow.polygons, name))
    np.testing.assert_array_equal(np.signbit(fast.polygons.xy_V_2), np.signbit(slow.polygons.xy_V_2))
    np.testing.assert_array_equal(fast.feature_index_P, slow.feature_index_P)
    np.testing.assert_array_equal(fast.class_P, slow.class_P)
    assert (fast.class_names, fast.features, fast.skipped) == (slow.class_names, slow.features, slow.skipped)


def test_fast_path_reads_what_json_reads(monuseg_pair, tmp_path, monkeypatch):
    features = nuclei_features(monuseg_pair) + odd_features()
    collection = {"type": "FeatureCollection", "features": features}
    ascii_path = tmp_path / "cells.geojson"
    ascii_path.write_text(json.dumps(collection, indent=1))
    # One non-ASCII character sends the whole file the json way.
    slow_path = tmp_path / "cells-json.geojson"
    slow_path.write_text(json.dumps({**collection, "name": "noyaux é"}, ensure_ascii=False), encoding="utf-8")
    scanned = []
    scan = json_coordinates.FeatureScanner.scan

    def counted(self, codes, start):
        answer = scan(self, codes, start)
        scanned.append(answer[0])
        return answer

    monkeypatch.setattr(json_coordinates.FeatureScanner, "scan", counted)
    fast = read_geojson(ascii_path)
    fast_taken = scanned.count(json_coordinates.DONE)
    scanned.clear()
    slow = read_geojson(slow_path)
    assert fast_taken >= len(features) - len(odd_features()) and not scanned
    assert fast.polygons.size > 100 and fast.skipped == {"empty geometry": 2, "invalid geometry": 2,
                                                          "Point geometry (not a polygon)": 1,
                                                          "not a GeoJSON Feature": 1}
    assert_same(fast, slow)
