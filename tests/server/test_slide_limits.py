"""A slide file is judged by what it declares before any reader decodes a pixel of it: a
300 KB TIFF claiming 100,000 x 100,000 px without a pyramid, or one strip that would decode to
gigabytes, is refused with a message saying what to do."""

from __future__ import annotations

import shutil
import struct
import zlib
from pathlib import Path

import pytest

from slidelabel.errors import SlideUnreadableError
from slidelabel.pipelines.slide_files import SlideLimits, check_slide_limits
from slidelabel.services import slides as slide_service


def strip_bomb(path: Path, *, width: int, height: int, rows_per_strip: int) -> Path:
    """A deflated RGB TIFF of zeros whose strips all point at one compressed strip: a few KB on
    disk for any declared size. Writes ``path`` and returns it."""
    packer, chunk, left, parts = zlib.compressobj(9), bytes(1 << 22), rows_per_strip * width * 3, []
    while left > 0:
        parts.append(packer.compress(chunk[:min(left, len(chunk))]))
        left -= len(chunk)
    blob = b"".join(parts) + packer.flush()
    n = -(-height // rows_per_strip)
    blob_at, bits_at = 8, 8 + len(blob)
    offsets_at = bits_at + 6
    counts_at = offsets_at + 4 * n
    ifd_at = counts_at + 4 * n
    tags = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 3, bits_at), (259, 3, 1, 8), (262, 3, 1, 2),
            (273, 4, n, offsets_at if n > 1 else blob_at), (277, 3, 1, 3), (278, 4, 1, rows_per_strip),
            (279, 4, n, counts_at if n > 1 else len(blob)), (284, 3, 1, 1)]
    out = bytearray(b"II*\x00" + struct.pack("<I", ifd_at)) + blob + struct.pack("<3H", 8, 8, 8)
    out += struct.pack(f"<{n}I", *[blob_at] * n) + struct.pack(f"<{n}I", *[len(blob)] * n)
    out += struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        inline = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + inline
    path.write_bytes(bytes(out + struct.pack("<I", 0)))
    return path


@pytest.fixture
def no_reader(monkeypatch):
    """Fail the test if a slide reader opens any file: the refusal must come first."""
    def refuse(path, *args, **kwargs):
        raise AssertionError(f"a reader opened {path}")

    monkeypatch.setattr(slide_service, "open_slide", refuse)


def test_a_huge_tiff_without_a_pyramid_is_refused_unopened(tmp_path, no_reader):
    bomb = strip_bomb(tmp_path / "bomb.tif", width=100_000, height=100_000, rows_per_strip=64)
    assert bomb.stat().st_size < 300_000
    with pytest.raises(SlideUnreadableError, match="pyramid"):
        check_slide_limits(bomb, SlideLimits())


def test_one_strip_that_would_decode_to_gigabytes_is_refused(tmp_path):
    bomb = strip_bomb(tmp_path / "strip.tif", width=20_000, height=20_000, rows_per_strip=20_000)
    with pytest.raises(SlideUnreadableError, match="MB"):
        check_slide_limits(bomb, SlideLimits())


def test_the_sample_slides_pass(cmu_slide, tcga_slide):
    for slide in (cmu_slide, tcga_slide):
        check_slide_limits(slide, SlideLimits())


def test_the_upload_of_a_bomb_is_a_422_before_any_reader(client, admin_headers, project, tmp_path, no_reader):
    bomb = strip_bomb(tmp_path / "bomb.tif", width=100_000, height=100_000, rows_per_strip=64)
    response = client.post(f"/api/v1/projects/{project['id']}/slides/upload", headers=admin_headers,
                           files={"file": ("bomb.tif", bomb.read_bytes(), "image/tiff")})
    assert response.status_code == 422, response.text
    assert "100000 x 100000" in response.json()["detail"]
    assert client.get(f"/api/v1/projects/{project['id']}/slides", headers=admin_headers).json() == []


def test_a_bomb_in_a_slide_folder_is_skipped_and_the_limit_is_a_setting(app, client, admin_headers, project, settings,
                                                                        cmu_slide):
    folder = settings.slide_folders[0]
    strip_bomb(folder / "bomb.tif", width=20_000, height=20_000, rows_per_strip=20_000)
    shutil.copy(cmu_slide, folder / "cmu.svs")
    app.state.settings = settings.model_copy(update={"max_slide_megapixels": 5})  # CMU has 6.6
    response = client.post(f"/api/v1/projects/{project['id']}/slides", headers=admin_headers, json={"path": str(folder)})
    assert response.status_code == 201, response.text
    skipped = {Path(s["path"]).name: s["reason"] for s in response.json()["skipped"]}
    assert set(skipped) == {"bomb.tif", "cmu.svs"}
    assert "SLIDELABEL_MAX_" in skipped["bomb.tif"]
    assert "SLIDELABEL_MAX_SLIDE_MEGAPIXELS" in skipped["cmu.svs"]


#: The TIFF compression of each codec a tile bomb is made with.
BOMB_COMPRESSIONS = {"jpeg": "jpeg", "jpeg2000": 33003, "png": 34933, "webp": 50001}


def tile_bomb(path: Path, *, declared: int, codec: str = "jpeg", hide: bool = False) -> Path:
    """A 1024 px tiled TIFF of 256 px tiles whose JPEG (JPEG 2000, PNG, WebP) streams each declare
    ``declared`` x ``declared`` px in their headers: 64 KB on disk, any size to a decoder. With
    ``hide``, the size is where a strict reading of the header misses it but a decoder finds it:
    after two stray bytes libjpeg skips, or in a JP2 file past a 5 KB box before its codestream.
    PNG and WebP tiles are real images of that size, of one colour."""
    import imagecodecs
    import numpy as np
    import tifffile

    tile = np.full((256, 256, 3), 200, np.uint8)
    if codec == "jpeg":
        stream = bytearray(imagecodecs.jpeg8_encode(tile, level=90))
        frame = stream.find(b"\xff\xc0")
        stream[frame + 5:frame + 9] = struct.pack(">HH", declared, declared)
        if hide:
            stream[frame:frame] = b"\x00\x00"
    elif codec == "jpeg2000":
        stream = bytearray(imagecodecs.jpeg2k_encode(tile, level=90, codecformat="jp2" if hide else "j2k"))
        size = stream.find(b"\xff\x51")
        stream[size + 6:size + 14] = stream[size + 22:size + 30] = struct.pack(">II", declared, declared)
        if hide:
            codestream, note = stream.find(b"jp2c") - 4, b"<x>" + b"a" * 5000 + b"</x>"
            stream[codestream:codestream] = struct.pack(">I", 8 + len(note)) + b"xml " + note
    else:
        image = np.full((declared, declared, 3), 200, np.uint8)
        stream = imagecodecs.png_encode(image) if codec == "png" else imagecodecs.webp_encode(image, lossless=True)
    tifffile.imwrite(path, (bytes(stream) for _ in range(16)), shape=(1024, 1024, 3), dtype=np.uint8, tile=(256, 256),
                     compression=BOMB_COMPRESSIONS[codec], photometric="rgb", metadata=None)
    return path


@pytest.mark.parametrize("codec", BOMB_COMPRESSIONS)
def test_a_tile_bomb_is_refused_unopened(tmp_path, no_reader, codec):
    """Eighteenth attack: 256 px PNG tiles whose streams said 6000 px passed every check, and
    large_image's tifffile reader (which checks no stream) decoded them: 28 s and 557 MB to add the
    slide (WebP: 14 s, 732 MB). Every tile's header is read when the slide is added."""
    bomb = tile_bomb(tmp_path / "bomb.tif", declared=3000, codec=codec)
    with pytest.raises(SlideUnreadableError, match="tile 0 of its 1024 x 1024 px image: its image stream declares "
                                                   "3000 x 3000 px, more than its 256 x 256"):
        check_slide_limits(bomb, SlideLimits())


def test_a_jpeg2000_tile_of_many_components_is_refused_unopened(tmp_path, no_reader):
    """A JPEG 2000 stream may declare up to 16,384 components in a tile of the right size: 32 KB
    of 256 px and 2,000 components decoded to 131 MB, 16,384 would take 1 GB a tile."""
    import imagecodecs
    import numpy as np
    import tifffile

    from slidelabel.pipelines.tiff_tiles import TiffTiles, TileDecodeError

    stream = bytes(imagecodecs.jpeg2k_encode(np.zeros((256, 256, 40), np.uint8), codecformat="j2k"))
    path = tmp_path / "components.tif"
    tifffile.imwrite(path, (stream for _ in range(16)), shape=(1024, 1024, 3), dtype=np.uint8, tile=(256, 256),
                     compression=33003, photometric="rgb", metadata=None)
    with pytest.raises(SlideUnreadableError, match="its image stream declares 40 bytes a pixel"):
        check_slide_limits(path, SlideLimits())
    direct = TiffTiles.open(path, 1024, 1024, None)
    with pytest.raises(TileDecodeError, match="declares 40 bytes a pixel"):
        direct.window(0, 0, 0, 256, 256)
    direct.close()


def test_one_bomb_tile_among_honest_ones_is_found(tmp_path, no_reader):
    import imagecodecs
    import numpy as np
    import tifffile

    honest, bomb = (bytes(imagecodecs.png_encode(np.full((side, side, 3), 90, np.uint8))) for side in (256, 2000))
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, (bomb if index == 13 else honest for index in range(16)), shape=(1024, 1024, 3),
                     dtype=np.uint8, tile=(256, 256), compression=34933, photometric="rgb", metadata=None)
    with pytest.raises(SlideUnreadableError, match="tile 13 of"):
        check_slide_limits(path, SlideLimits())


@pytest.mark.parametrize("codec", BOMB_COMPRESSIONS)
def test_honest_tiles_of_every_checked_codec_pass_and_read(tmp_path, cmu_slide, codec):
    """Real pixels stored with each codec whose streams are checked: the check refuses none of
    them, and the slide opens and reads."""
    import numpy as np
    import tifffile

    from slidelabel.pipelines.slides import open_slide

    with open_slide(cmu_slide) as slide:
        rgb = slide.read_region(0, 0, 1024, 1024)
    path = tmp_path / f"honest-{codec}.tif"
    with tifffile.TiffWriter(path) as tiff:
        for level in range(3):
            tiff.write(np.ascontiguousarray(rgb[::2**level, ::2**level]), tile=(256, 256), photometric="rgb",
                       compression=BOMB_COMPRESSIONS[codec], subfiletype=int(level > 0), metadata=None)
    check_slide_limits(path, SlideLimits())
    with open_slide(path) as slide:
        assert slide.read_region(0, 0, 512, 512).std() > 10


def test_a_codec_whose_streams_cannot_be_checked_is_refused(tmp_path, no_reader):
    import imagecodecs
    import numpy as np
    import tifffile

    if not imagecodecs.JPEGXL.available:
        pytest.skip("imagecodecs was built without JPEG XL")
    path = tmp_path / "jxl.tif"
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), compression="jpegxl",
                     photometric="rgb", metadata=None)
    with pytest.raises(SlideUnreadableError, match="JPEGXL compression, whose streams this server cannot check"):
        check_slide_limits(path, SlideLimits())


@pytest.mark.parametrize("hide", [False, True], ids=["plain", "hidden"])
@pytest.mark.parametrize("codec", ["jpeg", "jpeg2000"])
def test_tiles_whose_codestreams_declare_more_than_their_tile_are_never_decoded(tmp_path, codec, hide):
    """Sixteenth attack: a 16 MB TIFF of 256 px tiles whose JPEG headers declared 20000 x 20000 px
    passed every check (the tile tags are honest) and each tile request decoded 1.2 GB (13.8 GB
    with four at once). Each decoder now refuses such a tile before decoding it: the direct TIFF
    reader by the stream's header, large_image's (through PIL) past one stored chunk's pixels.
    Seventeenth attack: two stray bytes before the JPEG frame header, or a JP2 box before the
    codestream, hid that header from the direct reader (+1.1 GB, +930 MB); it reads them as the
    decoders do."""
    from slidelabel.pipelines.pinned_files import pin_file
    from slidelabel.pipelines.slides import open_slide
    from slidelabel.pipelines.tiff_tiles import TiffTiles, TileDecodeError
    from slidelabel.services import tiles

    bomb = tile_bomb(tmp_path / "bomb.tif", declared=12_000, codec=codec, hide=hide)
    direct = TiffTiles.open(bomb, 1024, 1024, None)
    with pytest.raises(TileDecodeError, match="its image stream declares 12000 x 12000 px"):
        direct.window(0, 0, 0, 256, 256)
    direct.close()
    with pytest.raises(SlideUnreadableError, match="12000 x 12000|exceeds limit|broken data stream"), \
            open_slide(bomb) as slide:
        slide.read_region(0, 0, 256, 256)
    source = tiles.slide_source(pin_file(bomb, links=True))
    with pytest.raises(SlideUnreadableError,
                       match="exceeds limit|broken data stream"):  # PIL reads a JP2's size from its own box
        tiles.slide_tile(source, tiles.TileGrid.of(source).levels - 1, 0, 0)


def test_the_upload_of_a_tile_bomb_is_refused(client, admin_headers, project, tmp_path, no_reader):
    bomb = tile_bomb(tmp_path / "bomb.tif", declared=12_000)
    answer = client.post(f"/api/v1/projects/{project['id']}/slides/upload", headers=admin_headers,
                         files={"file": ("bomb.tif", bomb.read_bytes())})
    assert answer.status_code == 422 and "declares 12000 x 12000 px" in answer.json()["detail"], answer.text


@pytest.mark.parametrize("stream", [
    b"\xff\xd8\xff\xda\x00\x08\x01\x01\x00\x00\x3f\x00" + bytes(64),  # a scan before any frame header
    b"\xff\xd8\x00\x00\x00",  # no marker after the start
    b"\xff\x4f\xff\x51\x00\x29",  # a JPEG 2000 codestream cut inside its size marker
    b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\x00\x00\x00\x00xml " + bytes(64),  # a JP2 file without a codestream
], ids=["jpeg-sos-first", "jpeg-no-marker", "j2k-cut", "jp2-no-codestream"])
def test_a_tile_whose_codestream_size_cannot_be_read_is_never_decoded(tmp_path, stream):
    """A JPEG or JPEG 2000 tile whose declared size cannot be read is refused as damaged: a decoder
    reading its header another way might find any size there (seventeenth attack)."""
    import numpy as np
    import tifffile

    from slidelabel.pipelines.tiff_tiles import TiffTiles, TileDecodeError

    bomb = tmp_path / "damaged.tif"
    tifffile.imwrite(bomb, (stream for _ in range(16)), shape=(1024, 1024, 3), dtype=np.uint8, tile=(256, 256),
                     compression="jpeg" if stream[:2] == b"\xff\xd8" else 33003, photometric="rgb", metadata=None)
    direct = TiffTiles.open(bomb, 1024, 1024, None)
    with pytest.raises(TileDecodeError, match="header cannot be read"):
        direct.window(0, 0, 0, 256, 256)
    direct.close()


def animations(folder: Path) -> dict[str, Path]:
    """A GIF, an animated PNG and an animated WebP, each of 3 frames of 64 px."""
    from PIL import Image

    frames = [Image.new("RGB", (64, 64), (value, 0, 0)) for value in (0, 120, 240)]
    paths = {kind: folder / f"frames.{kind}" for kind in ("gif", "png", "webp")}
    for path in paths.values():
        frames[0].save(path, save_all=True, append_images=frames[1:])
    return paths


@pytest.mark.parametrize("kind", ["gif", "png", "webp"])
def test_an_image_of_many_frames_is_refused_unopened(tmp_path, no_reader, kind):
    """Seventeenth attack: a 1.7 MB GIF of 120 frames of 4096 x 4096 px took 54 s to add and 39 s
    per thumbnail (large_image's PIL reader decodes every frame on each open; PIL's pixel limit
    checks the first). GIFs, animated PNGs and animated WebPs are refused by their headers."""
    with pytest.raises(SlideUnreadableError, match="pyramidal TIFF"):
        check_slide_limits(animations(tmp_path)[kind], SlideLimits())


@pytest.mark.parametrize("kind", ["png", "webp"])
def test_a_still_png_or_webp_passes(tmp_path, kind):
    from PIL import Image

    still = tmp_path / f"still.{kind}"
    Image.new("RGB", (64, 64), (200, 100, 50)).save(still)
    check_slide_limits(still, SlideLimits())


def test_the_upload_of_a_gif_is_a_422_before_any_reader(client, admin_headers, project, tmp_path, no_reader):
    gif = animations(tmp_path)["gif"]
    response = client.post(f"/api/v1/projects/{project['id']}/slides/upload", headers=admin_headers,
                           files={"file": ("frames.gif", gif.read_bytes(), "image/gif")})
    assert response.status_code == 422 and "pyramidal TIFF" in response.json()["detail"], response.text


#: The tags that make tifffile (and OpenSlide's format detection) take any TIFF for an NDPI.
NDPI_TAGS = [(65420, 4, 1, 1, True), (271, "s", 0, "Hamamatsu", True)]


def ndpi_tagged(path: Path, data, *, side: int, tile: int | None, compression) -> Path:
    import numpy as np
    import tifffile

    tifffile.imwrite(path, data, shape=(side, side, 3), dtype=np.uint8, photometric="rgb", compression=compression,
                     **({"tile": (tile, tile)} if tile else {"rowsperstrip": side}), extratags=NDPI_TAGS,
                     metadata=None)
    return path


def test_ndpis_tags_exempt_no_tile_from_the_limits(tmp_path, no_reader):
    """Nineteenth attack: NDPI's two tags on any TIFF skipped every check of its tiles: one deflate
    tile of 20,000 px (1.1 GB decoded, a 1.2 MB file) took the API to 7.2 GB, PNG tiles saying
    6,000 px to 3.8 GB. Only an NDPI's JPEG levels that readers decode in pieces are exempt."""
    import imagecodecs
    import numpy as np

    deflated = zlib.compress(bytes(8000 * 8000 * 3), 9)
    big_tile = ndpi_tagged(tmp_path / "tile.tif", iter([deflated]), side=8000, tile=8000, compression="zlib")
    with pytest.raises(SlideUnreadableError, match="in tiles of 183 MB decoded each"):
        check_slide_limits(big_tile, SlideLimits())
    png = bytes(imagecodecs.png_encode(np.full((3000, 3000, 3), 9, np.uint8)))
    png_tiles = ndpi_tagged(tmp_path / "png.tif", (png for _ in range(16)), side=1024, tile=256, compression=34933)
    with pytest.raises(SlideUnreadableError, match="declares 3000 x 3000 px"):
        check_slide_limits(png_tiles, SlideLimits())


@pytest.mark.parametrize("restarts", [True, False])
def test_an_ndpi_jpeg_strip_is_exempt_only_when_it_can_be_read_in_pieces(tmp_path, restarts):
    """A real NDPI stores a level as one JPEG strip with restart markers, which OpenSlide decodes
    piece by piece: it may be larger than a chunk decoded at once; without them it may not."""
    import io

    import numpy as np
    from PIL import Image

    side = 7200  # 155 MB decoded, more than the 128 MB default
    out = io.BytesIO()
    Image.fromarray(np.full((side, side, 3), 180, np.uint8)).save(out, "JPEG", quality=50,
                                                                   **({"restart_marker_rows": 1} if restarts else {}))
    strip = ndpi_tagged(tmp_path / "strip.tif", iter([out.getvalue()]), side=side, tile=None, compression="jpeg")
    if restarts:
        check_slide_limits(strip, SlideLimits())
    else:
        with pytest.raises(SlideUnreadableError, match="in strips of 148 MB decoded each"):
            check_slide_limits(strip, SlideLimits())


def fli(path: Path, *, frames: int, side: int) -> Path:
    """An FLI animation of ``frames`` empty frames of ``side`` px: 16 bytes a frame on disk."""
    header = struct.pack("<IHHHHHHI", 0, 0xAF11, frames, side, side, 8, 0, 5).ljust(128, b"\0")
    body = struct.pack("<IHH8x", 16, 0xF1FA, 0) * frames
    path.write_bytes(struct.pack("<I", 128 + len(body)) + header[4:] + body)
    return path


def test_other_images_of_many_frames_are_refused_unopened(tmp_path, no_reader):
    """Nineteenth attack: a 780 KB FLI of 30,000 frames of 4,096 px named .jpg took 20 s of CPU to
    add and 21 s each thumbnail (PIL decodes each frame large_image's reader steps past). Any image
    PIL reads several frames in from its header is refused; a one-frame image passes."""
    from PIL import Image

    animation = fli(tmp_path / "frames.jpg", frames=1000, side=1024)
    with Image.open(animation) as image:
        assert (image.format, image.n_frames) == ("FLI", 1000)
    pictures = [Image.new("RGB", (64, 64), (value, 0, 0)) for value in (0, 200)]
    pictures[0].save(tmp_path / "two.mpo", "MPO", save_all=True, append_images=pictures[1:])
    pictures[0].save(tmp_path / "one.jpg", "JPEG")
    for many in (animation, tmp_path / "two.mpo"):
        with pytest.raises(SlideUnreadableError, match="several frames"):
            check_slide_limits(many, SlideLimits())
    check_slide_limits(tmp_path / "one.jpg", SlideLimits())
