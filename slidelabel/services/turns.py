"""Turns at heavy work in an API process: at most so many requests build an export or a Segment
Anything embedding at once, and one that waits too long for its turn is answered busy (503)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from slidelabel.errors import BusyError

__all__ = ["Turns"]


class Turns(threading.BoundedSemaphore):
    """At most ``value`` holders at once in this process."""

    @contextmanager
    def hold(self, wait_s: float, busy: str) -> Iterator[None]:
        """Holds a turn while the block runs; :class:`BusyError` saying ``busy`` when none frees
        within ``wait_s`` seconds."""
        if not self.acquire(timeout=wait_s):
            raise BusyError(busy)
        try:
            yield
        finally:
            self.release()
