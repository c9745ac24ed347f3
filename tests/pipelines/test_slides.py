"""Slide reading through large_image: metadata, scales, regions and every kind of bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from slidelabel.errors import (
    MissingMppError,
    ParameterError,
    SlideNotFoundError,
    SlideUnreadableError,
)
from slidelabel.pipelines.slide_readers import list_sources
from slidelabel.pipelines.slides import (
    Slide,
    WorkingScale,
    mpp_for_magnification,
    open_slide,
)

CMU_SIZE = (2220, 2967)
TCGA_SIZE = (4443, 3567)


@pytest.fixture(scope="module")
def cmu(cmu_slide: Path) -> Slide:
    with open_slide(cmu_slide) as slide:
        yield slide


@pytest.fixture(scope="module")
def tcga(tcga_slide: Path) -> Slide:
    with open_slide(tcga_slide) as slide:
        yield slide


def _area_downsample(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Mean of each factor x factor block (edge blocks may be partial), as float."""
    height, width = math.ceil(rgb.shape[0] / factor), math.ceil(rgb.shape[1] / factor)
    padded = np.pad(
        rgb.astype(np.float64),
        ((0, height * factor - rgb.shape[0]), (0, width * factor - rgb.shape[1]), (0, 0)),
        mode="edge",
    )
    return padded.reshape(height, factor, width, factor, 3).mean(axis=(1, 3))


def _mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


def _write_pyramid_tiff(path: Path, image_h_w_3: np.ndarray, *, mpp: float) -> None:
    """Two-level tiled (256 px) RGB TIFF with its resolution in pixels per centimetre."""
    with tifffile.TiffWriter(path) as tiff:
        for level, pixels in enumerate([image_h_w_3, image_h_w_3[::2, ::2]]):
            per_cm = 1e4 / (mpp * 2**level)
            tiff.write(
                pixels,
                tile=(256, 256),
                photometric="rgb",
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
                subfiletype=1 if level else 0,
            )


def _gradient(height: int, width: int) -> np.ndarray:
    """Smooth RGB image, so that every pyramid level shows the same picture."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack(
        [cols * 255 // width, rows * 255 // height, np.full_like(rows, 128)], axis=-1
    ).astype(np.uint8)


# --- registry and unit helpers ----------------------------------------------------------------


def test_list_sources_names_the_installed_large_image_readers():
    sources = list_sources()
    assert {"openslide", "tiff", "tifffile", "pil"} <= set(sources)
    assert sources == sorted(sources)


@pytest.mark.parametrize(("magnification", "mpp"), [(20, 0.5), (40, 0.25), (10, 1.0), (2.5, 4.0)])
def test_mpp_for_magnification(magnification: float, mpp: float):
    assert mpp_for_magnification(magnification) == pytest.approx(mpp)


@pytest.mark.parametrize("magnification", [0, -20])
def test_mpp_for_magnification_refuses_non_positive(magnification: float):
    with pytest.raises(ParameterError, match="magnification"):
        mpp_for_magnification(magnification)


# --- metadata ---------------------------------------------------------------------------------


def test_cmu_metadata(cmu: Slide, cmu_slide: Path):
    info = cmu.info
    assert (info.width, info.height) == CMU_SIZE
    assert info.source == "openslide"
    assert info.vendor == "aperio"
    assert info.levels == 1
    assert (info.tile_width, info.tile_height) == (240, 240)
    assert info.mpp == pytest.approx(0.499)
    assert info.mpp_y == pytest.approx(0.499)
    assert info.mpp_source == "metadata"
    assert info.magnification == 20
    assert set(info.associated_images) == {"label", "macro", "thumbnail"}
    assert info.path == str(cmu_slide)
    assert cmu.require_mpp() == pytest.approx(0.499)


def test_info_to_dict_is_json_ready(cmu: Slide):
    record = json.loads(json.dumps(cmu.info.to_dict()))
    assert record["width"] == 2220
    assert sorted(record["associated_images"]) == ["label", "macro", "thumbnail"]


def test_tcga_has_no_mpp_and_says_how_to_set_it(tcga: Slide, tcga_slide: Path):
    info = tcga.info
    assert (info.width, info.height) == TCGA_SIZE
    assert info.levels == 2
    assert (info.mpp, info.mpp_y, info.mpp_source, info.magnification) == (None, None, "none", None)
    with pytest.raises(MissingMppError) as caught:
        tcga.require_mpp()
    message = str(caught.value)
    assert str(tcga_slide) in message and "--base-mpp" in message and "option base_mpp" in message and "0.25" in message
    with pytest.raises(MissingMppError):
        tcga.working_scale(mpp=1.0)
    with pytest.raises(MissingMppError):
        tcga.working_scale(magnification=10)


def test_base_mpp_fixes_a_slide_without_mpp(tcga_slide: Path):
    with open_slide(tcga_slide, base_mpp=0.25) as slide:
        assert (slide.info.mpp, slide.info.mpp_y, slide.info.mpp_source) == (0.25, 0.25, "user")
        assert slide.info.magnification == pytest.approx(40)
        assert slide.require_mpp() == 0.25
        scale = slide.working_scale(mpp=0.5)
    assert scale == WorkingScale(downsample=2.0, mpp=0.5, width=2222, height=1784)


def test_base_mpp_overrides_metadata(cmu_slide: Path):
    with open_slide(cmu_slide, base_mpp=0.5) as slide:
        assert (slide.info.mpp, slide.info.mpp_source) == (0.5, "user")
        assert slide.info.magnification == pytest.approx(20)


# --- working scale ----------------------------------------------------------------------------


def test_working_scale_default_is_level0(cmu: Slide):
    assert cmu.working_scale() == WorkingScale(1.0, pytest.approx(0.499), *CMU_SIZE)


@pytest.mark.parametrize(
    ("kwargs", "downsample"),
    [
        ({"mpp": 0.998}, 2.0),
        ({"mpp": 1.996}, 4.0),
        ({"magnification": 5}, 4.0),  # 2 / 0.499 = 4.008: the nearest power of two
        ({"magnification": 20}, 1.0),
        ({"mpp": 1.3}, 2.0),  # 2.6 is nearer 2 than 4 in log scale
        ({"mpp": 1.5}, 4.0),  # 3.006 is nearer 4
        ({"mpp": 0.49}, 1.0),  # within the 5% tolerance of level 0
    ],
)
def test_working_scale_maths(cmu: Slide, kwargs: dict, downsample: float):
    scale = cmu.working_scale(**kwargs)
    assert scale.downsample == pytest.approx(downsample)
    assert scale.mpp == pytest.approx(0.499 * scale.downsample)
    assert scale.width == math.ceil(CMU_SIZE[0] / scale.downsample - 1e-9)
    assert scale.height == math.ceil(CMU_SIZE[1] / scale.downsample - 1e-9)


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [({"mpp": 0.25}, "0.25 um/px"), ({"magnification": 40}, "40x")],
)
def test_working_scale_finer_than_level0_names_both_values(cmu: Slide, kwargs: dict, named: str):
    with pytest.raises(ParameterError) as caught:
        cmu.working_scale(**kwargs)
    assert named in str(caught.value) and "0.499 um/px" in str(caught.value)


@pytest.mark.parametrize(
    "kwargs", [{"mpp": 1.0, "magnification": 10}, {"mpp": 0}, {"mpp": -1}, {"magnification": 0}]
)
def test_working_scale_refuses_bad_arguments(cmu: Slide, kwargs: dict):
    with pytest.raises(ParameterError):
        cmu.working_scale(**kwargs)


# --- regions ----------------------------------------------------------------------------------


def test_read_region_level0_is_exactly_openslides_pixels(cmu: Slide, cmu_slide: Path):
    reference = openslide.OpenSlide(str(cmu_slide))
    expected = np.asarray(reference.read_region((300, 700), 0, (517, 389)).convert("RGB"))
    np.testing.assert_array_equal(cmu.read_region(300, 700, 517, 389), expected)


#: slide fixture -> (level-0 corner of a window on tissue, largest mean difference allowed)
TISSUE_WINDOWS = {"cmu": ((900, 1500), 5.0), "tcga": ((1800, 1400), 10.0)}


@pytest.mark.parametrize("slide_name", list(TISSUE_WINDOWS))
@pytest.mark.parametrize("downsample", [1, 2, 4])
def test_read_region_matches_averaged_level0(request, slide_name: str, downsample: int):
    """Against block means of level 0; a one-pixel shift gives 15-28 on these windows. The TCGA
    pyramid level is a separate JPEG 2000 encoding, hence its looser bound."""
    slide: Slide = request.getfixturevalue(slide_name)
    (x0, y0), tolerance = TISSUE_WINDOWS[slide_name]
    left, top, width, height = x0 // downsample, y0 // downsample, 301, 233  # odd on purpose
    rgb = slide.read_region(left, top, width, height, downsample=downsample)
    assert rgb.shape == (height, width, 3) and rgb.dtype == np.uint8
    level0 = slide.read_region(
        left * downsample, top * downsample, width * downsample, height * downsample
    )
    assert _mean_abs_diff(rgb, _area_downsample(level0, downsample)) < tolerance


@pytest.mark.parametrize("downsample", [1, 2, 4])
def test_read_region_matches_the_thumbnail(tcga: Slide, downsample: int):
    thumbnail, thumb_downsample = tcga.thumbnail(max_size=1024)
    left, top = 200 // downsample, 300 // downsample
    width, height = 2048 // downsample, 1536 // downsample
    rgb = tcga.read_region(left, top, width, height, downsample=downsample)
    scale = downsample / thumb_downsample
    box = [round(v * scale) for v in (left, top, left + width, top + height)]
    expected = cv2.resize(thumbnail[box[1] : box[3], box[0] : box[2]], (width, height))
    assert _mean_abs_diff(rgb, expected) < 12  # 5-9 here; 18-20 when 3 thumbnail px off


@pytest.mark.parametrize("downsample", [1, 2, 4, 2.5, 3.3])
def test_read_region_outside_the_slide_is_white(cmu: Slide, downsample: float):
    working_w = math.ceil(CMU_SIZE[0] / downsample - 1e-9)
    working_h = math.ceil(CMU_SIZE[1] / downsample - 1e-9)
    # A window over the bottom-right corner, hanging 40 px out on both sides.
    left, top = working_w - 60, working_h - 50
    rgb = cmu.read_region(left, top, 100, 90, downsample=downsample)
    assert rgb.shape == (90, 100, 3)
    assert (rgb[:, 60:] == 255).all() and (rgb[50:, :] == 255).all()
    inside = cmu.read_region(left, top, 60, 50, downsample=downsample)
    np.testing.assert_array_equal(rgb[:50, :60], inside)
    # and one hanging out at the top-left
    rgb = cmu.read_region(-30, -20, 80, 70, downsample=downsample)
    assert (rgb[:20] == 255).all() and (rgb[:, :30] == 255).all()
    inside = cmu.read_region(0, 0, 50, 50, downsample=downsample)
    np.testing.assert_array_equal(rgb[20:, 30:], inside)


def test_read_region_entirely_outside_or_empty(cmu: Slide):
    assert (cmu.read_region(5000, 0, 16, 8) == 255).all()
    assert (cmu.read_region(-100, -100, 16, 8, downsample=2) == 255).all()
    assert cmu.read_region(0, 0, 0, 5).shape == (5, 0, 3)


@pytest.mark.parametrize(
    ("args", "kwargs"), [((0, 0, -1, 5), {}), ((0, 0, 5, 5), {"downsample": 0.5})]
)
def test_read_region_refuses_bad_windows(cmu: Slide, args: tuple, kwargs: dict):
    with pytest.raises(ParameterError):
        cmu.read_region(*args, **kwargs)


def test_read_region_at_downsample_2_reads_the_lower_pyramid_level(tcga_slide: Path, monkeypatch):
    slide = open_slide(tcga_slide)
    reader = slide._source  # large_image source: count which level its tiles come from
    levels_read = []
    get_tile = reader.getTile

    def counting_get_tile(x, y, z, *args, **kwargs):
        levels_read.append(z)
        return get_tile(x, y, z, *args, **kwargs)

    monkeypatch.setattr(reader, "getTile", counting_get_tile)
    # The whole slide: 4443 x 3567 is odd both ways, so the last working pixel is half outside.
    slide.read_region(0, 0, 2222, 1784, downsample=2)
    level0 = reader.levels - 1  # large_image numbers levels from the coarsest
    assert levels_read and set(levels_read) == {level0 - 1}
    levels_read.clear()
    # Level 0 is decoded from the file's own tiles (tests/pipelines/test_tiff_tiles.py), not by large_image.
    slide.read_region(0, 0, 512, 512, downsample=1)
    assert levels_read == []


# --- thumbnail and associated images ----------------------------------------------------------


def test_thumbnail_geometry(cmu: Slide):
    rgb, downsample = cmu.thumbnail(max_size=512)
    assert downsample == pytest.approx(2967 / 512)
    assert rgb.shape == (512, math.ceil(2220 / downsample), 3) and rgb.dtype == np.uint8


def test_thumbnail_matches_the_scanners_own(cmu: Slide):
    scanner = cmu.associated_image("thumbnail")
    assert scanner.shape == (768, 574, 3) and scanner.dtype == np.uint8
    rgb, _ = cmu.thumbnail(max_size=768)
    assert _mean_abs_diff(rgb[:, :574], scanner) < 8  # 4.7 here; 11-14 when 1-2 px off


def test_thumbnail_never_upsamples(tmp_path: Path):
    path = tmp_path / "small.png"
    Image.fromarray(_gradient(50, 80)).save(path)
    with open_slide(path) as slide:
        rgb, downsample = slide.thumbnail(max_size=2048)
    assert downsample == 1.0
    np.testing.assert_array_equal(rgb, _gradient(50, 80))


def test_associated_images(cmu: Slide):
    label = cmu.associated_image("label")
    assert label.shape == (463, 387, 3) and label.dtype == np.uint8
    with pytest.raises(ParameterError, match="label, macro, thumbnail"):
        cmu.associated_image("overview")


# --- other formats ----------------------------------------------------------------------------


def test_generated_pyramidal_tiff_through_the_tiff_source(tmp_path: Path):
    path = tmp_path / "pyramid.tif"
    image = _gradient(1000, 1500)
    _write_pyramid_tiff(path, image, mpp=0.25)
    with open_slide(path, source="tiff") as slide:
        info = slide.info
        assert (info.source, info.width, info.height, info.levels) == ("tiff", 1500, 1000, 2)
        assert (info.tile_width, info.tile_height) == (256, 256)
        assert (info.mpp, info.mpp_source, info.magnification) == (0.25, "metadata", 40)
        np.testing.assert_array_equal(slide.read_region(0, 0, 1500, 1000), image)
        half = slide.read_region(0, 0, 750, 500, downsample=2)
    assert _mean_abs_diff(half, image[::2, ::2]) < 2
    with open_slide(path) as slide:
        assert slide.info.source == "openslide"  # preferred: the tiff source grows with every read
        np.testing.assert_array_equal(slide.read_region(0, 0, 1500, 1000), image)


@pytest.mark.parametrize(("suffix", "tolerance"), [(".png", 0), (".jpg", 3)])
def test_plain_images_through_the_pil_source(tmp_path: Path, suffix: str, tolerance: float):
    path = tmp_path / f"plain{suffix}"
    image = _gradient(300, 400)
    Image.fromarray(image).save(path, **({"quality": 95} if suffix == ".jpg" else {}))
    with open_slide(path) as slide:
        info = slide.info
        assert (info.source, info.width, info.height, info.levels) == ("pil", 400, 300, 1)
        assert (info.mpp, info.mpp_source) == (None, "none")
        rgb = slide.read_region(0, 0, 400, 300)
    assert _mean_abs_diff(rgb, image) <= tolerance


def test_grey_image_becomes_rgb(tmp_path: Path):
    path = tmp_path / "grey.png"
    grey = _gradient(40, 60)[:, :, 0]
    Image.fromarray(grey).save(path)
    with open_slide(path) as slide:
        rgb = slide.read_region(0, 0, 60, 40)
    np.testing.assert_array_equal(rgb, np.repeat(grey[:, :, None], 3, axis=2))


def test_transparent_pixels_are_white(tmp_path: Path):
    """openslide marks areas outside the scan as transparent; they must read as glass."""
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = (200, 100, 150)
    rgba[..., 3] = 255
    rgba[:, :10, 3] = 0  # transparent black
    rgba[:, 10:20, 3] = 128  # half transparent
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    with open_slide(path) as slide:
        rgb = slide.read_region(0, 0, 30, 20)
    assert (rgb[:, :10] == 255).all()
    np.testing.assert_allclose(rgb[0, 15], [228, 178, 203], atol=1)
    assert (rgb[:, 20:] == (200, 100, 150)).all()


def test_rewritten_file_is_not_served_from_a_stale_cache(tmp_path: Path):
    path = tmp_path / "rewritten.png"
    Image.fromarray(_gradient(30, 40)).save(path)
    with open_slide(path) as slide:
        assert (slide.info.width, slide.info.height) == (40, 30)
    Image.fromarray(_gradient(70, 20)).save(path)
    with open_slide(path) as slide:
        assert (slide.info.width, slide.info.height) == (20, 70)


def test_closed_slide_cannot_be_read(cmu_slide: Path):
    with open_slide(cmu_slide) as slide:
        pass
    with pytest.raises(ValueError, match="closed"):
        slide.read_region(0, 0, 4, 4)


# --- bad input --------------------------------------------------------------------------------


def _missing(tmp_path: Path, cmu_slide: Path) -> Path:
    return tmp_path / "missing.svs"


def _directory(tmp_path: Path, cmu_slide: Path) -> Path:
    return tmp_path


def _empty(tmp_path: Path, cmu_slide: Path) -> Path:
    path = tmp_path / "empty.svs"
    path.write_bytes(b"")
    return path


def _text(tmp_path: Path, cmu_slide: Path) -> Path:
    path = tmp_path / "notes.svs"
    path.write_text("not a slide\n" * 50)
    return path


def _truncated_cmu(tmp_path: Path, cmu_slide: Path) -> Path:
    data = cmu_slide.read_bytes()
    path = tmp_path / "truncated.svs"
    path.write_bytes(data[: int(len(data) * 0.3)])
    return path


#: case -> (how to make the file, error expected, word of the cause in the message)
BAD_FILES = {
    "missing": (_missing, SlideNotFoundError, "no such file"),
    "directory": (_directory, SlideUnreadableError, "directory"),
    "empty": (_empty, SlideUnreadableError, "empty"),
    "text": (_text, SlideUnreadableError, "not an image"),
    "truncated": (_truncated_cmu, SlideUnreadableError, "truncated"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_raise_the_right_error_naming_file_and_cause(
    case: str, tmp_path: Path, cmu_slide: Path
):
    make, error_type, cause = BAD_FILES[case]
    path = make(tmp_path, cmu_slide)
    with pytest.raises(error_type) as caught:
        open_slide(path)
    assert str(path) in str(caught.value) and cause in str(caught.value)
    assert caught.value.path == str(path)


def test_truncated_tiff_with_headers_first_is_caught_at_open(tmp_path: Path):
    """tifffile writes each IFD before its tiles, so the chain survives and only data is lost."""
    whole = tmp_path / "whole.tif"
    _write_pyramid_tiff(whole, _gradient(1000, 1500), mpp=0.25)
    data = whole.read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(data[: len(data) * 6 // 10])
    with pytest.raises(SlideUnreadableError, match="truncated"):
        open_slide(cut)


def test_corrupt_tiles_fail_on_read_with_the_cause(tmp_path: Path, tcga_slide: Path):
    data = bytearray(tcga_slide.read_bytes())
    data[500_000:1_500_000] = bytes(1_000_000)  # zero tiles near the top of level 0
    path = tmp_path / "corrupt.svs"
    path.write_bytes(bytes(data))
    with open_slide(path) as slide, pytest.raises(SlideUnreadableError) as caught:
        slide.read_region(0, 0, 4443, 3567)
    assert str(path) in str(caught.value) and "cannot read tile" in str(caught.value)


def test_unknown_source_lists_the_installed_ones(cmu_slide: Path):
    with pytest.raises(ParameterError) as caught:
        open_slide(cmu_slide, source="bioformats-xyz")
    message = str(caught.value)
    assert "bioformats-xyz" in message and "openslide" in message and str(cmu_slide) in message


def test_source_that_cannot_read_the_file(tcga_slide: Path):
    with pytest.raises(SlideUnreadableError, match="pil reader cannot open"):
        open_slide(tcga_slide, source="pil")


@pytest.mark.parametrize("base_mpp", [0, -0.25])
def test_non_positive_base_mpp(cmu_slide: Path, base_mpp: float):
    with pytest.raises(ParameterError, match="base mpp must be > 0"):
        Slide(cmu_slide, base_mpp=base_mpp)
