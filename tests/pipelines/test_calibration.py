"""Calibration on out-of-fold predictions of a real model: temperature, reliability, intervals."""

from __future__ import annotations

import numpy as np
import pytest

from slidelabel.pipelines.calibration import accuracy_interval, fit_temperature, reliability
from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.models import make_model
from slidelabel.pipelines.models.base import tempered
from slidelabel.pipelines.normalisation import normalised
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array


def test_temperature_undoes_a_known_distortion():
    rng = np.random.default_rng(0)
    logits_N_C = rng.normal(scale=2.0, size=(4000, 3))
    true_N_C = np.exp(logits_N_C) / np.exp(logits_N_C).sum(axis=1, keepdims=True)
    classes_N = np.array([rng.choice(3, p=p) for p in true_N_C])
    overconfident_N_C = tempered(true_N_C, 0.5)  # what a too-bold model would say
    temperature = fit_temperature(overconfident_N_C, classes_N)
    assert temperature == pytest.approx(2.0, rel=0.15)
    before, after = reliability(overconfident_N_C, classes_N), reliability(tempered(overconfident_N_C, temperature), classes_N)
    assert after.ece < before.ece / 2 and after.ece < 0.03


def _nuclei(monuseg_pair, index: int) -> tuple[np.ndarray, np.ndarray]:
    """``color`` features z-scored within the image (the ``slide`` normalisation) and nucleus
    classes of the 16 px superpixels of a MoNuSeg image."""
    rgb, nuclei = monuseg_pair(index)
    superpixels = superpixel_array(rgb, SuperpixelParams(step=16))
    _, dense = np.unique(superpixels, return_inverse=True)
    superpixels = dense.reshape(superpixels.shape).astype(np.int32) + 1
    n = int(superpixels.max())
    classes = np.bincount(superpixels.ravel() - 1, nuclei.ravel(), n) / np.bincount(superpixels.ravel() - 1) > 0.5
    return normalised(features_of_array(rgb, superpixels, extractor="color"), "slide"), classes.astype(int)


def test_calibrating_a_forest_on_real_nuclei_lowers_its_error(monuseg_pair):
    """A forest trained on one image, calibrated on 300 superpixels of another, judged on the rest."""
    before, after = [], []
    for first, second in ((0, 1), (2, 3), (4, 5)):
        (feats_a, classes_a), (feats_b, classes_b) = _nuclei(monuseg_pair, first), _nuclei(monuseg_pair, second)
        rng = np.random.default_rng(0)
        model = make_model("random_forest")
        train_rows = rng.choice(classes_a.size, 300, replace=False)
        model.fit(feats_a[train_rows], classes_a[train_rows], n_classes=2, rng=rng)
        calibration_rows = rng.choice(classes_b.size, 300, replace=False)
        temperature = fit_temperature(model.predict_proba(feats_b[calibration_rows]), classes_b[calibration_rows])
        held_out = np.setdiff1d(np.arange(classes_b.size), calibration_rows)
        probs = model.predict_proba(feats_b[held_out])
        before.append(reliability(probs, classes_b[held_out]).ece)
        after.append(reliability(tempered(probs, temperature), classes_b[held_out]).ece)
    print(f"\nforest on nuclei, ECE per image pair: {np.round(before, 3)} -> {np.round(after, 3)}")
    assert np.mean(after) < np.mean(before)


def test_reliability_bins_and_interval():
    probs = np.array([[0.95, 0.05]] * 10 + [[0.55, 0.45]] * 10)
    classes = np.array([0] * 10 + [0] * 5 + [1] * 5)
    r = reliability(probs, classes)
    assert r.count_B.tolist() == [10, 10]
    assert r.accuracy_B.tolist() == [0.5, 1.0]
    assert r.ece == pytest.approx((10 * 0.05 + 10 * 0.05) / 20)
    interval = accuracy_interval(np.array([True] * 90 + [False] * 10))
    assert interval["low"] < 0.9 < interval["high"] and interval["high"] - interval["low"] < 0.15
    assert accuracy_interval(np.ones(5, bool))["high"] == 1.0
    assert accuracy_interval(np.zeros(0, bool))["value"] is None
