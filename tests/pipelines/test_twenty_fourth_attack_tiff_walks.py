"""A TIFF's image directories (IFDs) are walked as large_image's tiff reader (tifftools) walks them,
before tifffile builds a page for each: every IFD-pointer tag (SubIFDs, EXIF, GPS, Interoperability,
any tag of type IFD) in every IFD, each a chain of next IFDs, each IFD counted as often as it is
read, and the tag values read with each (twenty-fourth attack: a sub-image or EXIF IFD whose next
IFD is itself grew an upload's server by 25 MB/s until it ran out of memory)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from slidelabel.errors import SlideUnreadableError
from slidelabel.pipelines import tiff_structure
from slidelabel.pipelines.slide_files import SlideLimits, check_slide_file, check_slide_limits
from slidelabel.pipelines.tiff_structure import MAX_IMAGE_DIRECTORIES

CHECKS = {"file": check_slide_file, "limits": lambda path: check_slide_limits(path, SlideLimits())}
_SIDE = 16
_DATA_AT = 8
#: The tags of one 16 x 16 px 8-bit image in one strip at byte 8: (tag, type, value).
_IMAGE_TAGS = [(256, 3, _SIDE), (257, 3, _SIDE), (258, 3, 8), (259, 3, 1), (262, 3, 1), (273, 4, _DATA_AT),
               (277, 3, 1), (278, 3, _SIDE), (279, 4, _SIDE * _SIDE)]

#: An IFD: its extra tags (tag, type, IFD indexes it points at) and the index of its next IFD (-1: none).
Ifd = tuple[list[tuple[int, int, list[int]]], int]


def _tiff(path: Path, ifds: list[Ifd], raw: tuple[int, int, bytes] | None = None) -> Path:
    """A classic little-endian TIFF of ``ifds``, each an image of one shared strip; ``raw`` (tag,
    type, data) adds a tag of that data, stored after the IFDs, to the first."""
    sizes = [2 + (len(_IMAGE_TAGS) + len(extra) + (raw is not None and index == 0)) * 12 + 4
             for index, (extra, _next) in enumerate(ifds)]
    at = [_DATA_AT + _SIDE * _SIDE + sum(sizes[:index]) for index in range(len(ifds))]
    tail = at[-1] + sizes[-1]  # where values too long for their tag go
    body, tail_data = b"", b""
    for index, (extra, next_index) in enumerate(ifds):
        entries = [(tag, kind, 1, value) for tag, kind, value in _IMAGE_TAGS]
        for tag, kind, targets in extra:
            values = struct.pack(f"<{len(targets)}I", *(at[target] for target in targets))
            if len(values) > 4:
                entries.append((tag, kind, len(targets), tail + len(tail_data)))
                tail_data += values
            else:
                entries.append((tag, kind, 1, at[targets[0]]))
        if raw is not None and index == 0:
            entries.append((raw[0], raw[1], len(raw[2]), tail + len(tail_data)))
            tail_data += raw[2]
        body += struct.pack("<H", len(entries)) + b"".join(
            struct.pack("<HHII", *entry) for entry in sorted(entries))
        body += struct.pack("<I", at[next_index] if next_index >= 0 else 0)
    path.write_bytes(b"II*\0" + struct.pack("<I", at[0]) + bytes(_SIDE * _SIDE) + body + tail_data)
    return path


LOOPS: dict[str, list[Ifd]] = {
    "sub-image whose next is itself": [([(330, 4, [1])], -1), ([], 1)],  # the attack's subnext.tif
    "EXIF IFD whose next is itself": [([(34665, 4, [1])], -1), ([], 1)],  # the attack's exif.tif
    "GPS IFD back to the first": [([(34853, 4, [1])], -1), ([(34853, 4, [0])], -1)],
    "Interoperability IFD's next back to the EXIF IFD": [([(34665, 4, [1])], -1), ([(40965, 4, [2])], -1), ([], 1)],
    "private tag of type IFD to itself": [([(65000, 13, [0])], -1)],
    "sub-image chain back to its first": [([(330, 4, [1])], -1), ([], 2), ([], 1)],
}


@pytest.mark.parametrize("ifds", LOOPS.values(), ids=LOOPS.keys())
@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_image_directories_that_loop_where_tifftools_reads_are_refused(tmp_path, pages_built, ifds, check):
    with pytest.raises(SlideUnreadableError, match="its image directories loop back"):
        check(_tiff(tmp_path / "loop.tif", ifds))
    assert pages_built[0] <= 1


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_sub_images_listed_twice_count_each_time_read(tmp_path, pages_built, check):
    """12 levels, each IFD listing the next twice as its sub-images: 13 IFDs read 8,191 times."""
    levels = 12
    dag = [([(330, 4, [index + 1, index + 1])], -1) for index in range(levels)] + [([], -1)]
    with pytest.raises(SlideUnreadableError, match=f"more than {MAX_IMAGE_DIRECTORIES:,} images"):
        check(_tiff(tmp_path / "dag.tif", dag))
    assert pages_built[0] <= 1


@pytest.mark.parametrize(("kind", "bound", "unit"), [(1, "MAX_TAG_VALUES", "values"),
                                                     (7, "MAX_TAG_BYTES", "bytes")], ids=["BYTE", "UNDEFINED"])
@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_tag_data_past_the_bound_is_refused(tmp_path, monkeypatch, pages_built, check, kind, bound, unit):
    """tifftools reads every tag of every IFD it reads whole (a BYTE value as a Python int: ~36
    bytes); the bound is shrunk to 1 MB so that a 2 MB file stands for a 100 MB one."""
    monkeypatch.setattr(tiff_structure, bound, 1_000_000)
    large = _tiff(tmp_path / "tag.tif", [([], -1)], raw=(65001, kind, bytes(2_000_000)))
    with pytest.raises(SlideUnreadableError, match=f"hold 2,000,0[0-9]{{2}} {unit} .* more than the 1,000,000"):
        check(large)
    assert pages_built[0] <= 1
    monkeypatch.setattr(tiff_structure, bound, 2_001_000)
    check(large)


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_shared_sub_images_and_exif_within_the_bounds_pass(tmp_path, check):
    """An EXIF IFD with an Interoperability IFD, and sub-images listed by two images, pass."""
    shared = [([(330, 4, [2]), (34665, 4, [3])], 1), ([(330, 4, [2])], -1), ([], -1), ([(40965, 4, [4])], -1),
              ([], -1)]
    check(_tiff(tmp_path / "shared.tif", shared))
