"""The stored tiles of a tiled TIFF (SVS, pyramidal TIFF), decoded directly: the fast read path.

Reading a window through large_image costs about 92 ns per pixel on the JPEG 2000 TCGA sample:
OpenSlide's decoding and its ARGB conversion, large_image's colour-profile transform of every
tile, and copies between them. :class:`TiffTiles` reads a level's stored tiles itself: tifffile
says where each tile lies and how it is compressed, ``os.pread`` reads its bytes (threads need
no lock) and tifffile's codecs (imagecodecs: libjpeg-turbo, OpenJPEG, ... which release the
GIL) decode it. The embedded ICC profile is applied as large_image applies it (to sRGB,
perceptual intent, by LittleCMS, through :mod:`~slidelabel.pipelines.colour_profile`'s table),
so the pixels are large_image's own;
``tests/pipelines/test_tiff_tiles.py`` checks that they are, on both sample slides.

Only levels stored as pages are read this way: a page of 8-bit RGB tiles whose size is that of
a power-of-two working level (:func:`level_size`), or one pixel less (SVS levels floor their size,
large_image ceils it). :class:`~slidelabel.pipelines.slides.Slide` keeps a level only when a
probe tile decoded here equals large_image's (OpenSlide places the coarser levels of an SVS
with its own rounding, which can shift them by a pixel), and takes everything else (other
levels, other formats, windows reaching a missing edge pixel) from large_image.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import ImageCms

from slidelabel.pipelines.colour_profile import ProfileTable, profile_table

#: Bytes of decoded tiles kept per slide, so that the margins neighbouring windows share are
#: decoded once: 170 tiles of 256 px (192 KB each), 10 of 1024 px.
CACHE_BYTES = 32 * 2**20


class TileDecodeError(OSError):
    """A stored tile could not be read or decoded (a damaged file); says which tile and why."""


def level_size(size_level0: int, level: int) -> int:
    """Pixels along one side at downsample ``2 ** level``, as large_image counts them (ceiling).

    Examples
    --------
    >>> level_size(4443, 1)
    2222
    """
    return math.ceil(size_level0 / 2**level)


@dataclass(frozen=True)
class _Level:
    """Where one pyramid level's tiles lie in the file."""

    page: tifffile.TiffPage
    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: tuple[int, ...]
    counts: tuple[int, ...]

    @property
    def tiles_across(self) -> int:
        return -(-self.width // self.tile_width)


def _readable(page: tifffile.TiffPage) -> bool:
    """8-bit RGB in tiles of one plane, without padding tricks tifffile's decoder leaves to us."""
    return (
        page.is_tiled and page.dtype == np.uint8 and page.samplesperpixel == 3 and page.imagedepth == 1
        and page.planarconfig == tifffile.PLANARCONFIG.CONTIG
        and page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    )


def _levels(tiff: tifffile.TiffFile, width: int, height: int) -> dict[int, _Level]:
    """Stored levels of the main image whose size matches a power-of-two working level."""
    levels: dict[int, _Level] = {}
    for series_level in tiff.series[0].levels if tiff.series else ():
        page = series_level.keyframe
        if not isinstance(page, tifffile.TiffPage) or not _readable(page):
            continue
        level = round(math.log2(width / page.imagewidth)) if page.imagewidth else -1
        if level < 0 or level in levels:
            continue
        for size, stored in ((width, page.imagewidth), (height, page.imagelength)):
            if not 0 <= level_size(size, level) - stored <= 1:
                break
        else:
            levels[level] = _Level(page, page.imagewidth, page.imagelength, page.tilewidth, page.tilelength,
                                   tuple(page.dataoffsets), tuple(page.databytecounts))
    return levels


class TiffTiles:
    """Windows of a tiled TIFF's stored levels, decoded directly (see the module's docstring).

    Open with :meth:`open`, which returns None when the file has no level this can read.
    Safe to use from several threads at once.
    """

    def __init__(self, path: Path, tiff: tifffile.TiffFile, levels: dict[int, _Level],
                 icc: ProfileTable | None) -> None:
        self.path = path
        self._tiff = tiff
        self._levels = levels
        self._icc = icc
        self._fd = os.open(path, os.O_RDONLY)
        largest = max(stored.tile_width * stored.tile_height * 3 for stored in levels.values())
        self._tile = functools.lru_cache(maxsize=max(4, CACHE_BYTES // largest))(self._decode_tile)

    @classmethod
    def open(cls, path: str | Path, width: int, height: int,
             icc_profile: ImageCms.ImageCmsProfile | None) -> TiffTiles | None:
        """Read ``path`` directly if it is a TIFF with a stored level of a ``width`` x ``height``
        px image (level-0 size), applying ``icc_profile`` (converted to sRGB) when given."""
        try:
            tiff = tifffile.TiffFile(path)
        except (tifffile.TiffFileError, ValueError, OSError):
            return None
        levels = _levels(tiff, width, height)
        if not levels:
            tiff.close()
            return None
        return cls(Path(path), tiff, levels, profile_table(icc_profile) if icc_profile is not None else None)

    def levels(self) -> list[int]:
        """The working levels (downsample ``2 ** level``) read directly, finest first."""
        return sorted(self._levels)

    def drop_level(self, level: int) -> None:
        """Stop reading ``level`` directly (its pixels are not the reference reader's)."""
        self._levels.pop(level, None)

    def stored_size(self, level: int) -> tuple[int, int] | None:
        """(width, height) of ``level`` as stored, or None when it is not read directly."""
        stored = self._levels.get(level)
        return None if stored is None else (stored.width, stored.height)

    def window(self, level: int, x0: int, y0: int, x1: int, y1: int, *, needed: np.ndarray | None = None) -> np.ndarray:
        """uint8 ``(y1 - y0, x1 - x0, 3)`` RGB of ``[x0, x1) x [y0, y1)`` of a stored ``level``,
        within its :meth:`stored_size`; tiles where the bool ``needed`` (same height and width,
        default all) holds no pixel are not decoded and come back white."""
        stored = self._levels[level]
        if not (0 <= x0 < x1 <= stored.width and 0 <= y0 < y1 <= stored.height):
            raise ValueError(f"window [{x0}, {x1}) x [{y0}, {y1}) is outside level {level} "
                             f"({stored.width} x {stored.height} px)")
        tw, th = stored.tile_width, stored.tile_height
        out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
        for ty in range(y0 // th, (y1 - 1) // th + 1):
            for tx in range(x0 // tw, (x1 - 1) // tw + 1):
                left, top = tx * tw, ty * th
                a_x, a_y, b_x, b_y = max(x0, left), max(y0, top), min(x1, left + tw), min(y1, top + th)
                part = out[a_y - y0 : b_y - y0, a_x - x0 : b_x - x0]
                if needed is None or needed[a_y - y0 : b_y - y0, a_x - x0 : b_x - x0].any():
                    part[...] = self._tile(level, tx, ty)[a_y - top : b_y - top, a_x - left : b_x - left]
                else:
                    part.fill(255)
        return out

    def _decode_tile(self, level: int, tx: int, ty: int) -> np.ndarray:
        stored = self._levels[level]
        index = ty * stored.tiles_across + tx
        count = stored.counts[index]
        if not count:  # a tile never written (sparse TIFF): white, as large_image shows it
            return np.full((stored.tile_height, stored.tile_width, 3), 255, np.uint8)
        try:
            data = os.pread(self._fd, count, stored.offsets[index])
            pixels = stored.page.decode(data, index, jpegtables=stored.page.jpegtables)[0]
            rgb = np.ascontiguousarray(pixels.reshape(stored.tile_height, stored.tile_width, 3))
        except Exception as error:  # the codecs' own error types (imagecodecs, tifffile, zlib...)
            raise TileDecodeError(f"tile ({tx}, {ty}) of level {level}: {error}") from error
        if self._icc is not None:
            self._icc.apply(rgb)
        rgb.flags.writeable = False
        return rgb

    def close(self) -> None:
        """Release the file; the object cannot be used afterwards."""
        self._tile.cache_clear()
        os.close(self._fd)
        self._tiff.close()
