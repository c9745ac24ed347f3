"""A temporary on-disk cache of RGB windows between the two superpixel passes.

Decoding a slide region (JPEG 2000 especially) costs about as much as clustering it, so pass 1
keeps the window pass 2 will need instead of reading the slide twice. Windows go to raw ``.npy``
files: memory stays bounded by a few windows whatever the slide size, and the operating system's
page cache usually serves them back without touching the disk. Each window is read back once and
deleted.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np


class WindowCache:
    """Holds RGB windows by key until they are taken; a context manager that removes its folder."""

    def __init__(self, parent: str | Path | None = None) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix=".slidelabel-windows.", suffix=".tmp", dir=parent))

    def _path(self, key: tuple[int, int]) -> Path:
        return self.folder / f"{key[0]}_{key[1]}.npy"

    def put(self, key: tuple[int, int], rgb: np.ndarray) -> None:
        """Store an (H, W, 3) uint8 window under ``key`` (top, left)."""
        np.save(self._path(key), np.ascontiguousarray(rgb), allow_pickle=False)

    def take(self, key: tuple[int, int]) -> np.ndarray | None:
        """The window stored under ``key``, removed from the cache; None if there is none."""
        path = self._path(key)
        if not path.exists():
            return None
        rgb = np.load(path, allow_pickle=False)
        path.unlink()
        return rgb

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> WindowCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
