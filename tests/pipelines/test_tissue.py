"""Tissue detection: optical density, the thumbnail mask on real slides, windows of the mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines.slides import open_slide
from slidelabel.pipelines.tissue import (
    OD_FLOOR,
    TissueMask,
    detect_tissue,
    mask_window,
    optical_density,
    tissue_pixels,
)

PINK = (220, 130, 190)  # a pale eosin-like colour


def _disc_image(
    shape: tuple[int, int], centre: tuple[int, int], radius: int
) -> tuple[np.ndarray, np.ndarray]:
    """White image with one pink disc; returns (rgb, disc mask)."""
    rows, cols = np.indices(shape)
    disc = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2
    rgb = np.full((*shape, 3), 255, np.uint8)
    rgb[disc] = PINK
    return rgb, disc


@pytest.fixture(scope="module")
def cmu_tissue(cmu_slide: Path) -> tuple[np.ndarray, TissueMask]:
    with open_slide(cmu_slide) as slide:
        thumbnail, downsample = slide.thumbnail(max_size=1024)
        return thumbnail, detect_tissue(thumbnail, downsample=downsample, mpp=slide.info.mpp)


# --- optical density --------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 1), (7, 5), (64, 33)])
def test_optical_density_values_and_shape(shape: tuple[int, int]):
    rgb = np.zeros((*shape, 3), np.uint8)
    rgb[..., 0] = 255
    od = optical_density(rgb)
    assert od.shape == shape and od.dtype == np.float32
    np.testing.assert_allclose(od, 2 * np.log10(256), rtol=1e-6)  # two black channels, one white
    assert optical_density(np.full((*shape, 3), 255, np.uint8)).max() == 0


def test_optical_density_increases_with_darkness():
    levels = np.arange(256, dtype=np.uint8)[::-1]
    od = optical_density(np.repeat(levels[None, :, None], 3, axis=2))[0]
    assert (np.diff(od) > 0).all()


@pytest.mark.parametrize(
    "bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 3), float)]
)
def test_optical_density_refuses_non_rgb_uint8(bad: np.ndarray):
    with pytest.raises(ValueError, match="RGB uint8"):
        optical_density(bad)


# --- detect_tissue on real slides -------------------------------------------------------------


def test_cmu_tissue_fraction_is_plausible(cmu_tissue: tuple[np.ndarray, TissueMask]):
    """Checked by eye on the saved mask: the whole skin section and its detached strip are in,
    the glass around it and the loose-fibre cavity at the top are out: 37% of the thumbnail.
    The bounds allow a few points of change in threshold or cleaning, not a lost section."""
    thumbnail, tissue = cmu_tissue
    assert tissue.mask.shape == thumbnail.shape[:2] and tissue.mask.dtype == bool
    assert tissue.downsample == pytest.approx(2967 / 1024)
    assert 0.32 < tissue.fraction < 0.43
    assert OD_FLOOR <= tissue.od_threshold < 0.5
    # The left quarter of the slide is glass; the centre of the lower half is tissue.
    height, width = tissue.mask.shape
    assert tissue.mask[:, : width // 5].mean() < 0.02
    assert tissue.mask[height // 2 :, width * 2 // 5 : width * 3 // 5].mean() > 0.95


def test_tcga_tissue_fraction_is_plausible(tcga_slide: Path):
    """Checked by eye: one large section filling most of the slide, with a triangular tear."""
    with open_slide(tcga_slide) as slide:
        thumbnail, downsample = slide.thumbnail(max_size=1024)
    tissue = detect_tissue(thumbnail, downsample=downsample)  # no mpp: default cleaning
    assert 0.55 < tissue.fraction < 0.72


def test_tissue_pixels_separate_real_tissue_from_glass(
    cmu_slide: Path, cmu_tissue: tuple[np.ndarray, TissueMask]
):
    _, tissue = cmu_tissue
    size = 256
    with open_slide(cmu_slide) as slide:
        corners = [(x, y) for y in range(0, 2967 - size, size) for x in range(0, 2220 - size, size)]
        masks = {c: mask_window(tissue, *c, size, size, downsample=1) for c in corners}
        inside = [c for c in corners if masks[c].all()]
        outside = [c for c in corners if not masks[c].any()]
        assert len(inside) >= 5 and len(outside) >= 5
        tissue_share = [
            tissue_pixels(slide.read_region(*c, size, size), tissue.od_threshold).mean()
            for c in inside
        ]
        glass_share = [
            tissue_pixels(slide.read_region(*c, size, size), tissue.od_threshold).mean()
            for c in outside
        ]
    assert min(tissue_share) > 0.6
    assert max(glass_share) < 0.05


# --- detect_tissue on synthetic images --------------------------------------------------------


@pytest.mark.parametrize("shape", [(32, 32), (300, 200)])
@pytest.mark.parametrize("level", [255, 245])
def test_blank_slide_gives_an_empty_mask(shape: tuple[int, int], level: int):
    rng = np.random.default_rng(0)
    rgb = np.clip(level + rng.normal(0, 2, (*shape, 3)), 0, 255).astype(np.uint8)
    tissue = detect_tissue(rgb, downsample=16.0, mpp=0.5)
    assert not tissue.mask.any() and tissue.fraction == 0.0
    assert tissue.od_threshold == OD_FLOOR


def test_disc_of_tissue_is_found():
    rgb, disc = _disc_image((200, 300), centre=(100, 140), radius=60)
    tissue = detect_tissue(rgb, downsample=8.0, mpp=0.5)
    overlap = (tissue.mask & disc).sum() / (tissue.mask | disc).sum()
    assert overlap > 0.97


def test_specks_are_removed_and_small_holes_filled():
    # 8 level-0 px per mask px at 0.5 um/px: a mask pixel is 16 um^2, the default minimum
    # object (2500 um^2) is 157 mask pixels.
    rgb, disc = _disc_image((200, 300), centre=(100, 100), radius=60)
    rgb[20:24, 250:254] = PINK  # 16 px speck of dust
    rgb[95:100, 95:100] = 255  # 25 px hole in the tissue
    rgb[60:80, 60:80] = 255  # 400 px hole: real glass inside tissue
    tissue = detect_tissue(rgb, downsample=8.0, mpp=0.5)
    assert not tissue.mask[15:30, 245:260].any()
    assert tissue.mask[95:100, 95:100].all()
    assert not tissue.mask[62:78, 62:78].any()


def test_min_object_um2_sets_the_cleaning_size():
    rgb, _ = _disc_image((200, 300), centre=(100, 100), radius=60)
    rgb[20:30, 250:260] = PINK  # 100 mask px = 1600 um^2
    kept = detect_tissue(rgb, downsample=8.0, mpp=0.5, min_object_um2=1000)
    dropped = detect_tissue(rgb, downsample=8.0, mpp=0.5, min_object_um2=3000)
    assert kept.mask[20:30, 250:260].all() and not dropped.mask[20:30, 250:260].any()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"downsample": 0},
        {"downsample": 4.0, "mpp": -0.5},
        {"downsample": 4.0, "min_object_um2": 100},  # needs mpp
        {"downsample": 4.0, "mpp": 0.5, "min_object_um2": 0},
    ],
)
def test_detect_tissue_refuses_bad_options(kwargs: dict):
    with pytest.raises(ParameterError):
        detect_tissue(np.full((8, 8, 3), 255, np.uint8), **kwargs)


def test_tissue_pixels_threshold_must_be_positive():
    with pytest.raises(ParameterError):
        tissue_pixels(np.full((2, 2, 3), 255, np.uint8), 0.0)


# --- mask_window ------------------------------------------------------------------------------


def _checker_mask() -> TissueMask:
    """A 6 x 8 mask at 4 level-0 px per mask px with a known pattern."""
    rng = np.random.default_rng(3)
    return TissueMask(mask=rng.random((6, 8)) > 0.5, downsample=4.0, od_threshold=0.2)


@pytest.mark.parametrize("downsample", [1.0, 2.0, 4.0])
def test_mask_window_is_nearest_resampling(downsample: float):
    tissue = _checker_mask()
    factor = int(tissue.downsample / downsample)
    full = np.repeat(np.repeat(tissue.mask, factor, axis=0), factor, axis=1)
    full = np.pad(full, ((0, 10), (0, 10)))  # beyond the mask is not tissue
    window = mask_window(tissue, 3, 2, 10, 7, downsample=downsample)
    assert window.shape == (7, 10) and window.dtype == bool
    np.testing.assert_array_equal(window, full[2:9, 3:13])


def test_mask_window_coarser_than_the_mask_samples_pixel_centres():
    tissue = TissueMask(mask=np.eye(8, dtype=bool), downsample=1.0, od_threshold=0.2)
    # working pixel (r, c) at downsample 2 has its centre in mask pixel (2r + 1, 2c + 1)
    window = mask_window(tissue, 0, 0, 4, 4, downsample=2.0)
    np.testing.assert_array_equal(window, np.eye(4, dtype=bool))


def test_mask_window_outside_is_false():
    tissue = TissueMask(mask=np.ones((4, 4), bool), downsample=2.0, od_threshold=0.2)
    window = mask_window(tissue, -3, -2, 14, 12, downsample=1.0)
    assert window.shape == (12, 14)
    assert window[2:10, 3:11].all()
    assert not window[:2].any() and not window[10:].any()
    assert not window[:, :3].any() and not window[:, 11:].any()


def test_mask_window_dilation_reaches_in_from_outside_the_window():
    mask = np.zeros((20, 20), bool)
    mask[10, 10] = True
    tissue = TissueMask(mask=mask, downsample=1.0, od_threshold=0.2)
    grown = mask_window(tissue, 0, 0, 20, 20, downsample=1.0, dilate_px=3)
    assert grown.sum() > 1 and grown[10, 7] and grown[13, 10] and not grown[10, 14]
    # a window that stops 2 px before the tissue still sees the dilation
    edge = mask_window(tissue, 0, 0, 9, 20, downsample=1.0, dilate_px=3)
    np.testing.assert_array_equal(edge, grown[:, :9])
    assert edge[10, 7:].all()


@pytest.mark.parametrize("kwargs", [{"downsample": 0}, {"downsample": 1.0, "dilate_px": -1}])
def test_mask_window_refuses_bad_options(kwargs: dict):
    with pytest.raises(ParameterError):
        mask_window(_checker_mask(), 0, 0, 4, 4, **kwargs)


def test_mask_window_refuses_negative_size():
    with pytest.raises(ParameterError):
        mask_window(_checker_mask(), 0, 0, -1, 4, downsample=1.0)
