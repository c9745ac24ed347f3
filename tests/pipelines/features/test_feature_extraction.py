"""Slide extraction: tile by tile equals the whole image, resumable, atomic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from slidelabel.errors import OutputError
from slidelabel.pipelines.features import FEATURES
from slidelabel.pipelines.features import extract, tile_pooling
from slidelabel.pipelines.features.extract import extract_slide_features, features_of_array, read_features
from slidelabel.pipelines.slides import Slide
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize, compute_slide_superpixels
from slidelabel.store.label_map import read_labels
from slidelabel.store.superpixel_files import MANIFEST_FILE, read_manifest


@pytest.fixture(scope="module")
def cmu_superpixels(cmu_slide: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cmu") / "superpixels"
    # 10x (1110 x 1484 px): several 256 px tiles at a quarter of the pixels of level 0, so that
    # the CNN extractor's check stays affordable.
    compute_slide_superpixels(cmu_slide, folder, SuperpixelOptions(magnification=10, size=SuperpixelSize(40, "um"), tile_size=512))
    return folder


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_slide_tiles_give_the_features_of_the_whole_image(
    name: str, cmu_slide: Path, cmu_superpixels: Path, tmp_path: Path
) -> None:
    ticks: list[tuple[int, int]] = []
    out = extract_slide_features(cmu_slide, cmu_superpixels, tmp_path / "f.zarr", extractor=name, tile_size=256,
                                 progress=lambda done, total: ticks.append((done, total)))
    feats_N_D = read_features(out)
    manifest = read_manifest(cmu_superpixels / MANIFEST_FILE)
    working = manifest["working"]
    with Slide(cmu_slide) as slide:
        rgb = slide.read_region(0, 0, working["width"], working["height"], downsample=working["downsample"])
    whole = features_of_array(rgb, read_labels(cmu_superpixels / "labels.tiff"), extractor=name,
                              n_superpixels=manifest["superpixels"])
    assert feats_N_D.shape == whole.shape == (manifest["superpixels"], len(FEATURES[name].channel_names()))
    np.testing.assert_allclose(feats_N_D, whole, atol=1e-4, rtol=1e-5, equal_nan=True)
    tiles = math.ceil(working["width"] / 256) * math.ceil(working["height"] / 256)
    assert ticks[-1] == (tiles, tiles) and len(ticks) == tiles


def test_a_finished_array_is_returned_without_reading(
    cmu_slide: Path, cmu_superpixels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = extract_slide_features(cmu_slide, cmu_superpixels, tmp_path / "f.zarr", extractor="color")
    before = read_features(out)

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("read pixels of a finished array")

    monkeypatch.setattr(Slide, "read_region", no_reading)
    monkeypatch.setattr(extract, "read_labels", no_reading)
    assert extract_slide_features(cmu_slide, cmu_superpixels, out, extractor="color") == out
    np.testing.assert_array_equal(read_features(out), before)


def test_a_failure_midway_leaves_nothing(
    cmu_slide: Path, cmu_superpixels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail_at_third_tile(done: int, total: int) -> None:
        if done == 3:
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        extract_slide_features(cmu_slide, cmu_superpixels, tmp_path / "f.zarr", extractor="color", tile_size=512,
                               progress=fail_at_third_tile)
    assert list(tmp_path.iterdir()) == []


def test_another_file_at_the_output_is_not_overwritten(cmu_slide: Path, cmu_superpixels: Path, tmp_path: Path) -> None:
    (tmp_path / "f.zarr").write_text("mine")
    with pytest.raises(OutputError, match="not a slidelabel feature array"):
        extract_slide_features(cmu_slide, cmu_superpixels, tmp_path / "f.zarr", extractor="color")
    assert (tmp_path / "f.zarr").read_text() == "mine"


@pytest.mark.parametrize("name", ["color", "filterbank"])
def test_tiles_out_of_every_superpixels_reach_are_not_decoded(
    name: str, cmu_slide: Path, cmu_superpixels: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Glass beyond the extractor's reach (ring + margin) stays white instead of being decoded,
    and the features are exactly those of reading every tile."""
    import large_image_source_openslide

    decoded: list[tuple[int, int, int]] = []
    get_tile = large_image_source_openslide.OpenslideFileTileSource.getTile

    def counting_get_tile(self, x, y, z, *args, **kwargs):
        decoded.append((x, y, z))
        return get_tile(self, x, y, z, *args, **kwargs)

    monkeypatch.setattr(large_image_source_openslide.OpenslideFileTileSource, "getTile", counting_get_tile)
    skipping = read_features(extract_slide_features(cmu_slide, cmu_superpixels, tmp_path / "a.zarr", extractor=name))
    decoded_when_skipping = len(set(decoded))
    decoded.clear()
    monkeypatch.setattr(tile_pooling, "_used_pixels", lambda labels, reach_px: np.ones(labels.shape, bool))
    every = read_features(extract_slide_features(cmu_slide, cmu_superpixels, tmp_path / "b.zarr", extractor=name))
    assert decoded_when_skipping < len(set(decoded))
    np.testing.assert_array_equal(skipping, every)
