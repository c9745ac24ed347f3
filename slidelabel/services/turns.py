"""Turns at heavy work in an API process: at most so many requests build an export or a Segment
Anything embedding at once, and one that waits too long for its turn is answered busy (503).

A route waits with :meth:`Turns.waiting` on the event loop, not in one of the API's 40 request
threads: sixty parallel exports waiting in threads kept every other request of every user
waiting for a thread (the sixth attack: about 10 s)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Hashable, Iterator
from contextlib import asynccontextmanager, contextmanager

from slidelabel.errors import BusyError

__all__ = ["Turns"]


class Turns(threading.BoundedSemaphore):
    """At most ``value`` holders at once in this process, and at most ``per_holder`` of them
    held for one holder (a user, a gallery link) when the holder is named: one viewer's parallel
    exports then wait for each other, not everyone else's."""

    def __init__(self, value: int, per_holder: int | None = None) -> None:
        super().__init__(value)
        self.per_holder = per_holder
        self._held: dict[Hashable, int] = {}
        self._counting = threading.Lock()

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
    async def waiting(self, wait_s: float, busy: str, poll_s: float = 0.02,
                      holder: Hashable | None = None) -> AsyncIterator[None]:
        """:meth:`hold` for a coroutine: waits on the event loop, looking for a free turn every
        ``poll_s`` seconds, so no thread is held while waiting. A named ``holder`` also waits
        while it holds ``per_holder`` turns already."""
        deadline = time.monotonic() + wait_s
        while not self._take(holder):
            if time.monotonic() >= deadline:
                raise BusyError(busy)
            await asyncio.sleep(poll_s)
        try:
            yield
        finally:
            self._give_back(holder)

    def _take(self, holder: Hashable | None) -> bool:
        if holder is None or self.per_holder is None:
            return self.acquire(blocking=False)
        with self._counting:
            if self._held.get(holder, 0) >= self.per_holder or not self.acquire(blocking=False):
                return False
            self._held[holder] = self._held.get(holder, 0) + 1
            return True

    def _give_back(self, holder: Hashable | None) -> None:
        if holder is not None and self.per_holder is not None:
            with self._counting:
                left = self._held.pop(holder) - 1
                if left:
                    self._held[holder] = left
        self.release()
