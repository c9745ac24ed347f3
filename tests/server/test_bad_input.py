"""Malformed input is a 4xx with a short message, never a 500: ids beyond any id, numbers that
are not JSON, broken Unicode, long names, undecodable file names, bodies past the limit."""

from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pytest
import tifffile

JSON = {"content-type": "application/json"}


@pytest.fixture
def anything(client):
    """The client answering 500s instead of raising the server's exceptions."""
    client.raise_server_exceptions = False
    return client


@pytest.mark.parametrize("path", ["/projects/{huge}", "/projects/{p}/jobs/{huge}", "/projects/{p}/jobs?limit={huge}",
                                  "/projects/{p}/slides/{huge}/tiles/0/0/0.jpg"])
def test_ids_beyond_any_id_are_not_a_500(anything, admin_headers, project, path):
    url = "/api/v1" + path.format(p=project["id"], huge=2**63)
    assert anything.get(url, headers=admin_headers).status_code in (404, 422)


@pytest.mark.parametrize("body", [b'{"username": NaN, "password": "x"}', b'{"username": "a", "password": Infinity}',
                                  b'{"username": "\\ud800", "password": "x"}', b'{"username": "a\\u0000", "password": "x"}',
                                  b'{"username": ' + b"[" * 5000 + b"]" * 5000 + b', "password": "x"}',
                                  b'{"username": ' + b"9" * 5000 + b', "password": "x"}'])
def test_bodies_that_are_not_plain_json_are_a_422_even_on_login(anything, body):
    assert anything.post("/api/v1/auth/login", content=body, headers=JSON).status_code == 422


def test_a_422_does_not_echo_a_large_input(anything, admin_headers):
    response = anything.post("/api/v1/projects", headers=admin_headers, json={"name": "x" * 100_000})
    assert response.status_code == 422 and len(response.content) < 2_000


def test_bodies_past_the_limit_are_a_413(app, anything, admin_headers):
    body = b'{"name": "' + b"x" * (app.state.settings.max_body_mb << 20) + b'"}'
    assert anything.post("/api/v1/projects", headers={**admin_headers, **JSON}, content=body).status_code == 413


def test_a_long_upload_name_is_a_422(anything, admin_headers, project):
    response = anything.post(f"/api/v1/projects/{project['id']}/slides/upload", headers=admin_headers,
                             files={"file": ("a" * 240 + ".svs", b"not a slide", "image/tiff")})
    assert response.status_code == 422 and "name" in response.json()["detail"]


def test_an_undecodable_file_name_is_a_warning_not_a_failure(anything, admin_headers, project, settings, cmu_slide):
    folder = settings.slide_folders[0]
    shutil.copy(cmu_slide, folder / "cmu.svs")
    with open(os.path.join(os.fsencode(folder), b"bad-\xff.svs"), "wb") as file:
        file.write(b"junk")
    listing = anything.get("/api/v1/slide-folders", headers=admin_headers)
    assert listing.status_code == 200, listing.text
    assert [s["path"].rsplit("/", 1)[1] for s in listing.json()[0]["slides"]] == ["cmu.svs"]
    assert "UTF-8" in listing.json()[0]["warnings"][0]
    added = anything.post(f"/api/v1/projects/{project['id']}/slides", headers=admin_headers, json={"path": str(folder)})
    assert added.status_code == 201, added.text
    assert [s["name"] for s in added.json()["added"]] == ["cmu.svs"] and len(added.json()["skipped"]) == 1


def _damaged_tiff() -> bytes:
    """A tiled JPEG TIFF whose tiles in its second half lose their scans: their headers read (so
    the slide is added, its size known), their pixels do not."""
    tiled = io.BytesIO()
    tifffile.imwrite(tiled, np.zeros((512, 512, 3), np.uint8), tile=(256, 256), compression="jpeg")
    data = bytearray(tiled.getvalue())
    with tifffile.TiffFile(io.BytesIO(bytes(data))) as tiff:
        page = tiff.pages.first
        tiles = list(zip(page.dataoffsets, page.databytecounts))
    for offset, count in tiles[len(tiles) // 2:]:
        scan = data.index(b"\xff\xda", offset, offset + count)
        data[scan:offset + count] = bytes(offset + count - scan)
    return bytes(data)


def test_a_damaged_slide_is_named_as_added_not_by_the_servers_link_to_it(anything, admin_headers, project, settings):
    """Fifteenth attack: the reader's error quoted the server's link to the open file
    (``/tmp/slidelabel-open-slides-<pid>-<x>/<n>/.upload-<hex>-broken.tif``)."""
    folder = settings.slide_folders[0]
    (folder / "broken.tif").write_bytes(_damaged_tiff())
    url = f"/api/v1/projects/{project['id']}/slides"
    added = anything.post(url, headers=admin_headers, json={"path": str(folder / "broken.tif")})
    uploaded = anything.post(f"{url}/upload", headers=admin_headers, files={"file": ("up.tif", _damaged_tiff())})
    for answer, name in ((added, "broken.tif"), (uploaded, "up.tif")):
        assert answer.status_code == 422, answer.text
        detail = answer.json()["detail"]
        assert "cannot read tile" in detail and detail.count(f"{name}") == 3, detail  # as added, twice in the reader's words
        assert "slidelabel-open-slides" not in detail and ".upload-" not in detail, detail
