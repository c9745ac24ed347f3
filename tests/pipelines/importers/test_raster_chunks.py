"""Label masks and pixelmaps are judged by their headers before any pixel is decoded: a stored
tile or strip that decodes to more than the server's limit is refused (sixteenth attack: a 4.35 MB
mask of the CMU slide stored as one 32768 px tile took 4.47 GB of the worker)."""

from __future__ import annotations

import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import tifffile

from slidelabel.errors import ParameterError
from slidelabel.pipelines.importers.segments import ImportOptions
from slidelabel.pipelines.slide_files import SlideLimits
from slidelabel.services.segment_import import import_segments

#: The CMU slide's level-0 size (rows, columns).
CMU_SHAPE = (2967, 2220)


def one_tile_tiff(path: Path, *, side: int, shape: tuple[int, int], dtype: type) -> Path:
    """A TIFF of ``shape`` and ``dtype`` stored as ONE ``side`` x ``side`` px zlib tile of zeros,
    written without ever holding the tile decoded."""
    row = bytes(side * np.dtype(dtype).itemsize)
    packer = zlib.compressobj(1)
    payload = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    tifffile.imwrite(path, iter([payload]), shape=shape, dtype=dtype, tile=(side, side), compression="zlib")
    return path


def test_a_mask_of_one_huge_tile_is_refused_before_a_pixel_is_decoded(cmu_slide, tmp_path):
    path = one_tile_tiff(tmp_path / "mask.tif", side=16384, shape=CMU_SHAPE, dtype=np.uint8)
    assert path.stat().st_size < 2 << 20  # 256 MB decoded
    tracemalloc.start()
    try:
        with pytest.raises(ParameterError) as refused:
            import_segments(cmu_slide, path, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MB allocated"  # 256 MB and more when the tile is decoded
    assert str(refused.value) == (
        f"{path} stores its 2220 x 2967 px image in tiles of 256 MB decoded each, more than the 128 MB this server "
        "decodes at once (SLIDELABEL_MAX_DECODED_MB): write it tiled, e.g. in 512 x 512 px tiles "
        "(tifffile.imwrite(path, mask, tile=(512, 512), compression='zlib'))")
    assert not (tmp_path / "out").exists()


def test_the_limit_given_is_the_one_applied_to_strips_and_tiles(cmu_slide, tmp_path):
    mask = np.zeros(CMU_SHAPE, np.uint32)
    mask[:1000, :1000], mask[1000:, 1000:] = 1, 2
    stripped = tmp_path / "stripped.tif"
    tifffile.imwrite(stripped, mask, rowsperstrip=CMU_SHAPE[0], compression="zlib")  # one 25 MB strip
    limits = SlideLimits(max_chunk_bytes=8 << 20)
    with pytest.raises(ParameterError, match=r"in strips of 25 MB decoded each, more than the 8 MB"):
        import_segments(cmu_slide, stripped, tmp_path / "out", options=ImportOptions(limits=limits))
    tiled = tmp_path / "tiled.tif"
    tifffile.imwrite(tiled, mask, tile=(512, 512), compression="zlib")  # as the message says
    assert import_segments(cmu_slide, tiled, tmp_path / "out", options=ImportOptions(limits=limits)).segments == 2


def test_a_pixelmap_is_held_to_the_same_limit(cmu_slide, tmp_path):
    pixelmap = tmp_path / "pixelmap.tif"
    tifffile.imwrite(pixelmap, np.zeros(CMU_SHAPE + (3,), np.uint8), rowsperstrip=CMU_SHAPE[0], compression="zlib")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("0,0,10,10\n")
    options = ImportOptions(bboxes=boxes, limits=SlideLimits(max_chunk_bytes=8 << 20))
    with pytest.raises(ParameterError, match=r"pixelmap.tif stores its 2220 x 2967 px image in strips of 19 MB"):
        import_segments(cmu_slide, pixelmap, tmp_path / "out", format="pixelmap", options=options)


@pytest.mark.parametrize("codec", ["jpeg", "png"])
def test_a_mask_stored_with_an_image_codec_is_refused_before_a_tile_is_decoded(cmu_slide, tmp_path, codec):
    """Eighteenth attack: 256 px tiles whose JPEG (or PNG) streams declared 16000 px passed the
    chunk check (their tags are honest) and each decoded whole: the worker took 5.1 GB. No label
    image is stored with an image codec (JPEG's values are not labels)."""
    import imagecodecs

    tile = np.zeros((256, 256), np.uint8)
    stream = bytearray(imagecodecs.jpeg8_encode(tile) if codec == "jpeg" else imagecodecs.png_encode(tile))
    if codec == "jpeg":
        frame = stream.find(b"\xff\xc0")
        stream[frame + 5:frame + 9] = (12000).to_bytes(2, "big") * 2
    else:
        stream[16:24] = (12000).to_bytes(4, "big") * 2  # IHDR's width and height (its CRC left wrong)
    tiles = -(-CMU_SHAPE[0] // 256) * -(-CMU_SHAPE[1] // 256)
    path = tmp_path / "mask.tif"
    tifffile.imwrite(path, (bytes(stream) for _ in range(tiles)), shape=CMU_SHAPE, dtype=np.uint8, tile=(256, 256),
                     compression=codec)
    tracemalloc.start()
    try:
        with pytest.raises(ParameterError, match=f"compressed with {codec.upper()}: a label image"):
            import_segments(cmu_slide, path, tmp_path / "out")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MB allocated"
