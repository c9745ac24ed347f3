"""Eighth attack: requests on a slide or project that another request deleted while they ran
answered 500: an upload's file could not be moved into the deleted slide's folder, a route's
project was gone from its write session, a job row referred to a deleted project (a foreign-key
violation), and a label map read back for a deleted slide answered 500 with its server path.
Each is now a 404 that says what was deleted, and nothing of the deleted slide or project is left
on disk. The deletes happen at a fixed point of the request (a patched step), not by timing."""

from __future__ import annotations

import pytest

from slidelabel.server import deps
from slidelabel.server.routers import projects as project_routes
from slidelabel.services import epochs, labels, shapes
from slidelabel.services import projects as project_service
from slidelabel.services import slides as slide_service
from slidelabel.services.uploads import UploadReceiver
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Category, Role

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

GEOJSON = (b'{"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}, "geometry": '
           b'{"type": "Polygon", "coordinates": [[[0, 0], [500, 0], [500, 500], [0, 500], [0, 0]]]}}]}')
UPLOADS = {"sources": ("bb.csv", b"x,y\n1,2\n"), "segments": ("s.geojson", GEOJSON),
           "features/imported-x": ("f.csv", b"a,b\n1,2\n")}


def _delete_slide(app, project_id: int, slide_id: int) -> None:
    slide_service.delete_slide(app.state.database, app.state.settings, project_id, slide_id)


def _before(monkeypatch, owner, name: str, action) -> None:
    """Run ``action`` once, just before ``owner.name`` first runs."""
    original, done = getattr(owner, name), []

    def patched(*args, **kwargs):
        if not done:
            done.append(True)
            action()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, patched)


def _after(monkeypatch, owner, name: str, action) -> None:
    """Run ``action`` once, just after ``owner.name`` first returned."""
    original, done = getattr(owner, name), []

    def patched(*args, **kwargs):
        result = original(*args, **kwargs)
        if not done:
            done.append(True)
            action()
        return result

    monkeypatch.setattr(owner, name, patched)


@pytest.mark.parametrize("step", ["feed", "finish"], ids=["before-the-file", "while-it-streams"])
@pytest.mark.parametrize("route", sorted(UPLOADS))
def test_an_upload_for_a_slide_deleted_meanwhile_is_404_and_keeps_nothing(app, client, project, admin_headers,
                                                                           slide_row, sender, monkeypatch,
                                                                           route, step):
    """The slide is deleted once the request passed its checks: before the file's first bytes
    arrive (the upload made the deleted slide's folder again and kept the file: 201) or while it
    streams (the move into the removed folder failed: 500)."""
    _before(monkeypatch, UploadReceiver, step, lambda: _delete_slide(app, project["id"], slide_row))
    name, body = UPLOADS[route]
    response = client.post(f"/api/v1/projects/{project['id']}/slides/{slide_row}/{route}", headers=admin_headers,
                           files={"file": (name, body, "application/octet-stream")})
    assert response.status_code == 404, response.text
    assert "deleted" in response.json()["detail"]
    assert str(app.state.settings.data_dir) not in response.text
    assert not ProjectFiles(app.state.settings.data_dir, project["id"]).slide_dir(slide_row).exists()
    assert sender.sent == []


@pytest.mark.parametrize("step", ["feed", "finish"], ids=["before-the-file", "while-it-streams"])
def test_a_slide_upload_to_a_project_deleted_meanwhile_is_404_and_keeps_nothing(app, client, project, admin_headers,
                                                                                cmu_slide, monkeypatch, step):
    def delete_project() -> None:
        project_service.delete_project(app.state.database, app.state.settings, project_id=project["id"])

    _before(monkeypatch, UploadReceiver, step, delete_project)
    response = client.post(f"/api/v1/projects/{project['id']}/slides/upload", headers=admin_headers,
                           files={"file": ("cmu.svs", cmu_slide.read_bytes(), "application/octet-stream")})
    assert response.status_code == 404, response.text
    assert "deleted" in response.json()["detail"]
    files = ProjectFiles(app.state.settings.data_dir, project["id"])
    assert not files.root.exists() and not files.uploads.exists()


def _member_body(client, admin_headers) -> dict:
    response = client.post("/api/v1/users", headers=admin_headers, json={"username": "dave", "password": "dave-password"})
    assert response.status_code == 201, response.text
    return {"username": "dave", "role": "viewer"}


#: The owner's writes of routers/projects.py that load the project in their write session.
WRITES = {
    "add category": lambda p, c, h: ("post", f"/projects/{p['id']}/categories", {"name": "new"}),
    "rename category": lambda p, c, h: ("patch", f"/projects/{p['id']}/categories/{p['categories'][0]['id']}",
                                        {"name": "renamed"}),
    "merge category": lambda p, c, h: ("post", f"/projects/{p['id']}/categories/{p['categories'][0]['id']}/merge",
                                       {"into": p["categories"][1]["id"]}),
    "set member": lambda p, c, h: ("put", f"/projects/{p['id']}/members", _member_body(c, h)),
    "remove member": lambda p, c, h: ("delete", f"/projects/{p['id']}/members/1", None),
    "rename project": lambda p, c, h: ("patch", f"/projects/{p['id']}", {"name": "renamed"}),
}


@pytest.mark.parametrize("write", sorted(WRITES))
def test_a_write_to_a_project_deleted_after_its_access_check_is_404(app, client, project, admin_headers,
                                                                    monkeypatch, write):
    """The access check passed, then the project went: the route's write session found no
    project (an AttributeError on None: 500)."""
    method, path, body = WRITES[write](project, client, admin_headers)
    check = deps.check_access

    def check_then_delete(session, user, project_id, action):
        access = check(session, user, project_id, action)
        project_service.delete_project(app.state.database, app.state.settings, project_id=project_id)
        return access

    monkeypatch.setattr(deps, "check_access", check_then_delete)
    response = client.request(method, f"/api/v1{path}", headers=admin_headers, json=body)
    assert response.status_code == 404, response.text
    assert f"project {project['id']}" in response.json()["detail"]


def test_an_epoch_of_a_project_deleted_before_its_job_row_is_404(app, client, project, admin_headers, sender,
                                                                  monkeypatch):
    """The epoch's job row referred to the deleted project: a foreign-key violation, 500."""
    _before(monkeypatch, epochs, "submit", lambda: project_service.delete_project(
        app.state.database, app.state.settings, project_id=project["id"]))
    response = client.post(f"/api/v1/projects/{project['id']}/epochs", headers=admin_headers)
    assert response.status_code == 404, response.text
    assert f"project {project['id']} was deleted" in response.json()["detail"]
    assert sender.sent == []


def _only_on_postgresql(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("SQLite's writes queue behind each other: nothing is deleted between a write's read and its insert")


def _delete_elsewhere(app, kind, row_id: int) -> None:
    with app.state.database.session(write=True) as session:
        session.delete(session.get(kind, row_id))


def test_a_category_of_a_project_deleted_after_its_write_read_it_is_404(app, client, project, admin_headers,
                                                                        database_url, monkeypatch):
    """On PostgreSQL the route's write session found the project, which another request then
    deleted: the new category's row broke its foreign key (500)."""
    _only_on_postgresql(database_url)
    _before(monkeypatch, project_routes.service, "add_category", lambda: project_service.delete_project(
        app.state.database, app.state.settings, project_id=project["id"]))
    response = client.post(f"/api/v1/projects/{project['id']}/categories", headers=admin_headers, json={"name": "new"})
    assert response.status_code == 404, response.text
    assert f"project {project['id']} was deleted" in response.json()["detail"]


def test_labels_of_a_category_deleted_after_it_was_checked_are_409(app, client, project, admin_headers, slide_row,
                                                                   database_url, monkeypatch):
    """A write referring to a row that another request deleted meanwhile, not the URL's project or
    slide: a conflict to reload, not a 500."""
    _only_on_postgresql(database_url)
    category_id = project["categories"][0]["id"]
    _after(monkeypatch, labels, "check_category", lambda: _delete_elsewhere(app, Category, category_id))
    response = client.put(f"/api/v1/projects/{project['id']}/slides/{slide_row}/labels", headers=admin_headers,
                          json={"superpixels": [1, 2], "category_id": category_id})
    assert response.status_code == 409, response.text
    assert "deleted by another request meanwhile" in response.json()["detail"]


COVER = {"polygon_level0": [[0, 0], [900, 0], [900, 900]]}


def test_the_cover_of_a_slide_deleted_while_it_is_read_is_404_without_a_path(app, client, project, admin_headers,
                                                                              slide_url, slide_row, monkeypatch):
    """The label map was opened, then gone when its pixels were read: a 500 whose text showed its
    path in the data folder."""
    _after(monkeypatch, shapes, "label_map", lambda: _delete_slide(app, project["id"], slide_row))
    response = client.post(f"{slide_url}/shapes/cover", headers=admin_headers, json=COVER)
    assert response.status_code == 404, response.text
    assert f"slide {slide_row} was deleted" in response.json()["detail"]
    assert str(app.state.settings.data_dir) not in response.text


def test_a_damaged_server_file_is_named_without_its_folder(app, client, project, member_headers, slide_url,
                                                            slide_row):
    """A server file that cannot be read is the server's trouble (500), told by its file name: the
    data folder is the admin's to see (in the server log)."""
    files = ProjectFiles(app.state.settings.data_dir, project["id"])
    (files.superpixels(slide_row) / "manifest.json").write_text("{")
    response = client.post(f"{slide_url}/shapes/cover", headers=member_headers(Role.viewer), json=COVER)
    assert response.status_code == 500, response.text
    assert "manifest.json is not valid JSON" in response.json()["detail"]
    assert str(app.state.settings.data_dir) not in response.text
