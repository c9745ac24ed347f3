"""The ``patch`` extractor: pixels and mask around each centroid, the same from any tiling or a slide."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr
from PIL import Image

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features import FEATURES
from slidelabel.pipelines.features.extract import extract_slide_features, features_of_array, read_features
from slidelabel.pipelines.features.patches import PatchExtractor, PatchFeatures, patches_of_array
from slidelabel.pipelines.slides import Slide
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize, compute_slide_superpixels
from slidelabel.store.label_map import read_labels
from slidelabel.store.superpixel_files import MANIFEST_FILE, TABLE_FILE, read_manifest
from slidelabel.store.superpixel_table import read_table


@pytest.fixture(scope="module")
def crop(monuseg_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """A 300 x 260 px MoNuSeg crop (not a multiple of any tile size) and its superpixels."""
    path = sorted((monuseg_dir / "images").glob("*.png"))[2]
    rgb = np.ascontiguousarray(np.asarray(Image.open(path).convert("RGB"))[:300, :260])
    return rgb, superpixel_array(rgb, SuperpixelParams(step=12))


def _patches(feats_N_D: np.ndarray, side: int) -> np.ndarray:
    return feats_N_D.reshape(len(feats_N_D), 4, side, side)


def _centre(labels: np.ndarray, superpixel: int) -> tuple[int, int]:
    """(row, column) of the pixel nearest the superpixel's centroid."""
    rows, cols = np.nonzero(labels == superpixel)
    return int(np.floor(rows.mean() + 0.5)), int(np.floor(cols.mean() + 0.5))


def test_registered_patch_extractor_is_a_patch_extractor() -> None:
    extractor = FEATURES["patch"]
    assert isinstance(extractor, PatchExtractor) and extractor.side_px == 32
    names = extractor.channel_names()
    assert len(names) == 4 * 32 * 32 == len(set(names))
    assert names[0] == "red_y0_x0" and names[32] == "red_y1_x0" and names[-1] == "mask_y31_x31"
    assert not isinstance(FEATURES["color"], PatchExtractor)
    with pytest.raises(ParameterError, match="side_px"):
        PatchFeatures(side_px=0)


def test_a_patch_holds_the_pixels_and_the_mask_around_the_centroid(crop: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, labels = crop
    patches_N_C_S_S = _patches(features_of_array(rgb, labels, extractor="patch"), 32)
    superpixel = int(labels[150, 130])
    row, col = _centre(labels, superpixel)
    window = (slice(row - 16, row + 16), slice(col - 16, col + 16))
    patch_C_S_S = patches_N_C_S_S[superpixel - 1]
    np.testing.assert_array_equal(patch_C_S_S[:3], rgb[window].transpose(2, 0, 1).astype(np.float32) / 255)
    np.testing.assert_array_equal(patch_C_S_S[3], (labels[window] == superpixel).astype(np.float32))
    assert patch_C_S_S[3, 16, 16] == 1  # a compact superpixel holds its own centroid


def test_beyond_the_image_a_patch_is_zero(crop: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, labels = crop
    side, half = 31, 15  # odd: 15 px on either side of the centre
    corner = int(labels[-1, -1])
    row, col = _centre(labels, corner)
    assert row + half >= rgb.shape[0] and col + half >= rgb.shape[1]
    feats_N_D = patches_of_array(PatchFeatures(side_px=side), rgb, labels, n_superpixels=int(labels.max()))
    inside_rows, inside_cols = rgb.shape[0] - (row - half), rgb.shape[1] - (col - half)
    expected_C_S_S = np.zeros((4, side, side), np.float32)
    pixels_C_H_W = rgb[row - half :, col - half :].transpose(2, 0, 1) / np.float32(255)
    expected_C_S_S[:3, :inside_rows, :inside_cols] = pixels_C_H_W
    expected_C_S_S[3, :inside_rows, :inside_cols] = labels[row - half :, col - half :] == corner
    np.testing.assert_array_equal(_patches(feats_N_D, side)[corner - 1], expected_C_S_S)


def test_tiles_give_the_patches_of_the_whole_image_exactly(crop: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, labels = crop
    labels = labels.copy()
    labels[labels == 7] = 0  # an absent id gives a NaN row
    n = int(labels.max()) + 1
    whole = features_of_array(rgb, labels, extractor="patch", n_superpixels=n, tile_size=4096)
    tiled = features_of_array(rgb, labels, extractor="patch", n_superpixels=n, tile_size=16)
    np.testing.assert_array_equal(tiled, whole)
    assert np.isnan(whole[[6, n - 1]]).all() and np.isfinite(np.delete(whole, [6, n - 1], axis=0)).all()
    with pytest.raises(ValueError, match="above"):
        features_of_array(rgb, labels, extractor="patch", n_superpixels=3)


@pytest.fixture(scope="module")
def cmu_superpixels(cmu_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Superpixels of 16 px at 5x (a quarter of the slide's 20x): a working level of downsample 4."""
    folder = tmp_path_factory.mktemp("cmu-patches") / "superpixels"
    compute_slide_superpixels(cmu_slide, folder, SuperpixelOptions(magnification=5, size=SuperpixelSize(16, "px"),
                                                                   tile_size=256))
    return folder


def test_slide_patches_equal_those_of_the_whole_working_image(
    cmu_slide: Path, cmu_superpixels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    side = 12
    monkeypatch.setitem(FEATURES, "patch", PatchFeatures(side_px=side))
    ticks: list[tuple[int, int]] = []
    out = extract_slide_features(cmu_slide, cmu_superpixels, tmp_path / "p.zarr", extractor="patch", tile_size=128,
                                 progress=lambda done, total: ticks.append((done, total)))
    feats_N_D = read_features(out)
    manifest = read_manifest(cmu_superpixels / MANIFEST_FILE)
    working = manifest["working"]
    assert working["downsample"] > 1
    with Slide(cmu_slide) as slide:
        rgb = slide.read_region(0, 0, working["width"], working["height"], downsample=working["downsample"])
    labels = read_labels(cmu_superpixels / "labels.tiff")
    whole = features_of_array(rgb, labels, extractor="patch", n_superpixels=manifest["superpixels"])
    assert feats_N_D.shape == (manifest["superpixels"], 4 * side * side)
    np.testing.assert_array_equal(feats_N_D, whole)
    assert ticks[-1][0] == ticks[-1][1] == len(ticks)
    assert zarr.open_array(out, mode="r").attrs["feature_names"][-1] == f"mask_y{side - 1}_x{side - 1}"

    # The centre comes from the table's level-0 centroid: it is the pixel holding it.
    table = read_table(cmu_superpixels / TABLE_FILE)
    middle = int(np.argmin(np.abs(table.centroid_level0 - table.centroid_level0.mean(axis=0)).sum(axis=1)))
    x_level0, y_level0 = table.centroid_level0[middle]
    row, col = int(y_level0 // working["downsample"]), int(x_level0 // working["downsample"])
    patch_C_S_S = _patches(feats_N_D, side)[middle]
    expected_S_S_3 = rgb[row - side // 2 : row + side // 2, col - side // 2 : col + side // 2]
    np.testing.assert_array_equal(patch_C_S_S[:3], expected_S_S_3.transpose(2, 0, 1) / np.float32(255))
