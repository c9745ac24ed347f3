"""Eighth attack on issue 13, part B: requests anyone can send that froze the API for everyone.
10 MB JSON bodies of ``[{},{},...]`` (no login needed) were parsed and walked on the event loop,
4.5 s each; sixty logins of one account with its right password took both password-check turns."""

from __future__ import annotations

import asyncio

import httpx
from conftest import every_export_turn_taken

from slidelabel.server import request_checks
from slidelabel.services import accounts


def test_a_body_of_millions_of_objects_is_refused_before_it_is_parsed(client):
    body = b"[" + b"{}," * 1_500_000 + b"{}]"
    refused = client.post("/api/v1/auth/login", content=body, headers={"Content-Type": "application/json"})
    assert refused.status_code == 422, refused.text
    assert "objects and arrays" in refused.json()["detail"] and len(refused.text) < 500


def test_a_large_body_is_checked_while_others_are_answered(app, monkeypatch):
    checks: list[str] = []
    slow_check = request_checks.check_json

    def watched(value: object) -> None:
        checks.append("started")
        slow_check(value)
        checks.append("done")

    monkeypatch.setattr(request_checks, "check_json", watched)
    body = b"[" + b"[1]," * 900_000 + b"[1]]"  # allowed, and slow to walk: about a second

    async def run() -> list[str]:
        finished: list[str] = []
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as http:
            async def large() -> None:
                await http.post("/api/v1/auth/login", content=body, headers={"Content-Type": "application/json"})
                finished.append("large")

            async def small() -> None:
                while not checks:
                    await asyncio.sleep(0.001)
                await http.get("/api/v1/auth/me")
                finished.append(f"small while the check was {'done' if 'done' in checks else 'running'}")

            await asyncio.gather(large(), small())
        return finished

    assert asyncio.run(run())[0] == "small while the check was running"


def test_one_clients_logins_leave_the_other_password_turn_to_everyone_else(client, monkeypatch):
    monkeypatch.setattr(accounts, "PASSWORD_CHECK_WAIT_S", 0.05)
    credentials = {"username": "admin", "password": "admin-password"}
    for holder, status in (("testclient", 503), ("another address", 200)):
        assert accounts.PASSWORD_CHECKS.take_now(holder)  # that client's earlier login is being checked
        try:
            answer = client.post("/api/v1/auth/login", json=credentials)
        finally:
            accounts.PASSWORD_CHECKS.give_back(holder)
        assert answer.status_code == status, (holder, answer.text)


def test_json_tables_waiting_for_an_export_turn_hold_no_request_thread(app, monkeypatch, member_headers, slide_url):
    """Forty-five requests for a superpixel table as JSON not yet cached, while a viewer's exports
    held both export turns, waited for their turn in the API's 40 request threads: every other
    request of every user waited 12 s."""
    from slidelabel.services import exports
    from slidelabel.store.models import Role

    monkeypatch.setattr(exports, "EXPORT_WAIT_S", 3.0)
    viewers = [member_headers(Role.viewer) for _ in range(3)]
    finished: list[str] = []

    async def run() -> list[int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=120) as http:
            async def one(url: str, headers: dict, kind: str, delay_s: float = 0.0) -> int:
                await asyncio.sleep(delay_s)
                status = (await http.get(url, headers=headers)).status_code
                finished.append(kind)
                return status
            tables = [one(f"{slide_url}/superpixels", viewers[i % 3], "table") for i in range(45)]
            return await asyncio.gather(*tables, one("/api/v1/auth/me", viewers[0], "honest", delay_s=0.3))

    with every_export_turn_taken():  # others' exports build
        statuses = asyncio.run(run())
    assert set(statuses[:45]) == {503} and statuses[-1] == 200
    assert finished[0] == "honest", "the honest request waited for a thread until the tables gave up"
