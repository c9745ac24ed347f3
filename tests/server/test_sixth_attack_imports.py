"""Sixth attack on the imports: a multipart boundary over 256 bytes was a 500 on every upload
route (F4); the annotation import parsed a body sent as text/plain without the checks JSON bodies
get, so deep nesting, a lone surrogate or NUL were 500s or stored (F1); a segment import ended as
"internal error" on a GeoJSON nested 100,000 deep or whose only polygon had NaN coordinates (F5);
the scratch rows of a killed feature import stayed on disk (F12)."""

from __future__ import annotations

import io
import json

import h5py
import pytest

from slidelabel.errors import ParameterError
from slidelabel.services import job_runs
from slidelabel.services.segment_import import import_segments
from slidelabel.services.slide_jobs import sweep_unfinished_outputs
from slidelabel.services.uploads import UploadReceiver
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState

LONG_BOUNDARY = "multipart/form-data; boundary=" + "a" * 300
DEEP = b'{"type":"FeatureCollection","features":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
NAN = (b'{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Polygon",'
       b'"coordinates":[[[0,0],[NaN,0],[1e999,1],[0,0]]]},"properties":{}}]}')


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
    assert sorted(sweep_unfinished_outputs(app.state.database, settings.data_dir)) == sorted([rows, unfinished])
    assert list(features.iterdir()) == []


def test_a_geojson_nested_too_deep_fails_with_a_message(cmu_slide, tmp_path):
    deep = tmp_path / "deep.geojson"
    deep.write_bytes(DEEP)
    with pytest.raises(ParameterError, match=r"deep\.geojson is not valid GeoJSON \(nested .* deep"):
        import_segments(cmu_slide, deep, tmp_path / "out")  # before: RecursionError, "internal error"


@pytest.mark.parametrize("coordinates", [b"[[[0,0],[NaN,0],[1e999,1],[0,0]]]", b"[[[0,0],[10,0],[20,0],[0,0]]]"])
def test_a_geojson_without_a_usable_polygon_fails_with_a_message(cmu_slide, tmp_path, coordinates):
    path = tmp_path / "nan.geojson"
    path.write_bytes(b'{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Polygon",'
                     b'"coordinates":' + coordinates + b'},"properties":{}}]}')
    with pytest.raises(ParameterError, match=r"nan\.geojson: no usable polygon \(1 invalid geometry\).*finite"):
        import_segments(cmu_slide, path, tmp_path / "out")  # before: IndexError from numpy, "internal error"


@pytest.mark.parametrize("body, message", [(DEEP, "nested too deep"), (NAN, "no usable polygon")])
def test_the_segment_import_job_fails_with_the_message_not_an_internal_error(app, client, sender, project, slide_row,
                                                                           admin_headers, body, message):
    response = client.post(f"/api/v1/projects/{project['id']}/slides/{slide_row}/segments", headers=admin_headers,
                           files={"file": ("cells.geojson", body, "application/geo+json")})
    assert response.status_code == 202, response.text
    job_runs.run(app.state.database, app.state.settings, response.json()["id"])
    with app.state.database.session() as session:
        job = session.get(Job, response.json()["id"])
        assert job.state == JobState.failed and message in job.message and "internal error" not in job.message


def _one_cell_imported(app, client, project, slide_row, admin_headers) -> str:
    """Import one square cell as the slide's segments; the slide's URL."""
    base = f"/api/v1/projects/{project['id']}/slides/{slide_row}"
    square = [[[100, 100], [300, 100], [300, 300], [100, 300], [100, 100]]]
    cells = json.dumps({"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square}, "properties": {}}]}).encode()
    response = client.post(base + "/segments", headers=admin_headers, files={"file": ("cells.geojson", cells)})
    job_runs.run(app.state.database, app.state.settings, response.json()["id"])
    return base


def test_the_attack_feature_file_fails_its_job_at_once_and_leaves_no_scratch(app, client, sender, settings, project,
                                                                             slide_row, admin_headers):
    base = _one_cell_imported(app, client, project, slide_row, admin_headers)
    bomb = io.BytesIO()
    with h5py.File(bomb, "w") as file:  # the attack's 2,064 bytes: (1, 2,000,000) float32 never written
        file.create_dataset("coords", data=[[0, 0]]).attrs["patch_size_level0"] = 512
        file.create_dataset("features", shape=(1, 2_000_000), dtype="float32", chunks=(1, 1 << 20),
                            compression="gzip", fillvalue=0.0)
    response = client.post(base + "/features/imported-bomb", headers=admin_headers,
                           files={"file": ("bomb.h5", bomb.getvalue())})
    assert response.status_code == 202, response.text
    job_runs.run(app.state.database, app.state.settings, response.json()["id"])  # before: 18.5 GB, OOM-killed
    with app.state.database.session() as session:
        job = session.get(Job, response.json()["id"])
        assert job.state == JobState.failed and "2,000,000 features per row" in job.message, job.message
    features = ProjectFiles(settings.data_dir, project["id"]).features(slide_row, "imported-bomb").parent
    assert not list(features.glob(".*"))


def test_a_feature_files_chunks_are_held_to_the_servers_own_decoding_limit(app, client, sender, project, slide_row,
                                                                            admin_headers):
    """Nineteenth attack: an HDF5 chunk is decoded whole to read any row of it (one of 1.17 GB in a
    1.2 MB file took the worker to 1.6 GB). The job holds it to the server's
    SLIDELABEL_MAX_DECODED_MB, not the default's 128 MB."""
    base = _one_cell_imported(app, client, project, slide_row, admin_headers)
    patches = io.BytesIO()
    with h5py.File(patches, "w") as file:  # one 4 MB chunk: within the default, past a server's 2 MB
        file.create_dataset("coords", data=[[0, 0]]).attrs["patch_size_level0"] = 512
        file.create_dataset("features", shape=(1, 16), maxshape=(None, 16), dtype="float32", chunks=(65_536, 16),
                            compression="gzip", fillvalue=0.0)
    response = client.post(base + "/features/imported-chunk", headers=admin_headers,
                           files={"file": ("chunk.h5", patches.getvalue())})
    assert response.status_code == 202, response.text
    settings = app.state.settings.model_copy(update={"max_decoded_mb": 2})
    job_runs.run(app.state.database, settings, response.json()["id"])
    with app.state.database.session() as session:
        job = session.get(Job, response.json()["id"])
        assert job.state == JobState.failed and "4 MiB decoded each, more than the 2 MiB" in job.message, job.message
