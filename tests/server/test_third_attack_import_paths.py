"""Third attack on issue 13: the import routes read their JSON body themselves, past the app's
check for NUL bytes and lone surrogates, and a server path holding one made the path resolution
raise ValueError: a 500 instead of a one-line answer."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("body", [b'{"path": "/slides/a\\u0000b.geojson"}', b'{"path": "/slides/\\ud800.geojson"}',
                                  b'{"path": "/slides/a.tiff", "bboxes": "/slides/\\u0000.csv"}'])
@pytest.mark.parametrize("route", ["segments", "features/imported-x"])
def test_an_import_path_no_file_can_have_is_a_clear_4xx(client, admin_headers, project, slide_row, route, body):
    response = client.post(f"/api/v1/projects/{project['id']}/slides/{slide_row}/{route}", headers=admin_headers,
                           content=body)
    assert 400 <= response.status_code < 500, response.text
    detail = response.json()["detail"]
    assert any(words in detail for words in ("not a usable path", "outside the slide folders", "send the source as")), detail
