"""Rendered images kept in memory, so a tile asked for again is answered without being read and
encoded again.

large_image caches decoded tiles for the pipelines, bounded in tiles; this cache holds what the
API sends (encoded JPEG and PNG bytes, a few to a few hundred kB each), bounded in bytes. Its keys
carry the version of the file a response was made from, so a recomputed file is a new key and its
old responses age out.

A body is made once at a time: requests for a key being made wait for that one result, on the
event loop when they wait before their route runs (:meth:`ResponseCache.settled`), in their thread
otherwise (the same thumbnail asked 8 times at once was rendered 8 times: 78 s of CPU and +1.6 GB,
the twentieth attack).
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable


class Flight:
    """A body being made: who waits for it in a thread waits on :attr:`done`; a coroutine on a
    future of its loop, set when the flight lands."""

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.done = threading.Event()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class ResponseCache:
    """A thread-safe least-recently-used map of keys to bytes, at most ``budget_bytes`` in all.

    A body larger than an eighth of the budget is made but not kept, so one large response never
    empties the cache of tiles. A key is made by one request at a time (a :class:`Flight`); the
    others wait for it and take what it kept (or, when it kept nothing, make it in turn).
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Flight] = {}

    @property
    def size_bytes(self) -> int:
        """Bytes held now."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def flying(self) -> int:
        """Keys being made now."""
        with self._lock:
            return len(self._flights)

    def claim(self, key: Hashable) -> Flight | None:
        """The right to make ``key`` (give it back with :meth:`land`), or None when it is kept or
        being made already."""
        with self._lock:
            if key in self._entries or key in self._flights:
                return None
            flight = self._flights[key] = Flight(key)
            return flight

    def land(self, flight: Flight) -> None:
        """The flight is over (made and kept, made too large to keep, or failed): its waiters go
        on. Landing twice does nothing."""
        with self._lock:
            if self._flights.get(flight.key) is flight:
                del self._flights[flight.key]
            waiters, flight._waiters = flight._waiters, []
            flight.done.set()
        for loop, future in waiters:
            try:
                loop.call_soon_threadsafe(_wake, future)
            except RuntimeError:  # the loop has closed
                pass

    async def settled(self, key: Hashable) -> None:
        """Returns once ``key`` is not being made (at once when it is not), waiting on the event
        loop, holding no thread."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                flight = self._flights.get(key)
                if flight is None:
                    return
                future: asyncio.Future[None] = loop.create_future()
                flight._waiters.append((loop, future))
            await future

    def get_or_make(self, key: Hashable, make: Callable[[], bytes], flight: Flight | None = None) -> bytes:
        """The bytes kept under ``key``, or ``make()``'s, kept when they fit.

        ``flight`` is this request's :meth:`claim` of the key, if it made one. A request that
        finds another making the key waits in its thread for that one's result (the lock is not
        held while making, so one slow tile never stalls other keys).
        """
        while True:
            with self._lock:
                body = self._entries.get(key)
                if body is not None:
                    self._entries.move_to_end(key)
                    return body
                making = self._flights.get(key)
                if making is None:
                    mine = flight is not None and flight.key == key and not flight.done.is_set()
                    making = self._flights[key] = flight if mine else Flight(key)
                    break
                if making is flight:
                    break
            making.done.wait()
        try:
            body = make()
            if len(body) <= self.budget_bytes // 8:
                self._keep(key, body)
            return body
        finally:
            self.land(making)

    def _keep(self, key: Hashable, body: bytes) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            self._size -= len(old) if old is not None else 0
            self._entries[key] = body
            self._size += len(body)
            while self._size > self.budget_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped)
