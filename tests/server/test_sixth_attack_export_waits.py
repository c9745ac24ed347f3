"""Sixth attack on issue 13: sixty parallel exports by one viewer, waiting for the two export
turns, each held one of the API's 40 request threads for up to 10 s, so every other request of
every user waited for a thread as long. Exports now wait for their turn on the event loop."""

from __future__ import annotations

import asyncio

import httpx
from conftest import every_export_turn_taken

from slidelabel.services import exports
from slidelabel.services.turns import WAITING_PER_HOLDER
from slidelabel.store.models import Role

WAITING = 60


def test_requests_waiting_for_an_export_turn_hold_no_request_thread(app, monkeypatch, member_headers, project,
                                                                    slide_row):
    monkeypatch.setattr(exports, "EXPORT_WAIT_S", 5.0)
    viewer = member_headers(Role.viewer)
    export = f"/api/v1/projects/{project['id']}/slides/{slide_row}/export/geojson"
    finished: list[str] = []

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as client:
            async def one(url: str, kind: str, delay_s: float = 0.0) -> int:
                await asyncio.sleep(delay_s)
                status = (await client.get(url, headers=viewer)).status_code
                finished.append(kind)
                return status
            return await asyncio.gather(*(one(export, "export") for _ in range(WAITING)),
                                        one("/api/v1/auth/me", "honest", delay_s=0.5))

    with every_export_turn_taken():  # others' exports build
        statuses = asyncio.run(run())
    assert statuses[:WAITING] == [503] * WAITING and statuses[-1] == 200
    # Past the waiting bound, the viewer's other exports are refused at once; the honest request
    # comes before any that waited.
    assert finished.index("honest") <= WAITING - WAITING_PER_HOLDER, \
        "the honest request waited for a thread until the exports gave up"


def test_effective_labels_are_built_in_an_export_turn_and_ones_own_without(app, client, monkeypatch, member_headers,
                                                                            project, slide_row):
    """Sixth attack: the gallery overlay (no account needed), ``labels.bin?view=effective``, the
    labels mask, the agreement, the review list and the label summary read every label row of a
    slide or project (4.8 million: 30 s and 800 MB each), as many at once as were asked for; now
    in export turns."""
    monkeypatch.setattr(exports, "EXPORT_WAIT_S", 0.05)
    owner = member_headers(Role.owner)
    link = client.post(f"/api/v1/projects/{project['id']}/gallery", headers=owner, json={"overlay": "labels"}).json()
    urls = {f"/api/v1/projects/{project['id']}/slides/{slide_row}/labels.bin?view=effective": 503,
            f"/api/v1/projects/{project['id']}/agreement": 503,
            f"/api/v1/projects/{project['id']}/review": 503,
            f"/api/v1/projects/{project['id']}/labels/summary": 503,
            f"/api/v1/projects/{project['id']}/slides/{slide_row}/labels.bin": 200,
            f"/api/v1/gallery/{link['token']}/slides/{slide_row}/overlay.bin": 503}
    with every_export_turn_taken():  # others' exports build
        statuses = {url: client.get(url, headers=owner).status_code for url in urls}
    assert statuses == urls


def test_smart_tool_requests_past_the_running_ones_wait_on_the_event_loop(client, monkeypatch, member_headers,
                                                                          project, slide_row):
    """Requests of the smart tool queued behind its measuring and embedding turns waited in request
    threads (10 and 30 s); now at most ``SMART_REQUESTS`` run, the others wait without a thread."""
    from slidelabel.services import smart

    monkeypatch.setattr(smart, "SMART_WAIT_S", 0.05)
    held = [smart._SMART_REQUESTS.take_now() for _ in range(smart.SMART_REQUESTS)]
    try:
        response = client.get(f"/api/v1/projects/{project['id']}/slides/{slide_row}/shapes/scales?superpixel=1",
                              headers=member_headers(Role.viewer))
    finally:
        for _ in held:
            smart._SMART_REQUESTS.give_back()
    assert response.status_code == 503 and "smart tool is busy" in response.json()["detail"]
