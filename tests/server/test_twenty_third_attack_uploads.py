"""Twenty-third attack, low: an upload cut off by its client was logged as an unhandled error
(a 5xx and Starlette's ClientDisconnect traceback); it is a client that went away: logged as
such, answered 499, and nothing it sent is left."""

from __future__ import annotations

import asyncio
import logging

from slidelabel.store.layout import ProjectFiles

BOUNDARY = "xyzzy"


def _upload_cut_off(app, path: str, headers: dict[str, str]) -> list[dict]:
    """The messages ``app`` sends for a multipart upload whose client sends 64 KB of a declared
    10 MB and hangs up, called as an ASGI server calls it."""
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.svs\"\r\n"
            "Content-Type: image/tiff\r\n\r\n").encode()
    messages = [{"type": "http.request", "body": head + b"\0" * 65_536, "more_body": True},
                {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return messages.pop(0) if len(messages) > 1 else messages[0]

    async def send(message: dict) -> None:
        sent.append(message)

    raw = [(b"host", b"testserver"), (b"content-type", f"multipart/form-data; boundary={BOUNDARY}".encode()),
           (b"content-length", str(10 << 20).encode())] + [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": raw,
             "client": ("127.0.0.9", 50000), "server": ("testserver", 80)}
    asyncio.run(app(scope, receive, send))
    return sent


def test_an_upload_cut_off_by_its_client_is_no_server_error(app, client, admin_headers, project, settings, caplog):
    with caplog.at_level(logging.INFO):
        sent = _upload_cut_off(app, f"/api/v1/projects/{project['id']}/slides/upload", admin_headers)
    assert sent[0]["status"] == 499, sent[0]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert any("hung up" in r.getMessage() for r in caplog.records)
    uploads = ProjectFiles(settings.data_dir, project["id"]).uploads
    assert not uploads.exists() or not any(uploads.iterdir())
