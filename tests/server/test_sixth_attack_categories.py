"""Sixth attack on categories and the viewer's arrays.

F2: an import with ``?create_categories=true`` created categories past every rule of
``POST .../categories``: a 5,000-character name, and 32,000 categories in one request (which held
the SQLite write turn for 80 s). The rules now live in ``add_category`` (names of 1 to 100
characters without control characters, at most ``MAX_CATEGORIES`` per project), and an import
checks them all before it creates any.

F3: category ids are global and never reused, and ``labels.bin``, ``predictions.bin`` and the
gallery's ``overlay.bin`` carried them as uint16: once the server's id counter passed 65,535,
every new category of every project made its slides' arrays a 409. The arrays are uint32 now.

F9: ``?user=¹`` on the label routes was a 500 (``"¹".isdigit()`` but ``int("¹")`` fails).
"""

from __future__ import annotations

import json
import re
import time

import numpy as np
import pytest
from test_exports import slide_id, url  # noqa: F401 - fixtures

from slidelabel.errors import ParameterError
from slidelabel.services.projects import CATEGORY_NAME_CHARS, MAX_CATEGORIES, add_category
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Category, Epoch, Project, Role
from slidelabel.store.predictions import SlidePredictions, write_predictions

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

API = "/api/v1"
#: Beyond uint16, as after an owner's imports pushed the server's id counter past 65,535.
FAR_ID = 70_001


def _collection(names: list[str]) -> dict:
    square = [[[0, 0], [2000, 0], [2000, 2000], [0, 2000], [0, 0]]]
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": square},
         "properties": {"classification": {"name": name}}} for name in names]}


def _category_names(client, headers: dict, project: dict) -> list[str]:
    return [c["name"] for c in client.get(f"{API}/projects/{project['id']}", headers=headers).json()["categories"]]


def _far_category(app, project: dict, category_id: int = FAR_ID) -> int:
    """A category of ``project`` whose id is past uint16, as every new one is on a server whose
    id counter went there."""
    with app.state.database.session(write=True) as session:
        session.add(Category(id=category_id, project_id=project["id"], name=f"far-{category_id}", color="#123456",
                             position=3))
    return category_id


@pytest.mark.parametrize("name, message", [
    ("x" * (CATEGORY_NAME_CHARS + 1), "at most 100 characters"),
    ("nul\x00x", "U+0000"),
    ("tab\tx", "U+0009"),
    ("\ud800x", "U+D800"),
    ("rtl\u202ex", "U+202E"),
    ("   ", "needs a name"),
])
def test_add_category_applies_the_name_rules_of_every_entry_point(app, project, name, message):
    with app.state.database.session(write=True) as session:
        with pytest.raises(ParameterError, match=re.escape(message)):
            add_category(session, session.get(Project, project["id"]), name)


def test_a_project_holds_at_most_max_categories(app, client, project, admin_headers):
    assert 64 <= MAX_CATEGORIES <= 1000
    with app.state.database.session(write=True) as session:
        owned = session.get(Project, project["id"])
        for index in range(MAX_CATEGORIES - 3):
            add_category(session, owned, f"extra {index}")
    response = client.post(f"{API}/projects/{project['id']}/categories", headers=admin_headers,
                           json={"name": "one more"})
    assert response.status_code == 422
    assert f"at most {MAX_CATEGORIES} categories" in response.json()["detail"]
    assert "merge" in response.json()["detail"]
    assert len(_category_names(client, admin_headers, project)) == MAX_CATEGORIES
    # Another project is not full.
    other = client.post(f"{API}/projects", headers=admin_headers, json={"name": "other", "categories": [{"name": "a"}]})
    assert other.status_code == 201, other.text


def test_an_import_with_too_many_new_names_creates_none_and_fails_at_once(client, project, slide_id,  # noqa: F811
                                                                          admin_headers):
    names = [f"c{i}" for i in range(MAX_CATEGORIES)]  # + tumour, stroma, glass: 3 over
    start = time.perf_counter()
    response = client.post(url(project, slide_id, "/import"), headers=admin_headers, json=_collection(names),
                           params={"create_categories": "true"})
    took = time.perf_counter() - start
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert f"at most {MAX_CATEGORIES} categories" in detail and f"{MAX_CATEGORIES} new" in detail
    assert len(detail) < 1000  # names are not listed by the thousand
    assert _category_names(client, admin_headers, project) == ["tumour", "stroma", "glass"]
    assert took < 5
    # Up to the cap it works.
    start = time.perf_counter()
    fitting = client.post(url(project, slide_id, "/import"), headers=admin_headers,
                          json=_collection(names[:MAX_CATEGORIES - 3]), params={"create_categories": "true"})
    print(f"\nimport of {MAX_CATEGORIES} new names refused in {took * 1000:.0f} ms; "
          f"{MAX_CATEGORIES - 3} created in {(time.perf_counter() - start) * 1000:.0f} ms")
    assert fitting.status_code == 200, fitting.text
    assert len(_category_names(client, admin_headers, project)) == MAX_CATEGORIES


@pytest.mark.parametrize("name", ["y" * 5000, "nul\u0000x", "\ud800x"])
def test_an_import_cannot_create_a_name_post_categories_refuses(client, project, slide_id, admin_headers,  # noqa: F811
                                                                name):
    # As text/plain the body skips the server's JSON checks (attack F1): the service's rules hold anyway.
    body = json.dumps(_collection(["fine", name])).encode()
    response = client.post(url(project, slide_id, "/import"), content=body, params={"create_categories": "true"},
                           headers={**admin_headers, "Content-Type": "text/plain"})
    assert response.status_code == 422, response.text
    assert _category_names(client, admin_headers, project) == ["tumour", "stroma", "glass"]


def test_unknown_names_by_the_thousand_are_counted_not_listed(client, project, slide_id, member_headers):  # noqa: F811
    response = client.post(url(project, slide_id, "/import"), headers=member_headers(Role.annotator),
                           json=_collection([f"n{i}" for i in range(3000)]))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'n0'" in detail and "2,990 more" in detail and len(detail) < 1000


def test_label_array_carries_category_ids_past_uint16(app, client, project, admin_headers, slide_row):
    far = _far_category(app, project)
    tumour = project["categories"][0]["id"]
    base = f"{API}/projects/{project['id']}/slides/{slide_row}"
    for superpixels, category in (([1, 2], far), ([3], tumour)):
        put = client.put(f"{base}/labels", headers=admin_headers,
                         json={"superpixels": superpixels, "category_id": category})
        assert put.status_code == 200, put.text
    for view in ("mine", "effective"):
        response = client.get(f"{base}/labels.bin", headers=admin_headers, params={"view": view})
        assert response.status_code == 200, response.text
        assert len(response.content) == 4 * 1001
        values = np.frombuffer(response.content, "<u4")
        assert values[[0, 1, 2, 3, 4]].tolist() == [0, far, far, tumour, 0] and np.count_nonzero(values) == 3


def test_prediction_array_carries_category_ids_past_uint16(app, client, project, admin_headers, slide_row):
    far, farther = _far_category(app, project), _far_category(app, project, FAR_ID + 100_000)
    probs_N_C = np.random.default_rng(3).dirichlet([1.0, 1.0], 1000).astype(np.float32)
    with app.state.database.session(write=True) as session:
        session.add(Epoch(project_id=project["id"], number=1, labels=10, metrics={}))
    write_predictions(ProjectFiles(app.state.settings.data_dir, project["id"]).predictions(1, slide_row),
                      SlidePredictions(np.array([far, farther]), probs_N_C))
    response = client.get(f"{API}/projects/{project['id']}/slides/{slide_row}/predictions.bin", headers=admin_headers)
    assert response.status_code == 200, response.text
    values = np.frombuffer(response.content, "<u4")
    assert values.size == 1001 and values[0] == 0
    assert values[1:].tolist() == np.array([far, farther])[probs_N_C.argmax(1)].tolist()


@pytest.mark.parametrize("overlay", ["labels", "predictions"])
def test_gallery_overlay_carries_category_ids_past_uint16(app, client, project, admin_headers, slide_row, overlay):
    far = _far_category(app, project)
    assert client.put(f"{API}/projects/{project['id']}/slides/{slide_row}/labels", headers=admin_headers,
                      json={"superpixels": [5, 6], "category_id": far}).status_code == 200
    with app.state.database.session(write=True) as session:
        session.add(Epoch(project_id=project["id"], number=1, labels=10, metrics={}))
    probs_N_C = np.zeros((1000, 2), np.float32)
    probs_N_C[:, 1] = 1
    write_predictions(ProjectFiles(app.state.settings.data_dir, project["id"]).predictions(1, slide_row),
                      SlidePredictions(np.array([project["categories"][0]["id"], far]), probs_N_C))
    link = client.post(f"{API}/projects/{project['id']}/gallery", headers=admin_headers, json={"overlay": overlay})
    assert link.status_code == 201, link.text
    response = client.get(f"{API}/gallery/{link.json()['token']}/slides/{slide_row}/overlay.bin")
    assert response.status_code == 200, response.text
    values = np.frombuffer(response.content, "<u4")
    expected = [5, 6] if overlay == "labels" else list(range(1, 1001))
    assert values.size == 1001 and np.flatnonzero(values).tolist() == expected and set(values[expected]) == {far}


@pytest.mark.parametrize("user", ["¹", "²³", "٣", "３", "9" * 30, str(2**31)])
def test_a_user_that_is_no_ascii_id_is_a_422(client, project, member_headers, slide_row, user):
    viewer = member_headers(Role.viewer)
    base = f"{API}/projects/{project['id']}"
    for path in (f"/slides/{slide_row}/labels", "/labels/history"):
        response = client.get(base + path, headers=viewer, params={"user": user})
        assert response.status_code == 422, (path, response.text)
        assert "user id" in response.json()["detail"]
    assert client.get(base + "/labels/history", headers=viewer, params={"user": "7"}).status_code == 200
