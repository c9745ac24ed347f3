"""The fast read path: stored tiles decoded directly must give large_image's pixels exactly."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageCms

from slidelabel.pipelines.colour_profile import ProfileTable
from slidelabel.pipelines.slides import open_slide
from slidelabel.pipelines.tiff_tiles import TiffTiles


@pytest.mark.parametrize("name", ["cmu_slide", "tcga_slide"])
def test_level0_read_directly_is_large_images_pixels(request, name: str):
    """CMU: JPEG tiles, no profile; TCGA: JPEG 2000 tiles and an embedded ICC profile."""
    with open_slide(request.getfixturevalue(name)) as slide:
        assert slide._direct is not None and slide._direct.levels() == [0]
        width, height = slide.info.width, slide.info.height
        direct = slide.read_region(0, 0, width, height)
        assert np.array_equal(direct, slide._tiled_window(0, 0, 0, width, height))
        # A window across tile borders, partly outside the slide, read twice (the second from the cache).
        window = slide.read_region(width - 300, 250, 400, 300)
        assert np.array_equal(window, slide.read_region(width - 300, 250, 400, 300))
        assert np.array_equal(window[:, :300], direct[250:550, width - 300 :])
        assert (window[:, 300:] == 255).all()


def test_a_level_that_differs_from_large_images_is_left_to_it(tcga_slide: Path):
    """OpenSlide places the TCGA sample's 2x level with its own rounding: the probe tile differs, so
    that level is read through large_image, and downsample 2 still gives large_image's pixels."""
    with open_slide(tcga_slide) as slide:
        direct = TiffTiles.open(tcga_slide, slide.info.width, slide.info.height, slide._source.getICCProfiles(0))
        assert direct.levels() == [0, 1]  # both stored levels qualify by size...
        assert 1 not in slide._direct.levels()  # ...but the probe keeps only level 0
        width, height = direct.stored_size(1)
        stored = direct.window(1, 0, 0, width, height)
        via_large_image = slide.read_region(0, 0, width, height, downsample=2)
        assert not np.array_equal(stored, via_large_image)
        assert np.array_equal(via_large_image, slide._tiled_window(1, 0, 0, width, height))
        direct.close()


def test_generated_pyramidal_tiff_is_read_directly_at_every_level(tmp_path: Path, monuseg_pair):
    rgb, _ = monuseg_pair(0)
    path = tmp_path / "pyramid.tiff"
    with tifffile.TiffWriter(path) as tiff:
        options = {"tile": (256, 256), "compression": "zlib", "photometric": "rgb"}
        tiff.write(rgb, subifds=1, **options)
        tiff.write(np.ascontiguousarray(rgb[::2, ::2]), subfiletype=1, **options)
    with open_slide(path) as slide:
        levels = slide._direct.levels() if slide._direct else []
        assert 0 in levels
        assert np.array_equal(slide.read_region(0, 0, 1000, 1000), rgb)


def test_files_that_are_not_tiled_tiffs_are_not_read_directly(tmp_path: Path, monuseg_pair):
    rgb, _ = monuseg_pair(1)
    png = tmp_path / "image.png"
    Image.fromarray(rgb).save(png)
    assert TiffTiles.open(png, 1000, 1000, None) is None
    striped = tmp_path / "striped.tiff"
    tifffile.imwrite(striped, rgb, photometric="rgb")  # strips, not tiles
    assert TiffTiles.open(striped, 1000, 1000, None) is None
    with open_slide(striped) as slide:
        assert slide._direct is None
        assert np.array_equal(slide.read_region(0, 0, 1000, 1000), rgb)


def test_windows_outside_a_level_are_refused(cmu_slide: Path):
    with open_slide(cmu_slide) as slide:
        with pytest.raises(ValueError, match="outside level 0"):
            slide._direct.window(0, 0, 0, slide.info.width + 1, 10)


def _srgb_transform(profile: ImageCms.ImageCmsProfile) -> ImageCms.ImageCmsTransform:
    return ImageCms.buildTransformFromOpenProfiles(profile, ImageCms.createProfile("sRGB"), "RGB", "RGB",
                                                   renderingIntent=ImageCms.Intent.PERCEPTUAL)


def test_profile_table_gives_littlecms_pixels_from_several_threads(tcga_slide: Path, monuseg_pair):
    """Five images through one table from four threads at once, colours new and seen mixed."""
    with open_slide(tcga_slide) as slide:
        profile = slide._source.getICCProfiles(0)
    transform = _srgb_transform(profile)
    images = [np.ascontiguousarray(monuseg_pair(i)[0][:500, :500]) for i in range(4)]
    images.append(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8))
    expected = []
    for rgb in images:
        image = Image.fromarray(rgb.copy())  # Pillow may share the array's memory
        ImageCms.applyTransform(image, transform, inPlace=True)
        expected.append(np.asarray(image))
    # The sample's profile is HP's sRGB, which LittleCMS maps to its own sRGB with some colours one off.
    assert not np.array_equal(expected[-1], images[-1])
    table = ProfileTable(transform)

    def apply(rgb: np.ndarray) -> np.ndarray:
        out = rgb.copy()
        table.apply(out)
        return out

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(apply, images + images))
    for got, want in zip(results, expected + expected):
        assert np.array_equal(got, want)


def test_profile_table_refuses_other_images():
    table = ProfileTable(_srgb_transform(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))))
    with pytest.raises(ValueError, match="uint8"):
        table.apply(np.zeros((4, 4, 3), np.float32))
