"""Stain normalisation on real H&E (MoNuSeg): Reinhard reaches its target, stains of different
organs and sites come closer, glass stays glass, tiles agree, Macenko finds H and E."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage.color import rgb2lab

from slidelabel.errors import ParameterError
from slidelabel.pipelines.stain import (
    MACENKO_REFERENCE,
    REFERENCE,
    StainStatistics,
    StainVectors,
    lab_to_rgb,
    macenko,
    macenko_stain_matrix,
    reinhard,
    reinhard_statistics,
    rgb_to_lab,
)
from slidelabel.pipelines.tissue import OD_FLOOR, tissue_pixels

#: Glass as scanners show it: near white, slightly noisy.
GLASS = (240, 240, 238)
#: Images of different organs from different sites, the darkest (49-4488: mean L 32) and the
#: palest (G9-6363: mean L 72) among them.
IMAGES = ("TCGA-49-4488-01Z-00-DX1", "TCGA-G9-6363-01Z-00-DX1", "TCGA-A7-A13E-01Z-00-DX1",
          "TCGA-HE-7130-01Z-00-DX1")


@pytest.fixture(scope="module")
def load(monuseg_dir: Path) -> Callable[[str], np.ndarray]:
    def image(name: str) -> np.ndarray:
        return np.asarray(Image.open(monuseg_dir / "images" / f"{name}.png").convert("RGB"))

    return image


def _with_glass(rgb: np.ndarray, rows: int = 64) -> np.ndarray:
    """``rgb`` with a band of noisy glass above it and one of pure white below."""
    noise = np.random.default_rng(0).normal(0, 2, (rows, rgb.shape[1], 3))
    glass = np.clip(np.add(GLASS, noise), 0, 255).astype(np.uint8)
    return np.concatenate([glass, rgb, np.full((rows, rgb.shape[1], 3), 255, np.uint8)])


def _tissue_lab_means(rgb: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    return rgb_to_lab(rgb[tissue]).mean(axis=0)  # as skimage's: see the first test


def test_lab_conversions_are_skimages_and_invert_exactly(load: Callable[[str], np.ndarray]) -> None:
    pixels_N_3 = load(IMAGES[0])[:200].reshape(-1, 3)
    lab_N_3 = rgb_to_lab(pixels_N_3)
    assert lab_N_3.dtype == np.float32
    np.testing.assert_allclose(lab_N_3, rgb2lab(pixels_N_3[np.newaxis])[0], atol=1e-3)
    np.testing.assert_array_equal(lab_to_rgb(lab_N_3), pixels_N_3)


@pytest.mark.parametrize("name", IMAGES)
def test_reinhard_gives_the_tissue_the_targets_statistics(load: Callable[[str], np.ndarray], name: str) -> None:
    target = reinhard_statistics(load("TCGA-B0-5698-01Z-00-DX1"))  # kidney: reddest of the set
    rgb = load(name)
    tissue = tissue_pixels(rgb, OD_FLOOR)
    source = reinhard_statistics(rgb)
    assert np.abs(np.subtract(source.means_3, target.means_3)).max() > 5  # there is something to do
    out = reinhard(rgb, source, target)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    after = reinhard_statistics(out, tissue_H_W=tissue)
    np.testing.assert_allclose(after.means_3, target.means_3, atol=3.0)  # gamut clipping
    np.testing.assert_allclose(after.stds_3, target.stds_3, rtol=0.12)


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_normalising_brings_different_organs_and_stains_closer(load: Callable[[str], np.ndarray],
                                                               method: str) -> None:
    means = {}
    for name in IMAGES[:2]:  # lung from site 49 and prostate from site G9
        rgb = load(name)
        tissue = tissue_pixels(rgb, OD_FLOOR)
        if method == "reinhard":
            out = reinhard(rgb, reinhard_statistics(rgb), REFERENCE)
        else:
            out = macenko(rgb, macenko_stain_matrix(rgb), MACENKO_REFERENCE)
        means[name] = _tissue_lab_means(rgb, tissue), _tissue_lab_means(out, tissue)
    (before_1, after_1), (before_2, after_2) = means.values()
    before, after = np.linalg.norm(before_1 - before_2), np.linalg.norm(after_1 - after_2)
    # Reinhard matches the means themselves; Macenko matches the stains, and the organs' content
    # (how much of each stain, how much lumen) still differs.
    assert before > 30 and after < (0.1 if method == "reinhard" else 0.6) * before


@pytest.mark.parametrize("name", IMAGES)
def test_macenko_output_has_the_targets_stain_vectors(load: Callable[[str], np.ndarray], name: str) -> None:
    rgb = load(name)
    source = macenko_stain_matrix(rgb)
    after = macenko_stain_matrix(macenko(rgb, source, MACENKO_REFERENCE))
    cosines_2 = (np.asarray(after.he_2_3) * MACENKO_REFERENCE.he_2_3).sum(axis=1)
    assert np.degrees(np.arccos(np.minimum(cosines_2, 1))).max() < 1.5
    cosines_2 = (np.asarray(source.he_2_3) * MACENKO_REFERENCE.he_2_3).sum(axis=1)
    assert np.degrees(np.arccos(np.minimum(cosines_2, 1))).max() > 3.0  # it was not so before
    np.testing.assert_allclose(after.max_concentrations_2, MACENKO_REFERENCE.max_concentrations_2, rtol=0.1)


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_glass_and_white_stay_glass_and_white(load: Callable[[str], np.ndarray], method: str) -> None:
    rgb = _with_glass(load(IMAGES[0]))  # the darkest image: its transform moves most
    if method == "reinhard":
        out = reinhard(rgb, reinhard_statistics(rgb), REFERENCE)
    else:
        out = macenko(rgb, macenko_stain_matrix(rgb), MACENKO_REFERENCE)
    assert (out[-64:] == 255).all()
    glass_change = np.abs(out[:64].astype(int) - rgb[:64]).max(axis=2)
    assert np.percentile(glass_change, 99) <= (1 if method == "reinhard" else 12)
    assert out[:64].min() >= 215


@pytest.mark.parametrize("method", ["reinhard", "macenko"])
def test_tiles_transformed_apart_agree_with_the_whole(load: Callable[[str], np.ndarray], method: str) -> None:
    rgb = load(IMAGES[2])
    if method == "reinhard":
        source = reinhard_statistics(rgb)
        transform = lambda pixels: reinhard(pixels, source, REFERENCE)  # noqa: E731
    else:
        vectors = macenko_stain_matrix(rgb)
        transform = lambda pixels: macenko(pixels, vectors, MACENKO_REFERENCE)  # noqa: E731
    tiles = np.concatenate([np.concatenate([transform(rgb[y:y + 300, x:x + 300]) for x in range(0, 1000, 300)],
                                           axis=1) for y in range(0, 1000, 300)])
    np.testing.assert_array_equal(tiles, transform(rgb))


@pytest.mark.parametrize("name", IMAGES)
def test_macenko_finds_unit_vectors_haematoxylin_bluer(load: Callable[[str], np.ndarray], name: str) -> None:
    vectors = macenko_stain_matrix(load(name))
    he_2_3 = np.asarray(vectors.he_2_3)
    np.testing.assert_allclose(np.linalg.norm(he_2_3, axis=1), 1, atol=1e-6)
    assert (he_2_3 > 0).all() and (np.asarray(vectors.max_concentrations_2) > 0).all()
    # A stain's colour is the light it lets through: haematoxylin absorbs red more than blue,
    # relative to eosin, so it looks bluer.
    (h_red, _, h_blue), (e_red, _, e_blue) = he_2_3
    assert h_red - h_blue > e_red - e_blue + 0.1
    # Eosin absorbs green most (it is pink).
    assert np.argmax(he_2_3[1]) == 1


def test_macenko_pure_stains_unmix_into_one_concentration_each() -> None:
    h_3, e_3 = np.asarray(MACENKO_REFERENCE.he_2_3)
    od_N_3 = np.stack([h_3 * 0.6, e_3 * 0.4, h_3 * 0.3 + e_3 * 0.3])
    rgb = np.round(256 * 10.0 ** -od_N_3 - 1).astype(np.uint8)[np.newaxis]
    out = macenko(rgb, MACENKO_REFERENCE, MACENKO_REFERENCE)  # to itself: the stains' own colours
    assert np.abs(out.astype(int) - rgb).max() <= 1


@pytest.mark.parametrize("bad", [
    np.zeros((8, 8, 3), np.float32),
    np.zeros((8, 8), np.uint8),
    np.zeros((8, 8, 4), np.uint8),
    [[[1, 2, 3]]],
])
def test_bad_images_are_parameter_errors(bad: object) -> None:
    for call in (lambda: reinhard_statistics(bad), lambda: reinhard(bad, REFERENCE, REFERENCE),
                 lambda: macenko_stain_matrix(bad), lambda: macenko(bad, MACENKO_REFERENCE, MACENKO_REFERENCE)):
        with pytest.raises(ParameterError, match=r"\(H, W, 3\) uint8"):
            call()


def test_bad_masks_statistics_and_glass_only_images_are_parameter_errors() -> None:
    rgb = np.full((8, 8, 3), 120, np.uint8)
    for mask in (np.ones((8, 7), bool), np.ones((8, 8), np.uint8)):
        with pytest.raises(ParameterError, match="tissue mask"):
            reinhard_statistics(rgb, tissue_H_W=mask)
        with pytest.raises(ParameterError, match="tissue mask"):
            macenko_stain_matrix(rgb, tissue_H_W=mask)
    glass = np.full((8, 8, 3), 245, np.uint8)
    with pytest.raises(ParameterError, match="no tissue"):
        reinhard_statistics(glass)
    with pytest.raises(ParameterError, match="stained pixels"):
        macenko_stain_matrix(np.full((8, 8, 3), (250, 150, 200), np.uint8))  # tissue with no red absorbed
    with pytest.raises(ParameterError, match="standard deviations"):
        StainStatistics((50, 0, 0), (10, 0, 5))
    with pytest.raises(ParameterError, match="independent"):
        StainVectors(((1, 0, 0), (1, 0, 0)), (1, 1))
