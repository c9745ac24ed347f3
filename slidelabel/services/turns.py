"""Turns at heavy work in an API process: at most so many requests build an export or a Segment
Anything embedding at once, and one that waits too long for its turn is answered busy (503).

A route waits with :meth:`Turns.waiting` on the event loop, not in one of the API's 40 request
threads: sixty parallel exports waiting in threads kept every other request of every user
waiting for a thread (the sixth attack: about 10 s)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

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

    @asynccontextmanager
    async def waiting(self, wait_s: float, busy: str, poll_s: float = 0.02) -> AsyncIterator[None]:
        """:meth:`hold` for a coroutine: waits on the event loop, looking for a free turn every
        ``poll_s`` seconds, so no thread is held while waiting."""
        deadline = time.monotonic() + wait_s
        while not self.acquire(blocking=False):
            if time.monotonic() >= deadline:
                raise BusyError(busy)
            await asyncio.sleep(poll_s)
        try:
            yield
        finally:
            self.release()
