"""Who may do what beyond a project's roles: disabled accounts, and the rights the admin grants
(creating projects, reading the server's slide folders)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from slidelabel.server.app import create_app
from slidelabel.services import accounts
from slidelabel.services.accounts import ensure_admin
from slidelabel.settings import Settings
from slidelabel.store.models import Role, Token, User
from conftest import ADMIN_PASSWORD, PASSWORD, login

USERS = "/api/v1/users"


def new_user(client: TestClient, admin_headers: dict, name: str) -> tuple[int, dict[str, str]]:
    """A new account made by the admin: its id and logged-in headers."""
    response = client.post(USERS, headers=admin_headers, json={"username": name, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return response.json()["id"], login(client, name, PASSWORD)


def me(client: TestClient, headers: dict) -> dict:
    response = client.get("/api/v1/auth/me", headers=headers)
    assert response.status_code == 200, response.text
    return response.json()


def grant(client: TestClient, admin_headers: dict, user_id: int, **changes: bool | str) -> dict:
    response = client.patch(f"{USERS}/{user_id}", headers=admin_headers, json=changes)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_disabled_account_loses_its_tokens_and_cannot_log_in(client, admin_headers):
    user_id, headers = new_user(client, admin_headers, "leaver")
    assert me(client, headers)["disabled"] is False
    assert grant(client, admin_headers, user_id, disabled=True)["disabled"] is True
    refused = client.get("/api/v1/projects", headers=headers)
    assert refused.status_code == 401 and "disabled" in refused.json()["detail"]
    again = client.post("/api/v1/auth/login", json={"username": "leaver", "password": PASSWORD})
    assert again.status_code == 401 and "disabled" in again.json()["detail"]
    # A wrong password says nothing about the account.
    wrong = client.post("/api/v1/auth/login", json={"username": "leaver", "password": "not-the-password"})
    assert wrong.status_code == 401 and "disabled" not in wrong.json()["detail"]
    grant(client, admin_headers, user_id, disabled=False)
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 401  # enabled again: a new login
    assert me(client, login(client, "leaver", PASSWORD))["username"] == "leaver"


def test_only_the_admin_changes_accounts_and_never_disables_itself(client, admin_headers):
    user_id, headers = new_user(client, admin_headers, "someone")
    assert client.patch(f"{USERS}/{user_id}", headers=headers, json={"can_create_projects": True}).status_code == 403
    admin_id = me(client, admin_headers)["id"]
    refused = client.patch(f"{USERS}/{admin_id}", headers=admin_headers, json={"disabled": True})
    assert refused.status_code == 422 and "own" in refused.json()["detail"]
    assert me(client, admin_headers)["disabled"] is False
    assert client.patch(f"{USERS}/987654", headers=admin_headers, json={"disabled": True}).status_code == 404


def test_creating_projects_is_granted_by_the_admin(client, admin_headers):
    user_id, headers = new_user(client, admin_headers, "creator")
    body = {"name": "granted"}
    refused = client.post("/api/v1/projects", headers=headers, json=body)
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    assert grant(client, admin_headers, user_id, can_create_projects=True)["can_create_projects"] is True
    created = client.post("/api/v1/projects", headers=headers, json=body)
    assert created.status_code == 201 and created.json()["role"] == "owner"


def test_open_project_creation_lets_every_account_create(settings):
    app = create_app(settings.model_copy(update={"open_project_creation": True}))
    with app.state.database.session(write=True) as session:
        ensure_admin(session, ADMIN_PASSWORD)
    try:
        with TestClient(app) as client:
            _, headers = new_user(client, login(client, "admin", ADMIN_PASSWORD), "anyone")
            assert client.post("/api/v1/projects", headers=headers, json={"name": "open"}).status_code == 201
    finally:
        app.state.database.dispose()


@pytest.fixture
def folder_slide(settings, cmu_slide: Path) -> Path:
    """A copy of the CMU sample in the server's slide folder."""
    return Path(shutil.copy(cmu_slide, settings.slide_folders[0] / "cmu.svs"))


def test_slide_folders_are_read_only_by_those_granted(client, admin_headers, project, member_headers, folder_slide):
    headers = member_headers(Role.owner)
    user_id = me(client, headers)["id"]
    folders_url, slides_url = "/api/v1/slide-folders", f"/api/v1/projects/{project['id']}/slides"
    everything = client.get(folders_url, headers=admin_headers).json()
    assert [s["path"] for s in everything[0]["slides"]] == [str(folder_slide.resolve())]
    assert client.get(folders_url, headers=headers).json() == []
    refused = client.post(slides_url, headers=headers, json={"path": str(folder_slide)})
    assert refused.status_code == 403 and "admin" in refused.json()["detail"]
    grant(client, admin_headers, user_id, can_read_slide_folders=True)
    assert client.get(folders_url, headers=headers).json() == everything
    assert client.post(slides_url, headers=headers, json={"path": str(folder_slide)}).status_code == 201


def test_imported_segments_come_from_the_slide_folders_only_for_those_granted(client, admin_headers, project,
                                                                               member_headers, slide_row, settings):
    headers = member_headers(Role.owner)
    source = settings.slide_folders[0] / "cells.geojson"
    source.write_text('{"type": "FeatureCollection", "features": []}')
    url = f"/api/v1/projects/{project['id']}/slides/{slide_row}"
    for route in ("segments", "features/imported-uni"):
        refused = client.post(f"{url}/{route}", headers=headers, json={"path": str(source)})
        assert refused.status_code == 403 and "admin" in refused.json()["detail"], route


def test_a_folder_shared_with_chosen_accounts_is_listed_and_read_by_them_only(settings, cmu_slide, tmp_path):
    lab_a, lab_b = tmp_path / "lab-a", tmp_path / "lab-b"
    for folder in (lab_a, lab_b):
        folder.mkdir()
        shutil.copy(cmu_slide, folder / f"{folder.name}.svs")
    app = create_app(settings.model_copy(update={"slide_folders": [lab_a, lab_b],
                                                 "slide_folder_readers": {lab_a: ["alice"]}}))
    with app.state.database.session(write=True) as session:
        ensure_admin(session, ADMIN_PASSWORD)
    try:
        with TestClient(app) as client:
            admin = login(client, "admin", ADMIN_PASSWORD)
            project = client.post("/api/v1/projects", headers=admin, json={"name": "shared"}).json()
            for name in ("alice", "bob"):
                new_user(client, admin, name)
                client.put(f"/api/v1/projects/{project['id']}/members", headers=admin,
                           json={"username": name, "role": "owner"}).raise_for_status()
            alice, bob = login(client, "alice", PASSWORD), login(client, "bob", PASSWORD)
            assert [f["path"] for f in client.get("/api/v1/slide-folders", headers=alice).json()] == [str(lab_a.resolve())]
            assert client.get("/api/v1/slide-folders", headers=bob).json() == []
            assert len(client.get("/api/v1/slide-folders", headers=admin).json()) == 2
            slides_url = f"/api/v1/projects/{project['id']}/slides"
            assert client.post(slides_url, headers=alice, json={"path": str(lab_b / "lab-b.svs")}).status_code == 403
            assert client.post(slides_url, headers=bob, json={"path": str(lab_a / "lab-a.svs")}).status_code == 403
            assert client.post(slides_url, headers=alice, json={"path": str(lab_a / "lab-a.svs")}).status_code == 201
            # Sixteenth attack: a link in alice's folder to bob's named bob's files in what was skipped.
            (lab_a / "elsewhere").symlink_to(lab_b)
            added = client.post(slides_url, headers=alice, json={"path": str(lab_a / "*" / "*.svs")})
            assert added.status_code == 201 and added.json()["added"] == [], added.text
            assert "lab-b" not in added.text, added.text
            assert [(Path(s["path"]).name, "outside" in s["reason"]) for s in added.json()["skipped"]] == [("elsewhere", True)]
    finally:
        app.state.database.dispose()


def test_a_shared_folder_must_be_a_slide_folder(tmp_path):
    with pytest.raises(ValueError, match="SLIDELABEL_SLIDE_FOLDERS"):
        Settings(data_dir=tmp_path, slide_folders=[tmp_path / "a"], slide_folder_readers={tmp_path / "b": ["alice"]})


def test_accounts_show_their_rights_to_the_admin_and_only_their_names_to_owners(app, client, admin_headers,
                                                                                member_headers):
    from slidelabel.store.models import Role, Token, User

    viewer = member_headers(Role.viewer)
    hidden = client.post("/api/v1/users", headers=admin_headers, json={"username": "hidden", "password": "a long password"})
    client.patch(f"/api/v1/users/{hidden.json()['id']}", headers=admin_headers, json={"disabled": True})
    seen_by_admin = {u["username"]: u for u in client.get("/api/v1/users", headers=admin_headers).json()}
    assert seen_by_admin["admin"]["is_admin"] is True and seen_by_admin["hidden"]["disabled"] is True
    refused = client.get("/api/v1/users", headers=viewer)
    assert refused.status_code == 403 and "owners" in refused.json()["detail"]  # a viewer adds no one
    seen = {u["username"]: u for u in client.get("/api/v1/users", headers=member_headers(Role.owner)).json()}
    assert "admin" in seen and "hidden" not in seen
    assert all(u[flag] is None for u in seen.values()
               for flag in ("is_admin", "disabled", "can_create_projects", "can_read_slide_folders"))
    assert client.get("/api/v1/auth/me", headers=viewer).json()["is_admin"] is False


def test_a_project_description_is_bounded(client, admin_headers):
    response = client.post("/api/v1/projects", headers=admin_headers, json={"name": "long", "description": "x" * 10_001})
    assert response.status_code == 422 and "x" * 200 not in response.text


def test_logins_past_an_accounts_token_limit_end_its_oldest_sessions(app, client, admin_headers, monkeypatch):
    """Sixteenth attack: tokens piled up without limit (3 million made each login scan them all)."""
    monkeypatch.setattr(accounts, "TOKENS_PER_USER", 3)
    new_user(client, admin_headers, "often")
    sessions = [login(client, "often", PASSWORD) for _ in range(5)]
    answers = [client.get("/api/v1/auth/me", headers=headers).status_code for headers in sessions]
    assert answers == [401, 401, 200, 200, 200], answers  # new_user logged in first: the 3 newest of 6 kept
    with app.state.database.session() as session:
        assert session.query(Token).join(User).filter(User.username == "often").count() == 3
    assert me(client, admin_headers)["username"] == "admin"  # another account's sessions stay


def test_an_account_changes_its_password_and_its_other_sessions_end(client, admin_headers):
    """Sixteenth attack, low: there was no way to change a password."""
    new_user(client, admin_headers, "carol")
    here, elsewhere = login(client, "carol", PASSWORD), login(client, "carol", PASSWORD)
    url = "/api/v1/auth/password"
    wrong = client.post(url, headers=here, json={"current_password": "not it at all", "new_password": "a new secret"})
    assert wrong.status_code == 401, wrong.text
    short = client.post(url, headers=here, json={"current_password": PASSWORD, "new_password": "short"})
    assert short.status_code == 422, short.text
    changed = client.post(url, headers=here, json={"current_password": PASSWORD, "new_password": "a new secret"})
    assert changed.status_code == 204, changed.text
    assert me(client, here)["username"] == "carol"
    assert client.get("/api/v1/auth/me", headers=elsewhere).status_code == 401
    assert client.post("/api/v1/auth/login", json={"username": "carol", "password": PASSWORD}).status_code == 401
    assert login(client, "carol", "a new secret")


def test_the_admin_gives_an_account_a_new_password_and_its_sessions_end(client, admin_headers):
    user_id, headers = new_user(client, admin_headers, "dave")
    assert client.patch(f"{USERS}/{user_id}", headers=headers, json={"password": "mine now!"}).status_code == 403
    grant(client, admin_headers, user_id, password="given by the admin")
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 401
    assert login(client, "dave", "given by the admin")


def test_the_admin_setting_its_own_password_keeps_this_session_and_ends_the_others(client, admin_headers):
    """Nineteenth attack, low: the admin's PATCH of its own password ended the very session that made it."""
    me = client.get("/api/v1/auth/me", headers=admin_headers).json()
    elsewhere = login(client, "admin", ADMIN_PASSWORD)
    changed = client.patch(f"{USERS}/{me['id']}", headers=admin_headers, json={"password": "the admin's new one"})
    assert changed.status_code == 200, changed.text
    assert client.get("/api/v1/auth/me", headers=admin_headers).status_code == 200
    assert client.get("/api/v1/auth/me", headers=elsewhere).status_code == 401


@pytest.mark.postgresql
def test_a_login_checked_with_a_password_changed_meanwhile_gets_no_session(app, client, admin_headers):
    """Nineteenth attack: the password is checked in a read transaction and the token written in a
    later one; a login checked with the old password while it was changed got a token after the
    change had ended the sessions, and kept it (6 of 6 tries)."""
    from slidelabel.errors import AuthenticationError

    new_user(client, admin_headers, "erin")
    database = app.state.database
    with database.session() as read:
        checked = accounts.authenticate(read, "erin", PASSWORD)
    with database.session(write=True) as session:
        accounts.set_password(session, session.get(User, checked.id), "changed meanwhile")
    with pytest.raises(AuthenticationError, match="changed while you logged in"), \
            database.session(write=True) as session:
        accounts.issue_token(session, checked, hours=1)
    with database.session() as read:
        assert read.query(Token).filter(Token.user_id == checked.id).count() == 0


@pytest.mark.postgresql
@pytest.mark.parametrize("change", ["password", "disabled"])
def test_a_request_authenticated_before_an_admins_change_does_not_undo_it(app, client, admin_headers, change):
    """Twentieth attack: a write route merged the user its request had read (before the admin's
    change committed) into its transaction, copying the old password hash, or the account enabled,
    back over the admin's change: 6 of 6 resets undone by the user's project creations in flight,
    3 of 5 disables by its password changes."""
    from slidelabel.server.deps import current_user

    user_id, headers = new_user(client, admin_headers, f"racer-{change}")
    grant(client, admin_headers, user_id, can_create_projects=True)
    with app.state.database.session() as read:
        as_authenticated = read.get(User, user_id)  # the request read its user here...
    grant(client, admin_headers, user_id, **({"password": "reset by the admin"} if change == "password"
                                             else {"disabled": True}))  # ...then the admin's change committed
    app.dependency_overrides[current_user] = lambda: as_authenticated
    try:
        created = client.post("/api/v1/projects", headers=headers, json={"name": f"made-{change}"})
    finally:
        del app.dependency_overrides[current_user]
    if change == "password":
        assert created.status_code == 201, created.text
        assert client.post("/api/v1/auth/login", json={"username": "racer-password", "password": PASSWORD}
                           ).status_code == 401
        assert login(client, "racer-password", "reset by the admin")
    else:
        assert created.status_code == 401, created.text
        with app.state.database.session() as read:
            assert read.get(User, user_id).disabled


@pytest.mark.postgresql
def test_two_admins_disabling_each_other_leave_one_enabled(app, client, admin_headers):
    """Twentieth attack: two admins disabling each other at once both got 200, and no admin was left
    enabled. The actor is read again, locked, in the write: the second one finds itself disabled."""
    from slidelabel.server.deps import current_user

    second_id, second = new_user(client, admin_headers, "second-admin")
    with app.state.database.session(write=True) as session:
        session.get(User, second_id).is_admin = True
    with app.state.database.session() as read:
        as_authenticated = read.get(User, second_id)
    admin_id = me(client, admin_headers)["id"]
    grant(client, admin_headers, second_id, disabled=True)
    app.dependency_overrides[current_user] = lambda: as_authenticated
    try:
        answer = client.patch(f"{USERS}/{admin_id}", headers=second, json={"disabled": True})
    finally:
        del app.dependency_overrides[current_user]
    assert answer.status_code == 401, answer.text
    assert me(client, admin_headers)["disabled"] is False
