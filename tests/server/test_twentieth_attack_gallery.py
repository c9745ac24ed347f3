"""Twentieth attack, high: whoever holds a published gallery link made its maker unable to export.
A link's ``overlay.bin`` waited in its maker's export line (the maker was its turn's holder): 40
anonymous loops on one link left the owner's ``review`` answered 1 of 5 and its GeoJSON exports 4 of
11. A link's overlays now wait in a line of their own (holder: the link), and the maker's exports
never wait for them, nor they for the maker's; all links together hold at most one export turn."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager

import pytest

from slidelabel.services import exports, gallery
from slidelabel.store.models import Role


@pytest.fixture
def owners_links(client, member_headers, project) -> tuple[int, dict, list[dict]]:
    """An owner's id and headers, and two gallery links the owner made."""
    owner = member_headers(Role.owner)
    owner_id = client.get("/api/v1/auth/me", headers=owner).json()["id"]
    links = [client.post(f"/api/v1/projects/{project['id']}/gallery", headers=owner,
                         json={"overlay": "labels"}).json() for _ in range(2)]
    return owner_id, owner, links


def test_an_overlay_being_built_leaves_the_makers_exports_free(client, monkeypatch, project, slide_row,
                                                               owners_links) -> None:
    monkeypatch.setattr(exports, "EXPORT_WAIT_S", 0.2)
    _, owner, links = owners_links
    started, finish = threading.Event(), threading.Event()
    build = gallery.slide_overlay

    def slow_overlay(*args, **kwargs):
        started.set()
        assert finish.wait(30)
        return build(*args, **kwargs)

    monkeypatch.setattr(gallery, "slide_overlay", slow_overlay)
    answers: list[int] = []
    anonymous = threading.Thread(target=lambda: answers.append(
        client.get(f"/api/v1/gallery/{links[0]['token']}/slides/{slide_row}/overlay.bin").status_code))
    anonymous.start()
    try:
        assert started.wait(30), "the link's overlay never started"
        # The overlay holds its turn: the maker's own export still gets one at once.
        by_maker = client.get(f"/api/v1/projects/{project['id']}/labels/summary", headers=owner)
        held = dict(exports._EXPORTERS._held)
    finally:
        finish.set()
        anonymous.join(30)
    assert answers == [200]
    assert by_maker.status_code == 200, by_maker.text
    # The link's overlay held one export turn, for all links together, none in the maker's name.
    assert held == {gallery.GALLERIES: 1}


def test_the_makers_export_turn_does_not_stop_their_links(client, monkeypatch, slide_row, owners_links) -> None:
    monkeypatch.setattr(exports, "EXPORT_WAIT_S", 0.05)
    owner_id, _, links = owners_links
    assert exports._EXPORTERS.take_now(owner_id)  # the maker's own export is being built
    try:
        statuses = [client.get(f"/api/v1/gallery/{link['token']}/slides/{slide_row}/overlay.bin").status_code
                    for link in links]
    finally:
        exports._EXPORTERS.give_back(owner_id)
    assert statuses == [200, 200]


def test_a_projects_links_hold_one_overlay_turn_in_their_own_line(client, monkeypatch, project, slide_row,
                                                                   owners_links) -> None:
    """One line for all links of a maker (a line a link let one owner's 60 links, and a line a
    project one owner's 60 projects, starve other links: the twenty-fourth and twenty-fifth
    attacks), never their maker's export line."""
    monkeypatch.setattr(gallery, "OVERLAY_WAIT_S", 0.05)
    owner_id, _, links = owners_links
    holders: list[object] = []
    waiting = gallery.overlay_turn_waiting

    @asynccontextmanager
    async def recorded(holder):
        holders.append(holder)
        async with waiting(holder):
            yield

    monkeypatch.setattr(gallery, "overlay_turn_waiting", recorded)
    for link in links:
        assert client.get(f"/api/v1/gallery/{link['token']}/slides/{slide_row}/overlay.bin").status_code == 200
    line = gallery.link_line(owner_id)  # the links of one maker wait in one line
    assert holders == [line] * len(links)
    # A link whose turn is held (a long overlay of its own) is answered busy; the maker is not.
    assert gallery._OVERLAY_TURNS.take_now(line)
    try:
        busy = client.get(f"/api/v1/gallery/{links[0]['token']}/slides/{slide_row}/overlay.bin")
        assert exports._EXPORTERS.take_now(owner_id)
        exports._EXPORTERS.give_back(owner_id)
    finally:
        gallery._OVERLAY_TURNS.give_back(line)
    assert busy.status_code == 503 and "this link's earlier one" in busy.json()["detail"]
