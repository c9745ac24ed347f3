""":func:`declared_size` reads the size of every stream a real encoder writes (a legitimate tile is
never refused) and finds it where the decoders do, past bytes and boxes a strict reading stops at,
as the codec of the TIFF's compression tag (which the decoders dispatch on) reads it."""

from __future__ import annotations

import io
import struct

import imagecodecs
import numpy as np
import pytest
import tifffile
from PIL import Image

from slidelabel.pipelines.codestreams import declared_size, declares_size, stream_problem, unchecked_codec

#: Not square, so that a swapped width and height shows.
HEIGHT, WIDTH = 96, 160


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), np.uint8)


def pil_jpeg(pixels: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", **options)
    return out.getvalue()


def pil_webp(pixels: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "WEBP", **options)
    return out.getvalue()


JPEG, JPEG2000, PNG, WEBP = (tifffile.COMPRESSION.JPEG, tifffile.COMPRESSION.JPEG2000, tifffile.COMPRESSION.PNG,
                             tifffile.COMPRESSION.WEBP)

#: A real encoder's stream of an image, and the TIFF compression a tile of it is stored with.
ENCODERS = {
    "jpeg8": (lambda rgb: imagecodecs.jpeg8_encode(rgb, level=90), JPEG),
    "jpeg8-optimized-444": (lambda rgb: imagecodecs.jpeg8_encode(rgb, level=75, optimize=True, subsampling="444"),
                            JPEG),
    "jpeg8-grey": (lambda rgb: imagecodecs.jpeg8_encode(np.ascontiguousarray(rgb[..., 0]), level=90), JPEG),
    "jpeg8-lossless": (lambda rgb: imagecodecs.jpeg8_encode(rgb, lossless=True), JPEG),
    "jpeg-progressive": (lambda rgb: pil_jpeg(rgb, progressive=True, quality=80), JPEG),
    "jpeg-exif-icc": (lambda rgb: pil_jpeg(rgb, exif=b"Exif\x00\x00" + bytes(64), icc_profile=bytes(3000)), JPEG),
    "j2k": (lambda rgb: imagecodecs.jpeg2k_encode(rgb, level=80, codecformat="j2k"), JPEG2000),
    "jp2": (lambda rgb: imagecodecs.jpeg2k_encode(rgb, level=80, codecformat="jp2"), JPEG2000),
    "j2k-lossless": (lambda rgb: imagecodecs.jpeg2k_encode(rgb, codecformat="j2k", reversible=True), JPEG2000),
    "aperio-j2k": (lambda rgb: imagecodecs.jpeg2k_encode(rgb, level=80, codecformat="j2k"),
                   tifffile.COMPRESSION.APERIO_JP2000_RGB),
    "png": (lambda rgb: imagecodecs.png_encode(rgb), PNG),  # eighteenth attack: PNG tiles said 6000 px too
    "webp-lossy": (lambda rgb: pil_webp(rgb, quality=80), WEBP),
    "webp-lossless": (lambda rgb: imagecodecs.webp_encode(rgb, lossless=True), WEBP),
    "webp-alpha": (lambda rgb: pil_webp(np.dstack([rgb, rgb[..., 0]]), quality=80), WEBP),  # an extended header
    "webp-exif": (lambda rgb: pil_webp(rgb, lossless=True, exif=b"Exif\x00\x00" + bytes(30)), WEBP),
    "webp-bare-vp8l": (lambda rgb: bytes(imagecodecs.webp_encode(rgb, lossless=True))[20:], WEBP),
    "webp-bare-vp8": (lambda rgb: pil_webp(rgb, quality=80)[20:], WEBP),
}


@pytest.mark.parametrize("encoder", ENCODERS)
def test_the_size_of_real_encoder_output_is_read(pixels, encoder):
    encode, compression = ENCODERS[encoder]
    stream = bytes(encode(pixels))
    assert declares_size(compression)
    assert declared_size(stream, compression)[:2] == (WIDTH, HEIGHT)
    assert stream_problem(stream, compression, WIDTH, HEIGHT) is None
    assert "declares 160 x 96 px" in stream_problem(stream, compression, WIDTH - 1, HEIGHT)


@pytest.mark.parametrize(("encode", "compression", "pixel_bytes"), [
    (lambda rgb: imagecodecs.jpeg8_encode(np.ascontiguousarray(rgb[..., 0])), JPEG, 1),
    (lambda rgb: imagecodecs.jpeg8_encode(rgb), JPEG, 3),
    (lambda rgb: imagecodecs.png_encode(np.dstack([rgb, rgb[..., :1]]).astype(np.uint16) * 257), PNG, 8),
    (lambda rgb: imagecodecs.png_encode(np.ascontiguousarray(rgb[..., 0])), PNG, 1),
    (lambda rgb: imagecodecs.jpeg2k_encode(rgb.astype(np.uint16) * 16, bitspersample=12, codecformat="j2k"), JPEG2000,
     6),
    (lambda rgb: imagecodecs.jpeg2k_encode(np.dstack([rgb] * 4), codecformat="j2k"), JPEG2000, 12),
], ids=["jpeg-grey", "jpeg-rgb", "png-rgba16", "png-grey", "j2k-12-bit", "j2k-12-components"])
def test_the_bytes_a_pixel_decodes_to_are_read(pixels, encode, compression, pixel_bytes):
    """A JPEG 2000 stream may declare 16,384 components: a 32 KB tile of 256 px and 2,000
    components decoded to 131 MB. What each pixel decodes to is read, and more than RGBA at
    16 bits is a problem."""
    stream = bytes(encode(pixels))
    assert declared_size(stream, compression).pixel_bytes == pixel_bytes
    problem = stream_problem(stream, compression, WIDTH, HEIGHT)
    assert (problem is None) == (pixel_bytes <= 8)
    if problem:
        assert f"declares {pixel_bytes} bytes a pixel" in problem


def test_libwebp_decodes_the_bare_bitstreams_read(pixels):
    """libwebp takes a VP8 or VP8L bitstream without its RIFF file: a tile may hold one."""
    for name in ("webp-bare-vp8l", "webp-bare-vp8"):
        assert imagecodecs.webp_decode(bytes(ENCODERS[name][0](pixels))).shape == (HEIGHT, WIDTH, 3)


def test_the_tiles_of_a_jpeg_tiff_are_read_with_their_tables_apart(tmp_path, pixels):
    path = tmp_path / "tiles.tif"
    tifffile.imwrite(path, np.tile(pixels, (4, 2, 1)), tile=(128, 64), compression="jpeg", photometric="rgb")
    with tifffile.TiffFile(path) as tiff, open(path, "rb") as file:
        page = tiff.pages.first
        for offset, count in zip(page.dataoffsets, page.databytecounts):
            file.seek(offset)
            assert declared_size(file.read(count), page.compression)[:2] == (page.tilewidth, page.tilelength) == (64, 128)


def test_the_sample_slides_tiles_are_read(cmu_slide, tcga_slide):
    """The real SVS tiles (JPEG, JPEG 2000): each declares at most its tile's size."""
    for slide in (cmu_slide, tcga_slide):
        with tifffile.TiffFile(slide) as tiff, open(slide, "rb") as file:
            for page in tiff.pages:
                if not page.is_tiled:
                    continue
                for offset, count in list(zip(page.dataoffsets, page.databytecounts))[:50]:
                    file.seek(offset)
                    size = declared_size(file.read(count), page.compression)
                    assert size is not None and size.width <= page.tilewidth and size.height <= page.tilelength, slide
                    assert size.pixel_bytes == 3, slide


def test_a_jpeg_size_past_bytes_libjpeg_skips_is_read(pixels):
    stream = bytearray(imagecodecs.jpeg8_encode(pixels))
    frame = stream.find(b"\xff\xc0")
    stream[frame:frame] = b"\x00\x00\xff\x00\xff\xff"  # stray bytes, a stuffed 0xFF, fill bytes
    assert imagecodecs.jpeg8_decode(bytes(stream)).shape == (HEIGHT, WIDTH, 3)
    assert declared_size(bytes(stream), JPEG)[:2] == (WIDTH, HEIGHT)


def test_a_jp2_codestream_past_other_boxes_is_read(pixels):
    stream = bytearray(imagecodecs.jpeg2k_encode(pixels, codecformat="jp2"))
    codestream = stream.find(b"jp2c") - 4
    note = b"\xff\x4f\xff\x51" + bytes(20) + b"a" * 9000  # a decoy size marker, in a box that is none
    stream[codestream:codestream] = struct.pack(">I", 8 + len(note)) + b"xml " + note
    assert imagecodecs.jpeg2k_decode(bytes(stream)).shape == (HEIGHT, WIDTH, 3)
    assert declared_size(bytes(stream), JPEG2000)[:2] == (WIDTH, HEIGHT)


@pytest.mark.parametrize("compression", [JPEG, JPEG2000, PNG, WEBP])
@pytest.mark.parametrize("data", [b"", b"\x00" * 32, b"II*\x00" + bytes(16), b"\x89PNX\r\n\x1a\n" + bytes(16),
                                  b"RIFF\x00\x00\x00\x00WEBPANIM" + bytes(16)])
def test_a_stream_whose_size_cannot_be_read_is_a_problem(data, compression):
    assert declared_size(data, compression) is None
    assert "header cannot be read" in stream_problem(data, compression, 256, 256)


def test_codecs_decoded_into_the_tile_need_no_check_and_unread_image_codecs_are_named():
    for compression in (tifffile.COMPRESSION.NONE, tifffile.COMPRESSION.LZW, tifffile.COMPRESSION.ADOBE_DEFLATE,
                        tifffile.COMPRESSION.ZSTD):
        assert not declares_size(compression) and unchecked_codec(compression) is None
        assert stream_problem(bytes(64), compression, 256, 256) is None
    assert unchecked_codec(tifffile.COMPRESSION.JPEGXL) == "JPEGXL"
    assert unchecked_codec(tifffile.COMPRESSION.OJPEG) == "OJPEG"
    assert unchecked_codec(PNG) is None


def jp2_with_palette(columns: int) -> bytes:
    """A JP2 file of one 8-bit component whose header box holds a palette of ``columns`` columns
    and the mapping of the component through it: OpenJPEG decodes it to ``columns`` components."""
    plain = bytes(imagecodecs.jpeg2k_encode(np.zeros((HEIGHT, WIDTH), np.uint8), codecformat="jp2"))

    def box(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I4s", 8 + len(body), kind) + body

    palette = box(b"pclr", struct.pack(">HB", 2, columns) + bytes([7] * columns) + bytes(range(2 * columns)))
    mapping = box(b"cmap", b"".join(struct.pack(">HBB", 0, 1, column) for column in range(columns)))
    out, at = b"", 0
    while at < len(plain):
        length, kind = struct.unpack_from(">I4s", plain, at)
        length = length or len(plain) - at
        body = plain[at + 8:at + length]
        out += box(kind, body + palette + mapping if kind == b"jp2h" else body)
        at += length
    return out


@pytest.mark.parametrize("columns", [3, 40])
def test_a_jp2_palette_adds_its_columns_to_each_pixel(columns):
    """Nineteenth attack: a 1.8 KB JP2 tile of one 8-bit component (1 byte a pixel by its
    codestream) with a palette of 255 columns decoded to 255 bytes a pixel (1,024 px: 1.34 GB)."""
    stream = jp2_with_palette(columns)
    assert imagecodecs.jpeg2k_decode(stream).shape == (HEIGHT, WIDTH, columns)
    assert declared_size(stream, JPEG2000) == (WIDTH, HEIGHT, 1 + columns)
    assert (stream_problem(stream, JPEG2000, WIDTH, HEIGHT) is None) == (columns == 3)
