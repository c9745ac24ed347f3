"""A temporary on-disk cache of RGB windows between the two superpixel passes.

Decoding a slide region (JPEG 2000 especially) costs about as much as clustering it, so pass 1
keeps the window pass 2 will need instead of reading the slide twice. Windows go to files, one per
window, compressed with zstd at level 1 (lossless: pass 2 must see the slide's very pixels; about
1.5x smaller on dense tissue and 2.5x with glass, at some 400 MB/s, a few per cent of the time of
clustering the window): memory stays bounded by a few windows whatever the slide size, and the
operating system's page cache usually serves them back without touching the disk. Each window is
read back once and deleted.

The cache is an optimisation, so it is bounded rather than trusted with the disk: a window that
would take it past ``max_bytes``, or leave its file system with less than :func:`reserve_bytes`
free, is not kept, and :meth:`WindowCache.take` then returns None, for the caller to read the
slide again. Uncompressed, a slide of 40,000 megapixels at level 0 would need 120 GB.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
from pathlib import Path

import imagecodecs
import numpy as np

#: The cache leaves at least this share of its file system free...
MIN_FREE_FRACTION = 0.05
#: ...and at least this many bytes.
MIN_FREE_BYTES = 1 << 30
_ZSTD_LEVEL = 1


def reserve_bytes(folder: Path) -> int:
    """Free bytes the cache leaves on the file system of ``folder``."""
    return max(MIN_FREE_BYTES, int(MIN_FREE_FRACTION * shutil.disk_usage(folder).total))


class WindowCache:
    """Holds RGB windows by key until they are taken; a context manager that removes its folder.

    ``max_bytes``: most compressed bytes held at once (None: no bound but the free space).
    """

    def __init__(self, parent: str | Path | None = None, *, max_bytes: int | None = None) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be at least 0, got {max_bytes}")
        self.folder = Path(tempfile.mkdtemp(prefix=".slidelabel-windows.", suffix=".tmp", dir=parent))
        self.max_bytes = max_bytes
        self.held = 0
        """Compressed bytes held now."""
        self.peak = 0
        """Most compressed bytes held at once."""
        self.skipped = 0
        """Windows not kept: the bound or the free space refused them."""
        self._reserve = reserve_bytes(self.folder)
        self._sizes: dict[tuple[int, int], int] = {}
        self._shapes: dict[tuple[int, int], tuple[int, ...]] = {}
        self._lock = threading.Lock()  # pass 1 puts from several threads

    def _path(self, key: tuple[int, int]) -> Path:
        return self.folder / f"{key[0]}_{key[1]}.zst"

    def put(self, key: tuple[int, int], rgb: np.ndarray) -> bool:
        """Store an (H, W, 3) uint8 window under ``key`` (top, left); False when it was not kept
        (past ``max_bytes`` or the free space it must leave)."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"a window must be a (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
        data = imagecodecs.zstd_encode(np.ascontiguousarray(rgb), level=_ZSTD_LEVEL)
        with self._lock:
            self._forget(key)
            over_bound = self.max_bytes is not None and self.held + len(data) > self.max_bytes
            if over_bound or shutil.disk_usage(self.folder).free - len(data) < self._reserve:
                self.skipped += 1
                return False
            # Counted before the write, so that parallel puts cannot pass the bound together.
            self._sizes[key], self._shapes[key] = len(data), rgb.shape
            self.held += len(data)
            self.peak = max(self.peak, self.held)
        try:
            self._path(key).write_bytes(data)
        except OSError:  # the disk filled up under us (another writer): read the slide again
            with self._lock:
                self._forget(key)
                self.skipped += 1
            return False
        return True

    def take(self, key: tuple[int, int]) -> np.ndarray | None:
        """The window stored under ``key``, removed from the cache; None if there is none."""
        with self._lock:
            shape = self._shapes.get(key)
        if shape is None:
            return None
        rgb = np.empty(shape, np.uint8)
        imagecodecs.zstd_decode(self._path(key).read_bytes(), out=rgb.reshape(-1))
        with self._lock:
            self._forget(key)
        return rgb

    def _forget(self, key: tuple[int, int]) -> None:
        """Drop ``key``'s window; the caller holds the lock."""
        if key in self._sizes:
            self.held -= self._sizes.pop(key)
            del self._shapes[key]
            self._path(key).unlink(missing_ok=True)

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> WindowCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
