"""Twenty-fifth attack on slide files: tifffile formats whose metadata its series lists as given
(Micro-Manager's index map, Leica SCN's dimensions: a 197 KB SCN declaring c and z of 12,000 took
2.2 GB), a TIFF tifffile cannot parse (then no check read it, and tifftools looped on it to 6.5 GB),
OME-XML of millions of elements, directory offsets that are no whole numbers (a 500), and label
masks imported as TIFF without the structure checks."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import tifffile

from slidelabel.errors import ParameterError, SlideUnreadableError
from slidelabel.pipelines import ome_xml
from slidelabel.pipelines.importers.rasters import _TiffImage
from slidelabel.pipelines.slide_files import SlideLimits, check_slide_file, check_slide_limits

CHECKS = {"file": check_slide_file, "limits": lambda path: check_slide_limits(path, SlideLimits())}


def _scn(path: Path, planes: int) -> Path:
    """A 256 px TIFF whose description is Leica SCN XML with a dimension of ``planes`` c and z."""
    xml = ('<?xml version="1.0"?><scn xmlns="http://www.leica-microsystems.com/scn/2010/10/01"><collection name="x">'
           '<image name="i"><pixels sizeX="256" sizeY="256"><dimension sizeX="256" sizeY="256" c="0" z="0" r="0" '
           f'ifd="0"/><dimension sizeX="256" sizeY="256" c="{planes}" z="{planes}" r="0" ifd="0"/></pixels></image>'
           '</collection></scn>')
    tifffile.imwrite(path, np.zeros((256, 256, 3), np.uint8), tile=(256, 256), photometric="rgb", description=xml,
                     metadata=None)
    return path


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_a_scn_is_read_as_plain_pages(tmp_path, monkeypatch, check):
    def listed(*args, **kwargs):
        raise AssertionError("tifffile listed the frames the SCN XML declares")

    monkeypatch.setattr(tifffile.TiffFile, "_series_scn", listed)
    check(_scn(tmp_path / "declares.tif", 300))  # accepted: one 256 px image


def _unparsable_ndpi(path: Path) -> Path:
    """An NDPI whose one image tifffile cannot read (its first directory, with NDPI's tag 65420,
    is read with NDPI's 8-byte offsets it was not written with)."""
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((256, 256, 3), np.uint8), photometric="rgb", tile=(256, 256),
                     extratags=[(65420, "I", 1, 1, True)])
    data = bytearray(buffer.getvalue())
    first = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[first:first + 2])[0]
    data += struct.pack("<H", count) + data[first + 2:first + 2 + 12 * count] + struct.pack("<Q", 0)
    data[4:12] = struct.pack("<I", len(data) - 2 - 12 * count - 8) + bytes(4)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_a_tiff_tifffile_cannot_parse_is_refused(tmp_path, check):
    path = _unparsable_ndpi(tmp_path / "damaged.ndpi")
    with pytest.raises((tifffile.TiffFileError, struct.error)):  # tifffile cannot read it
        tifffile.TiffFile(path).close()
    with pytest.raises(SlideUnreadableError, match="starts as a TIFF, but its structure is damaged"):
        check(path)


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_ome_xml_of_too_many_elements_is_refused_before_it_is_parsed(tmp_path, monkeypatch, check):
    monkeypatch.setattr(ome_xml, "MAX_OME_ELEMENTS", 100)
    path = tmp_path / "many.ome.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), ome=True)
    with tifffile.TiffFile(path) as tiff:
        xml = tiff.pages.first.description
    padded = xml.replace("</Image>", "<a/>" * 200 + "</Image>", 1)
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8), description=padded, metadata=None)

    def parsed(*args, **kwargs):
        raise AssertionError("the OME-XML was parsed")

    monkeypatch.setattr(ome_xml.ElementTree, "fromstring", parsed)
    with pytest.raises(SlideUnreadableError, match="elements, more than the 100 read"):
        check(path)


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_directory_offsets_that_are_no_whole_numbers_are_refused(tmp_path, check):
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((256, 256, 3), np.uint8), photometric="rgb", tile=(256, 256))
    data = bytearray(buffer.getvalue())
    first = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[first:first + 2])[0]
    entries = [bytes(data[first + 2 + 12 * i:first + 14 + 12 * i]) for i in range(count)]
    entries = sorted(entries + [struct.pack("<HHI", 330, 11, 1) + struct.pack("<f", 1000.0)])
    data += bytes(len(data) % 2)
    at = len(data)
    data += struct.pack("<H", len(entries)) + b"".join(entries) + struct.pack("<I", 0)
    data[4:8] = struct.pack("<I", at)
    path = tmp_path / "float.tif"
    path.write_bytes(bytes(data))
    with pytest.raises(SlideUnreadableError, match="not whole numbers"):
        check(path)


def test_a_label_mask_tiff_gets_the_structure_checks(tmp_path):
    path = _unparsable_ndpi(tmp_path / "mask.ndpi")
    with pytest.raises(ParameterError, match="structure is damaged|not a readable TIFF"):
        _TiffImage(path, None, None)
    looped = tmp_path / "looped.tif"
    tifffile.imwrite(looped, np.zeros((16, 16), np.uint8))
    data = bytearray(looped.read_bytes())
    first = struct.unpack("<I", data[4:8])[0]
    count = struct.unpack("<H", data[first:first + 2])[0]
    data[first + 2 + 12 * count:first + 6 + 12 * count] = struct.pack("<I", first)  # its next image: itself
    looped.write_bytes(bytes(data))
    with pytest.raises(ParameterError, match="loop back"):
        _TiffImage(looped, None, None)
