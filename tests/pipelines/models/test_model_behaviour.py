"""What the models learn: accuracy on separable classes and the effect of class weighting."""

from __future__ import annotations

import numpy as np
import pytest
from model_data import MODEL_OPTIONS, gaussian_blobs, model_inputs
from sklearn.metrics import balanced_accuracy_score

from slidelabel.pipelines.models import MODELS, Category, make_model, train

WEIGHTABLE = ["linear", "random_forest", "boosting"]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_three_gaussian_classes_are_learnt(name):
    feats_N_D, classes_N = gaussian_blobs(40, n_feats=8)
    test_N_D, test_classes_N = gaussian_blobs(200, n_feats=8, seed=9)
    feats_N_D, test_N_D = model_inputs(name, feats_N_D), model_inputs(name, test_N_D)
    categories = [Category("tumour"), Category("stroma"), Category("fat")]
    model = train(feats_N_D, classes_N.astype(np.int64), categories, model=name, model_options=MODEL_OPTIONS.get(name),
                  feature_extractor="x")
    predicted_N = model.predict_proba(test_N_D).argmax(axis=1)
    assert balanced_accuracy_score(test_classes_N, predicted_N) > 0.9
    assert model.metrics["cv_balanced_accuracy"] > 0.9


def _rare_class(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """5% of rows in class 1, shifted 1.5 sd along two of four features: they overlap class 0."""
    rng = np.random.default_rng(seed)
    classes_N = (rng.random(n) < 0.05).astype(np.int64)
    feats_N_D = rng.normal(size=(n, 4))
    feats_N_D[:, :2] += 1.5 * classes_N[:, None]
    return feats_N_D.astype(np.float32), classes_N


@pytest.mark.parametrize("name", WEIGHTABLE)
def test_class_weighting_lifts_recall_of_a_rare_class(name):
    feats_N_D, classes_N = _rare_class(1000, seed=0)
    test_N_D, test_classes_N = _rare_class(4000, seed=1)
    recall = {}
    for balanced in (False, True):
        model = make_model(name, balanced=balanced)
        model.fit(feats_N_D, classes_N, n_classes=2, rng=np.random.default_rng(0))
        predicted_N = model.predict_proba(test_N_D).argmax(axis=1)
        recall[balanced] = np.mean(predicted_N[test_classes_N == 1] == 1)
    assert recall[True] > recall[False] + 0.1


def test_linear_posterior_narrows_with_more_labels():
    # The Laplace spread is the epistemic signal BALD reads: it must shrink as labels accumulate.
    test_N_D = gaussian_blobs(20, seed=3)[0]
    spread = {}
    for n_per_class in (5, 200):
        feats_N_D, classes_N = gaussian_blobs(n_per_class)
        model = make_model("linear")
        model.fit(feats_N_D, classes_N, n_classes=3, rng=np.random.default_rng(0))
        samples_S_N_C = model.posterior_samples(test_N_D, n_samples=64, rng=np.random.default_rng(0))
        spread[n_per_class] = samples_S_N_C.std(axis=0).mean()
    assert spread[5] > 2 * spread[200]


def test_forest_samples_are_its_trees():
    feats_N_D, classes_N = gaussian_blobs(30)
    model = make_model("random_forest", n_trees=10)
    model.fit(feats_N_D, classes_N, n_classes=3, rng=np.random.default_rng(0))
    samples_S_N_C = model.posterior_samples(feats_N_D, n_samples=10, rng=np.random.default_rng(0))
    np.testing.assert_allclose(samples_S_N_C.mean(axis=0), model.predict_proba(feats_N_D), atol=1e-6)
    with pytest.raises(ValueError, match="10 trees, got 11"):
        model.posterior_samples(feats_N_D, n_samples=11, rng=np.random.default_rng(0))
