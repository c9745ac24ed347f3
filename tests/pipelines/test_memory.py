"""Giving freed memory back: glibc's malloc_trim where there is one, nothing elsewhere."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

from slidelabel.pipelines import memory


def test_freed_memory_is_given_back_on_glibc() -> None:
    if memory._malloc_trim() is None:
        pytest.skip("the C library is not glibc")
    arrays = [np.ones(50_000) for _ in range(400)]  # 160 MB in heap chunks below mmap's threshold
    del arrays
    assert memory.release_freed_memory() is True


def test_without_malloc_trim_nothing_happens(monkeypatch) -> None:
    class NoTrim:  # musl, macOS: the C library has no malloc_trim
        def __init__(self, name: object) -> None:
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoTrim)
    memory._malloc_trim.cache_clear()
    try:
        assert memory.release_freed_memory() is False
    finally:
        memory._malloc_trim.cache_clear()
