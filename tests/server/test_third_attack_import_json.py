"""Third attack on issue 13: the import routes read their JSON body themselves (the app's JSON
check skips their streamed bodies), and a deeply nested body (100,000 '[') raised RecursionError:
a 500 instead of the usual one-line answer about what to send (a body past 64 KB is now a 413
before it is parsed)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("route", ["segments", "features/imported-deep"])
def test_a_deeply_nested_import_body_is_a_clear_4xx(client, admin_headers, project, slide_row, route):
    response = client.post(f"/api/v1/projects/{project['id']}/slides/{slide_row}/{route}", headers=admin_headers,
                           content=b"[" * 60_000)  # under the 64 KB a JSON source may take
    assert response.status_code == 422, response.text
    assert "send the source as multipart/form-data" in response.json()["detail"]
