"""Feature arrays carry their per-slide statistics; older arrays get them computed."""

from __future__ import annotations

import numpy as np
import zarr

from slidelabel.pipelines.features.extract import extract_slide_features
from slidelabel.services.projects import superpixel_options
from slidelabel.services.superpixels import compute_slide_superpixels
from slidelabel.store.feature_files import STATISTICS_ATTRIBUTE, scanned_statistics, slide_statistics


def test_extraction_stores_the_statistics_that_an_epoch_reads(tmp_path, cmu_slide):
    compute_slide_superpixels(cmu_slide, tmp_path / "sp", superpixel_options({}))
    out = extract_slide_features(cmu_slide, tmp_path / "sp", tmp_path / "color.zarr", extractor="color")
    array = zarr.open_array(out, mode="r")
    stored = array.attrs[STATISTICS_ATTRIBUTE]
    feats = np.asarray(array[:], np.float64)
    finite = feats[np.isfinite(feats).all(axis=1)]
    assert stored["count"] == finite.shape[0]
    np.testing.assert_allclose(stored["mean"], finite.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(slide_statistics(out).scale_D, np.where(finite.std(axis=0) > 1e-12, finite.std(axis=0), 1),
                               rtol=1e-4)
    # Resuming with the same options leaves the finished array alone, statistics and all.
    assert extract_slide_features(cmu_slide, tmp_path / "sp", out, extractor="color") == out


def test_arrays_without_statistics_get_them_scanned(tmp_path):
    feats = np.random.default_rng(0).normal(5.0, 2.0, (1000, 3)).astype(np.float32)
    array = zarr.create_array(store=tmp_path / "old.zarr", data=feats, chunks=(100, 3))
    assert STATISTICS_ATTRIBUTE not in array.attrs
    statistics = slide_statistics(tmp_path / "old.zarr")
    np.testing.assert_allclose(statistics.mean_D, feats.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(statistics.scale_D, scanned_statistics(array).scale_D)
