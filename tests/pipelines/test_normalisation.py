"""Per-slide normalisation: chunked statistics equal whole ones; stain differences drop out."""

from __future__ import annotations

import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.normalisation import SlideStatistics, get_normalisation, normalised
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array


def test_chunked_statistics_equal_whole_ones_and_skip_nan_rows():
    rng = np.random.default_rng(0)
    feats = rng.normal(loc=1000.0, scale=3.0, size=(10_000, 4)).astype(np.float32)
    feats[::7] = np.nan
    whole = SlideStatistics.of_chunks([feats])
    chunked = SlideStatistics.of_chunks(np.array_split(feats, 13))
    finite = feats[np.isfinite(feats).all(axis=1)].astype(np.float64)
    np.testing.assert_allclose(chunked.mean_D, finite.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(chunked.scale_D, finite.std(axis=0), rtol=1e-4)
    np.testing.assert_allclose(whole.mean_D, chunked.mean_D, rtol=1e-6)
    assert chunked.count == finite.shape[0]
    assert np.isnan(chunked.apply(feats)[0]).all()


def test_a_darker_scan_of_the_same_tissue_gets_the_same_features(monuseg_pair):
    rgb, _ = monuseg_pair(0)
    darker = (rgb.astype(np.float32) * 0.8).astype(np.uint8)
    seeds = superpixel_array(rgb, SuperpixelParams(step=16))
    _, dense = np.unique(seeds, return_inverse=True)
    superpixels = dense.reshape(seeds.shape).astype(np.int32) + 1
    a, b = (features_of_array(image, superpixels, extractor="color") for image in (rgb, darker))
    raw_gap = np.abs(a[:, :3] - b[:, :3]).mean() / a[:, :3].std()
    normalised_gap = np.abs(normalised(a, "slide")[:, :3] - normalised(b, "slide")[:, :3]).mean()
    assert raw_gap > 0.3 and normalised_gap < 0.05


def test_unknown_names_are_refused():
    with pytest.raises(ParameterError, match="slide, none"):
        get_normalisation("magic")
    with pytest.raises(ParameterError, match="without superpixels"):
        SlideStatistics.of_chunks([np.full((3, 2), np.nan)])
