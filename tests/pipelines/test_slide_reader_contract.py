"""Contract every registered slide reader keeps on every sample slide: it opens the file with the
slide's size and the pixels OpenSlide reads, or refuses it with a SlideUnreadableError naming the
file; never another exception."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from slidelabel.errors import SlideUnreadableError
from slidelabel.pipelines.slide_readers import SLIDE_READERS
from slidelabel.pipelines.slides import open_slide

#: Mean absolute difference (0-255) allowed between two decoders of the same JPEG tiles.
DECODER_TOLERANCE = 3.0
WINDOW = (600, 500, 300, 200)


@pytest.fixture(scope="module")
def samples(cmu_slide: Path, tcga_slide: Path, tmp_path_factory) -> dict[str, tuple[Path, np.ndarray]]:
    """Each sample file and its reference pixels in :data:`WINDOW` (OpenSlide's for the SVS
    files, the written pixels for the TIFF and PNG made from CMU's)."""
    found = {}
    for path in (cmu_slide, tcga_slide):
        with openslide.OpenSlide(path) as reference:
            left, top, width, height = WINDOW
            found[path.name] = (path, np.asarray(reference.read_region((left, top), 0, (width, height)).convert("RGB")))
    with openslide.OpenSlide(cmu_slide) as reference:
        rgb = np.asarray(reference.read_region((0, 0), 0, (1024, 1024)).convert("RGB"))
    folder = tmp_path_factory.mktemp("readers")
    tiff = folder / "tiled.tiff"
    tifffile.imwrite(tiff, rgb, tile=(256, 256), photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")
    png = folder / "plain.png"
    Image.fromarray(rgb).save(png)
    left, top, width, height = WINDOW
    for path in (tiff, png):
        found[path.name] = (path, rgb[top:top + height, left:left + width])
    return found


@pytest.mark.parametrize("reader", SLIDE_READERS.names())
@pytest.mark.parametrize("sample", ["CMU-1-Small-Region.svs", "TCGA-CR-7395-01A-01-TS1.svs", "tiled.tiff", "plain.png"])
def test_a_reader_reads_the_slides_pixels_or_refuses_it_cleanly(samples, reader: str, sample: str) -> None:
    path, reference_h_w_3 = samples[sample]
    try:
        slide = open_slide(path, source=reader, base_mpp=0.5)
    except SlideUnreadableError as error:
        assert path.name in str(error)
        return
    with slide:
        assert slide.info.source == reader
        left, top, width, height = WINDOW
        rgb_h_w_3 = slide.read_region(left, top, width, height)
    assert rgb_h_w_3.shape == reference_h_w_3.shape and rgb_h_w_3.dtype == np.uint8
    difference = np.abs(rgb_h_w_3.astype(float) - reference_h_w_3).mean()
    assert difference < DECODER_TOLERANCE, f"{reader} reads {sample} {difference:.1f} levels away from the reference"


def test_every_reader_is_listed_with_what_it_opens_and_openslide_is_the_default() -> None:
    entries = {entry.name: entry for entry in SLIDE_READERS.entries()}
    assert {"openslide", "tiff", "tifffile", "pil"} <= set(entries)
    assert [name for name, entry in entries.items() if entry.default] == ["openslide"]
    assert "svs" in entries["openslide"].description
