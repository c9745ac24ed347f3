"""Twenty-third attack on gallery links (control plane, three mediums):

- every link's renders waited in one line (all links together were one holder of 16 waiting
  requests), so one anonymous visitor looping on link A filled it and link B's visitors got 503 on
  46 of 62 requests: now each link waits in a line of its own and the links take the turn in turn;
- a holder took two of the four render turns, so one viewer and one link's visitor took all four
  and another user's thumbnails waited 9-17 s, or 30 s for a 503: now a holder takes one;
- each request about one slide read every slide of the project (a link to 5,004 slides: a user's
  requests waited 8-9 s under ten anonymous requests a second): now only that slide is read."""

from __future__ import annotations

import asyncio
import shutil
import time

import pytest

from slidelabel.errors import BusyError, NotFoundError
from slidelabel.services import gallery, tiles
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Slide

API = "/api/v1"


def test_one_links_full_line_leaves_other_links_their_turn(monkeypatch):
    monkeypatch.setattr(tiles, "RENDER_WAIT_S", 5.0)
    order: list[str] = []

    async def render(link: str, hold: asyncio.Event | None = None) -> str:
        try:
            async with gallery.render_turn_waiting(link):
                order.append(link)
                if hold is not None:
                    await hold.wait()
            return "rendered"
        except BusyError:
            return "busy"

    async def attack() -> tuple[list[str], str, str]:
        release = asyncio.Event()
        holding = asyncio.create_task(render("A", release))
        await asyncio.sleep(0.05)
        waiting_a = [asyncio.create_task(render("A")) for _ in range(16)]
        await asyncio.sleep(0.05)
        one_more_a = await render("A")  # A's line is full: busy at once
        b = asyncio.create_task(render("B"))
        await asyncio.sleep(0.05)
        release.set()
        results = await asyncio.gather(holding, *waiting_a)
        return results, one_more_a, await b

    results, one_more_a, b = asyncio.run(attack())
    assert one_more_a == "busy" and b == "rendered" and set(results) == {"rendered"}
    assert order[:3] == ["A", "A", "B"]  # after one of the 16 that waited before it: links in turn


def test_one_user_and_the_links_leave_two_render_turns():
    taken = []
    try:
        for holder in [("user", 1), gallery.GALLERIES]:
            while tiles._RENDERS.take_now(holder):
                taken.append(holder)
        assert taken == [("user", 1), gallery.GALLERIES]
        for holder in [("user", 2), ("user", 3)]:
            assert tiles._RENDERS.take_now(holder)
            taken.append(holder)
    finally:
        for holder in taken:
            tiles._RENDERS.give_back(holder)


@pytest.fixture
def link(app, client, admin_headers, project, slide_row, cmu_superpixels) -> str:
    shutil.copytree(cmu_superpixels, ProjectFiles(app.state.settings.data_dir, project["id"]).superpixels(slide_row))
    response = client.post(f"{API}/projects/{project['id']}/gallery", headers=admin_headers, json={})
    assert response.status_code == 201, response.text
    return response.json()["token"]


def test_a_request_about_one_slide_reads_only_that_slide(client, link, slide_row, monkeypatch):
    def every_slide(*args, **kwargs):
        raise AssertionError("read every slide of the project for one slide's request")

    base = f"{API}/gallery/{link}"
    assert [s["id"] for s in client.get(base).json()["slides"]] == [slide_row]
    monkeypatch.setattr(gallery, "slides_of", every_slide)
    for path in ("tiles", "tiles/4/0/0.jpg", "thumbnail.jpg", "superpixel-tiles/3/0/0.png", "overlay.bin"):
        assert client.get(f"{base}/slides/{slide_row}/{path}").status_code == 200, path
    assert client.get(f"{base}/slides/{slide_row + 1}/tiles").status_code == 404


def test_a_link_to_chosen_slides_opens_no_other(app, client, admin_headers, project, slide_row, cmu_slide):
    with app.state.database.session(write=True) as session:
        other = Slide(project_id=project["id"], name="second.svs", path=str(cmu_slide), width=2220, height=2967,
                      mpp=0.499, superpixels=1000)
        session.add(other)
        session.flush()
        other_id = other.id
    response = client.post(f"{API}/projects/{project['id']}/gallery", headers=admin_headers,
                           json={"slide_ids": [slide_row]})
    assert response.status_code == 201, response.text
    base = f"{API}/gallery/{response.json()['token']}/slides"
    assert client.get(f"{base}/{slide_row}/tiles").status_code == 200
    assert client.get(f"{base}/{other_id}/tiles").status_code == 404
    assert client.get(f"{base}/{other_id}/thumbnail.jpg").status_code == 404


def test_pages_are_built_in_turn(client, link, slide_row, monkeypatch):
    """A page lists every slide its link shows: one is built at a time, each link in a line of its
    own, and one that waits too long is busy; a slide's requests take no page turn."""
    monkeypatch.setattr(gallery, "PAGE_WAIT_S", 0.2)
    assert gallery._PAGE_TURNS.take_now("someone")
    try:
        assert client.get(f"{API}/gallery/{link}").status_code == 503
        assert client.get(f"{API}/gallery/{link}/slides/{slide_row}/tiles").status_code == 200
    finally:
        gallery._PAGE_TURNS.give_back("someone")
    assert client.get(f"{API}/gallery/{link}").status_code == 200


def _get_hanging_up(app, path: str, after_s: float) -> list[dict]:
    """The messages ``app`` sends for a GET of ``path`` whose client hangs up ``after_s`` seconds
    after sending it, called as an ASGI server calls it."""
    sent: list[dict] = []

    async def call() -> None:
        start, body = time.monotonic(), [{"type": "http.request", "body": b"", "more_body": False}]

        async def receive() -> dict:
            if body:
                return body.pop()
            if time.monotonic() - start >= after_s:
                return {"type": "http.disconnect"}
            await asyncio.Event().wait()  # nothing more from a client still there
            return {}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
                 "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
                 "headers": [(b"host", b"testserver")], "client": ("127.0.0.9", 50000), "server": ("testserver", 80)}
        await app(scope, receive, send)

    asyncio.run(call())
    return sent


def test_a_render_whose_client_hung_up_while_waiting_is_not_made(app, client, link, slide_row, monkeypatch):
    """Twenty-second attack, low: a render waiting for its turn was made after its client had gone."""
    made: list[int] = []
    monkeypatch.setattr(tiles, "slide_thumbnail", lambda source, width: made.append(width) or b"jpeg")
    path = f"{API}/gallery/{link}/slides/{slide_row}/thumbnail.jpg"
    assert tiles._RENDERS.take_now(gallery.GALLERIES)  # the links' render turn is busy
    try:
        sent = _get_hanging_up(app, path, after_s=0.3)
    finally:
        tiles._RENDERS.give_back(gallery.GALLERIES)
    assert sent[0]["status"] == 499 and made == []
    assert _get_hanging_up(app, path, after_s=60)[0]["status"] == 200 and made == [256]


def test_the_links_of_a_maker_wait_in_one_line_and_unknown_tokens_in_none(app, client, admin_headers, project,
                                                                        link, monkeypatch):
    """Twenty-fourth and twenty-fifth attacks, mediums: each link was a line of its own, so one
    owner's 60 links kept other makers' pages 10 s or 503 (and a line a project, one owner's 60
    projects), and so was each random token (a line per digest, waiting for the page turn before
    the token was looked up)."""
    from slidelabel.server.deps import _gallery_link

    other = client.post(f"{API}/projects", headers=admin_headers, json={"name": "another", "extractor": "color"})
    published = client.post(f"{API}/projects/{other.json()['id']}/gallery", headers=admin_headers, json={}).json()
    second = published["token"]
    admin_id = client.get(f"{API}/auth/me", headers=admin_headers).json()["id"]
    with app.state.database.session() as session:
        assert _gallery_link(session, link) == _gallery_link(session, second) == gallery.link_line(admin_id)
    monkeypatch.setattr(gallery, "PAGE_WAIT_S", 5.0)
    assert gallery._PAGE_TURNS.take_now("someone")
    try:
        unknown = client.get(f"{API}/gallery/{'x' * 43}")
        assert unknown.status_code == 404 and unknown.json()["detail"] == gallery.UNKNOWN  # at once, no wait
    finally:
        gallery._PAGE_TURNS.give_back("someone")
    assert client.delete(f"{API}/projects/{other.json()['id']}/gallery/{published['id']}",
                         headers=admin_headers).status_code in (200, 204)
    with app.state.database.session() as session, pytest.raises(NotFoundError):
        _gallery_link(session, second)  # revoked
