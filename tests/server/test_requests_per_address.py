"""One client address's requests being answered at once are bounded, whether or not its client
still waits for them (seventeenth attack, high: requests sent on fresh connections that were
closed at once held no connection, so the connection bound never applied; 148,810 of them in a
minute took the API to 7.8 GB and left it unanswering for minutes)."""

from __future__ import annotations

import asyncio

from slidelabel.server.requests_per_address import RequestsPerAddress


def _scope(address: str) -> dict:
    return {"type": "http", "method": "GET", "path": "/", "headers": [], "client": (address, 1234)}


def test_requests_past_an_addresss_bound_are_refused_until_earlier_ones_are_answered():
    async def run() -> list[int]:
        release = asyncio.Event()

        async def slow_app(scope, receive, send) -> None:  # a route still working for a client gone
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        bounded = RequestsPerAddress(slow_app, limit=2)

        async def ask(address: str) -> int:
            sent: list[dict] = []

            async def send(message: dict) -> None:
                sent.append(message)

            async def receive() -> dict:
                return {"type": "http.disconnect"}  # the client hung up after sending its request

            await bounded(_scope(address), receive, send)
            return sent[0]["status"]

        held = [asyncio.create_task(ask("10.0.0.1")) for _ in range(2)]
        await asyncio.sleep(0.01)
        refused = await ask("10.0.0.1")
        other = asyncio.create_task(ask("10.0.0.2"))  # another address is not refused
        await asyncio.sleep(0.01)
        release.set()
        answered = [*(await asyncio.gather(*held)), await other, await ask("10.0.0.1")]
        assert not bounded.in_flight  # every count given back
        return [refused, *answered]

    assert asyncio.run(run()) == [503, 200, 200, 200, 200]


def test_the_bound_is_the_servers_connection_bound(client, app):
    assert client.get("/api/v1/auth/me").status_code == 401  # requests pass through it (and build the stack)
    layer = app.middleware_stack
    while not isinstance(layer, RequestsPerAddress):
        layer = layer.app
    assert layer.limit == app.state.settings.max_connections_per_address == 100


def test_one_tokens_requests_are_bounded_from_whatever_addresses_they_come():
    """Nineteenth attack: one viewer's token sent on fresh connections from 200 addresses kept
    another user's /auth/me waiting 22 s and its tiles 54 s. A token's requests count together,
    before it is checked; requests of other tokens, and without one, are not refused."""
    async def run() -> list[int]:
        release = asyncio.Event()

        async def slow_app(scope, receive, send) -> None:
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        bounded = RequestsPerAddress(slow_app, limit=2)

        async def ask(address: str, *, header: str | None = None, query: str = "") -> int:
            sent: list[dict] = []

            async def send(message: dict) -> None:
                sent.append(message)

            async def receive() -> dict:
                return {"type": "http.disconnect"}

            scope = {**_scope(address), "query_string": query.encode(),
                     "headers": [(b"authorization", header.encode())] if header else []}
            await bounded(scope, receive, send)
            return sent[0]["status"]

        held = [asyncio.create_task(ask(f"10.0.1.{i}", header="Bearer bobs")) for i in range(2)]
        await asyncio.sleep(0.01)
        refused = [await ask("10.0.1.9", header="Bearer bobs"), await ask("10.0.1.8", query="size=1&token=bobs")]
        others = [asyncio.create_task(ask("10.0.1.7", header="Bearer carols")),
                  asyncio.create_task(ask("10.0.1.6", query="token=carols")), asyncio.create_task(ask("10.0.1.5"))]
        await asyncio.sleep(0.01)
        release.set()
        answered = [*(await asyncio.gather(*held, *others))]
        assert not bounded.in_flight
        return [*refused, *answered]

    assert asyncio.run(run()) == [503, 503, 200, 200, 200, 200, 200]
