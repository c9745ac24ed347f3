"""Options that would occupy a worker for hours are refused by the API before any job exists."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("superpixels, field", [
    ({"iterations": 10_000_000}, "iterations"), ({"compactness": 0}, "compactness"),
    ({"size": "1000000um"}, "size"), ({"tile_size": 10**9}, "tile_size"), ({"bogus": 1}, "bogus")])
def test_out_of_range_superpixel_options_are_a_422_naming_the_field(client, admin_headers, superpixels, field):
    response = client.post("/api/v1/projects", headers=admin_headers, json={"name": "bounded", "superpixels": superpixels})
    assert response.status_code == 422, response.text
    assert field in response.text
    assert client.get("/api/v1/projects", headers=admin_headers).json() == []


def test_superpixel_options_in_range_are_stored_and_read_back(client, admin_headers):
    chosen = {"iterations": 100, "compactness": 1000, "size": "4999.75um", "magnification": 5}
    response = client.post("/api/v1/projects", headers=admin_headers, json={"name": "edge", "superpixels": chosen})
    assert response.status_code == 201, response.text
    stored = response.json()["superpixel_options"]
    assert {key: stored[key] for key in chosen} == chosen
