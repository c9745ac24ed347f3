"""``slidelabel serve`` bounds how slowly a request body may arrive (twenty-third attack, medium):
each ``SLIDELABEL_REQUEST_BODY_TIMEOUT_S`` window of a body the route reads must bring
``http_protocol.MIN_BODY_BYTES_PER_S`` times as many bytes, and at ``SLIDELABEL_MAX_CONNECTIONS``
a new connection takes the place of the slowest body when none waits for a request head.

Before: only a gap between bytes as long as the timeout ended a body, so 4,257 connections from
43 addresses, each dripping a byte every 20 s of a 10 MB ``POST /auth/login`` body, held every
connection, and another user's ``/auth/me`` got 503 for a whole minute."""

from __future__ import annotations

import os
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import free_port
from serve_process import kill_group, wait_until_serving

from slidelabel.server.http_protocol import MIN_BODY_BYTES_PER_S

PASSWORD = f"bodies-{secrets.token_hex(6)}"
#: The body window (s): short, so that a test sees several.
BODY_TIMEOUT_S = 1.0
#: Connections the server under test holds at most.
MAX_CONNECTIONS = 12
#: Seconds a client waits for the server to answer or close (generous: a loaded CI machine).
WAIT_S = 30
#: A drip is closed within this many windows (the first is enough; the rest is slack for CI).
WINDOWS = 4
#: The head of a login whose body (10 MB, as in the attack) is never all sent.
DRIP_HEAD = (b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 10000000\r\n\r\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``slidelabel serve`` on a free port with a 1 s body window and 12 connections at most;
    yields its port."""
    tmp_path = tmp_path_factory.mktemp("bodies")
    port, log_path = free_port(), tmp_path / "serve.log"
    environment = {**os.environ, "SLIDELABEL_ADMIN_PASSWORD": PASSWORD, "SLIDELABEL_BROKER": "memory://",
                   "SLIDELABEL_REQUEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
                   "SLIDELABEL_MAX_CONNECTIONS": str(MAX_CONNECTIONS), "OMP_NUM_THREADS": "1"}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "slidelabel.cli.main", "serve", "--data-dir",
                                    str(tmp_path / "data"), "--port", str(port)], env=environment,
                                   stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until_serving(lambda: _request(port, "POST", "/auth/login",
                                            json={"username": "admin", "password": PASSWORD}),
                           process, log_path)
        yield port
    finally:
        kill_group(process)


def _request(port: int, method: str, path: str, *, source: str = "127.0.0.2", **options: object) -> httpx.Response:
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=WAIT_S,
                      transport=httpx.HTTPTransport(local_address=source)) as client:
        return client.request(method, path, **options)


def _closed(connection: socket.socket) -> bool:
    """Whether the server has closed ``connection`` (without waiting)."""
    if not select.select([connection], [], [], 0)[0]:
        return False
    try:
        return connection.recv(4096) == b""
    except ConnectionResetError:
        return True


def _send(connection: socket.socket, data: bytes) -> bool:
    """Send ``data``; False if the server has closed the connection."""
    try:
        connection.sendall(data)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return not _closed(connection)


def _drip(port: int, *, source: str, every_s: float, until_s: float) -> float | None:
    """A login whose body comes a byte every ``every_s`` (well within the window, so never a
    stall); the seconds after which the server closed it, None if it had not after ``until_s``."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=(source, 0)) as connection:
        connection.sendall(DRIP_HEAD + b"{")
        began = time.monotonic()
        while time.monotonic() - began < until_s:
            time.sleep(every_s)
            if not _send(connection, b" "):
                return time.monotonic() - began
    return None


def _steady_login(port: int, *, source: str, chunk: int, every_s: float, duration_s: float) -> bytes:
    """A login whose body comes ``chunk`` bytes every ``every_s`` for ``duration_s``; what the
    server answered (b"" if it closed the connection first)."""
    text = b'{"username": "nobody", "password": "wrong"}'
    chunks = int(duration_s / every_s)
    body = text + b" " * (chunk * chunks - len(text))
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=(source, 0)) as connection:
        connection.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                           b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n")
        for start in range(0, len(body), chunk):
            if not _send(connection, body[start:start + chunk]):
                return b""
            time.sleep(every_s)
        answer = b""
        try:
            while data := connection.recv(4096):
                answer += data
        except ConnectionResetError:
            pass
    return answer


def test_a_dripped_body_is_closed_while_a_steady_one_through_the_same_windows_is_answered(server):
    port = server
    # 8 KiB every 0.25 s (32 KiB/s, half a poor 64 KB/s link) for 3 windows and more.
    steady: list[bytes] = []
    honest = threading.Thread(target=lambda: steady.append(
        _steady_login(port, source="127.0.0.3", chunk=8192, every_s=0.25, duration_s=3.5 * BODY_TIMEOUT_S)))
    honest.start()
    try:
        closed_after = _drip(port, source="127.0.0.4", every_s=BODY_TIMEOUT_S / 4, until_s=WINDOWS * BODY_TIMEOUT_S)
    finally:
        honest.join()
    assert closed_after is not None, f"a body dripping a byte every {BODY_TIMEOUT_S / 4:g} s was not closed"
    [answer] = steady
    assert answer.startswith((b"HTTP/1.1 401 ", b"HTTP/1.1 429 ")), answer[:200]


def test_at_the_connection_bound_the_slowest_body_makes_room(server):
    """With every connection in a body (each above the minimum rate) and none waiting for a head,
    a new connection takes the place of the slowest body rather than getting 503."""
    port = server
    rate = 6 * MIN_BODY_BYTES_PER_S  # bytes/s each (half that for the slowest): never cut by the minimum
    tick_s = 0.1
    holders = []
    try:
        for i in range(MAX_CONNECTIONS):
            holder = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=(f"127.0.2.{i + 1}", 0))
            holder.sendall(DRIP_HEAD + b"{")
            holders.append(holder)
        # The slowest sends at half the rate of the others.
        began = time.monotonic()
        while time.monotonic() - began < 1.5 * BODY_TIMEOUT_S:  # every body measured for a window
            for i, holder in enumerate(holders):
                share = int(rate * tick_s) // (2 if i == 0 else 1)
                assert _send(holder, b" " * share), f"a body at {rate // (2 if i == 0 else 1)} B/s was closed"
            time.sleep(tick_s)
        assert _request(port, "GET", "/auth/me").status_code == 401  # answered (not logged in), not 503
        time.sleep(0.2)
        assert _closed(holders[0]) or not _send(holders[0], b" "), "the slowest body was not the one closed"
        assert all(_send(holder, b" ") for holder in holders[1:])
    finally:
        for holder in holders:
            holder.close()
