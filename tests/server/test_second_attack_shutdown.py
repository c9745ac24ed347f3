"""SIGTERM stops ``slidelabel serve`` even while a client keeps a request open (a slow upload
that never ends): the server waits a bounded time for open requests, then ends them, and the
unfinished upload leaves no file behind."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import free_port
from serve_process import kill_group, wait_until_serving

PASSWORD = f"shutdown-{secrets.token_hex(6)}"


#: Seconds a setup request may take (httpx's default, 5 s, is too short on a busy CI machine).
SETUP_TIMEOUT_S = 120


@pytest.fixture
def leftover_uploads(tmp_path: Path) -> list[Path]:
    """What a server killed in the middle of two uploads leaves (a slide, a slide's source file),
    and a finished upload beside them."""
    data_dir = tmp_path / "data"
    paths = [data_dir / "uploads" / "3" / ".upload-0123456789abcdef-half.svs",
             data_dir / "projects" / "3" / "slides" / "7" / "sources" / ".upload-fedcba9876543210-cells.geojson",
             data_dir / "uploads" / "3" / "whole.svs"]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
    return paths


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen, str, Path]]:
    """``slidelabel serve`` at its defaults on a free port, in its own process group."""
    port, data_dir = free_port(), tmp_path / "data"
    log = open(tmp_path / "serve.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "slidelabel.cli.main", "serve", "--data-dir", str(data_dir),
                                "--port", str(port)], env={**os.environ, "SLIDELABEL_ADMIN_PASSWORD": PASSWORD},
                               stdout=log, stderr=log, start_new_session=True)
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        wait_until_serving(lambda: httpx.post(f"{base}/auth/login", json={"username": "admin", "password": PASSWORD}),
                           process, tmp_path / "serve.log")
        yield process, base, data_dir
    finally:
        kill_group(process)
        log.close()


def _endless_upload(base: str, headers: dict, project_id: int) -> None:
    def body() -> Iterator[bytes]:
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.svs"\r\n\r\n'
        for _ in range(3600):
            yield b"x" * 1024
            time.sleep(0.2)

    try:
        httpx.post(f"{base}/projects/{project_id}/slides/upload", content=body(), timeout=900,
                   headers={**headers, "Content-Type": "multipart/form-data; boundary=b"})
    except httpx.HTTPError:
        pass  # the server ended the request


def test_sigterm_stops_serve_while_a_slow_upload_is_open(serve):
    process, base, data_dir = serve
    token = httpx.post(f"{base}/auth/login", json={"username": "admin", "password": PASSWORD},
                       timeout=SETUP_TIMEOUT_S).json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    # The first project loads the registries it is checked against: slow on a loaded machine.
    project = httpx.post(f"{base}/projects", headers=headers, json={"name": "p"}, timeout=SETUP_TIMEOUT_S).json()
    threading.Thread(target=_endless_upload, args=(base, headers, project["id"]), daemon=True).start()
    for _ in range(100):
        if list(data_dir.rglob(".upload-*")):
            break
        time.sleep(0.1)
    assert list(data_dir.rglob(".upload-*")), "the upload did not begin"

    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("slidelabel serve was still running 120 s after SIGTERM, waiting for a client that never finishes")
    assert not list(data_dir.rglob(".upload-*")), "the unfinished upload was left on disk"


def test_the_embedded_workers_give_way_to_the_api_and_end_with_it(serve):
    import psutil

    process, _base, data_dir = serve
    api = psutil.Process(process.pid)
    # The workers are forked from serve (sharing its imported job modules): every descendant is one
    # of them or one of their pool processes.
    workers = api.children(recursive=True)
    assert len(workers) >= 2, "serve started no embedded workers"
    assert {worker.nice() for worker in workers} == {api.nice() + 10}

    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)
    _gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, f"worker processes outlived serve: {alive}"
    # Celery's advice against running as root (as CI does) reached the user once per worker.
    assert "Warning" not in (data_dir.parent / "serve.log").read_text()


def test_serve_removes_unfinished_uploads_before_it_answers(leftover_uploads, serve):
    *unfinished, finished = leftover_uploads
    assert not any(path.exists() for path in unfinished)
    assert finished.exists()
