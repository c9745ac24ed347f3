"""The API's cache of rendered responses: bounded in bytes, least recently used out first."""

from __future__ import annotations

import pytest

from slidelabel.server.response_cache import ResponseCache


def test_a_kept_body_is_not_made_again():
    cache, made = ResponseCache(1000), []
    make = lambda: made.append(1) or b"x" * 10  # noqa: E731
    assert cache.get_or_make("a", make) == cache.get_or_make("a", make) == b"x" * 10
    assert made == [1] and cache.size_bytes == 10


def test_the_least_recently_used_go_first_when_over_budget():
    cache = ResponseCache(800)
    for key in "abcdefgh":
        cache.get_or_make(key, lambda: b"." * 100)
    cache.get_or_make("a", lambda: pytest.fail("a was kept"))  # a is now the most recent
    cache.get_or_make("i", lambda: b"." * 100)
    assert cache.size_bytes == 800 and len(cache) == 8
    remade = []
    cache.get_or_make("b", lambda: remade.append("b") or b"." * 100)
    assert remade == ["b"]


def test_a_body_over_an_eighth_of_the_budget_is_made_but_not_kept():
    cache = ResponseCache(800)
    assert cache.get_or_make("big", lambda: b"." * 101) == b"." * 101
    assert len(cache) == 0 and cache.size_bytes == 0
    assert ResponseCache(0).get_or_make("a", lambda: b"") == b""


def test_a_negative_budget_is_refused():
    with pytest.raises(ValueError, match="budget_bytes must be >= 0, got -1"):
        ResponseCache(-1)
