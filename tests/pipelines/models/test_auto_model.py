"""``auto`` picks the model that cross-validates best on the current labels."""

from __future__ import annotations

import numpy as np
import pytest
from model_data import gaussian_blobs

from slidelabel.pipelines.models import Category, make_model, train

CATEGORIES = [Category("tumour"), Category("stroma")]


def _xor(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class = sign(x0) xor sign(x1), plus 3 noise features: no line separates the classes."""
    rng = np.random.default_rng(seed)
    feats_N_D = rng.uniform(-1, 1, size=(n, 5)).astype(np.float32)
    return feats_N_D, ((feats_N_D[:, 0] > 0) ^ (feats_N_D[:, 1] > 0)).astype(np.int64)


def _oblique(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class = side of an oblique hyperplane through 20 features: easy for a line, hard for
    axis-aligned splits."""
    rng = np.random.default_rng(seed)
    feats_N_D = rng.normal(size=(n, 20)).astype(np.float32)
    return feats_N_D, (feats_N_D.sum(axis=1) > 0).astype(np.int64)


def test_auto_picks_a_nonlinear_model_on_xor():
    # The forest and the mlp both learn XOR (which wins varies); the linear model cannot.
    feats_N_D, labels_N = _xor(300)
    model = train(feats_N_D, labels_N, CATEGORIES, model="auto", feature_extractor="x")
    scores = model.metrics["auto_scores"]
    chosen = model.metrics["auto_chosen"]
    assert chosen in {"random_forest", "mlp"} and chosen == max(scores, key=scores.get)
    assert scores["random_forest"] > 0.9 and scores["mlp"] > 0.9
    assert scores["linear"] < 0.7
    assert model.metrics["cv_balanced_accuracy"] == scores[chosen]
    assert model.classifier.chosen == chosen


def test_auto_picks_the_linear_model_on_a_separable_problem():
    feats_N_D, labels_N = _oblique(300)
    model = train(feats_N_D, labels_N, CATEGORIES, model="auto", feature_extractor="x")
    assert model.metrics["auto_chosen"] == "linear"
    scores = model.metrics["auto_scores"]
    assert scores["linear"] > max(scores["random_forest"], scores["mlp"])


def test_auto_falls_back_to_linear_with_one_label_in_a_class():
    feats_N_D, classes_N = gaussian_blobs(5)
    feats_N_D, classes_N = feats_N_D[4:], classes_N[4:]  # class 0 keeps one label
    model = train(
        feats_N_D,
        classes_N.astype(np.int64),
        CATEGORIES + [Category("fat")],
        model="auto",
        feature_extractor="x",
    )
    assert model.metrics["auto_chosen"] == "linear"
    assert model.metrics["auto_scores"] == {}
    assert model.metrics["cv_balanced_accuracy"] is None
    assert "fewer than 2 labels" in model.metrics["cv_note"]


def test_auto_uses_fewer_folds_when_a_class_is_small():
    # 3 labels in the rarest class: 3 folds, each training fold still holds every class.
    feats_N_D, classes_N = gaussian_blobs(20)
    keep_N = (classes_N != 0) | (np.arange(len(classes_N)) < 3)
    model = make_model("auto")
    model.fit(feats_N_D[keep_N], classes_N[keep_N], n_classes=3, rng=np.random.default_rng(0))
    assert set(model.scores) == {"linear", "random_forest", "mlp"}


def test_auto_refuses_unknown_candidates():
    with pytest.raises(ValueError, match="'svm'"):
        make_model("auto", candidates=["linear", "svm"])
    with pytest.raises(ValueError, match="'auto'"):
        make_model("auto", candidates=["auto"])
