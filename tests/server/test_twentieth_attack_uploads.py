"""An upload keeps the disk's free reserve, and one user receives at most a few uploads at once
(twentieth attack: two 500 MB junk uploads took +970 MB of the disk before their refusal, with no
check of the free space, and one owner could keep 100 uploads of 20 GB arriving at once)."""

from __future__ import annotations

import shutil

import pytest

from slidelabel.errors import BusyError, TooLargeError
from slidelabel.services import uploads
from slidelabel.services.uploads import UPLOADS_PER_HOLDER, UploadReceiver

CONTENT_TYPE = "multipart/form-data; boundary=xyz"


def _part(size: int) -> bytes:
    return (b"--xyz\r\nContent-Disposition: form-data; name=\"file\"; filename=\"junk.svs\"\r\n\r\n"
            + bytes(size) + b"\r\n--xyz--\r\n")


@pytest.fixture
def little_room(monkeypatch, tmp_path):
    """The disk keeps all but 2 MB of its free space, and is looked at every 256 KB written."""
    free = shutil.disk_usage(tmp_path).free
    monkeypatch.setattr(uploads, "reserve_bytes", lambda folder: free - (2 << 20))
    monkeypatch.setattr(uploads, "FREE_SPACE_EVERY_BYTES", 256 << 10)


def test_an_upload_declaring_more_than_the_free_room_is_refused_before_a_byte(client, admin_headers, project, little_room,
                                                                              settings):
    response = client.post(f"/api/v1/projects/{project['id']}/slides/upload", headers=admin_headers,
                           files={"file": ("junk.svs", bytes(4 << 20), "image/tiff")})
    assert response.status_code == 413 and "GB free" in response.json()["detail"], response.text
    assert not list(settings.data_dir.glob("uploads/*/.upload-*"))


def test_an_upload_of_undeclared_size_stops_where_the_room_ends(tmp_path, little_room):
    receiver = UploadReceiver(CONTENT_TYPE, tmp_path / "in", limit_bytes=1 << 30, declared_bytes=None)
    try:
        with pytest.raises(TooLargeError, match="does not fit"):
            body = _part(8 << 20)
            for start in range(0, len(body), 64 << 10):
                receiver.feed(body[start:start + (64 << 10)])
        assert receiver.path.stat().st_size < 3 << 20  # stopped within the room, not at the end of the body
    finally:
        receiver.discard()
    assert not list((tmp_path / "in").iterdir())


def test_one_user_receives_a_few_uploads_at_once(tmp_path):
    held = [UploadReceiver(CONTENT_TYPE, tmp_path, limit_bytes=1 << 20, declared_bytes=None, holder="greedy")
            for _ in range(UPLOADS_PER_HOLDER)]
    try:
        with pytest.raises(BusyError, match=f"you have {UPLOADS_PER_HOLDER} uploads arriving already"):
            UploadReceiver(CONTENT_TYPE, tmp_path, limit_bytes=1 << 20, declared_bytes=None, holder="greedy")
        UploadReceiver(CONTENT_TYPE, tmp_path, limit_bytes=1 << 20, declared_bytes=None, holder="other").discard()
    finally:
        for receiver in held:
            receiver.discard()
    UploadReceiver(CONTENT_TYPE, tmp_path, limit_bytes=1 << 20, declared_bytes=None, holder="greedy").discard()
