"""``slidelabel serve`` bounds its connections (round 8, H4): a half-sent request head is closed
after ``SLIDELABEL_REQUEST_HEAD_TIMEOUT_S``, one client address holds at most
``SLIDELABEL_MAX_CONNECTIONS_PER_ADDRESS`` connections, and more connections than the process has
file descriptors neither keep an honest user unanswered nor write a log line each.

Before: uvicorn waited forever for a head, accepted connections until the process ran out of
descriptors, then logged a traceback for every failed accept (thousands of lines a second)."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from serve_process import kill_group, wait_until_serving

PASSWORD = f"connections-{secrets.token_hex(6)}"
#: Descriptors of the server under test: fewer than the connections a test opens.
OPEN_FILES = 256
PER_ADDRESS = 3
HEAD_TIMEOUT_S = 1.5
BODY_TIMEOUT_S = 1.5
#: Seconds a client waits for the server to answer or close (generous: a loaded CI machine).
WAIT_S = 30
#: Failed logins from one address before its logins get 429.
FAILURES_PER_ADDRESS = 5
#: A request head that never ends.
HALF_HEAD = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nX-a: b\r\n"


#: ``python -c`` that runs ``slidelabel`` with its arguments and at most OPEN_FILES descriptors.
WITH_FEW_OPEN_FILES = (f"import os, resource, sys; resource.setrlimit(resource.RLIMIT_NOFILE, ({OPEN_FILES}, {OPEN_FILES})); "
                       "os.execv(sys.executable, [sys.executable, '-m', 'slidelabel.cli.main', *sys.argv[1:]])")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """``slidelabel serve`` on a free port with small limits and 256 file descriptors (soft and
    hard), jobs sent to a broker (no embedded workers to start); yields its port and log."""
    tmp_path = tmp_path_factory.mktemp("connections")
    port, log_path = free_port(), tmp_path / "serve.log"
    environment = {**os.environ, "SLIDELABEL_ADMIN_PASSWORD": PASSWORD, "SLIDELABEL_BROKER": "memory://",
                   "SLIDELABEL_REQUEST_HEAD_TIMEOUT_S": str(HEAD_TIMEOUT_S),
                   "SLIDELABEL_REQUEST_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
                   "SLIDELABEL_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS), "OMP_NUM_THREADS": "1",
                   "SLIDELABEL_LOGIN_FAILURES_PER_ADDRESS": str(FAILURES_PER_ADDRESS)}
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-c", WITH_FEW_OPEN_FILES, "serve", "--data-dir",
                                    str(tmp_path / "data"), "--port", str(port)], env=environment,
                                   stdout=log, stderr=log, start_new_session=True)
    try:
        wait_until_serving(lambda: _honest_request(port, "POST", "/auth/login",
                                                   json={"username": "admin", "password": PASSWORD}),
                           process, log_path)
        yield port, log_path
    finally:
        kill_group(process)


def _honest_request(port: int, method: str, path: str, *, source: str = "127.0.0.2",
                    **options: object) -> httpx.Response:
    """A request from ``source`` (by default 127.0.0.2, another address than the attacker's
    127.0.0.1) on a connection of its own that it closes (so that it does not count towards that
    address's bound)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{port}/api/v1", timeout=WAIT_S,
                      transport=httpx.HTTPTransport(local_address=source)) as client:
        return client.request(method, path, **options)


def _half_heads(port: int, count: int, *, addresses: int = 1) -> list[socket.socket]:
    """``count`` connections that sent part of a request head, from ``addresses`` source addresses."""
    connections = []
    for i in range(count):
        source = "127.0.0.1" if addresses == 1 else f"127.0.1.{i % addresses + 1}"
        connection = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=(source, 0))
        connection.sendall(HALF_HEAD)
        connections.append(connection)
    return connections


def _answer(connection: socket.socket) -> bytes:
    """What the server sends before it closes the connection (b"" for a plain close)."""
    received = b""
    try:
        while chunk := connection.recv(4096):
            received += chunk
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the server neither answered nor closed the connection within {WAIT_S} s")
    finally:
        connection.close()
    return received


def _log_lines(log_path: Path) -> int:
    return log_path.read_bytes().count(b"\n")


def test_a_half_sent_request_head_is_closed_after_the_head_timeout(server):
    port, _log_path = server
    [connection] = _half_heads(port, 1)
    assert _answer(connection).startswith(b"HTTP/1.1 408 ")


def test_a_request_body_that_stops_arriving_ends_its_connection(server):
    port, log_path = server
    lines_before = _log_lines(log_path)
    connection = socket.create_connection(("127.0.0.1", port), timeout=WAIT_S)
    connection.sendall(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 100\r\n\r\n{\"username\": ")
    _answer(connection)
    assert _honest_request(port, "GET", "/auth/me").status_code == 401  # the server went on (and had time to log)
    assert _log_lines(log_path) == lines_before, "a client that stopped sending was logged"


def test_connections_past_the_per_address_bound_are_refused_while_others_are_answered(server):
    port, _log_path = server
    holders = _half_heads(port, PER_ADDRESS)
    try:
        [extra] = _half_heads(port, 1)
        assert _answer(extra).startswith(b"HTTP/1.1 503 ")
        token = _honest_request(port, "POST", "/auth/login", json={"username": "admin", "password": PASSWORD}).json()["token"]
        assert _honest_request(port, "GET", "/auth/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    finally:
        for holder in holders:
            holder.close()


def test_more_connections_than_descriptors_leave_others_answered_and_the_log_quiet(server):
    port, log_path = server
    lines_before = _log_lines(log_path)
    # From 200 addresses (2 or 3 each, within the per-address bound): more than the server's descriptors.
    held = _half_heads(port, 2 * OPEN_FILES, addresses=200)
    # 40 from one address: past its bound, each refused.
    refused = [_answer(connection) for connection in _half_heads(port, 40)]
    # 40 requests that are not HTTP: each answered 400 (uvicorn logged a warning for each).
    for _ in range(40):
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S, source_address=("127.0.0.3", 0)) as garbage:
            garbage.sendall(b"NOT HTTP\r\n\r\n")
            assert garbage.recv(100).startswith(b"HTTP/1.1 400 ")
    try:
        assert _honest_request(port, "GET", "/auth/me").status_code == 401  # answered: not logged in
    finally:
        answers = [_answer(connection) for connection in held]
    assert sum(answer.startswith(b"HTTP/1.1 503 ") for answer in refused) >= len(refused) - PER_ADDRESS
    assert all(answer == b"" or answer.startswith((b"HTTP/1.1 408 ", b"HTTP/1.1 503 ")) for answer in answers)
    grown = _log_lines(log_path) - lines_before
    assert grown <= 4, f"the log grew {grown} lines:\n" + "\n".join(log_path.read_text().splitlines()[-20:])


def test_failed_accepts_are_summarised_in_the_log(caplog):
    from slidelabel.server.http_protocol import new_event_loop

    loop = new_event_loop()
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(1000):
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": OSError(errno.EMFILE, os.strerror(errno.EMFILE))})
            loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    lines = [record for record in caplog.records if "accept" in record.getMessage()]
    assert len(lines) == 1 and "Too many open files" in lines[0].getMessage()


def test_a_forwarded_for_header_names_no_other_client_by_default(server):
    """Nineteenth attack: uvicorn trusted ``X-Forwarded-For`` from 127.0.0.1, so a local client
    naming a new address in each request escaped every per-address bound and login limit (43,461
    logins in 10 s kept another user's login waiting 79 s). Only SLIDELABEL_FORWARDED_ALLOW_IPS's
    proxies are believed; by default none."""
    port, _log_path = server
    # From 127.0.0.1, the address uvicorn trusted; no other test here logs in from it.
    answers = [_honest_request(port, "POST", "/auth/login", source="127.0.0.1",
                               headers={"X-Forwarded-For": f"10.0.{attempt}.1"},
                               json={"username": "nobody", "password": "wrong"}).status_code
               for attempt in range(FAILURES_PER_ADDRESS + 2)]
    assert answers[-1] == 429, answers


def test_the_server_never_upgrades_to_websockets():
    """Nineteenth attack: where a WebSocket library is installed, uvicorn upgraded a connection
    to a protocol that gave back none of the bounds' counts: 100 upgrade requests (each answered
    403) locked their address out until a restart. No route takes a WebSocket."""
    from slidelabel.cli.serve import bounded_connections
    from slidelabel.settings import Settings

    options = bounded_connections(Settings(data_dir=Path("/nonexistent")))
    assert options["ws"] == "none" and options["proxy_headers"] is False
    behind_a_proxy = bounded_connections(Settings(data_dir=Path("/nonexistent"), forwarded_allow_ips="10.0.0.5"))
    assert behind_a_proxy["proxy_headers"] is True and behind_a_proxy["forwarded_allow_ips"] == "10.0.0.5"
