"""Many labellers brushing one slide at once, against a real server: no label and no history lost."""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import pytest
import uvicorn
from argon2 import PasswordHasher
from sqlalchemy import select

from slidelabel.store.models import LabelEvent, Membership, Role, User

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py

USERS = 20
#: Clients that share a user with another client (the same person in two browser tabs).
SHARED = 4
STROKES = 6
#: Strokes fall on the first superpixels of the slide, so that they overlap a lot.
SPAN, STROKE = 300, 80
PASSWORD = "brush-password"


@contextmanager
def serving(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free local port in a thread; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class Client:
    """One labeller's tab: its strokes and the server's answers, in the order sent."""

    user_id: int
    token: str
    strokes: list[tuple[list[int], int | None]] = field(default_factory=list)
    answers: list[tuple[int, dict]] = field(default_factory=list)


def _make_users(app, project_id: int) -> list[tuple[int, str]]:
    """``USERS`` annotators of the project with the password ``PASSWORD``, hashed once with cheap
    argon2 parameters (a login verifies with the parameters stored in the hash)."""
    password_hash = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(PASSWORD)
    with app.state.database.session(write=True) as session:
        users = [User(username=f"brush-{i}", password_hash=password_hash) for i in range(USERS)]
        session.add_all(users)
        session.flush()
        session.add_all(Membership(project_id=project_id, user_id=u.id, role=Role.annotator) for u in users)
        return [(u.id, u.username) for u in users]


def _brush(base_url: str, url: str, client: Client, barrier: threading.Barrier) -> None:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {client.token}"}, timeout=120) as http:
        barrier.wait()
        for superpixels, category_id in client.strokes:
            response = http.put(url, json={"superpixels": superpixels, "category_id": category_id})
            client.answers.append((response.status_code, response.json()))


def _replay(strokes: list[tuple[list[int], int | None]]) -> tuple[dict[int, int], list[int]]:
    """The labels and per-stroke change counts that ``strokes`` give applied one after another."""
    labels: dict[int, int] = {}
    changes = []
    for superpixels, category_id in strokes:
        changed = 0
        for s in set(superpixels):
            if labels.get(s) != category_id:
                changed += 1
                if category_id is None:
                    labels.pop(s)
                else:
                    labels[s] = category_id
        changes.append(changed)
    return labels, changes


def test_concurrent_brushes_lose_no_label_and_no_history(app, project, slide_row):
    users = _make_users(app, project["id"])
    categories = [c["id"] for c in project["categories"]] + [None]
    rng = random.Random(7)
    with serving(app) as base_url:
        tokens = {}
        with httpx.Client(base_url=base_url, timeout=60) as http:
            for user_id, username in users:
                response = http.post("/api/v1/auth/login", json={"username": username, "password": PASSWORD})
                tokens[user_id] = response.json()["token"]
        clients = [Client(user_id, tokens[user_id]) for user_id, _ in users]
        clients += [Client(user_id, tokens[user_id]) for user_id, _ in users[:SHARED]]
        for client in clients:
            for _ in range(STROKES):
                start = rng.randint(1, SPAN - STROKE)
                superpixels = rng.sample(range(start, start + STROKE), k=STROKE // 2) + [start]
                client.strokes.append((superpixels, rng.choice(categories)))
        url = f"/api/v1/projects/{project['id']}/slides/{slide_row}/labels"
        barrier = threading.Barrier(len(clients))
        threads = [threading.Thread(target=_brush, args=(base_url, url, c, barrier)) for c in clients]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
        elapsed = time.perf_counter() - started
        final = {}
        reader = {"Authorization": f"Bearer {tokens[users[0][0]]}"}
        with httpx.Client(base_url=base_url, timeout=60, headers=reader) as http:
            for label in http.get(url, params={"user": "all"}).json():
                final[(label["user_id"], label["superpixel"])] = label["category_id"]
    print(f"\n{len(clients) * STROKES} concurrent strokes on {app.state.database.engine.dialect.name}: {elapsed:.1f} s")

    assert all(status == 200 for c in clients for status, _ in c.answers), [
        answer for c in clients for answer in c.answers if answer[0] != 200][:3]
    assert all(len(c.answers) == STROKES for c in clients)
    with app.state.database.session() as session:
        events = session.execute(select(LabelEvent.user_id, LabelEvent.superpixel, LabelEvent.previous_category_id,
                                        LabelEvent.category_id).where(LabelEvent.slide_id == slide_row)
                                 .order_by(LabelEvent.id)).all()
    # Every user's history is one unbroken chain per superpixel ending at the final label.
    chain: dict[tuple[int, int], int | None] = {}
    for user_id, superpixel, previous, category_id in events:
        assert chain.get((user_id, superpixel)) == previous
        chain[(user_id, superpixel)] = category_id
    assert {key: value for key, value in chain.items() if value is not None} == final
    for user_id, _ in users:
        mine = [c for c in clients if c.user_id == user_id]
        reported = sum(answer["changed"] for c in mine for _, answer in c.answers)
        assert reported == sum(1 for event in events if event.user_id == user_id)
        if len(mine) == 1:  # alone on their user: exactly what their strokes give in order
            labels, changes = _replay(mine[0].strokes)
            assert [answer["changed"] for _, answer in mine[0].answers] == changes
            assert {s: c for (u, s), c in final.items() if u == user_id} == labels
