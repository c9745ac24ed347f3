"""Neighbourhood features: the grid's Gaussian means agree with direct sums, tiles do not matter."""

from __future__ import annotations

import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features import FEATURES
from slidelabel.pipelines.features.extract import extract_slide_features, features_of_array
from slidelabel.pipelines.features.neighbourhood import neighbourhood_features
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array
from slidelabel.services.projects import superpixel_options
from slidelabel.services.superpixels import compute_slide_superpixels


@pytest.fixture(scope="module")
def nuclei_image(monuseg_pair):
    rgb, _ = monuseg_pair(3)
    seeds = superpixel_array(rgb, SuperpixelParams(step=16))
    _, dense = np.unique(seeds, return_inverse=True)
    return rgb, dense.reshape(seeds.shape).astype(np.int32) + 1


def test_grid_means_match_direct_gaussian_weighted_means(nuclei_image):
    rgb, superpixels = nuclei_image
    base = features_of_array(rgb, superpixels, extractor="color")[:, :9]
    n = base.shape[0]
    ids = superpixels.ravel() - 1
    area = np.bincount(ids, minlength=n).astype(float)
    rows, cols = np.indices(superpixels.shape)
    centroids = np.stack([np.bincount(ids, cols.ravel(), n), np.bincount(ids, rows.ravel(), n)], axis=1) / area[:, None]
    around = neighbourhood_features(base, centroids, area, radii=(2.0, 4.0))
    size = np.sqrt(np.median(area))
    for k, radius in enumerate((2.0, 4.0)):
        sigma = radius * size
        distance2 = ((centroids[:, None, :] - centroids[None, :, :]) ** 2).sum(axis=2)
        weights = np.exp(-distance2 / (2 * sigma**2)) * area[None, :]
        direct = weights @ base / weights.sum(axis=1, keepdims=True)
        grid = around[:, k * 10:k * 10 + 9]
        # Centroids move to cells half a superpixel wide: a small share of the window's width.
        error = np.abs(grid - direct) / base.std(axis=0)
        assert np.median(error) < 0.05 and np.percentile(error, 99) < 0.25
    assert np.all((around[:, 9] > 0.2) & (around[:, 9] <= 1.0))  # coverage, lower at the edges


def test_the_tissue_extractor_does_not_depend_on_tiles(nuclei_image):
    rgb, superpixels = nuclei_image
    whole = features_of_array(rgb, superpixels, extractor="tissue", tile_size=2048)
    tiled = features_of_array(rgb, superpixels, extractor="tissue", tile_size=300)
    assert whole.shape == (superpixels.max(), len(FEATURES["tissue"].channel_names())) == (superpixels.max(), 274)
    np.testing.assert_allclose(whole, tiled, rtol=1e-4, atol=1e-4)


def test_slide_extraction_adds_the_neighbourhood_of_every_superpixel(tmp_path, cmu_slide):
    compute_slide_superpixels(cmu_slide, tmp_path / "sp", superpixel_options({}))
    import zarr
    out = extract_slide_features(cmu_slide, tmp_path / "sp", tmp_path / "tissue.zarr", extractor="tissue")
    feats = np.asarray(zarr.open_array(out, mode="r")[:])
    finite = np.isfinite(feats[:, :121]).all(axis=1)
    assert feats.shape[1] == 274 and finite.mean() > 0.95
    assert np.isfinite(feats[finite]).all()
    coverage = feats[finite][:, 121 + 50]  # radius 2's coverage column
    assert 0 < coverage.min() and coverage.max() <= 1


def test_bad_inputs_are_refused():
    with pytest.raises(ParameterError, match="radii"):
        neighbourhood_features(np.zeros((2, 1)), np.zeros((2, 2)), np.ones(2), radii=(0.0,))
    with pytest.raises(ParameterError, match="centroids"):
        neighbourhood_features(np.zeros((2, 1)), np.zeros((3, 2)), np.ones(2))
