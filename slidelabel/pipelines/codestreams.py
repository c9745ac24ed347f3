"""The size an image codestream declares in its header, read without decoding it.

A TIFF's tile tags say how large its tiles are, but each tile's JPEG or JPEG 2000 stream says so
again, and decoders believe the stream: a 16 MB file of 256 px tiles whose JPEG headers declare
20000 x 20000 px had each tile decoded to 1.2 GB (the sixteenth attack). :func:`declared_size`
reads that header so a reader can refuse the tile first.
"""

from __future__ import annotations

import struct

#: JPEG markers that start a frame (its size follows): SOF0-SOF15 but DHT (C4), JPG (C8), DAC (CC).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length: TEM, RST0-7, SOI, EOI.
_JPEG_BARE = frozenset({0x01, *range(0xD0, 0xDA)})
#: JPEG 2000: the start of a codestream (SOC) and its image and tile size marker (SIZ).
_J2K_SIZ = b"\xff\x4f\xff\x51"
#: Bytes of a stream's start searched for a JPEG 2000 codestream inside its JP2 boxes.
_JP2_SEARCH = 4096


def declared_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` in pixels that the JPEG, JPEG 2000 codestream or JP2 file ``data``
    declares; None for another kind of data or a header that cannot be read."""
    if data[:2] == b"\xff\xd8":
        return _jpeg_size(data)
    start = data.find(_J2K_SIZ, 0, _JP2_SEARCH)
    if start < 0 or len(data) < start + 22:
        return None
    width, height, x_offset, y_offset = struct.unpack_from(">IIII", data, start + 8)
    return width - x_offset, height - y_offset


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return None
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_BARE:
            at += 2
            continue
        if marker == 0xDA:  # start of scan: no frame header came first
            return None
        if marker in _JPEG_FRAMES:
            if at + 9 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, at + 5)
            return width, height
        (length,) = struct.unpack_from(">H", data, at + 2)
        at += 2 + length
    return None
