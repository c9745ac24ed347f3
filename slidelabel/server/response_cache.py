"""Rendered images kept in memory, so a tile asked for again is answered without being read and
encoded again.

large_image caches decoded tiles for the pipelines, bounded in tiles; this cache holds what the
API sends (encoded JPEG and PNG bytes, a few to a few hundred kB each), bounded in bytes. Its keys
carry the version of the file a response was made from, so a recomputed file is a new key and its
old responses age out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable


class ResponseCache:
    """A thread-safe least-recently-used map of keys to bytes, at most ``budget_bytes`` in all.

    A body larger than an eighth of the budget is made but not kept, so one large response never
    empties the cache of tiles.
    """

    def __init__(self, budget_bytes: int) -> None:
        if budget_bytes < 0:
            raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[Hashable, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    @property
    def size_bytes(self) -> int:
        """Bytes held now."""
        return self._size

    def __len__(self) -> int:
        return len(self._entries)

    def get_or_make(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        """The bytes kept under ``key``, or ``make()``'s, kept when they fit.

        Two requests for the same missing key may both call ``make``; the lock is not held while
        making, so one slow tile never stalls the others.
        """
        with self._lock:
            body = self._entries.get(key)
            if body is not None:
                self._entries.move_to_end(key)
                return body
        body = make()
        if len(body) <= self.budget_bytes // 8:
            self._keep(key, body)
        return body

    def _keep(self, key: Hashable, body: bytes) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            self._size -= len(old) if old is not None else 0
            self._entries[key] = body
            self._size += len(body)
            while self._size > self.budget_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._size -= len(dropped)
