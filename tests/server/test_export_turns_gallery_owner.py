"""A gallery link's export turn is held in the name of the user who made the link: one person
holds at most one of the server's export turns however they ask (their account, any of their
links). Before, an account and a link it made were two holders, so one owner could hold both
turns and keep everyone else's exports waiting."""

from __future__ import annotations

import pytest
from slidelabel.services import exports
from slidelabel.store.models import Role


@pytest.fixture
def owners_link(client, member_headers, project) -> tuple[int, dict, list[str]]:
    """An owner's id and headers, and the tokens of two gallery links the owner made."""
    owner = member_headers(Role.owner)
    owner_id = client.get("/api/v1/auth/me", headers=owner).json()["id"]
    tokens = [client.post(f"/api/v1/projects/{project['id']}/gallery", headers=owner,
                          json={"overlay": "labels"}).json()["token"] for _ in range(2)]
    return owner_id, owner, tokens


def test_an_owners_export_and_their_gallery_links_share_one_turn(client, monkeypatch, member_headers, project,
                                                                 slide_row, owners_link) -> None:
    monkeypatch.setattr(exports, "EXPORT_WAIT_S", 0.05)
    owner_id, owner, tokens = owners_link
    other = member_headers(Role.viewer)
    summary = f"/api/v1/projects/{project['id']}/labels/summary"
    assert exports._EXPORTERS.take_now(owner_id)  # the owner's own export still builds
    try:
        by_link = [client.get(f"/api/v1/gallery/{token}/slides/{slide_row}/overlay.bin") for token in tokens]
        by_account = client.get(summary, headers=owner)
        by_other = client.get(summary, headers=other)
    finally:
        exports._EXPORTERS.give_back(owner_id)
    assert [response.status_code for response in by_link] == [503, 503]
    assert "your own earlier one" in by_link[0].json()["detail"]
    assert by_account.status_code == 503
    assert by_other.status_code == 200, "the second turn was not free for another user"
    assert client.get(f"/api/v1/gallery/{tokens[0]}/slides/{slide_row}/overlay.bin").status_code == 200

