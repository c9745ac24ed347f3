"""Answers carry headers that keep a browser from being turned against the server's users
(sixteenth attack, low: none were sent)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("path", ["/api/v1/auth/me", "/api/v1/projects/99999999999", "/openapi.json"])
def test_api_answers_are_not_sniffed_framed_or_referred(client, path):
    headers = client.get(path).headers
    assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"


def test_the_web_client_has_a_content_security_policy_and_the_api_docs_none(client):
    page = client.get("/")
    if page.status_code == 404:
        pytest.skip("the web client is not built")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-eval" not in policy
    docs = client.get("/docs")  # swagger's page loads its scripts from a CDN and inline
    assert docs.status_code == 200 and "content-security-policy" not in docs.headers
    assert docs.headers["x-content-type-options"] == "nosniff"
