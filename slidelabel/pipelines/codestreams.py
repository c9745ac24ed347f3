"""The size an image codestream declares in its header, read without decoding it.

A TIFF's tile tags say how large its tiles are, but each tile's JPEG or JPEG 2000 stream says so
again, and decoders believe the stream: a 16 MB file of 256 px tiles whose JPEG headers declare
20000 x 20000 px had each tile decoded to 1.2 GB (the sixteenth attack). :func:`declared_size`
reads that header as the decoders do (libjpeg skips stray bytes between markers; OpenJPEG finds a
JP2 file's codestream by walking its boxes) so a reader can refuse the tile first, and
:func:`is_codestream` says which data a decoder would take for such a stream, so that one whose
size cannot be read is refused too (the seventeenth attack decoded those).
"""

from __future__ import annotations

import struct

#: JPEG markers that start a frame (its size follows): SOF0-SOF15 but DHT (C4), JPG (C8), DAC (CC).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length: TEM, RST0-7, SOI.
_JPEG_BARE = frozenset({0x01, *range(0xD0, 0xD9)})
#: JPEG 2000: the start of a codestream (SOC) and its image and tile size marker (SIZ).
_J2K_SIZ = b"\xff\x4f\xff\x51"
#: The JP2 signature box, and the older signature imagecodecs also takes for a JP2 file.
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
_JP2_MAGIC = b"\r\n\x87\n"
#: A PNG file's signature.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def is_codestream(data: bytes) -> bool:
    """Whether ``data`` starts as a JPEG, a JPEG 2000 codestream, a JP2 file or a PNG does (what
    libjpeg, OpenJPEG and libpng, through imagecodecs, look at to take it for one)."""
    return (data[:2] == b"\xff\xd8" or data[:4] == _J2K_SIZ or data[4:8] == _JP2_SIGNATURE[4:8]
            or data[:4] == _JP2_MAGIC or data[:8] == _PNG_SIGNATURE)


def declared_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` in pixels that the JPEG, JPEG 2000 codestream, JP2 file or PNG ``data``
    declares; None for another kind of data or a header that cannot be read (see
    :func:`is_codestream`: such a stream is damaged or made to hide its size)."""
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    if data[:8] == _PNG_SIGNATURE:  # its first chunk is IHDR: width, height
        return struct.unpack_from(">II", data, 16) if data[12:16] == b"IHDR" and len(data) >= 24 else None
    start = 0 if data[:4] == _J2K_SIZ else _jp2_codestream(data)
    if start is None or data[start:start + 4] != _J2K_SIZ or len(data) < start + 22:
        return None
    width, height, x_offset, y_offset = struct.unpack_from(">IIII", data, start + 8)
    return width - x_offset, height - y_offset


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while True:
        at = data.find(b"\xff", at)  # libjpeg skips other bytes before a marker ("extraneous bytes")
        if at < 0 or at + 2 > len(data):
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x00 or marker in _JPEG_BARE:  # 0x00: a stuffed 0xFF, skipped as libjpeg does
            at += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan or end of image: no frame header came first
            return None
        if marker in _JPEG_FRAMES:
            if at + 9 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, at + 5)
            return width, height
        if at + 4 > len(data):
            return None
        (length,) = struct.unpack_from(">H", data, at + 2)
        at += 2 + max(length, 2)


def _jp2_codestream(data: bytes) -> int | None:
    """Offset of the contents of a JP2 file's first 'jp2c' box (its codestream), None if none."""
    at = 0
    while at + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if length == 1:  # the length follows, in 64 bits
            if at + 16 > len(data):
                return None
            (length,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        if kind == b"jp2c":
            return at + header
        if length == 0 or length < header:  # a box to the end of the file, or a damaged length
            return None
        at += length
    return None
