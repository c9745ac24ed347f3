"""A TIFF named .ndpi that is no NDPI (tifffile reads any file so named with NDPI's 64-bit offsets)
is refused for what it is, not for the nonsense sizes its headers then read as (sixteenth attack:
an SVS uploaded as x.ndpi was "2967 x 4121488756551188481 px")."""

from __future__ import annotations

import shutil

import pytest

from slidelabel.errors import SlideUnreadableError
from slidelabel.pipelines.slide_files import SlideLimits, check_slide_file, check_slide_limits
from slidelabel.pipelines.tiff_structure import NOT_NDPI

CHECKS = {"file": check_slide_file, "limits": lambda path: check_slide_limits(path, SlideLimits())}


@pytest.mark.parametrize("check", CHECKS.values(), ids=CHECKS.keys())
def test_an_svs_named_ndpi_is_refused_as_no_ndpi(cmu_slide, tmp_path, check):
    misnamed = tmp_path / "x.ndpi"
    shutil.copyfile(cmu_slide, misnamed)
    with pytest.raises(SlideUnreadableError) as refused:
        check(misnamed)
    assert str(refused.value) == f"{misnamed}: {NOT_NDPI}"
    assert "is named .ndpi but is no Hamamatsu NDPI file" in NOT_NDPI and "give the file the extension" in NOT_NDPI
    renamed = tmp_path / "x.svs"
    misnamed.rename(renamed)
    check(renamed)  # the same bytes under their own extension pass
