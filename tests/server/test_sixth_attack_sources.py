"""Sixth attack on issue 13: every file uploaded for an import (``POST .../slides/{s}/sources``)
was kept until its slide was deleted, so an owner could fill the disk 20 GB at a time. A slide
keeps its newest ``KEPT_SOURCES`` uploads."""

from __future__ import annotations

import pytest

from slidelabel.errors import ParameterError, TooLargeError
from slidelabel.services import project_imports
from slidelabel.services.uploads import FORM_OVERHEAD_BYTES, UploadReceiver
from slidelabel.store.models import Role


def test_a_slide_keeps_only_its_newest_uploaded_sources(client, project, member_headers, slide_row, monkeypatch):
    monkeypatch.setattr(project_imports, "KEPT_SOURCES", 3)
    owner = member_headers(Role.owner)
    names = []
    for i in range(5):
        response = client.post(f"/api/v1/projects/{project['id']}/slides/{slide_row}/sources", headers=owner,
                               files={"file": (f"cells-{i}.csv", b"x,y\n1,2\n", "text/csv")})
        assert response.status_code in (200, 201), response.text
        names.append(response.json()["name"])
    kept = []
    for name in names:
        try:
            project_imports.uploaded_source(client.app.state.settings, project["id"], slide_row, name)
            kept.append(name)
        except ParameterError:
            pass
    assert kept == names[2:]


def test_an_upload_bodys_other_parts_count_against_the_limit(tmp_path):
    """Sixth attack: only the file's bytes counted, so a part without a file name could be any size."""
    receiver = UploadReceiver("multipart/form-data; boundary=b", tmp_path, limit_bytes=1000, declared_bytes=None)
    receiver.feed(b'--b\r\nContent-Disposition: form-data; name="junk"\r\n\r\n')
    with pytest.raises(TooLargeError):
        receiver.feed(b"x" * (1000 + FORM_OVERHEAD_BYTES))
    receiver.discard()
