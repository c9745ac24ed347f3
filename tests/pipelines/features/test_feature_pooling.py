"""Pooling: accumulators merge exactly, so tiles give the statistics of the whole image."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from slidelabel.pipelines.features import FEATURES
from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.features.pooling import HistogramBins, Pools, ring_labels
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array


def test_pools_of_split_pixels_merge_to_the_pools_of_all() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, size=(40, 30))
    values = rng.normal(size=(40, 30, 2)).astype(np.float32)
    bins = HistogramBins(np.array([-3.0, -3.0]), np.array([3.0, 3.0]), 16)
    whole = Pools.of_pixels(labels, values, bins=bins)
    parts = Pools.merged([Pools.of_pixels(labels[:17], values[:17], bins=bins),
                          Pools.of_pixels(labels[17:], values[17:], bins=bins)])
    np.testing.assert_array_equal(parts.ids_M, whole.ids_M)
    np.testing.assert_array_equal(parts.hist_M_K_B, whole.hist_M_K_B)
    np.testing.assert_allclose(parts.means(), whole.means(), rtol=1e-12)
    np.testing.assert_allclose(parts.stds(), whole.stds(), rtol=1e-12)
    for k, label in enumerate(whole.ids_M):
        pixels = values[labels == label].astype(np.float64)
        np.testing.assert_allclose(whole.means()[k], pixels.mean(0), rtol=1e-6)
        np.testing.assert_allclose(whole.stds()[k], pixels.std(0), rtol=1e-5)
        # Percentiles from 16 bins over 6 units: within one bin of the exact value.
        exact = np.percentile(pixels, 50, axis=0)
        assert np.all(np.abs(whole.percentiles((50.0,))[k, :, 0] - exact) <= 6 / 16)


def test_ring_is_the_dilation_minus_the_superpixel_where_two_meet() -> None:
    labels = np.zeros((9, 12), np.int64)
    labels[:, :5], labels[:, 5:] = 1, 2
    high, low = ring_labels(labels, radius=2)
    assert set(np.flatnonzero((high == 1).any(0) | (low == 1).any(0))) == {5, 6}
    assert set(np.flatnonzero((high == 2).any(0) | (low == 2).any(0))) == {3, 4}


@pytest.fixture(scope="module")
def monuseg_image(monuseg_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.asarray(Image.open(sorted((monuseg_dir / "images").glob("*.png"))[0]).convert("RGB"))
    rgb = np.ascontiguousarray(rgb[:600, :700])  # not a multiple of the tile size
    return rgb, superpixel_array(rgb, SuperpixelParams(step=12))


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_tiles_with_margins_pool_like_the_whole_image(name: str, monuseg_image: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, labels = monuseg_image
    whole = features_of_array(rgb, labels, extractor=name, tile_size=4096)
    tiled = features_of_array(rgb, labels, extractor=name, tile_size=256)
    np.testing.assert_array_equal(np.isnan(tiled), np.isnan(whole))
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=1e-5, equal_nan=True)
    names = FEATURES[name].channel_names()
    percentile_columns = [i for i, n in enumerate(names) if "_p" in n and n.rsplit("_p", 1)[1].isdigit()]
    np.testing.assert_array_equal(tiled[:, percentile_columns], whole[:, percentile_columns])


def test_tiles_without_enough_margin_would_differ(monkeypatch: pytest.MonkeyPatch,
                                                  monuseg_image: tuple[np.ndarray, np.ndarray]) -> None:
    """The exactness above comes from the margins: the filter bank with none sees tile edges."""
    rgb, labels = monuseg_image
    whole = features_of_array(rgb, labels, extractor="filterbank", tile_size=4096)
    monkeypatch.setitem(FEATURES, "filterbank", dataclasses.replace(FEATURES["filterbank"], margin_px=0))
    tiled = features_of_array(rgb, labels, extractor="filterbank", tile_size=256)
    assert np.nanmax(np.abs(tiled - whole)) > 1e-2
