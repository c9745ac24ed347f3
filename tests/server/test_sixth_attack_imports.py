"""Sixth attack on the imports: a multipart boundary over 256 bytes was a 500 on every upload
route (F4); the annotation import parsed a body sent as text/plain without the checks JSON bodies
get, so deep nesting, a lone surrogate or NUL were 500s or stored (F1); a segment import ended as
"internal error" on a GeoJSON nested 100,000 deep or whose only polygon had NaN coordinates (F5);
the scratch rows of a killed feature import stayed on disk (F12)."""

from __future__ import annotations

import json

import pytest

from slidelabel.errors import ParameterError
from slidelabel.services.segment_import import import_segments
from slidelabel.services.slide_jobs import sweep_unfinished_features
from slidelabel.services.uploads import UploadReceiver
from slidelabel.store.layout import ProjectFiles

LONG_BOUNDARY = "multipart/form-data; boundary=" + "a" * 300


def test_a_boundary_past_256_bytes_is_refused_with_a_message(tmp_path):
    with pytest.raises(ParameterError, match="not valid multipart/form-data.*[Bb]oundary"):
        UploadReceiver(LONG_BOUNDARY, tmp_path, limit_bytes=1 << 20, declared_bytes=3)


@pytest.mark.parametrize("path", ["/slides/upload", "/slides/{s}/sources", "/slides/{s}/features/imported-x"])
def test_a_boundary_past_256_bytes_is_a_422_on_the_upload_routes(client, project, slide_row, admin_headers, path):
    url = f"/api/v1/projects/{project['id']}" + path.format(s=slide_row)
    response = client.post(url, content=b"abc", headers={**admin_headers, "Content-Type": LONG_BOUNDARY})
    assert response.status_code == 422 and "multipart" in response.json()["detail"]  # before: 500


def _collection(name: str) -> bytes:
    polygon = [[[0, 0], [2000, 0], [2000, 2000], [0, 2000], [0, 0]]]
    return ('{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Polygon",'
            '"coordinates":%s},"properties":{"classification":{"name":"%s"}}}]}' % (json.dumps(polygon), name)).encode()


@pytest.mark.parametrize("content_type", ["text/plain", None])
@pytest.mark.parametrize("body, why", [
    (b'{"type":"FeatureCollection","features":' + b"[" * 5000 + b"]" * 5000 + b"}", "nested"),  # before: 500
    (_collection(r"\ud800x"), "Unicode"),  # before: 500 (SQLite cannot encode it)
    (_collection(r"nul\u0000x"), "NUL"),  # before: 200, the category "nul\x00x" created
    (b'{"type":"FeatureCollection","features":[],"x":NaN}', "not a JSON number"),
    (b'{"type": "FeatureCollection", "features": [', "not valid JSON"),
])
def test_annotation_import_checks_the_body_whatever_its_content_type(client, project, slide_row, admin_headers,
                                                                     content_type, body, why):
    headers = {**admin_headers, **({"Content-Type": content_type} if content_type else {})}
    response = client.post(f"/api/v1/projects/{project['id']}/slides/{slide_row}/import?create_categories=true",
                           content=body, headers=headers)
    assert response.status_code == 422, response.text
    assert why in response.json()["detail"] and "GeoJSON" in response.json()["detail"]


def test_the_worker_start_sweep_removes_scratch_rows_of_killed_imports(app, project, slide_row, settings):
    features = ProjectFiles(settings.data_dir, project["id"]).features(slide_row, "imported-bomb").parent
    features.mkdir(parents=True)
    rows, unfinished = features / ".imported-bomb.0123456789abcdef.rows", features / ".color.zarr.0a1b.tmp"
    rows.write_bytes(b"\0" * 4096)  # 3.27 GB (sparse) in the attack, left by each of 3 OOM kills
    (unfinished / "c").mkdir(parents=True)
    assert sorted(sweep_unfinished_features(app.state.database, settings.data_dir)) == sorted([rows, unfinished])
    assert list(features.iterdir()) == []


def test_a_geojson_nested_too_deep_fails_with_a_message(cmu_slide, tmp_path):
    deep = tmp_path / "deep.geojson"
    deep.write_bytes(b'{"type":"FeatureCollection","features":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    with pytest.raises(ParameterError, match=r"deep\.geojson is not valid GeoJSON \(nested .* deep"):
        import_segments(cmu_slide, deep, tmp_path / "out")  # before: RecursionError, "internal error"


@pytest.mark.parametrize("coordinates", [b"[[[0,0],[NaN,0],[1e999,1],[0,0]]]", b"[[[0,0],[10,0],[20,0],[0,0]]]"])
def test_a_geojson_without_a_usable_polygon_fails_with_a_message(cmu_slide, tmp_path, coordinates):
    path = tmp_path / "nan.geojson"
    path.write_bytes(b'{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Polygon",'
                     b'"coordinates":' + coordinates + b'},"properties":{}}]}')
    with pytest.raises(ParameterError, match=r"nan\.geojson: no usable polygon \(1 invalid geometry\).*finite"):
        import_segments(cmu_slide, path, tmp_path / "out")  # before: IndexError from numpy, "internal error"
