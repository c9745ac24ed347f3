"""Giving the memory a finished stage freed back to the operating system.

glibc keeps freed heap memory in its arenas (one per thread that allocated, up to 8 per core) for
reuse, and gives little of it back: after a slide's tile threads have allocated and freed
gigabytes of windows, the process stays resident at its peak, and the next stage (run by other
threads, in other arenas) adds to it. :func:`release_freed_memory` asks glibc to return every
arena's free pages (``malloc_trim``); it does nothing elsewhere (musl, macOS, Windows).
"""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

__all__ = ["release_freed_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``int malloc_trim(size_t pad)`` from the symbols the process has loaded, None when
    its C library has none."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):  # no such symbol; Windows has no CDLL(None)
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_freed_memory() -> bool:
    """Return the free pages of every malloc arena to the operating system.

    Returns
    -------
    bool
        Whether any memory was returned; False also where the C library is not glibc.

    Examples
    --------
    >>> release_freed_memory() in (True, False)
    True
    """
    trim = _malloc_trim()
    return bool(trim(0)) if trim is not None else False
