"""One slide into its output folder: contents, determinism, resumability, atomicity."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import large_image
import numpy as np
import pytest

from slidelabel.errors import MissingMppError, ParameterError
from slidelabel.services import superpixels as service
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize, compute_slide_superpixels
from slidelabel.store.label_map import read_labels
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, TABLE_FILE, read_manifest
from slidelabel.store.superpixel_table import read_table

FAST = SuperpixelOptions(size=SuperpixelSize(40, "um"), tile_size=512)


@pytest.fixture(scope="module")
def finished(cmu_slide, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sp") / "cmu"
    result = compute_slide_superpixels(cmu_slide, folder, FAST)
    assert result.status == "done" and result.superpixels > 100
    return folder


def test_table_describes_the_label_map(finished):
    labels = read_labels(finished / LABELS_FILE).astype(np.int64)
    table = read_table(finished / TABLE_FILE)
    manifest = read_manifest(finished / MANIFEST_FILE)
    n = manifest["superpixels"]
    np.testing.assert_array_equal(table.ids, np.arange(1, n + 1))
    assert labels.max() == n and set(np.unique(labels)) == set(range(n + 1))
    np.testing.assert_array_equal(np.bincount(labels.ravel(), minlength=n + 1)[1:], table.area_px)
    # Bounding boxes and centroids, in level-0 pixels, from the map itself.
    ds = manifest["working"]["downsample"]
    ys, xs = np.nonzero(labels == 7)
    x0, y0, x1, y1 = table.bbox_level0[6]
    assert x0 == np.floor(xs.min() * ds) and y0 == np.floor(ys.min() * ds)
    assert x1 == min(np.ceil((xs.max() + 1) * ds), 2220) and y1 == min(np.ceil((ys.max() + 1) * ds), 2967)
    np.testing.assert_allclose(table.centroid_level0[6], ((xs.mean() + 0.5) * ds, (ys.mean() + 0.5) * ds))
    np.testing.assert_allclose(table.area_um2, table.area_px * manifest["working"]["mpp"] ** 2)
    assert 0 <= table.tissue_fraction.min() and table.tissue_fraction.max() <= 1
    # Superpixels on glass next to the tissue exist and are told apart by their tissue fraction.
    assert (table.tissue_fraction < 0.2).sum() > 5 and (table.tissue_fraction > 0.8).sum() > 50


def test_label_map_is_served_by_large_image(finished):
    source = large_image.open(str(finished / LABELS_FILE))
    meta = source.getMetadata()
    height, width = read_labels(finished / LABELS_FILE).shape
    assert (meta["sizeX"], meta["sizeY"]) == (width, height)
    assert meta["mm_x"] == pytest.approx(read_manifest(finished / MANIFEST_FILE)["working"]["mpp"] / 1000)
    region, _ = source.getRegion(format=large_image.constants.TILE_FORMAT_NUMPY)
    np.testing.assert_array_equal(region[..., 0], read_labels(finished / LABELS_FILE))


def test_same_input_gives_the_same_outputs(cmu_slide, finished, tmp_path):
    again = compute_slide_superpixels(cmu_slide, tmp_path / "again", FAST)
    np.testing.assert_array_equal(read_labels(again.folder / LABELS_FILE), read_labels(finished / LABELS_FILE))
    first, second = read_table(finished / TABLE_FILE), read_table(again.folder / TABLE_FILE)
    np.testing.assert_array_equal(first.bbox_level0, second.bbox_level0)
    np.testing.assert_array_equal(first.tissue_fraction, second.tissue_fraction)


def test_workers_do_not_change_the_result(cmu_slide, finished, tmp_path):
    threaded = compute_slide_superpixels(cmu_slide, tmp_path / "threads", FAST, workers=2)
    np.testing.assert_array_equal(read_labels(threaded.folder / LABELS_FILE), read_labels(finished / LABELS_FILE))


def test_tiles_read_separately_from_the_slide_join_without_seams(cmu_slide, tmp_path):
    """The real path: every window is read from the slide on its own, at 10x (downsample 2)."""
    from skimage.measure import label as components

    options = dict(size=SuperpixelSize(30, "um"))
    tiled = compute_slide_superpixels(cmu_slide, tmp_path / "tiled", SuperpixelOptions(tile_size=256, **options))
    whole = compute_slide_superpixels(cmu_slide, tmp_path / "whole", SuperpixelOptions(tile_size=4096, **options))
    a = read_labels(tiled.folder / LABELS_FILE).astype(np.int64)
    b = read_labels(whole.folder / LABELS_FILE).astype(np.int64)
    assert (a == b).mean() > 0.98
    assert components(a, connectivity=1, background=0).max() == tiled.superpixels


def test_finished_slide_is_skipped_until_slide_or_options_change(cmu_slide, tmp_path):
    slide = tmp_path / "copy.svs"
    shutil.copy(cmu_slide, slide)
    folder = tmp_path / "out"
    assert compute_slide_superpixels(slide, folder, FAST).status == "done"
    stamp = (folder / LABELS_FILE).stat().st_mtime_ns
    assert compute_slide_superpixels(slide, folder, FAST).status == "skipped"
    os.utime(slide, ns=(1, 1))  # touched, same content: the hash decides
    assert compute_slide_superpixels(slide, folder, FAST).status == "skipped"
    assert (folder / LABELS_FILE).stat().st_mtime_ns == stamp
    other = SuperpixelOptions(size=SuperpixelSize(60, "um"), tile_size=512)
    assert compute_slide_superpixels(slide, folder, other).status == "done"
    with slide.open("ab") as f:  # new content
        f.write(b"\0" * 16)
    assert compute_slide_superpixels(slide, folder, other).status == "done"


def test_a_crash_leaves_no_half_written_files(cmu_slide, tmp_path, monkeypatch):
    folder = tmp_path / "out"

    def crash(self, block):
        raise RuntimeError("worker died")

    monkeypatch.setattr(service.SuperpixelStatistics, "add", crash)
    with pytest.raises(RuntimeError):
        compute_slide_superpixels(cmu_slide, folder, FAST)
    assert sorted(p.name for p in folder.iterdir()) == []
    monkeypatch.undo()
    assert compute_slide_superpixels(cmu_slide, folder, FAST).status == "done"
    assert sorted(p.name for p in folder.iterdir()) == sorted([LABELS_FILE, TABLE_FILE, MANIFEST_FILE])


def test_slide_without_mpp_needs_base_mpp_or_pixel_sizes(tcga_slide, tmp_path):
    with pytest.raises(MissingMppError, match="--base-mpp"):
        compute_slide_superpixels(tcga_slide, tmp_path / "a", SuperpixelOptions())
    level0 = SuperpixelOptions(magnification=0, size=SuperpixelSize(96, "px"))
    assert compute_slide_superpixels(tcga_slide, tmp_path / "b", level0).superpixels > 100
    stated = SuperpixelOptions(base_mpp=0.5, magnification=5)
    manifest = read_manifest(compute_slide_superpixels(tcga_slide, tmp_path / "c", stated).folder / MANIFEST_FILE)
    assert manifest["slide"]["mpp_source"] == "user" and manifest["working"]["mpp"] == pytest.approx(2.0)


@pytest.mark.parametrize("text", ["50", "um", "-3um", "12 cm", ""])
def test_bad_sizes_are_refused(text):
    with pytest.raises(ParameterError, match="um or px"):
        SuperpixelSize.parse(text)


def test_sizes_parse_in_both_units():
    assert SuperpixelSize.parse("50um") == SuperpixelSize(50, "um")
    assert SuperpixelSize.parse(" 32 PX ") == SuperpixelSize(32, "px")
    assert str(SuperpixelSize.parse("12.5µm")) == "12.5um"
