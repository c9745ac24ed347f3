"""Contract of every registered extractor, and what the features are good for on MoNuSeg."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features import FEATURES, get_extractor
from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array


@pytest.fixture(scope="module")
def crop(monuseg_pair: Callable) -> tuple[np.ndarray, np.ndarray]:
    rgb = np.ascontiguousarray(monuseg_pair(1)[0][:300, :260])
    labels = superpixel_array(rgb, SuperpixelParams(step=12))
    labels[labels == labels.max()] = 0  # an absent id gives a NaN row
    return rgb, labels


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_extractor_contract(name: str, crop: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, labels = crop
    extractor = FEATURES[name]
    assert extractor.name == name and extractor.margin_px >= 0
    channels = extractor.window_channels(rgb[:40, :50])
    assert channels.dtype == np.float32 and channels.shape[:2] == (40, 50)
    n = int(labels.max()) + 1
    feats_N_D = features_of_array(rgb, labels, extractor=name, n_superpixels=n)
    assert feats_N_D.dtype == np.float32 and feats_N_D.shape == (n, len(extractor.channel_names()))
    assert len(set(extractor.channel_names())) == feats_N_D.shape[1]
    present_N = np.isin(np.arange(1, n + 1), labels)
    assert np.isfinite(feats_N_D[present_N]).all()
    assert np.isnan(feats_N_D[~present_N]).all() and (~present_N).sum() >= 1
    np.testing.assert_array_equal(features_of_array(rgb, labels, extractor=name, n_superpixels=n), feats_N_D)


def test_unknown_extractor_names_the_registered_ones() -> None:
    with pytest.raises(ParameterError, match="color"):
        get_extractor("nope")


def test_bad_inputs_are_refused(crop: tuple[np.ndarray, np.ndarray]) -> None:
    rgb, labels = crop
    with pytest.raises(ValueError, match="labels"):
        features_of_array(rgb, labels[:-1], extractor="color")
    with pytest.raises(ValueError, match="above"):
        features_of_array(rgb, labels, extractor="color", n_superpixels=3)


def _labelled(monuseg_pair: Callable, index: int) -> tuple[np.ndarray, np.ndarray]:
    """Colour features of the superpixels of one image, z-scored within the image (what a model
    trained on one slide sees), and whether most of each superpixel is nucleus."""
    rgb, mask = monuseg_pair(index)
    labels = superpixel_array(rgb, SuperpixelParams(step=12))
    feats_N_D = features_of_array(rgb, labels, extractor="color")
    present_N = ~np.isnan(feats_N_D[:, 0])
    area_N = np.bincount(labels.ravel(), minlength=feats_N_D.shape[0] + 1)[1:]
    nucleus_N = np.bincount(labels.ravel(), weights=mask.ravel(), minlength=feats_N_D.shape[0] + 1)[1:] > area_N / 2
    feats_M_D = feats_N_D[present_N]
    return (feats_M_D - feats_M_D.mean(0)) / (feats_M_D.std(0) + 1e-6), nucleus_N[present_N]


def test_colour_features_separate_nuclei_from_background(monuseg_pair: Callable) -> None:
    train = [_labelled(monuseg_pair, i) for i in (5, 6, 7)]
    test = [_labelled(monuseg_pair, i) for i in (8, 9)]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
    model.fit(np.vstack([x for x, _ in train]), np.concatenate([y for _, y in train]))
    predicted = model.predict(np.vstack([x for x, _ in test]))
    assert balanced_accuracy_score(np.concatenate([y for _, y in test]), predicted) > 0.85
