"""Many write requests at once queue for SQLite's write turn without freezing the server.

Before, a write session took the turn in one of anyio's 40 pool threads and ran its route in
another: with more than 40 writers waiting in pool threads, the holder's route never got a
thread, every request waited 60 s and the waiters were answered 503 (the sixth attack froze a
server with 41 concurrent logins, and with 45 label writes of one annotator)."""

from __future__ import annotations

import asyncio
import secrets
import threading

import httpx
import pytest
from conftest import ADMIN_PASSWORD
from sqlalchemy import text

from slidelabel.store.models import Role

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

#: More concurrent writers than anyio's default pool has threads (40).
WRITERS = 60
#: Concurrent readers of each kind: more than the pool's threads and SQLite's old pool (15) together.
READERS = 80


def _burst(app, requests: list[tuple[str, str, dict]], *, clients: int = 1) -> list[int]:
    """The statuses of ``requests`` sent at once, from ``clients`` addresses in turn (one address
    has at most ``SLIDELABEL_MAX_CONNECTIONS_PER_ADDRESS`` requests answered at once)."""
    async def run() -> list[int]:
        sessions = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(f"10.0.0.{n + 1}", 1234)),
                                      base_url="http://test", timeout=300) for n in range(clients)]

        async def one(number: int, method: str, url: str, kwargs: dict) -> int:
            return (await sessions[number % clients].request(method, url, **kwargs)).status_code

        try:
            return await asyncio.gather(*(one(number, *request) for number, request in enumerate(requests)))
        finally:
            for session in sessions:
                await session.aclose()

    return asyncio.run(run())


def test_more_concurrent_writers_than_pool_threads_all_get_their_turn(app):
    logouts = [("POST", "/api/v1/auth/logout", {"headers": {"Authorization": f"Bearer {secrets.token_hex(8)}"}})
               for _ in range(WRITERS)]
    login = ("POST", "/api/v1/auth/login", {"json": {"username": "admin", "password": ADMIN_PASSWORD}})
    statuses = _burst(app, [*logouts, login])
    assert statuses.count(204) == WRITERS, f"writers answered {sorted(set(statuses))}: some waited out the turn"
    assert statuses[-1] == 200


def test_more_concurrent_label_writes_than_pool_threads_are_all_answered(app, project, member_headers, slide_row):
    """Seventh attack: 60 concurrent label writes of one annotator froze the server for 30 s and 26
    answered 500. A sync route's answer is checked in another pool thread, so a write session
    committed after that check held the write turn while every thread waited for it."""
    annotator = member_headers(Role.annotator)
    tumour, stroma = (c["id"] for c in project["categories"][:2])
    url = f"/api/v1/projects/{project['id']}/slides/{slide_row}/labels"
    writes = [("PUT", url, {"headers": annotator, "json": {"superpixels": [i % 40 + 1], "category_id": (tumour, stroma)[i % 2]}})
              for i in range(WRITERS)]
    statuses = _burst(app, [*writes, ("GET", "/api/v1/auth/me", {"headers": annotator})])
    assert statuses == [200] * (WRITERS + 1), f"answers: {sorted(set(statuses))}"


def test_many_concurrent_reads_of_a_viewer_and_of_a_gallery_link_are_all_answered(client, app, project, member_headers):
    """Seventh attack: 70-120 concurrent GETs of a viewer (job list, slides), or 60 of a gallery
    link without an account, froze the server 30-60 s with 500s: each route kept its pooled
    connection while its answer waited for a second request thread, and SQLite's pool had 15."""
    viewer, owner = member_headers(Role.viewer), member_headers(Role.owner)
    link = client.post(f"/api/v1/projects/{project['id']}/gallery", headers=owner, json={"overlay": "labels"}).json()
    reads = [("GET", f"/api/v1/projects/{project['id']}/jobs", {"headers": viewer}) for _ in range(READERS)]
    reads += [("GET", f"/api/v1/gallery/{link['token']}", {}) for _ in range(READERS)]
    statuses = _burst(app, reads, clients=2)  # 80 a client address, within its bound of 100
    assert statuses == [200] * (2 * READERS), f"answers: {sorted(set(statuses))}"


def test_a_failed_login_is_answered_while_another_request_holds_the_write_turn(app):
    """The password check (Argon2: 64 MiB, a fraction of a second) runs before the login's write
    transaction: a wrong password is answered without waiting for the writer before it, and
    logins do not hold every other writer up."""
    holding, answered = threading.Event(), threading.Event()

    def writer() -> None:
        with app.state.database.session(write=True) as session:
            session.execute(text("DELETE FROM tokens WHERE 1 = 0"))  # begins the transaction: the turn is taken
            holding.set()
            answered.wait(timeout=60)

    thread = threading.Thread(target=writer)
    thread.start()
    holding.wait(timeout=60)
    statuses = _burst(app, [("POST", "/api/v1/auth/login", {"json": {"username": "admin", "password": "wrong-password"}})])
    still_holding = thread.is_alive()
    answered.set()
    thread.join()
    assert statuses == [401]
    assert still_holding, "the login waited for the other writer to end"
