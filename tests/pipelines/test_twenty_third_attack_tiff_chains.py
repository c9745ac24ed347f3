"""A TIFF's image directories (IFDs) are walked once, and only so many of them, before tifffile builds
a page for each (twenty-third attack: a 394-byte TIFF whose one image lists itself as its sub-image
looped slide admission forever, 2.2 GB and growing; a chain of 100,000 16 x 16 px images, 11 MB,
took 22 s of checks and then minutes in the slide reader)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from slidelabel.errors import SlideUnreadableError
from slidelabel.pipelines.slide_files import SlideLimits, check_slide_file, check_slide_limits
from slidelabel.pipelines.tiff_structure import MAX_IMAGE_DIRECTORIES

CHECKS = {"file": check_slide_file, "limits": lambda path: check_slide_limits(path, SlideLimits())}
#: Pages tifffile may build before the checks refuse: the first, which opening the file reads.
PAGES_BUILT = 1
_SIDE = 16
_TAG_COUNT = 10
_IFD_BYTES = 2 + _TAG_COUNT * 12 + 4
_DATA_AT = 8


def _ifd(at: int, next_at: int, sub_ifd: int) -> bytes:
    """A classic little-endian IFD of one 16 x 16 px 8-bit strip at byte 8, with a SubIFDs tag
    pointing at ``sub_ifd`` (0: none) and the next IFD at ``next_at`` (0: the last)."""
    tags = [(256, 3, _SIDE), (257, 3, _SIDE), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, _DATA_AT),
            (277, 3, 1), (278, 3, _SIDE), (279, 4, _SIDE * _SIDE), (330, 4, sub_ifd)]
    entries = b"".join(struct.pack("<HHI", tag, kind, 1) + struct.pack("<I", value) for tag, kind, value in tags)
    return struct.pack("<H", _TAG_COUNT) + entries + struct.pack("<I", next_at)


def _tiff(path: Path, links: list[tuple[int, int]]) -> Path:
    """A TIFF of ``len(links)`` IFDs, IFD i linking to IFDs ``links[i]`` = (next, sub-IFD) by index
    (-1: none), all after one shared strip."""
    first = _DATA_AT + _SIDE * _SIDE
    at = [first + index * _IFD_BYTES for index in range(len(links))]
    body = b"".join(_ifd(at[index], at[nxt] if nxt >= 0 else 0, at[sub] if sub >= 0 else 0)
                    for index, (nxt, sub) in enumerate(links))
    path.write_bytes(b"II*\0" + struct.pack("<I", first) + bytes(_SIDE * _SIDE) + body)
    return path


LOOPS = {
    "own sub-image": [(-1, 0)],  # the attack's file
    "sub-image of a sub-image": [(-1, 1), (-1, 0)],
    "next image back to the first": [(1, -1), (2, -1), (0, -1)],
    "sub-image that is the next image": [(1, 1), (-1, -1)],
}


@pytest.mark.parametrize("links", LOOPS.values(), ids=LOOPS.keys())
@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_image_directories_that_loop_back_are_refused(tmp_path, pages_built, links, check):
    looped = _tiff(tmp_path / "loop.tif", links)
    with pytest.raises(SlideUnreadableError, match="its image directories loop back"):
        check(looped)
    assert pages_built[0] <= PAGES_BUILT


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_a_chain_of_more_images_than_a_slide_has_is_refused_before_its_pages_are_read(tmp_path, pages_built, check):
    count = MAX_IMAGE_DIRECTORIES + 1
    chain = _tiff(tmp_path / "chain.tif", [(index + 1 if index < count - 1 else -1, -1) for index in range(count)])
    with pytest.raises(SlideUnreadableError, match=f"more than {MAX_IMAGE_DIRECTORIES:,} images") as refused:
        check(chain)
    assert "convert it" in str(refused.value)
    assert pages_built[0] <= PAGES_BUILT


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_sub_images_count_towards_the_bound(tmp_path, pages_built, check):
    """One image with one sub-image, itself with one, ... past the bound."""
    count = MAX_IMAGE_DIRECTORIES + 1
    nested = _tiff(tmp_path / "nested.tif", [(-1, index + 1 if index < count - 1 else -1) for index in range(count)])
    with pytest.raises(SlideUnreadableError, match=f"more than {MAX_IMAGE_DIRECTORIES:,} images"):
        check(nested)
    assert pages_built[0] <= PAGES_BUILT


@pytest.mark.parametrize(("bigtiff", "byteorder"), [(False, "<"), (True, "<"), (False, ">"), (True, ">")])
@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_a_pyramid_in_sub_images_and_a_chain_of_the_bound_pass(tmp_path, check, bigtiff, byteorder):
    """tifffile also chains an image's sub-images by their next IFDs, which are no images of the main chain."""
    pyramid = tmp_path / "pyramid.ome.tif"
    image = np.zeros((512, 512, 3), np.uint8)
    with tifffile.TiffWriter(pyramid, ome=True, bigtiff=bigtiff, byteorder=byteorder) as writer:
        writer.write(image, subifds=2, tile=(128, 128))
        writer.write(image[::2, ::2], subfiletype=1, tile=(128, 128))
        writer.write(image[::4, ::4], subfiletype=1, tile=(128, 128))
    check(pyramid)
    chain = _tiff(tmp_path / "chain.tif", [(index + 1, -1) for index in range(MAX_IMAGE_DIRECTORIES - 1)] + [(-1, -1)])
    check(chain)


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_real_slides_pass(cmu_slide, check):
    check(cmu_slide)


@pytest.mark.parametrize("links", [[(-1, 0)], [(index + 1, -1) for index in range(MAX_IMAGE_DIRECTORIES)] + [(-1, -1)]],
                         ids=["loop", "chain"])
def test_a_pinned_file_is_refused_before_openslide_walks_its_images(tmp_path, monkeypatch, links):
    """Pinning a slide asks OpenSlide whether it is an index format, which walks every image
    directory (a million: 11 s and 1.3 GB): the structure is checked first."""
    from slidelabel.pipelines import pinned_files

    def walked(reader_path):
        raise AssertionError("OpenSlide was asked before the structure was checked")

    monkeypatch.setattr(pinned_files, "index_by_content", walked)
    with pytest.raises(SlideUnreadableError, match="loop back|more than"):
        pinned_files.pin_file(_tiff(tmp_path / "bad.tif", links), links=False, siblings=False)
