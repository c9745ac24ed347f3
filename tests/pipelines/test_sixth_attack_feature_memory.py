"""Sixth attack F3: the ``tissue`` features of very fine superpixels held 7.1 GB in the worker for
a 16-megapixel slide (409,520 superpixels of 5 px), as a tile's pools took 12 KB per superpixel
(histograms of all 41 channels, int64), copied once more when the window's pools were handed
over, and tiles waiting their turn held all of their pools. Histograms now cover only the 9
colour channels whose percentiles are read, as int32, the pools are the accumulators' own rows,
and the tile's thread turns the superpixels inside the tile into features: one tile's memory
stays proportional to its pixels, and the features are the same to the bit."""

from __future__ import annotations

import tracemalloc

import cv2
import numpy as np
import pytest

from slidelabel.pipelines.features import get_extractor
from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.features.pooling import Pools

#: Traced bytes per pixel of the tile allowed at the peak, with 768 x 768 px and 36,864
#: superpixels of 16 px: measured 296 after the fix (175 MB: 2.6 KB of pools per superpixel and
#: a 512 px block's 41 channels), 1,537 before it (906 MB).
BYTES_PER_PIXEL = 400


def _tissue_like(side: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB with blobs of haematoxylin-blue and eosin-pink, so that every channel varies."""
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random((side, side), np.float32), (0, 0), 3)
    noise = (noise - noise.min()) / (noise.max() - noise.min())
    pink, blue = np.array([230, 150, 200], np.float32), np.array([80, 60, 150], np.float32)
    rgb = pink * (1 - noise[..., None]) + blue * noise[..., None] + rng.normal(0, 8, (side, side, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _tiny_superpixels(side: int, cell: int = 4) -> np.ndarray:
    """``cell`` x ``cell`` px squares, ids 1..(side / cell)^2 in raster order."""
    n = side // cell
    ids = np.arange(1, n * n + 1, dtype=np.int32).reshape(n, n)
    return np.repeat(np.repeat(ids, cell, axis=0), cell, axis=1)


def test_one_tile_of_tiny_superpixels_takes_memory_in_proportion_to_its_pixels():
    side = 768
    rgb, labels = _tissue_like(side), _tiny_superpixels(side)
    features_of_array(rgb[:64, :64], labels[:64, :64], extractor="tissue")  # compile the kernels untraced
    tracemalloc.start()
    try:
        feats = features_of_array(rgb, labels, extractor="tissue", tile_size=side)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert feats.shape == (labels.max(), len(get_extractor("tissue").channel_names()))
    assert np.isfinite(feats).all()
    assert peak < BYTES_PER_PIXEL * side * side, f"peak {peak / 1e6:.0f} MB for {side} x {side} px"


def test_tiles_give_the_features_of_the_whole_image():
    """Tiles cut through superpixels, whose pools (int32 histograms of one window) merge as int64."""
    rng = np.random.default_rng(1)
    side = 200
    rgb = _tissue_like(side, 1)
    # Rectangles of 3 to 40 px, some cut by the 64 px tiles.
    labels = np.zeros((side, side), np.int32)
    y, next_id = 0, 1
    while y < side:
        height, x = int(rng.integers(3, 30)), 0
        while x < side:
            width = int(rng.integers(3, 40))
            labels[y : y + height, x : x + width] = next_id
            next_id, x = next_id + 1, x + width
        y += height
    whole = features_of_array(rgb, labels, extractor="tissue", tile_size=side)
    tiled = features_of_array(rgb, labels, extractor="tissue", tile_size=64)
    np.testing.assert_allclose(tiled, whole, rtol=2e-6, atol=2e-6)
    # Percentiles come from the histograms, which merge exactly.
    names = get_extractor("tissue").channel_names()
    percentiles = [i for i, name in enumerate(names) if "_p" in name and not name.startswith("around")]
    np.testing.assert_array_equal(tiled[:, percentiles], whole[:, percentiles])


def test_histograms_of_the_first_channels_only():
    """``tissue`` keeps histograms of its 9 colour channels, the same as those of the colour
    channels alone; its 32 texture channels keep sums only."""
    tissue = get_extractor("tissue")
    bins = tissue.histogram_bins
    assert bins.channels == 9 < len(tissue.base.pixel_channels) == 41
    values = np.random.default_rng(2).random((6, 5, 12))
    labels = np.repeat([[1, 1, 2, 2, 3]], 6, axis=0)
    wide, colour = Pools.of_pixels(labels, values, bins=bins), Pools.of_pixels(labels, values[..., :9], bins=bins)
    assert wide.hist_M_K_B.shape == (3, 9, bins.bins) and wide.sums_M_K.shape == (3, 12)
    np.testing.assert_array_equal(wide.hist_M_K_B, colour.hist_M_K_B)
    np.testing.assert_array_equal(wide.percentiles((50.0,)), colour.percentiles((50.0,)))
    np.testing.assert_array_equal(wide.sums_M_K[:, :9], colour.sums_M_K)


def test_more_histogram_channels_than_values_is_refused():
    bins = get_extractor("tissue").histogram_bins
    with pytest.raises(ValueError, match="histogram ranges"):
        Pools.of_pixels(np.ones((2, 2), np.int64), np.zeros((2, 2, 4)), bins=bins)


@pytest.mark.parametrize("second", [(200, 200), (60, 200)], ids=["inside another tile", "at a tile's edge"])
def test_a_superpixel_in_two_places_is_still_refused(second):
    """Superpixels wholly inside a tile are finished by the tile's thread; one seen again in
    another tile (inside it or at its edge) is still reported as not connected."""
    side = 256
    rgb, labels = _tissue_like(side, 3), _tiny_superpixels(side, 8)
    labels[second[0] : second[0] + 8, second[1] : second[1] + 8] = labels[24, 24]  # inside the first 64 px tile
    with pytest.raises(ValueError, match="not connected"):
        features_of_array(rgb, labels, extractor="tissue", tile_size=64)
