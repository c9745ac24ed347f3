"""Pooling: accumulators merge exactly, so tiles give the statistics of the whole image."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from slidelabel.pipelines.features import FEATURES
from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.features.pooling import HistogramBins, Pools
from slidelabel.pipelines.features.tile_pooling import pool_image
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


@pytest.mark.parametrize("name", ["color", "filterbank"])
def test_rings_of_8px_superpixels_are_the_exact_dilation(name: str, monuseg_dir: Path) -> None:
    """With 8 px superpixels (``slidelabel simulate --superpixel-px 8``) slivers at junctions of
    three or more got no ring pixels when a pixel joined only the rings of the largest and the
    smallest id around it, and their ring means were NaN (superpixel 4417 of this image)."""
    rgb = np.asarray(Image.open(monuseg_dir / "images" / "TCGA-AR-A1AS-01Z-00-DX1.png").convert("RGB"))
    labels = superpixel_array(rgb, SuperpixelParams(step=8))
    feats_N_D = features_of_array(rgb, labels, extractor=name, tile_size=384)
    present_N = np.isin(np.arange(1, feats_N_D.shape[0] + 1), labels)
    assert np.isfinite(feats_N_D[present_N]).all()
    extractor = FEATURES[name]
    ring_columns = [i for i, n in enumerate(extractor.channel_names()) if "_ring" in n]
    channels_H_W_K = extractor.window_channels(rgb).astype(np.float64)
    size = 2 * extractor.ring_px + 1
    ids, counts = np.unique(labels[labels > 0], return_counts=True)
    for label in [*ids[np.argsort(counts)[:5]], *ids[:: max(1, ids.size // 20)]]:  # the smallest and a sample
        mask = labels == label
        ring = ndimage.binary_dilation(mask, np.ones((size, size), bool)) & ~mask
        np.testing.assert_allclose(feats_N_D[label - 1, ring_columns], channels_H_W_K[ring].mean(0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["color", "filterbank"])
def test_threads_give_the_features_of_one_thread(name: str, monuseg_image: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, labels = monuseg_image
    n = int(labels.max())

    def features(workers: int) -> np.ndarray:
        feats_N_D = np.full((n, len(FEATURES[name].channel_names())), np.nan, np.float32)
        pool_image(FEATURES[name], lambda t, l, h, w, used: rgb[t : t + h, l : l + w],
                   lambda t, l, h, w: labels[t : t + h, l : l + w], height=labels.shape[0], width=labels.shape[1],
                   n_superpixels=n, write_rows=lambda ids_M, feats_M_D: feats_N_D.__setitem__(ids_M - 1, feats_M_D),
                   tile_size=128, workers=workers)
        return feats_N_D

    np.testing.assert_array_equal(features(3), features(1))


def test_superpixels_are_written_as_soon_as_no_later_tile_reaches_them(
        monuseg_image: tuple[np.ndarray, np.ndarray]) -> None:
    """Memory holds the superpixels along the tiles' lower and right edges, not a row of tiles':
    those inside the first tile are written before the second tile is pooled, and every
    superpixel exactly once."""
    rgb, labels = monuseg_image
    n, events = int(labels.max()), []
    pool_image(FEATURES["color"], lambda t, l, h, w, used: rgb[t : t + h, l : l + w],
               lambda t, l, h, w: labels[t : t + h, l : l + w], height=labels.shape[0], width=labels.shape[1],
               n_superpixels=n, write_rows=lambda ids_M, feats_M_D: events.append(("written", ids_M.copy())),
               progress=lambda done, total: events.append(("tiles", done)), tile_size=256, workers=1)
    first_tile = events[: events.index(("tiles", 1))]
    inside = np.unique(labels[:200, :200])
    assert set(inside[inside > 0]) <= set(np.concatenate([ids for _, ids in first_tile]))
    written = np.concatenate([ids for kind, ids in events if kind == "written"])
    assert sorted(written) == sorted(set(np.unique(labels)) - {0})
