"""A 2xx means the write is committed: with every commit slowed, a read sent right after the
answer sees the new value (a real server, as a test client waits for the whole app call)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from sqlalchemy.orm import Session

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py


@pytest.fixture
def live_url(app) -> Iterator[str]:
    """``app`` served by uvicorn on a free local port, in a thread."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}/api/v1"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def slow_commits(monkeypatch) -> None:
    commit = Session.commit

    def slow(self: Session) -> None:
        if self.bind.get_execution_options().get("write"):  # the sessions of Database.session(write=True)
            time.sleep(0.2)
        commit(self)

    monkeypatch.setattr(Session, "commit", slow)


def test_a_write_answered_is_read_back(live_url, admin_headers, slow_commits):
    with httpx.Client(base_url=live_url, headers=admin_headers, timeout=30) as http:
        created = http.post("/projects", json={"name": "fresh", "categories": [{"name": "tumour"}]})
        assert created.status_code == 201, created.text
        project_id = created.json()["id"]
        assert http.get(f"/projects/{project_id}").status_code == 200
        assert http.patch(f"/projects/{project_id}", json={"description": "new"}).status_code == 200
        assert http.get(f"/projects/{project_id}").json()["description"] == "new"
        category = created.json()["categories"][0]["id"]
        assert http.patch(f"/projects/{project_id}/categories/{category}", json={"name": "tumor"}).status_code == 200
        assert [c["name"] for c in http.get(f"/projects/{project_id}").json()["categories"]] == ["tumor"]
        assert http.delete(f"/projects/{project_id}").status_code == 204
        assert http.get(f"/projects/{project_id}").status_code == 404
