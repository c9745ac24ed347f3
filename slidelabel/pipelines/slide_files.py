"""Checks of a slide file before any reader opens it: missing, a folder, empty, truncated, and
(where a server admits slides) larger than it may decode."""

from __future__ import annotations

import logging
import math
import os
import stat
import struct
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import tifffile
from PIL import Image

from slidelabel.errors import SlideNotFoundError, SlideUnreadableError
from slidelabel.pipelines.codestreams import declares_size, jpeg_restart_interval, stream_problem, unchecked_codec
from slidelabel.pipelines.pinned_files import NOT_REGULAR, open_tiff
from slidelabel.pipelines.tiff_structure import structure_problem, unparsed_problem

# The truncation check reads broken files on purpose; tifffile's complaints about them would
# otherwise reach stderr ahead of slidelabel's own message. Configured handlers still get them.
logging.getLogger("tifffile").addHandler(logging.NullHandler())


def _tiff_problem(path: Path, size: int) -> str | None:
    """Why a TIFF-based file (SVS, TIFF, NDPI...) of ``size`` bytes cannot be used, else None.

    Readers open a file cut after its first levels and fail only when a job reaches the missing
    part, so the IFD chain must end (next offset 0) and all pixel data must lie within the file.
    The full-resolution image must hold 8-bit samples: OpenSlide opens 16-bit images as generic
    TIFFs and returns meaningless pixels.
    """
    try:
        with open_tiff(path) as tiff:
            if problem := structure_problem(tiff):  # before a reader builds tiff.series
                return problem
            pages = list(tiff.pages)  # stops quietly where the chain leaves the file
            for page in pages:
                pages.extend(page.pages or ())  # sub-IFDs: the pyramid levels of OME-TIFF
            data_ends = [
                offset + count
                for page in pages
                for offset, count in zip(page.dataoffsets, page.databytecounts)
            ]
            bits = pages[0].bitspersample if pages else 8
            pointer_at, pointer_size = tiff.pages.next_page_offset, tiff.tiff.offsetsize
            tiff.filehandle.seek(pointer_at)
            raw_pointer = tiff.filehandle.read(pointer_size)
    except (ValueError, struct.error) as error:  # TiffFileError is a ValueError
        with open(path, "rb") as file:
            return unparsed_problem(file, error)  # None for no TIFF: the readers judge it
    if len(raw_pointer) < pointer_size:
        needed_for_chain = pointer_at + pointer_size
    else:
        next_ifd = struct.unpack(tiff.tiff.offsetformat, raw_pointer)[0]
        needed_for_chain = next_ifd + 1 if next_ifd else 0
    if bits != 8:
        return f"has {bits}-bit samples; slidelabel reads 8-bit RGB slides (convert it, e.g. to an 8-bit pyramidal TIFF)"
    needed = max(data_ends + [needed_for_chain])
    if needed > size:
        return f"the file is truncated: it has {size} bytes but its TIFF structure needs {needed}"
    return None


def check_slide_file(path: Path) -> None:
    """Raise when ``path`` is missing, a directory, no regular file, empty, unreadable, or a
    truncated or 16-bit TIFF."""
    if not path.exists():
        raise SlideNotFoundError(path, "no such file")
    if path.is_dir():
        raise SlideUnreadableError(path, "is a directory, not a slide file")
    check_regular_file(path)
    try:
        size = path.stat().st_size
        if size == 0:
            raise SlideUnreadableError(path, "the file is empty (0 bytes)")
        problem = _tiff_problem(path, size)
    except OSError as error:
        raise SlideUnreadableError(path, f"cannot be read: {error.strerror or error}") from error
    if problem:
        raise SlideUnreadableError(path, problem)


MEGAPIXEL = 10**6


@dataclass(frozen=True)
class SlideLimits:
    """What a slide file may declare, judged from its headers before any reader decodes it."""

    max_pixels: int = 40_000 * MEGAPIXEL
    """Level-0 pixels."""
    max_unpyramided_pixels: int = 500 * MEGAPIXEL
    """Pixels of the smallest stored level: a thumbnail of the whole slide decodes all of it."""
    max_chunk_bytes: int = 128 << 20
    """Decoded bytes of one stored strip or tile: readers decode each one whole."""


def _size(page: tifffile.TiffPage) -> str:
    return f"{page.imagewidth} x {page.imagelength} px"


def _tiff_limit_problem(tiff: tifffile.TiffFile, limits: SlideLimits) -> str | None:
    """Why the TIFF declares more than ``limits`` allow, else None; reads headers only."""
    if problem := structure_problem(tiff):
        return problem
    pages = [page for page in tiff.pages if isinstance(page, tifffile.TiffPage)]
    for page in list(pages):
        pages.extend(page.pages or ())
    if not pages:
        return None
    base = pages[0]
    if base.imagewidth * base.imagelength > limits.max_pixels:
        return (f"is {_size(base)}, more than the {limits.max_pixels // MEGAPIXEL} megapixels this server takes "
                "(SLIDELABEL_MAX_SLIDE_MEGAPIXELS)")
    try:
        levels = [level.keyframe for level in tiff.series[0].levels] if tiff.series else [base]
    except RecursionError:  # a description nested deeper than its parser goes (a shaped JSON's lists)
        return "cannot be read: its image description is nested deeper than a reader parses; the file is damaged"
    # A level's pixels are its page's: a series may stack pages, and two 60,000 px pages read as one
    # (2, 60000, 60000, 3) level counted 2 x 60,000 px; 3.6 Gpx passed, 90 s a thumbnail (the
    # twenty-sixth attack).
    smallest = min(levels, key=lambda page: page.imagewidth * page.imagelength)
    if smallest.imagewidth * smallest.imagelength > limits.max_unpyramided_pixels:
        return (f"is {_size(base)} without a pyramid of smaller levels (its smallest is "
                f"{smallest.imagewidth} x {smallest.imagelength} px), so every thumbnail would decode all of it; this "
                f"server takes at most {limits.max_unpyramided_pixels // MEGAPIXEL} megapixels without one "
                "(SLIDELABEL_MAX_UNPYRAMIDED_MEGAPIXELS): convert it to a tiled pyramidal TIFF, e.g. "
                "vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg")
    whole = [page for page in pages if not (tiff.is_ndpi and _read_in_pieces(tiff.filehandle, page))]
    if oversized := oversized_chunks(whole, limits):
        page, chunk_bytes = oversized
        return (f"stores an image of {_size(page)} in {stored_chunks(page)} of {chunk_bytes // 2**20} MB decoded "
                f"each, more than the {limits.max_chunk_bytes // 2**20} MB this server decodes at once "
                "(SLIDELABEL_MAX_DECODED_MB): convert it to a tiled pyramidal TIFF, e.g. "
                "vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg")
    return _image_stream_problem(tiff.filehandle, pages)


def _read_in_pieces(file: tifffile.FileHandle, page: tifffile.TiffPage) -> bool:
    """Whether the NDPI ``page`` is a JPEG that readers decode piece by piece, however large its one
    strip: tifffile by its MCU starts (tag 65426), OpenSlide by its restart markers. Any other page
    of a file with NDPI's tags (which any TIFF may carry: a 20,000 px deflate tile so tagged went
    past every check, the nineteenth attack) is held to the limits of other slides."""
    if page.compression != tifffile.COMPRESSION.JPEG:
        return False
    if page.jpegheader is not None:  # tifffile made tiles of it, by its MCU starts
        return True
    if not page.dataoffsets or not page.databytecounts[0]:
        return False
    head = os.pread(file.fileno(), min(page.databytecounts[0], _JPEG_HEADER_BYTES), page.dataoffsets[0])
    return jpeg_restart_interval(head) > 0


#: Bytes of an NDPI strip read for its JPEG header (tables, frame header, restart interval).
_JPEG_HEADER_BYTES = 4096
#: Bytes of a stored chunk read first for its image stream's header, which encoders write at its
#: start (a JPEG's frame header after its tables, a PNG's IHDR at byte 16, a WebP's at 30); the
#: whole chunk is read only when the header is not within them.
_STREAM_HEAD_BYTES = 512


def _image_stream_problem(file: tifffile.FileHandle, pages: Iterable[tifffile.TiffPage]) -> str | None:
    """Why a strip or tile of ``pages`` that a decoder takes as an image stream (JPEG, JPEG 2000,
    PNG, WebP) must not be decoded, else None: readers decode such a stream at the size it declares,
    whatever the tile tags say, and one reader (large_image's tifffile source) checks none (256 px
    PNG tiles saying 6000 px took 28 s and 557 MB to add, the eighteenth attack). Reads each
    chunk's header (an 80,000 px slide's 131,000 tiles: 1 s, 9 s from a cold disk); codecs whose
    header this cannot read (JPEG XL, ...) are refused."""
    fd = file.fileno()
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)  # headers only: read ahead, they would read all
    for page in pages:
        if codec := unchecked_codec(page.compression):
            return (f"stores its pixels with {codec} compression, whose streams this server cannot check before "
                    "decoding them: convert it, e.g. vips tiffsave in.tif out.tif --tile --pyramid --compression jpeg")
        if not declares_size(page.compression):
            continue
        if page.jpegheader is not None:  # NDPI's tiles by MCU starts: tifffile decodes each after this header
            if problem := stream_problem(page.jpegheader, page.compression, page.tilewidth, page.tilelength):
                return f"cannot be read safely: the JPEG header of its {_size(page)} image: {problem}"
            continue
        width, height = ((page.tilewidth, page.tilelength) if page.is_tiled
                         else (page.imagewidth, min(page.rowsperstrip or page.imagelength, page.imagelength)))
        for index, (offset, count) in enumerate(zip(page.dataoffsets, page.databytecounts)):
            if not count:
                continue
            problem = stream_problem(os.pread(fd, min(count, _STREAM_HEAD_BYTES), offset), page.compression,
                                     width, height)
            if problem and count > _STREAM_HEAD_BYTES:
                problem = stream_problem(os.pread(fd, count, offset), page.compression, width, height)
            if problem:
                return (f"cannot be read safely: {stored_chunks(page)[:-1]} {index} of its {_size(page)} image: "
                        f"{problem}; the file is damaged or made to exhaust memory")
    return None


def oversized_chunks(pages: Iterable[tifffile.TiffPage], limits: SlideLimits) -> tuple[tifffile.TiffPage, int] | None:
    """The first of ``pages`` whose stored strips or tiles decode to more than
    ``limits.max_chunk_bytes`` each (a reader decodes each one whole), with that size in bytes;
    None when all fit. Reads headers only: slides, and the label masks imported onto them."""
    for page in pages:
        itemsize = page.dtype.itemsize if page.dtype is not None else 1
        chunk_bytes = math.prod(page.chunks) * itemsize
        if chunk_bytes > limits.max_chunk_bytes:
            return page, chunk_bytes
    return None


def stored_chunks(page: tifffile.TiffPage) -> str:
    """How ``page`` stores its pixels, for messages: "tiles" or "strips"."""
    return "tiles" if page.is_tiled else "strips"


def check_regular_file(path: Path) -> None:
    """Raise :class:`SlideUnreadableError` unless ``path`` (links followed) is a regular file: a
    FIFO, socket or device named like a slide would block its reader forever."""
    try:
        mode = path.stat().st_mode
    except OSError as error:
        raise SlideUnreadableError(path, f"cannot be read: {error.strerror or error}") from error
    if not stat.S_ISREG(mode):
        raise SlideUnreadableError(path, NOT_REGULAR)


def check_slide_limits(path: Path, limits: SlideLimits) -> None:
    """Raise :class:`SlideUnreadableError` when the TIFF-based file at ``path`` (SVS, TIFF, NDPI...)
    declares more pixels, a larger level without a pyramid, or larger strips or tiles than
    ``limits`` allow, or is no regular file (:func:`check_regular_file`). Only headers are read;
    other formats pass (their readers decode tiles) but GIFs and animated PNGs and WebPs
    (:func:`animation_problem`)."""
    check_regular_file(path)
    try:
        with open_tiff(path) as tiff:
            problem = _tiff_limit_problem(tiff, limits)
    except (ValueError, struct.error, IndexError) as error:  # TiffFileError is a ValueError
        with open(path, "rb") as file:  # a damaged TIFF is refused; another format's readers judge it
            problem = unparsed_problem(file, error) or animation_problem(path)
    except OSError as error:
        raise SlideUnreadableError(path, f"cannot be read: {error.strerror or error}") from error
    if problem:
        raise SlideUnreadableError(path, problem)


#: What to do with a file of many images that is no TIFF.
_CONVERT = "a slide is one image: convert it to a pyramidal TIFF (e.g. vips tiffsave --tile --pyramid)"
#: Chunks of a PNG or WebP read, at most, to find its image data, before which an animation is declared.
_MAX_CHUNKS = 1000


def animation_problem(path: Path) -> str | None:
    """Why the GIF, animated PNG (APNG), animated WebP or other image of several frames (FLI, MPO,
    ...) at ``path`` is refused, or None for another file; only its headers are read. large_image's
    PIL reader decodes every frame of such a file on each open, and PIL's pixel limit checks only
    the first: a 1.7 MB GIF
    of 120 frames of 4096 x 4096 px took 54 s to add and 39 s per thumbnail (seventeenth attack).
    A slide is never a GIF, so GIFs are refused by their signature, still or not."""
    try:
        with open(path, "rb") as file:
            head = file.read(16)
            if head[:6] in (b"GIF87a", b"GIF89a"):
                return f"is a GIF, which may hold many frames that each open decodes: {_CONVERT}"
            if head[:8] == b"\x89PNG\r\n\x1a\n":
                animated = _png_animated(file)
            elif head[:4] == b"RIFF" and head[8:12] == b"WEBP":
                animated = _webp_animated(file)
            else:
                animated = _frames(path) > 1
    except OSError as error:
        return f"cannot be read: {error.strerror or error}"
    return f"is an animated image of several frames, each decoded on every open: {_CONVERT}" if animated else None


#: What PIL raises for a file it cannot take for an image of a format it knows, or one whose
#: header it cannot read: the readers judge such files.
_NOT_AN_IMAGE = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


def _frames(path: Path) -> int:
    """Frames of the image at ``path`` (FLI/FLC, MPO, DCX, PSD layers...) as PIL reads them from
    its header, 1 for a file PIL does not take for an image: large_image's PIL reader steps
    through every frame, and PIL decodes each one it steps past (a 780 KB FLI of 30,000 frames of
    4,096 px took 20 s of CPU to add and each thumbnail 21 s, the nineteenth attack)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                return int(getattr(image, "n_frames", 1) or 1)
    except _NOT_AN_IMAGE:
        return 1


def _png_animated(file: BinaryIO) -> bool:
    """Whether the PNG ``file`` has an 'acTL' chunk (APNG) before its image data."""
    file.seek(8)
    for _ in range(_MAX_CHUNKS):
        header = file.read(8)
        if len(header) < 8:
            return False
        length, kind = struct.unpack(">I4s", header)
        if kind == b"acTL":
            return True
        if kind in (b"IDAT", b"IEND"):
            return False
        file.seek(length + 4, 1)  # the chunk's data and CRC
    return True  # image data this far in is no PNG encoder's: refused as one would an animation


def _webp_animated(file: BinaryIO) -> bool:
    """Whether the WebP ``file`` declares an animation (its VP8X flag, an 'ANIM' or 'ANMF' chunk)
    before its image data."""
    file.seek(12)
    for _ in range(_MAX_CHUNKS):
        header = file.read(9)
        if len(header) < 8:
            return False
        kind, length = struct.unpack("<4sI", header[:8])
        if kind in (b"ANIM", b"ANMF") or (kind == b"VP8X" and len(header) == 9 and header[8] & 0x02):
            return True
        if kind in (b"VP8 ", b"VP8L"):
            return False
        file.seek(length + (length & 1) - 1, 1)  # the chunk's data, padded to an even size
    return True
