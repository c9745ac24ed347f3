"""Twenty-third attack: a large JSON value outside the polygons of a segment GeoJSON cost ~30x its
size (100 MB of empty lists under a top-level key: 3 GB, 130 s; in one Feature's properties:
3 GB), read again after each chunk; class names were unbounded (60k names of 1,000 characters: a
58 MB manifest) and Points were never counted. Values outside the coordinates are now bounded
before json parses them, the reading is linear, and classes and skipped Features are bounded.

The bounds are made small here so that each refusal comes from a file of a few kB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers import geojson_stream
from slidelabel.pipelines.importers.geojson import read_geojson

SQUARE = [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]


def feature(properties: dict | None = None, coordinates: list = SQUARE, kind: str = "Polygon") -> dict:
    return {"type": "Feature", "geometry": {"type": kind, "coordinates": coordinates}, "properties": properties or {}}


def write(path: Path, features: list, head: str = '"type": "FeatureCollection", ', tail: str = "]}") -> Path:
    path.write_text("{" + head + '"features": [' + ",".join(map(json.dumps, features)) + tail)
    return path


@pytest.fixture
def small_bounds(monkeypatch):
    """Values outside the coordinates at most 2,000 characters, Features 8,000, read 512 at a time."""
    monkeypatch.setattr(geojson_stream, "MAX_VALUE_CHARS", 2_000)
    monkeypatch.setattr(geojson_stream, "MAX_FEATURE_CHARS", 8_000)
    monkeypatch.setattr(geojson_stream, "_CHUNK_CHARS", 512)


def junk(n: int) -> list:
    return [[] for _ in range(n)]


def test_a_large_top_level_value_is_refused_naming_its_key(tmp_path, small_bounds):
    path = write(tmp_path / "top.geojson", [feature()], head='"type": "FeatureCollection", "junk": %s, '
                 % json.dumps(junk(3_000)))
    with pytest.raises(ParameterError, match="top-level key 'junk'"):
        read_geojson(path)
    small = write(tmp_path / "small.geojson", [feature()], head='"junk": %s, ' % json.dumps(junk(100)))
    assert read_geojson(small).polygons.size == 1


def test_large_properties_are_refused_naming_the_feature(tmp_path, small_bounds):
    # 3,000 characters of properties: past their bound, within a Feature's.
    features = [feature({"classification": {"name": "Tumor"}}), feature({"x": junk(1_000)})]
    with pytest.raises(ParameterError, match="feature 1's properties"):
        read_geojson(write(tmp_path / "props.geojson", features))


def test_a_feature_json_reads_whole_is_bounded(tmp_path, small_bounds):
    # A z sends the Feature to json whole; a non-object element of the list is read whole too.
    with_z = feature({"x": junk(3_000)}, [[[0, 0, 1], [10, 0, 1], [10, 10, 1], [0, 0, 1]]])
    with pytest.raises(ParameterError, match="feature 1: more than 8,000 characters"):
        read_geojson(write(tmp_path / "z.geojson", [feature(), with_z]))
    with pytest.raises(ParameterError, match="feature 2: more than 2,000 characters"):
        read_geojson(write(tmp_path / "list.geojson", [feature(), feature(), junk(3_000)]))
    # A Feature that is text past the bound without an end is refused as long, before the file's end.
    path = tmp_path / "open.geojson"
    path.write_text('{"features": [' + json.dumps(feature())[:-1] + ', "x": "' + "a" * 20_000)
    with pytest.raises(ParameterError, match="feature 0: more than"):
        read_geojson(path)


def test_broken_json_is_still_named_as_broken(tmp_path, small_bounds):
    path = tmp_path / "broken.geojson"
    path.write_text('{"features": [{"type": "Feature", "geometry": nul}, ' + ",".join([json.dumps(feature())] * 200)
                    + "]}")
    with pytest.raises(ParameterError, match="not valid GeoJSON"):
        read_geojson(path)


def test_a_large_feature_is_read_in_few_chunks(tmp_path, monkeypatch):
    # A 60,000-point polygon (about 700 kB) read 512 characters at a time: each read doubles what is
    # held, so the file is read in tens of calls, not once per 512 characters with all of it parsed again.
    monkeypatch.setattr(geojson_stream, "_CHUNK_CHARS", 512)
    ring = [[k % 1000 + 0.5, k // 1000 + 0.25] for k in range(60_000)]
    ring = [[0, 0], *ring, [0, 0]]
    path = write(tmp_path / "big.geojson", [feature({"classification": "Tumor"}, [ring]), feature()])
    reads = []
    more = geojson_stream.Reader._more
    monkeypatch.setattr(geojson_stream.Reader, "_more", lambda self: reads.append(1) or more(self))
    read = read_geojson(path)
    assert read.polygons.size == 2 and read.class_names == ["Tumor"]
    assert len(reads) < 40, len(reads)


def test_class_names_are_bounded(tmp_path, monkeypatch):
    long_name = feature({"classification": {"name": "x" * 101}})
    with pytest.raises(ParameterError, match="feature 1's class name has 101 characters"):
        read_geojson(write(tmp_path / "long.geojson", [feature(), long_name]))
    assert read_geojson(write(tmp_path / "ok.geojson", [feature({"classification": "x" * 100})])).class_names
    names = [feature({"classification": f"class {k}"}) for k in range(256)]
    with pytest.raises(ParameterError, match="more than 255 classes.*feature 255"):
        read_geojson(write(tmp_path / "many.geojson", names))
    assert len(read_geojson(write(tmp_path / "255.geojson", names[:255])).class_names) == 255


def test_skipped_features_count_toward_the_polygon_bound(tmp_path):
    points = [feature(coordinates=[k, 1], kind="Point") for k in range(50)]
    path = write(tmp_path / "points.geojson", points, tail=", {broken")
    with pytest.raises(ParameterError, match="more than 10 polygons"):
        read_geojson(path, max_polygons=10)


def test_an_integer_of_a_million_digits_is_invalid_geojson(tmp_path):
    """Twenty-fourth attack, low: a 1,000,000-digit integer in a Feature's properties failed the
    import job as "internal error" (Python's int conversion limit, a ValueError)."""
    features = [feature(), {**feature(), "properties": {"n": 0}}]
    path = tmp_path / "digits.geojson"
    text = json.dumps({"type": "FeatureCollection", "features": features})
    path.write_text(text.replace('"n": 0', '"n": ' + "9" * 1_000_000))
    with pytest.raises(ParameterError, match="not valid GeoJSON.*feature 1.*digits"):
        read_geojson(path)
