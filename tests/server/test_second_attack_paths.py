"""A path segment that Python calls a digit but ``int`` cannot read (superscripts, circled
digits) is a 4xx for anyone, never a 500: the id check of every request met it first."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("segment", ["\u00b9", "\u00b2\u00b3", "\u2460", "1\u00b9"])
def test_an_unreadable_digit_in_a_path_is_not_a_server_error(client, admin_headers, project, segment):
    for path, headers in ((f"/api/v1/projects/{segment}", {}), (f"/api/v1/projects/{segment}", admin_headers),
                          (f"/api/v1/projects/{project['id']}/jobs/{segment}", admin_headers)):
        response = client.get(path, headers=headers)
        assert 400 <= response.status_code < 500, (path, response.status_code, response.text)
