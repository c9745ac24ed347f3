"""The size an image stream declares in its header, read without decoding it.

A TIFF's tile tags say how large its tiles are, but a tile stored with an image codec (JPEG,
JPEG 2000, PNG, WebP) says so again in its own stream, and decoders believe the stream: a 16 MB
file of 256 px tiles whose JPEG headers declare 20000 x 20000 px had each tile decoded to 1.2 GB
(the sixteenth attack). :func:`declared_size` reads that header as the decoders do (libjpeg skips
stray bytes between markers; OpenJPEG finds a JP2 file's codestream by walking its boxes; libwebp
takes a bare VP8 or VP8L bitstream as well as a RIFF file) so that a reader can refuse the tile
first; a stream whose size cannot be read is refused too (the seventeenth attack decoded those),
and so is one whose pixels decode to more than RGBA at 16 bits (a JPEG 2000 stream may declare
16,384 components in a tile of the right size).
Which codec a decoder uses is chosen by the TIFF's compression tag, never by the stream, so the
stream is read as that codec's.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple

import tifffile

#: JPEG markers that start a frame (its size follows): SOF0-SOF15 but DHT (C4), JPG (C8), DAC (CC).
_JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
#: JPEG markers without a length: TEM, RST0-7, SOI.
_JPEG_BARE = frozenset({0x01, *range(0xD0, 0xD9)})
#: JPEG 2000: the start of a codestream (SOC) and its image and tile size marker (SIZ).
_J2K_SIZ = b"\xff\x4f\xff\x51"
#: A PNG file's signature.
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Bytes of a pixel libwebp decodes (RGBA at most).
_WEBP_PIXEL_BYTES = 4
#: Chunks of a WebP file read, at most, to find its bitstream.
_MAX_WEBP_CHUNKS = 64

#: Bytes a decoded pixel may take: four samples (RGBA) of 16 bits. A JPEG 2000 stream may declare
#: 16,384 components: a 32 KB tile of 256 px and 2,000 components decoded to 131 MB.
MAX_PIXEL_BYTES = 8


class Declared(NamedTuple):
    """What an image stream declares it decodes to."""

    width: int
    height: int
    pixel_bytes: int
    """Bytes of one decoded pixel: samples (components, channels) times bytes per sample."""


def _sample_bytes(bits: int) -> int:
    return 1 if bits <= 8 else 2 if bits <= 16 else 4


def _jpeg_markers(data: bytes) -> Iterator[tuple[int, int]]:
    """``(marker, offset)`` of a JPEG stream's markers up to its first scan (SOS, included), as
    libjpeg finds them: it skips other bytes before a marker ("extraneous bytes"), fill bytes and
    stuffed 0xFF; ends where the data does."""
    if data[:2] != b"\xff\xd8":
        return
    at = 2
    while True:
        at = data.find(b"\xff", at)
        if at < 0 or at + 2 > len(data):
            return
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0x00 or marker in _JPEG_BARE:  # 0x00: a stuffed 0xFF
            at += 2
            continue
        yield marker, at
        if marker in (0xDA, 0xD9) or at + 4 > len(data):  # start of scan, end of image: the header ends
            return
        (length,) = struct.unpack_from(">H", data, at + 2)
        at += 2 + max(length, 2)


def _jpeg_size(data: bytes) -> Declared | None:
    for marker, at in _jpeg_markers(data):
        if marker in (0xDA, 0xD9):  # a scan or the end before any frame header
            return None
        if marker in _JPEG_FRAMES:  # length, precision (bits), height, width, components
            if at + 10 > len(data):
                return None
            bits, height, width, components = struct.unpack_from(">BHHB", data, at + 4)
            return Declared(width, height, components * _sample_bytes(bits))
    return None


def jpeg_restart_interval(data: bytes) -> int:
    """MCUs between the restart markers of the JPEG stream ``data`` (its DRI marker), 0 for none:
    a stream with them can be decoded piece by piece (OpenSlide reads NDPI's one-strip levels so)."""
    for marker, at in _jpeg_markers(data):
        if marker == 0xDD and at + 6 <= len(data):
            return struct.unpack_from(">H", data, at + 4)[0]
    return 0


def _jpeg2000_size(data: bytes) -> Declared | None:
    """A JPEG 2000 codestream's size, or a JP2 file's (OpenJPEG, through imagecodecs, takes both):
    a JP2's palette ('pclr' box) adds its columns to each pixel, as OpenJPEG expands it (a 1.8 KB
    tile of one 8-bit component and a 255-column palette decoded to 255 bytes a pixel)."""
    if data[:4] == _J2K_SIZ:
        start, palette_bytes = 0, 0
    else:
        start, palette_bytes = _jp2_codestream(data)
    if start is None or palette_bytes is None or data[start:start + 4] != _J2K_SIZ or len(data) < start + 42:
        return None
    width, height, x_offset, y_offset = struct.unpack_from(">IIII", data, start + 8)
    (components,) = struct.unpack_from(">H", data, start + 40)
    if components > MAX_PIXEL_BYTES:  # too many whatever their depth: their depths need not be read
        pixel_bytes = components
    else:  # each component's depth (bits - 1, and a sign bit), then its subsampling
        depths = data[start + 42:start + 42 + 3 * components:3]
        if len(depths) < components:
            return None
        pixel_bytes = sum(_sample_bytes((depth & 0x7F) + 1) for depth in depths)
    return Declared(max(width - x_offset, 0), max(height - y_offset, 0), pixel_bytes + palette_bytes)


def _jp2_boxes(data: bytes, start: int, end: int) -> Iterator[tuple[bytes, int, int]]:
    """``(kind, contents start, contents end)`` of the JP2 boxes in ``data[start:end]``, in order,
    as OpenJPEG walks them; ends at a damaged length."""
    at = start
    while at + 8 <= end:
        length, kind = struct.unpack_from(">I4s", data, at)
        header = 8
        if length == 1:  # the length follows, in 64 bits
            if at + 16 > end:
                return
            (length,) = struct.unpack_from(">Q", data, at + 8)
            header = 16
        elif length == 0:  # a box to the end of the file
            length = end - at
        if length < header:
            return
        yield kind, at + header, min(at + length, end)
        at += length


def _jp2_codestream(data: bytes) -> tuple[int | None, int | None]:
    """Offset of the contents of a JP2 file's first 'jp2c' box (its codestream), None if none;
    and the bytes its palettes (the 'pclr' boxes of its header box, before the codestream) add to
    a decoded pixel, None when one cannot be read."""
    palette_bytes: int | None = 0
    for kind, start, end in _jp2_boxes(data, 0, len(data)):
        if kind == b"jp2c":
            return start, palette_bytes
        if kind != b"jp2h":
            continue
        for inner, at, inner_end in _jp2_boxes(data, start, end):
            if inner == b"pclr" and palette_bytes is not None:  # entries (2 bytes), columns, each one's depth
                columns = data[at + 2] if at + 2 < inner_end else 0
                depths = data[at + 3:min(at + 3 + columns, inner_end)]
                palette_bytes = (palette_bytes + sum(_sample_bytes((depth & 0x7F) + 1) for depth in depths)
                                 if columns and len(depths) == columns else None)
    return None, palette_bytes


def _png_size(data: bytes) -> Declared | None:
    """A PNG's size: its first chunk is IHDR (width, height, bit depth, colour type)."""
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 26:
        return None
    width, height, bits, colour = struct.unpack_from(">IIBB", data, 16)
    samples = {0: 1, 2: 3, 4: 2}.get(colour, 4)  # grey, RGB, grey and alpha; RGBA, or a palette's colours
    return Declared(width, height, samples * _sample_bytes(bits))


def _vp8_size(data: bytes) -> Declared | None:
    """A VP8 key frame's size (lossy WebP): a 3-byte frame tag, a start code, 14-bit sizes."""
    if len(data) < 10 or data[3:6] != b"\x9d\x01\x2a":
        return None
    width, height = struct.unpack_from("<HH", data, 6)
    return Declared(width & 0x3FFF, height & 0x3FFF, _WEBP_PIXEL_BYTES)


def _vp8l_size(data: bytes) -> Declared | None:
    """A VP8L bitstream's size (lossless WebP): a signature byte, then 14 bits each of width - 1
    and height - 1."""
    if len(data) < 5 or data[0] != 0x2F:
        return None
    (bits,) = struct.unpack_from("<I", data, 1)
    return Declared((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1, _WEBP_PIXEL_BYTES)


def _webp_size(data: bytes) -> Declared | None:
    """A WebP's size: of a RIFF file, the largest of its extended header's canvas and its
    bitstream's; a bare VP8L or VP8 bitstream's own; None for an animation (a tile is one image)."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return _vp8l_size(data) or _vp8_size(data)
    sizes: list[Declared] = []
    at = 12
    for _ in range(_MAX_WEBP_CHUNKS):
        if at + 8 > len(data):
            return None
        kind, length = struct.unpack_from("<4sI", data, at)
        body = data[at + 8:at + 8 + length]
        if kind in (b"ANIM", b"ANMF"):
            return None
        if kind == b"VP8X" and len(body) >= 10:
            sizes.append(Declared(int.from_bytes(body[4:7], "little") + 1, int.from_bytes(body[7:10], "little") + 1,
                                  _WEBP_PIXEL_BYTES))
        elif kind in (b"VP8 ", b"VP8L"):
            bitstream = (_vp8_size if kind == b"VP8 " else _vp8l_size)(body)
            if bitstream is None:
                return None
            sizes.append(bitstream)
            return Declared(max(size.width for size in sizes), max(size.height for size in sizes), _WEBP_PIXEL_BYTES)
        at += 8 + length + (length & 1)  # chunks are padded to an even size
    return None


#: The size reader of each TIFF compression whose chunks are image streams with a size of their
#: own, by the code tifffile, libtiff and large_image dispatch on.
_SIZE_READERS: dict[int, Callable[[bytes], Declared | None]] = {
    tifffile.COMPRESSION.JPEG: _jpeg_size,
    34892: _jpeg_size,  # lossy JPEG (DNG)
    33007: _jpeg_size,  # ALT_JPEG
    tifffile.COMPRESSION.APERIO_JP2000_YCBC: _jpeg2000_size,
    33004: _jpeg2000_size,
    tifffile.COMPRESSION.APERIO_JP2000_RGB: _jpeg2000_size,
    tifffile.COMPRESSION.JPEG2000: _jpeg2000_size,
    tifffile.COMPRESSION.PNG: _png_size,
    tifffile.COMPRESSION.WEBP: _webp_size,
}


def declares_size(compression: int) -> bool:
    """Whether chunks stored with the TIFF ``compression`` are image streams that declare their
    own size (decoded at that size, whatever the tile tags say), for :func:`declared_size`."""
    return compression in _SIZE_READERS


def unchecked_codec(compression: int) -> str | None:
    """The name of the image codec of TIFF ``compression`` when its streams declare their own
    size (tifffile's image compressions) but :func:`declared_size` cannot read it (JPEG XL,
    JPEG XR, old-style JPEG, ...); None for a codec it reads or one that decodes into the tile."""
    if compression in _SIZE_READERS or compression not in tifffile.TIFF.IMAGE_COMPRESSIONS:
        return None
    try:
        return tifffile.COMPRESSION(compression).name
    except ValueError:
        return f"code {compression}"


def declared_size(data: bytes, compression: int) -> Declared | None:
    """The width and height in pixels, and bytes a pixel, that ``data``, a chunk stored with the
    TIFF ``compression`` (one that :func:`declares_size`), declares; None when its header cannot
    be read: such a stream is damaged or made to hide its size, and is never decoded."""
    return _SIZE_READERS[compression](data)


def stream_problem(data: bytes, compression: int, width: int, height: int) -> str | None:
    """Why ``data``, a chunk of ``width`` x ``height`` px stored with the TIFF ``compression``, must
    not be decoded: its image stream declares more pixels, or hides how many; None when it may be
    (or the codec decodes into the chunk's own size)."""
    if not declares_size(compression):
        return None
    declared = declared_size(data, compression)
    if declared is None:
        return "its image stream's header cannot be read, so the pixels it declares are unknown"
    if declared.width > width or declared.height > height:
        return f"its image stream declares {declared.width} x {declared.height} px, more than its {width} x {height}"
    if declared.pixel_bytes > MAX_PIXEL_BYTES:
        return (f"its image stream declares {declared.pixel_bytes} bytes a pixel (samples of every component), more "
                f"than the {MAX_PIXEL_BYTES} of RGBA at 16 bits")
    return None
