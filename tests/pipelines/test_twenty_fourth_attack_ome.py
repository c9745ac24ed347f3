"""A TIFF's OME-XML is judged before tifffile builds its series from it (twenty-fourth attack: a 200 KB
TIFF whose OME-XML said ``<TiffData IFD="0" PlaneCount="300000000"/>`` cost ~5 GB and 18 s at every
open; one whose TiffData named another file by path made tifffile open it, a FIFO there blocking a
thread for ever)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from slidelabel.errors import SlideUnreadableError
from slidelabel.pipelines.ome_xml import MAX_OME_IMAGES, MAX_OME_PLANES, ome_problem
from slidelabel.pipelines.slide_files import SlideLimits, check_slide_file, check_slide_limits
from slidelabel.pipelines.tiff_tiles import TiffTiles

CHECKS = {"file": check_slide_file, "limits": lambda path: check_slide_limits(path, SlideLimits())}
_SIDE = 256
_OME = '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06" UUID="urn:uuid:1111"'


def _pixels(size_z: int = 1, size_t: int = 1, tiff_data: str = '<TiffData IFD="0" PlaneCount="1"/>',
            side: int = _SIDE) -> str:
    return (f'<Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="{side}" SizeY="{side}" SizeC="3" '
            f'SizeZ="{size_z}" SizeT="{size_t}"><Channel ID="Channel:0:0" SamplesPerPixel="3"/>{tiff_data}</Pixels>')


def _image(index: int = 0, **pixels) -> str:
    return f'<Image ID="Image:{index}" Name="x">{_pixels(**pixels)}</Image>'


def _ome_tiff(path: Path, body: str, head: str = '<?xml version="1.0" encoding="UTF-8"?>') -> Path:
    """A 256 px RGB tiled TIFF (~200 KB) whose description is ``head`` + an OME root holding ``body``."""
    pixels = np.random.default_rng(0).integers(0, 255, (_SIDE, _SIDE, 3), np.uint8)
    tifffile.imwrite(path, pixels, tile=(_SIDE, _SIDE), photometric="rgb", metadata=None,
                     description=f"{head}{_OME}>{body}</OME>")
    return path


@pytest.fixture
def no_ome_series(monkeypatch):
    """Fail the test if tifffile builds an OME series: the refusal must come first."""
    def refuse(self):
        raise AssertionError(f"tifffile's OME series was built for {self.filename}")
    monkeypatch.setattr(tifffile.TiffFile, "_series_ome", refuse)


HOSTILE = {
    "plane count": (_image(tiff_data='<TiffData IFD="0" PlaneCount="300000000"/>'), "planes"),
    "sizes": (_image(size_z=100_000, size_t=100_000), "planes"),
    "pixels per page": (_image(side=2**20), "planes"),  # tifffile: 2**40 px / 256**2 px a page = 2**24 frames
    "ifd extent": (_image(tiff_data=f'<TiffData IFD="{MAX_OME_PLANES}" PlaneCount="1"/>'), "planes"),
    "images": ("".join(_image(index) for index in range(MAX_OME_IMAGES + 1)), "images"),
    "file name": (_image(tiff_data='<TiffData IFD="0" PlaneCount="1"><UUID FileName="/tmp/fifo">urn:uuid:2222'
                                   '</UUID></TiffData>'), "names another file"),
    "other uuid": (_image(tiff_data='<TiffData IFD="0"><UUID>urn:uuid:2222</UUID></TiffData>'), "names another file"),
    "modulo range": ('<StructuredAnnotations><XMLAnnotation ID="A:0" Namespace="openmicroscopy.org/omero/dimension/'
                     'modulo"><Value><Modulo namespace="x"><ModuloAlongZ Type="other" Start="0" End="1e12"/></Modulo>'
                     f'</Value></XMLAnnotation></StructuredAnnotations>{_image()}', "modulo"),
}


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_ome_xml_is_refused_before_tifffile_reads_it(tmp_path, no_ome_series, check, kind):
    body, said = HOSTILE[kind]
    path = _ome_tiff(tmp_path / "ome.tif", body)
    with pytest.raises(SlideUnreadableError, match=said):
        check(path)


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_entity_declarations_are_refused_before_parsing(tmp_path, no_ome_series, check):
    head = '<?xml version="1.0"?><!DOCTYPE OME [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>'
    path = _ome_tiff(tmp_path / "ome.tif", _image(), head=head)
    with pytest.raises(SlideUnreadableError, match="DOCTYPE"):
        check(path)


def test_direct_reader_refuses_hostile_ome_xml(tmp_path, no_ome_series):
    path = _ome_tiff(tmp_path / "ome.tif", HOSTILE["plane count"][0])
    with pytest.raises(SlideUnreadableError, match="planes"):
        TiffTiles.open(path, _SIDE, _SIDE, None)


def test_own_uuid_and_unparsable_xml_are_left_to_tifffile(tmp_path):
    own = _image(tiff_data='<TiffData IFD="0" PlaneCount="1"><UUID FileName="ome.tif">urn:uuid:1111</UUID></TiffData>')
    with tifffile.TiffFile(_ome_tiff(tmp_path / "own.tif", own)) as tiff:
        assert ome_problem(tiff) is None
        assert tiff.series[0].kind == "ome"
    with tifffile.TiffFile(_ome_tiff(tmp_path / "bad.tif", "<Image><unclosed></Image>")) as tiff:
        assert ome_problem(tiff) is None  # tifffile logs it and reads the file as a generic TIFF


def test_real_ome_pyramid_passes_and_reads_as_before(tmp_path):
    rng = np.random.default_rng(1)
    pixels = rng.integers(0, 255, (1024, 1024, 3), np.uint8)
    path = tmp_path / "pyramid.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as writer:
        writer.write(pixels, subifds=2, tile=(256, 256), photometric="rgb", compression="zlib")
        for factor in (2, 4):
            writer.write(pixels[::factor, ::factor], subfiletype=1, tile=(256, 256), photometric="rgb",
                         compression="zlib")
    with tifffile.TiffFile(path) as tiff:
        assert tiff.is_ome
        assert ome_problem(tiff) is None
        assert [level.shape for level in tiff.series[0].levels] == [(1024, 1024, 3), (512, 512, 3), (256, 256, 3)]
    for check in CHECKS.values():
        check(path)
    direct = TiffTiles.open(path, 1024, 1024, None)
    assert direct is not None and direct.levels() == [0, 1, 2]
    assert np.array_equal(direct.window(0, 0, 0, 1024, 1024), pixels)
    direct.close()
