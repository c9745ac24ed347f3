"""Sixth attack on issue 13: a gallery link went on opening its project after its creator was
removed from the project or disabled, and the owners' list did not say who made each link. A
link now opens only while its creator may publish it (an enabled owner, or the admin)."""

from __future__ import annotations

from slidelabel.store.models import Role, User

API = "/api/v1"


def _me(client, headers) -> int:
    return client.get(f"{API}/auth/me", headers=headers).json()["id"]


def _publish(client, headers, project) -> dict:
    response = client.post(f"{API}/projects/{project['id']}/gallery", headers=headers, json={"overlay": "labels"})
    assert response.status_code == 201, response.text
    return response.json()


def _opens(client, link) -> int:
    return client.get(f"{API}/gallery/{link['token']}").status_code


def test_a_link_stops_when_its_creator_leaves_the_project(client, project, admin_headers, member_headers):
    owner = member_headers(Role.owner)
    link = _publish(client, owner, project)
    assert _opens(client, link) == 200
    listed = client.get(f"{API}/projects/{project['id']}/gallery", headers=admin_headers).json()
    assert listed[0]["created_by"] == _me(client, owner)
    removed = client.delete(f"{API}/projects/{project['id']}/members/{_me(client, owner)}", headers=admin_headers)
    assert removed.status_code in (200, 204), removed.text
    assert _opens(client, link) == 404


def test_a_link_stops_when_its_creator_is_disabled_and_the_admins_go_on(app, client, project, admin_headers,
                                                                     member_headers):
    owner = member_headers(Role.owner)
    link, admins = _publish(client, owner, project), _publish(client, admin_headers, project)
    with app.state.database.session(write=True) as session:
        session.get(User, _me(client, owner)).disabled = True
    assert _opens(client, link) == 404
    assert _opens(client, admins) == 200
