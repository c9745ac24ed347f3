"""Twenty-sixth attack on slide files: a first image's description is parsed whole by tifffile's
series (a 60 MB Philips XML of 15 M empty elements: 4.5 GB at each open; a shaped JSON of empty
lists: 2.4 GB; one nested 200,000 deep: a 500), and pages a series stacks were counted by their
first two sides (two 60,000 px pages passed the limit on pixels without a pyramid)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from slidelabel.errors import SlideUnreadableError
from slidelabel.pipelines import tiff_structure
from slidelabel.pipelines.slide_files import SlideLimits, check_slide_file, check_slide_limits

CHECKS = {"file": check_slide_file, "limits": lambda path: check_slide_limits(path, SlideLimits())}
PHILIPS = '<?xml version="1.0" encoding="UTF-8" ?><DataObject ObjectType="DPUfsImport">{}</DataObject>'


def _described(path: Path, description: str) -> Path:
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb", tile=(64, 64),
                     description=description, metadata=None, software="Philips DP v1.0")
    return path


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_a_description_of_too_much_markup_is_refused_before_it_is_parsed(tmp_path, monkeypatch, check):
    monkeypatch.setattr(tiff_structure, "MAX_DESCRIPTION_MARKUP", 1_000)
    path = _described(tmp_path / "philips.tif", PHILIPS.format("<a/>" * 2_000))

    def parsed(*args, **kwargs):
        raise AssertionError("the description was parsed")

    monkeypatch.setattr(tifffile.TiffFile, "_series_philips", parsed)
    with pytest.raises(SlideUnreadableError, match="description of 2,00[0-9] elements or lists"):
        check(path)


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_a_long_description_is_refused(tmp_path, monkeypatch, check):
    monkeypatch.setattr(tiff_structure, "MAX_DESCRIPTION_CHARS", 10_000)
    with pytest.raises(SlideUnreadableError, match="description of 20,[0-9]+ characters"):
        check(_described(tmp_path / "long.tif", PHILIPS.format(" " * 20_000)))


def test_a_shaped_description_nested_too_deep_is_refused_not_a_traceback(tmp_path):
    depth = 100_000
    description = '{"shape": [64, 64, 3], "x": ' + "[" * depth + "]" * depth + "}"
    path = tmp_path / "deep.tif"
    tifffile.imwrite(path, np.zeros((64, 64, 3), np.uint8), photometric="rgb", tile=(64, 64),
                     description=description, metadata=None)
    with pytest.raises(SlideUnreadableError, match="nested deeper"):
        check_slide_limits(path, SlideLimits())


def test_pages_a_series_stacks_count_by_their_own_pixels(tmp_path):
    path = tmp_path / "stack.tif"
    for _ in range(2):
        tifffile.imwrite(path, np.zeros((1024, 1024, 3), np.uint8), photometric="rgb", tile=(256, 256),
                         compression="zlib", append=True, metadata=None)
    with tifffile.TiffFile(path) as tiff:
        assert tiff.series[0].shape[:2] == (2, 1024)  # stacked: its first two sides are no image's
    limits = SlideLimits(max_unpyramided_pixels=512 * 1024)
    with pytest.raises(SlideUnreadableError, match="without a pyramid"):
        check_slide_limits(path, limits)
