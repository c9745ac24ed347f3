"""The connection bounds of ``slidelabel serve`` (``http_protocol.BoundedH11Protocol``) against the
twenty-fourth attack, on a real uvicorn server whose small app stands in for the routes.

HIGH 1: a route that listens for its client's disconnect while its answer is pending (a render
waiting for its turn, a streaming response) resumes reading the socket, and h11, paused on the
pipelined next request, kept all that arrived: 12 connections each pipelining as fast as they
could took the server from 0.95 to 3.49 GB in 30 s. Now bytes pipelined ahead of an answer past
``MAX_PIPELINED_BYTES`` close the connection.

HIGH 2: at the total bound only bodies in progress for a whole ``body_timeout_s`` could make room,
so connections that sent a head and 1 body byte, held 50 s (of a 60 s window), closed and
reconnected were never eligible: another user's ``/auth/me`` got 503 on 63 of 73 tries. Now bodies
are ranked after ``BODY_RANKING_MIN_AGE_S``, and a new connection takes the place only of one whose
address holds more connections than its own (the attackers' renewed connections took the room each
eviction made)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import free_port
from serve_process import kill_group, wait_until_serving

from slidelabel.server.http_protocol import BODY_RANKING_MIN_AGE_S, MAX_PIPELINED_BYTES

#: Connections the server under test holds at most.
MAX_CONNECTIONS = 6
#: The body window (s): longer than the tests, so that no body here is closed for its rate.
BODY_TIMEOUT_S = 60.0
#: Seconds a client waits for the server to answer or close (generous: a loaded CI machine).
WAIT_S = 30
#: Bytes a client pipelines behind a request whose answer is held (1 MB, far past the bound).
PIPELINED_BYTES = 1_000_000
assert PIPELINED_BYTES > 4 * MAX_PIPELINED_BYTES

#: An ASGI app run by uvicorn with ``BoundedH11Protocol``: ``GET /hold`` looks for its client's
#: disconnect every 20 ms (for up to WAIT_S) before answering, as a render waiting for its turn does; ``POST``
#: reads its body; anything else is answered at once.
APP = f"""
import asyncio, functools, sys, uvicorn
from slidelabel.server.http_protocol import BoundedH11Protocol, ConnectionLimits, OpenConnections, new_event_loop

async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    if scope["method"] == "POST":
        while (await receive()).get("more_body"):
            pass
    elif scope["path"] == "/hold":
        await receive()
        for _ in range({int(WAIT_S / 0.02)}):  # Starlette's is_disconnected every 20 ms, as renders waiting do
            try:
                if (await asyncio.wait_for(receive(), 0.02))["type"] == "http.disconnect":
                    break
            except asyncio.TimeoutError:
                pass
    await send({{"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}})
    await send({{"type": "http.response.body", "body": b"ok"}})

limits = ConnectionLimits(head_timeout_s=30, body_timeout_s={BODY_TIMEOUT_S}, per_address=0, total={MAX_CONNECTIONS})
uvicorn.run(app, port=int(sys.argv[1]), http=functools.partial(BoundedH11Protocol, limits=limits,
            connections=OpenConnections()), loop=new_event_loop, ws="none", lifespan="off")
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The app above on a free port, at most MAX_CONNECTIONS connections; yields its port."""
    port, log_path = free_port(), tmp_path_factory.mktemp("connections24") / "serve.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", APP, str(port)], env={**os.environ, "OMP_NUM_THREADS": "1"},
                                   stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until_serving(lambda: _request(port), process, log_path)
        yield port
    finally:
        kill_group(process)


def _request(port: int, *, source: str = "127.0.0.2") -> httpx.Response:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=WAIT_S,
                      transport=httpx.HTTPTransport(local_address=source)) as client:
        return client.get("/")


def _closed_within(connection: socket.socket, seconds: float) -> bool:
    """Whether the server closes ``connection`` within ``seconds`` (what it sends is skipped)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if select.select([connection], [], [], left)[0]:
            try:
                if connection.recv(65536) == b"":
                    return True
            except ConnectionResetError:
                return True
    return False


def test_bytes_pipelined_ahead_of_a_held_answer_close_the_connection(server):
    port = server
    pipelined = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * (PIPELINED_BYTES // 27)
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as connection:
        connection.sendall(b"GET /hold HTTP/1.1\r\nHost: x\r\n\r\n")
        sent = 0
        try:
            for start in range(0, len(pipelined), 16384):
                sent += connection.send(pipelined[start:start + 16384])
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert _closed_within(connection, WAIT_S / 2), \
            f"a connection that pipelined {sent} bytes ahead of a held answer was kept open"
    assert _request(port).status_code == 200  # the server went on


def test_at_the_bound_bodies_younger_than_the_window_make_room(server):
    """Every connection holds a body of 1 byte, well before its first window ends: a new one from
    another address takes the slowest one's place rather than getting 503."""
    port = server
    holders = []
    try:
        for i in range(MAX_CONNECTIONS):
            address = (f"127.0.4.{i + 1}", 0)
            holder = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=address)
            holder.sendall(b"POST /drip HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n{")
            holders.append(holder)
        time.sleep(BODY_RANKING_MIN_AGE_S + 1.5)  # every body old enough to be ranked, none near its window
        assert _request(port, source="127.0.0.3").status_code == 200
        assert sum(_closed_within(holder, 1) for holder in holders) == 1
    finally:
        for holder in holders:
            holder.close()


def test_at_the_bound_an_address_takes_no_place_from_one_holding_as_many(server):
    """Two addresses hold every connection in young bodies: a third connection from one of them is
    refused, one from a third address is answered in the place of one of theirs."""
    port = server
    holders = []
    try:
        for i in range(MAX_CONNECTIONS):
            address = (f"127.0.5.{1 + i % 2}", 0)
            holder = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=address)
            holder.sendall(b"POST /drip HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n{")
            holders.append(holder)
        time.sleep(BODY_RANKING_MIN_AGE_S + 1.5)
        assert _request(port, source="127.0.5.1").status_code == 503
        assert _request(port, source="127.0.5.3").status_code == 200
    finally:
        for holder in holders:
            holder.close()
