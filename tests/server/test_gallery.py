"""Gallery routes over HTTP on the CMU sample's real superpixels: an owner publishes a link that
works without a login, shows only its slides and its overlay, refuses every write, and stops at
revocation; annotators cannot publish; other projects stay out of reach; the database never holds
the token."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Role, Slide
from slidelabel.store.predictions import SlidePredictions, write_predictions

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

API = "/api/v1"



@pytest.fixture
def shown(app, project: dict, slide_row: int, cmu_superpixels: Path) -> int:
    """``slide_row`` with the CMU sample's superpixels."""
    shutil.copytree(cmu_superpixels, ProjectFiles(app.state.settings.data_dir, project["id"]).superpixels(slide_row))
    return slide_row


@pytest.fixture
def hidden(app, project: dict, cmu_slide: Path) -> int:
    """A second slide of the project, left out of chosen-slide links."""
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=project["id"], name="hidden.svs", path=str(cmu_slide), width=2220, height=2967,
                      mpp=0.499, superpixels=1000)
        session.add(slide)
        session.flush()
        return slide.id


def publish(client: TestClient, headers: dict, project_id: int, **body) -> dict:
    response = client.post(f"{API}/projects/{project_id}/gallery", headers=headers, json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_a_link_works_without_login_and_shows_labels_legend_and_figures(app, client, project, admin_headers,
                                                                        member_headers, shown, hidden):
    tumour, stroma, glass = (c["id"] for c in project["categories"])
    labelled = client.put(f"{API}/projects/{project['id']}/slides/{shown}/labels", headers=admin_headers,
                          json={"superpixels": [5, 6, 7], "category_id": stroma})
    assert labelled.status_code == 200, labelled.text
    with app.state.database.session(write=True) as session:
        session.add(Epoch(project_id=project["id"], number=1, labels=3, metrics={
            "cv_balanced_accuracy": 0.75, "estimated_accuracy": {"value": 0.8, "low": 0.7, "high": 0.9, "n": 30},
            "seconds": {"train": 0.5}, "strategy_picks": [1, 2]}))
    link = publish(client, admin_headers, project["id"], overlay="labels", slide_ids=[shown])
    assert link["slide_ids"] == [shown] and link["revoked_at"] is None and len(link["token"]) >= 43
    base = f"{API}/gallery/{link['token']}"
    anonymous = TestClient(app)  # no login at all

    page = anonymous.get(base)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["project"] == "breast" and body["overlay"] == "labels"
    assert [(c["id"], c["name"]) for c in body["categories"]] == [
        (tumour, "tumour"), (stroma, "stroma"), (glass, "glass")]
    assert all(c["color"].startswith("#") for c in body["categories"])
    assert [s["id"] for s in body["slides"]] == [shown] and body["slides"][0]["superpixels"] == 1000
    assert body["epochs"][0]["metrics"] == {"cv_balanced_accuracy": 0.75, "estimated_accuracy": {
        "value": 0.8, "low": 0.7, "high": 0.9, "n": 30}}  # timings and picks stay with members
    assert "admin" not in page.text and "path" not in body["slides"][0]

    metadata = anonymous.get(f"{base}/slides/{shown}/tiles").json()
    assert metadata["width"] == 2220 and metadata["levels"] >= 1
    top = metadata["levels"] - 1
    tile = anonymous.get(f"{base}/slides/{shown}/tiles/{top}/0/0.jpg")
    assert tile.status_code == 200 and tile.content[:2] == b"\xff\xd8"
    assert tile.headers["cache-control"] == "private, no-cache"
    project_tile = client.get(f"{API}/projects/{project['id']}/slides/{shown}/tiles/{top}/0/0.jpg",
                              headers=admin_headers)
    assert tile.content == project_tile.content
    index = anonymous.get(f"{base}/slides/{shown}/superpixel-tiles/{top}/0/0.png")
    assert index.status_code == 200 and index.content[:4] == b"\x89PNG"
    assert anonymous.get(f"{base}/slides/{shown}/thumbnail.jpg").status_code == 200
    overlay = anonymous.get(f"{base}/slides/{shown}/overlay.bin")
    assert overlay.status_code == 200 and overlay.headers["x-overlay"] == "labels"
    values = np.frombuffer(overlay.content, "<u4")
    assert values.size == 1001 and np.flatnonzero(values).tolist() == [5, 6, 7] and set(values[5:8]) == {stroma}

    # The slide left out, and everything of the project beyond the page, are not there.
    for path in (f"/slides/{hidden}/tiles", f"/slides/{hidden}/overlay.bin", f"/slides/{hidden}/tiles/{top}/0/0.jpg",
                 f"/slides/{hidden}/superpixel-tiles/{top}/0/0.png", f"/slides/{hidden}/thumbnail.jpg",
                 f"/slides/{shown}/superpixels", f"/slides/{shown}/labels.bin", f"/slides/{shown}/export/geojson",
                 "/jobs", "/epochs/1/model", "/members"):
        assert anonymous.get(base + path).status_code == 404, path
    # The token is no login for the project's own routes.
    for path in ("", f"/slides/{shown}/tiles", f"/slides/{shown}/labels.bin"):
        refused = anonymous.get(f"{API}/projects/{project['id']}{path}", params={"token": link["token"]},
                                headers={"Authorization": f"Bearer {link['token']}"})
        assert refused.status_code == 401, path


def test_predictions_overlay_is_the_latest_epoch_s(app, client, project, admin_headers, shown):
    tumour, stroma, _glass = (c["id"] for c in project["categories"])
    link = publish(client, admin_headers, project["id"], overlay="predictions")
    url = f"{API}/gallery/{link['token']}/slides/{shown}/overlay.bin"
    before = client.get(url)
    assert before.status_code == 404 and before.json()["detail"] == "no predictions of this slide here"
    probs = np.random.default_rng(1).dirichlet([1.0, 1.0], 1000).astype(np.float32)
    with app.state.database.session(write=True) as session:
        session.add(Epoch(project_id=project["id"], number=1, labels=10, metrics={}))
    write_predictions(ProjectFiles(app.state.settings.data_dir, project["id"]).predictions(1, shown),
                      SlidePredictions(np.array([tumour, stroma]), probs))
    after = client.get(url)
    assert after.status_code == 200 and after.headers["x-epoch"] == "1"
    assert np.frombuffer(after.content, "<u4")[1:].tolist() == np.array([tumour, stroma])[probs.argmax(1)].tolist()


def test_every_gallery_route_refuses_writes(app, client, project, admin_headers, shown):
    link = publish(client, admin_headers, project["id"], overlay="labels")
    base = f"{API}/gallery/{link['token']}"
    paths = [path for path in app.openapi()["paths"] if path.startswith(f"{API}/gallery/")]
    assert len(paths) >= 6
    for template in paths:
        path = (template.replace(f"{API}/gallery/{{token}}", base).replace("{slide_id}", str(shown))
                .replace("{z}", "0").replace("{x}", "0").replace("{y}", "0"))
        assert set(app.openapi()["paths"][template]) == {"get"}, template
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            for headers in ({}, admin_headers):
                response = client.request(method, path, headers=headers, json={"superpixels": [1], "category_id": 1})
                assert response.status_code == 405 and response.headers["allow"] == "GET", (method, path)
    assert client.post(f"{base}/slides/{shown}/labels", json={}).status_code == 405


def test_revoked_links_stop_at_once_and_only_owners_manage_links(app, client, project, admin_headers, member_headers,
                                                                  shown):
    link = publish(client, admin_headers, project["id"], overlay="labels")
    base = f"{API}/gallery/{link['token']}"
    tile = client.get(f"{base}/slides/{shown}/tiles/0/0/0.jpg")
    assert client.get(base).status_code == 200 and tile.status_code == 200
    links = f"{API}/projects/{project['id']}/gallery"
    for role in (Role.annotator, Role.reviewer, Role.viewer):
        headers = member_headers(role)
        assert client.post(links, headers=headers, json={}).status_code == 403
        assert client.get(links, headers=headers).status_code == 403
        assert client.delete(f"{links}/{link['id']}", headers=headers).status_code == 403
    assert client.post(links, headers=member_headers(None), json={}).status_code == 404
    listed = client.get(links, headers=admin_headers).json()
    assert [entry["id"] for entry in listed] == [link["id"]] and "token" not in listed[0]

    revoked = client.delete(f"{links}/{link['id']}", headers=admin_headers)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    never = client.get(f"{API}/gallery/{'A' * 43}")
    for path in ("", f"/slides/{shown}/tiles", f"/slides/{shown}/overlay.bin", f"/slides/{shown}/tiles/0/0/0.jpg"):
        gone = client.get(base + path, headers={"If-None-Match": tile.headers["etag"]})
        assert gone.status_code == 404 and gone.json() == never.json(), path
    assert never.json()["detail"] == "this gallery link was revoked or never existed"


def test_a_link_never_reaches_another_project_and_the_token_is_not_stored(app, client, project, admin_headers, shown,
                                                                          cmu_slide):
    other = client.post(f"{API}/projects", headers=admin_headers, json={"name": "other", "extractor": "color"}).json()
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=other["id"], name="other.svs", path=str(cmu_slide), width=2220, height=2967,
                      mpp=0.499, superpixels=1000)
        session.add(slide)
        session.flush()
        other_slide = slide.id
    link = publish(client, admin_headers, project["id"], overlay="labels")
    base = f"{API}/gallery/{link['token']}"
    for path in (f"/slides/{other_slide}/tiles", f"/slides/{other_slide}/tiles/0/0/0.jpg",
                 f"/slides/{other_slide}/overlay.bin", f"/slides/{other_slide}/superpixel-tiles/0/0/0.png"):
        assert client.get(base + path).status_code == 404, path
    with app.state.database.engine.connect() as connection:
        dump = [str(value) for row in connection.execute(text("SELECT * FROM gallery_links")) for value in row]
    assert dump and link["token"] not in " ".join(dump)
    refused = client.post(f"{API}/projects/{project['id']}/gallery", headers=admin_headers,
                          json={"overlay": "labels", "slide_ids": [other_slide]})
    assert refused.status_code == 404 and f"no slide {other_slide}" in refused.json()["detail"]
    assert client.post(f"{API}/projects/{project['id']}/gallery", headers=admin_headers,
                       json={"overlay": "certainty"}).status_code == 422
