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
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from PIL import ImageCms

from slidelabel.errors import SlideUnreadableError
from slidelabel.pipelines.codestreams import stream_problem, unchecked_codec
from slidelabel.pipelines.colour_profile import ProfileTable, profile_table
from slidelabel.pipelines.tiff_structure import open_tiff_file, structure_problem

#: Bytes of decoded tiles kept per slide, so that the margins neighbouring windows share are
#: decoded once: 170 tiles of 256 px (192 KB each), 10 of 1024 px.
CACHE_BYTES = 32 * 2**20


#: Gives rows ``[r0, r1)`` and columns ``[c0, c1)`` (slices within the tile) of tile ``(tx, ty)``
#: as uint8 RGB.
TilePart = Callable[[int, int, slice, slice], np.ndarray]


def assemble_window(x0: int, y0: int, x1: int, y1: int, tile_width: int, tile_height: int, part: TilePart,
                    needed: np.ndarray | None = None) -> np.ndarray:
    """uint8 ``(y1 - y0, x1 - x0, 3)`` RGB of ``[x0, x1) x [y0, y1)`` from fixed tiles of
    ``tile_width`` x ``tile_height`` px, each asked of ``part`` for what the window covers; a tile
    where the bool ``needed`` (the window's shape, default all) holds no pixel is not asked for
    and comes back white."""
    out = np.empty((y1 - y0, x1 - x0, 3), np.uint8)
    for ty in range(y0 // tile_height, (y1 - 1) // tile_height + 1):
        for tx in range(x0 // tile_width, (x1 - 1) // tile_width + 1):
            left, top = tx * tile_width, ty * tile_height
            a_x, a_y = max(x0, left), max(y0, top)
            b_x, b_y = min(x1, left + tile_width), min(y1, top + tile_height)
            inside = (slice(a_y - y0, b_y - y0), slice(a_x - x0, b_x - x0))
            if needed is None or needed[inside].any():
                out[inside] = part(tx, ty, slice(a_y - top, b_y - top), slice(a_x - left, b_x - left))
            else:
                out[inside] = 255
    return out


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


def _readable(page: tifffile.TiffPage) -> bool:
    """8-bit RGB in tiles of one plane, without padding tricks tifffile's decoder leaves to us, and
    stored with a codec whose streams' sizes can be checked before decoding them."""
    return (
        unchecked_codec(page.compression) is None and page.is_tiled and page.dtype == np.uint8 and page.samplesperpixel == 3 and page.imagedepth == 1
        and page.planarconfig == tifffile.PLANARCONFIG.CONTIG
        and page.photometric in (tifffile.PHOTOMETRIC.RGB, tifffile.PHOTOMETRIC.YCBCR)
    )


def _levels(tiff: tifffile.TiffFile, width: int, height: int) -> dict[int, tifffile.TiffPage]:
    """The pages of the main image's stored levels whose size matches a power-of-two working level."""
    levels: dict[int, tifffile.TiffPage] = {}
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
            levels[level] = page
    return levels


class TiffTiles:
    """Windows of a tiled TIFF's stored levels, decoded directly (see the module's docstring).

    Open with :meth:`open`, which returns None when the file has no level this can read.
    Safe to use from several threads at once.
    """

    def __init__(self, path: Path, handle: BinaryIO, tiff: tifffile.TiffFile, levels: dict[int, tifffile.TiffPage],
                 icc: ProfileTable | None) -> None:
        self.path = path
        self._handle = handle
        self._tiff = tiff
        self._levels = levels
        self._icc = icc
        self._fd = os.open(path, os.O_RDONLY)
        largest = max(page.tilewidth * page.tilelength * 3 for page in levels.values())
        self._tile = functools.lru_cache(maxsize=max(4, CACHE_BYTES // largest))(self._decode_tile)

    @classmethod
    def open(cls, path: str | Path, width: int, height: int,
             icc_profile: ImageCms.ImageCmsProfile | None) -> TiffTiles | None:
        """Read ``path`` directly if it is a TIFF with a stored level of a ``width`` x ``height``
        px image (level-0 size), applying ``icc_profile`` (converted to sRGB) when given; raise
        :class:`SlideUnreadableError` when its OME-XML declares more than may be read (:func:`~slidelabel.pipelines.tiff_structure.structure_problem`)."""
        try:
            handle = open(path, "rb")  # noqa: SIM115 - kept open with the TiffFile, closed by close()
        except OSError:
            return None
        try:
            tiff = open_tiff_file(handle)  # an open file: given a name, tifffile would resolve its links
        except (tifffile.TiffFileError, ValueError, OSError):
            handle.close()
            return None
        if problem := structure_problem(tiff):  # before tiff.series reads what they declare
            tiff.close()
            handle.close()
            raise SlideUnreadableError(path, problem)
        levels = _levels(tiff, width, height)
        if not levels:
            tiff.close()
            handle.close()
            return None
        return cls(Path(path), handle, tiff, levels, profile_table(icc_profile) if icc_profile is not None else None)

    def levels(self) -> list[int]:
        """The working levels (downsample ``2 ** level``) read directly, finest first."""
        return sorted(self._levels)

    def drop_level(self, level: int) -> None:
        """Stop reading ``level`` directly (its pixels are not the reference reader's)."""
        self._levels.pop(level, None)

    def stored_size(self, level: int) -> tuple[int, int] | None:
        """(width, height) of ``level`` as stored, or None when it is not read directly."""
        page = self._levels.get(level)
        return None if page is None else (page.imagewidth, page.imagelength)

    def window(self, level: int, x0: int, y0: int, x1: int, y1: int, *, needed: np.ndarray | None = None) -> np.ndarray:
        """uint8 ``(y1 - y0, x1 - x0, 3)`` RGB of ``[x0, x1) x [y0, y1)`` of a stored ``level``,
        within its :meth:`stored_size`; tiles where the bool ``needed`` (same height and width,
        default all) holds no pixel are not decoded and come back white."""
        page = self._levels[level]
        if not (0 <= x0 < x1 <= page.imagewidth and 0 <= y0 < y1 <= page.imagelength):
            raise ValueError(f"window [{x0}, {x1}) x [{y0}, {y1}) is outside level {level} "
                             f"({page.imagewidth} x {page.imagelength} px)")
        return assemble_window(x0, y0, x1, y1, page.tilewidth, page.tilelength,
                               lambda tx, ty, rows, cols: self._tile(level, tx, ty)[rows, cols], needed)

    def _decode_tile(self, level: int, tx: int, ty: int) -> np.ndarray:
        page = self._levels[level]
        index = ty * -(-page.imagewidth // page.tilewidth) + tx
        count = page.databytecounts[index]
        if not count:  # a tile never written (sparse TIFF): white, as large_image shows it
            return np.full((page.tilelength, page.tilewidth, 3), 255, np.uint8)
        try:
            data = os.pread(self._fd, count, page.dataoffsets[index])
        except OSError as error:
            raise TileDecodeError(f"tile ({tx}, {ty}) of level {level}: {error}") from error
        if problem := stream_problem(data, page.compression, page.tilewidth, page.tilelength):
            raise TileDecodeError(f"tile ({tx}, {ty}) of level {level}: {problem}: the file is damaged or made to "
                                  "exhaust memory, and is not decoded")
        try:
            pixels = page.decode(data, index, jpegtables=page.jpegtables)[0]
            rgb = np.ascontiguousarray(pixels.reshape(page.tilelength, page.tilewidth, 3))
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
        self._handle.close()
