"""``?token=`` is for URLs a browser loads itself (images, downloads): reads take it, writes do
not, so that a link or a form on another site cannot make a logged-in browser change anything."""

from __future__ import annotations

from fastapi.testclient import TestClient


def test_a_query_token_reads_but_does_not_write(client: TestClient, admin_headers: dict[str, str],
                                               project: dict) -> None:
    token = admin_headers["Authorization"].split()[1]
    url = f"/api/v1/projects/{project['id']}"

    assert client.get(f"{url}?token={token}").status_code == 200

    refused = client.patch(f"{url}?token={token}", json={"name": "renamed"})
    assert refused.status_code == 401
    assert "reads only" in refused.json()["detail"]
    assert client.delete(f"{url}?token={token}").status_code == 401
    assert client.get(url, headers=admin_headers).json()["name"] == "breast"

    assert client.patch(url, headers=admin_headers, json={"name": "renamed"}).status_code == 200
