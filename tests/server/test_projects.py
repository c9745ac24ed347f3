"""Projects, categories, members and the role rules, through the HTTP API."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from slidelabel.store.models import Role, User

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py


def test_login_rejects_wrong_password_and_missing_token(client):
    assert client.post("/api/v1/auth/login", json={"username": "admin", "password": "nope-nope"}).status_code == 401
    assert client.post("/api/v1/auth/login", json={"username": "nobody", "password": "nope-nope"}).status_code == 401
    response = client.get("/api/v1/projects")
    assert response.status_code == 401 and "log" in response.json()["detail"]
    assert client.get("/api/v1/projects", headers={"Authorization": "Bearer forged"}).status_code == 401


def test_logout_ends_the_token(client, admin_headers):
    assert client.get("/api/v1/auth/me", headers=admin_headers).json()["username"] == "admin"
    assert client.post("/api/v1/auth/logout", headers=admin_headers).status_code == 204
    assert client.get("/api/v1/auth/me", headers=admin_headers).status_code == 401


def test_project_gets_palette_colours_and_hotkeys(project):
    categories = project["categories"]
    assert [c["hotkey"] for c in categories] == ["1", "2", "3"]
    assert len({c["color"] for c in categories}) == 3
    assert [c["excluded"] for c in categories] == [False, False, True]
    assert project["role"] == "owner"


def test_unknown_registry_names_are_refused_with_the_alternatives(client, admin_headers):
    response = client.post("/api/v1/projects", headers=admin_headers, json={"name": "x", "model": "svm"})
    assert response.status_code == 422
    assert "linear" in response.json()["detail"]


@pytest.mark.parametrize("role, can_view, can_manage", [
    (None, False, False), (Role.viewer, True, False), (Role.annotator, True, False),
    (Role.reviewer, True, False), (Role.owner, True, True)])
def test_roles(client, project, member_headers, role, can_view, can_manage):
    headers = member_headers(role)
    url = f"/api/v1/projects/{project['id']}"
    assert client.get(url, headers=headers).status_code == (200 if can_view else 404)
    response = client.post(f"{url}/categories", headers=headers, json={"name": "necrosis"})
    assert response.status_code == (201 if can_manage else 403 if can_view else 404)
    listed = [p["id"] for p in client.get("/api/v1/projects", headers=headers).json()]
    assert listed == ([project["id"]] if can_view else [])


def test_merge_moves_labels_and_deletes_the_source(client, admin_headers, project):
    tumour, stroma = project["categories"][0]["id"], project["categories"][1]["id"]
    url = f"/api/v1/projects/{project['id']}/categories"
    response = client.post(f"{url}/{tumour}/merge", headers=admin_headers, json={"into": stroma})
    assert response.status_code == 200
    names = [c["name"] for c in client.get(f"/api/v1/projects/{project['id']}", headers=admin_headers).json()["categories"]]
    assert names == ["stroma", "glass"]


def test_hotkeys_are_unique_within_a_project(client, admin_headers, project):
    url = f"/api/v1/projects/{project['id']}/categories"
    assert client.post(url, headers=admin_headers, json={"name": "fat", "hotkey": "1"}).status_code == 409
    assert client.post(url, headers=admin_headers, json={"name": "fat", "color": "red"}).status_code == 422


def test_the_last_owner_cannot_leave(client, admin_headers, project):
    members = client.get(f"/api/v1/projects/{project['id']}/members", headers=admin_headers).json()
    owner = members[0]
    response = client.put(f"/api/v1/projects/{project['id']}/members", headers=admin_headers,
                          json={"username": owner["username"], "role": "viewer"})
    assert response.status_code == 409 and "a project needs an owner" in response.json()["detail"]


def test_renaming_onto_a_taken_name_is_a_conflict_that_changes_nothing(client, admin_headers, project):
    other = client.post("/api/v1/projects", headers=admin_headers, json={"name": "Colon cohort"}).json()
    url = f"/api/v1/projects/{other['id']}"
    response = client.patch(url, headers=admin_headers, json={"name": f"  {project['name']} ", "model": "random_forest"})
    assert response.status_code == 409 and "already have a project named" in response.json()["detail"]
    assert client.get(url, headers=admin_headers).json()["model"] == other["model"]
    renamed = client.patch(url, headers=admin_headers, json={"name": " Colon cohort 2 ", "model": "random_forest"})
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["model"]) == ("Colon cohort 2", "random_forest")


def test_other_users_project_names_are_neither_refused_nor_told(app, client, project, member_headers):
    outsider = member_headers(None)
    with app.state.database.session(write=True) as session:
        session.execute(update(User).where(User.username != "admin").values(can_create_projects=True))
    mine = client.post("/api/v1/projects", headers=outsider, json={"name": project["name"]})
    assert mine.status_code == 201, mine.text
    assert mine.json()["id"] != project["id"]
    again = client.post("/api/v1/projects", headers=outsider, json={"name": f" {project['name']}"})
    assert again.status_code == 409 and repr(project["name"]) in again.json()["detail"]
    renamed = client.patch(f"/api/v1/projects/{mine.json()['id']}", headers=outsider, json={"name": "Colon"})
    assert renamed.status_code == 200
    back = client.patch(f"/api/v1/projects/{mine.json()['id']}", headers=outsider, json={"name": project["name"]})
    assert back.status_code == 200


def test_a_project_is_created_with_its_categories_in_one_answer(client, admin_headers):
    response = client.post("/api/v1/projects", headers=admin_headers, json={
        "name": "With legend", "categories": [{"name": "tumour"}, {"name": "glass", "excluded": True, "hotkey": "g"}]})
    assert response.status_code == 201
    assert [(c["name"], c["hotkey"], c["excluded"]) for c in response.json()["categories"]] == [
        ("tumour", "1", False), ("glass", "g", True)]
    members = client.get(f"/api/v1/projects/{response.json()['id']}/members", headers=admin_headers).json()
    assert [(m["username"], m["role"]) for m in members] == [("admin", "owner")]


def test_the_registry_lists_every_extension_point_and_a_new_project_gets_its_defaults(client, admin_headers):
    registry = client.get("/api/v1/registry", headers=admin_headers).json()
    assert set(registry) == {"features", "models", "strategies", "normalisations", "slide_readers",
                             "segment_formats", "feature_formats"}
    defaults = {kind: [entry["name"] for entry in entries if entry["default"]] for kind, entries in registry.items()}
    created = client.post("/api/v1/projects", headers=admin_headers, json={"name": "Defaults"}).json()
    assert [created["extractor"]] == defaults["features"]
    assert [created["model"]] == defaults["models"]
    assert [created["strategy"]] == defaults["strategies"]
    assert [created["normalisation"]] == defaults["normalisations"]
    assert defaults["slide_readers"] == ["openslide"]
    assert {"geojson"} <= {entry["name"] for entry in registry["segment_formats"]}
    assert all(entry["dimensions"] > 0 for entry in registry["features"])
    assert all(entry["description"] for kind in ("features", "models", "strategies") for entry in registry[kind])


def test_misspelt_project_fields_and_a_colour_with_a_newline_are_refused(client, admin_headers, project):
    """Seventh attack (careless users): unknown fields were silently dropped, so a project meant to
    have 2 px superpixels and categories got the defaults and none; "#ffffff\\n" was a colour."""
    created = client.post("/api/v1/projects", headers=admin_headers,
                          json={"name": "typo", "superpixel_options": {"size": "2px"}, "catgories": [{"name": "x"}]})
    assert created.status_code == 422 and "superpixel_options" in created.text
    patched = client.patch(f"/api/v1/projects/{project['id']}", headers=admin_headers, json={"superpixel_options": {}})
    assert patched.status_code == 422
    colour = client.post(f"/api/v1/projects/{project['id']}/categories", headers=admin_headers,
                         json={"name": "nl", "color": "#ffffff\n"})
    assert colour.status_code == 422, colour.text


@pytest.mark.parametrize("field, value", [("name", "invoice\u202egpj.exe"), ("name", "a\u200bb"), ("name", "a\nb"),
                                          ("name", "\x1b[31mred"), ("description", "see \u202eevil"),
                                          ("description", "\x1b]0;title\x07")])
def test_project_names_and_descriptions_are_printable_text(client, admin_headers, project, field, value):
    """Sixteenth attack: project names and descriptions took bidi overrides, zero-width
    characters and escape sequences (category and user names refused them)."""
    created = client.post("/api/v1/projects", headers=admin_headers, json={"name": "p", field: value})
    changed = client.patch(f"/api/v1/projects/{project['id']}", headers=admin_headers, json={field: value})
    for answer in (created, changed):
        assert answer.status_code == 422 and "U+" in answer.json()["detail"], answer.text
    kept = client.patch(f"/api/v1/projects/{project['id']}", headers=admin_headers,
                        json={"description": "Line one.\n\tLine two: tumour / stroma (grade 2)."})
    assert kept.status_code == 200 and kept.json()["description"].startswith("Line one.\n\t"), kept.text


def test_an_admin_is_listed_as_the_owner_it_acts_as(app, client, admin_headers, project):
    """A member made admin (as the Girder plugin does for a Girder site admin) acts as an owner: the
    list says so (it said 'viewer'), and no admin's role can be set lower."""
    users, members = "/api/v1/users", f"/api/v1/projects/{project['id']}/members"
    boss = client.post(users, headers=admin_headers, json={"username": "boss", "password": "a long password"}).json()
    assert client.put(members, headers=admin_headers, json={"username": "boss", "role": "viewer"}).status_code == 200
    with app.state.database.session(write=True) as session:
        session.get(User, boss["id"]).is_admin = True
    listed = {m["username"]: m["role"] for m in client.get(members, headers=admin_headers).json()}
    assert listed["boss"] == "owner"
    lowered = client.put(members, headers=admin_headers, json={"username": "boss", "role": "annotator"})
    assert lowered.status_code == 409 and "is an admin" in lowered.json()["detail"]
    client.post(users, headers=admin_headers, json={"username": "chief", "password": "a long password", "is_admin": True})
    assert client.put(members, headers=admin_headers, json={"username": "chief", "role": "viewer"}).status_code == 409
    assert client.put(members, headers=admin_headers, json={"username": "chief", "role": "owner"}).status_code == 200


def test_a_refused_role_is_told_the_roles_that_may(client, project, member_headers):
    """The roles that may are said as a sentence says them, weakest first (it said 'the role
    annotator or owner or reviewer', sorted by name)."""
    viewer = member_headers(Role.viewer)
    response = client.post(f"/api/v1/projects/{project['id']}/categories", headers=viewer, json={"name": "fat"})
    assert response.status_code == 403
    assert response.json()["detail"] == "to manage in this project you need to be owner; you are viewer"
    response = client.post(f"/api/v1/projects/{project['id']}/epochs", headers=viewer, json={})
    assert response.status_code == 403
    assert "you need to be annotator, reviewer or owner; you are viewer" in response.json()["detail"]
