"""Contract every registered model must keep, run against each name in MODELS."""

from __future__ import annotations

import numpy as np
import pytest
from model_data import (
    CATEGORIES,
    EXCLUDED,
    LABELLED,
    MODEL_OPTIONS,
    UNLABELLED,
    labelled_set,
    model_inputs,
    query_feats,
)

from slidelabel.pipelines.models import MODELS, load_model, save_model, train

N_SAMPLES = 32


def _labelled(name):
    feats_N_D, labels_N = labelled_set()
    return model_inputs(name, feats_N_D), labels_N


def _query(model):
    return model_inputs(model.model_name, query_feats())


@pytest.fixture(scope="module", params=sorted(MODELS))
def model(request):
    feats_N_D, labels_N = _labelled(request.param)
    return train(feats_N_D, labels_N, CATEGORIES, model=request.param, model_options=MODEL_OPTIONS.get(request.param),
                 feature_extractor="color_stats")


def test_registered_class_declares_its_name_and_inputs():
    for name, factory in MODELS.items():
        assert factory.name == name
        assert factory.inputs in {"vectors", "patches"}


def test_probabilities_cover_all_categories_and_sum_to_one(model):
    probs_N_K = model.predict_proba(_query(model))
    assert probs_N_K.shape == (51, len(CATEGORIES))
    assert probs_N_K.dtype == np.float32
    assert np.all(np.isfinite(probs_N_K)) and np.all(probs_N_K >= 0)
    np.testing.assert_allclose(probs_N_K.sum(axis=1), 1.0, atol=1e-5)


def test_excluded_and_unlabelled_categories_get_zero(model):
    assert model.trained_classes == LABELLED
    probs_N_K = model.predict_proba(_query(model))
    samples_S_N_K = model.posterior_samples(_query(model), n_samples=N_SAMPLES)
    for k in (EXCLUDED, UNLABELLED):
        assert np.all(probs_N_K[:, k] == 0) and np.all(samples_S_N_K[:, :, k] == 0)


def test_excluded_labels_are_not_trained_on(model):
    feats_N_D, labels_N = _labelled(model.model_name)
    kept_N = labels_N != EXCLUDED
    without = train(
        feats_N_D[kept_N], labels_N[kept_N], CATEGORIES, model=model.model_name,
        model_options=MODEL_OPTIONS.get(model.model_name), feature_extractor="x"
    )
    np.testing.assert_array_equal(without.predict_proba(_query(model)), model.predict_proba(_query(model)))
    assert model.metrics["n_labels"] == {
        "tumour": 60,
        "stroma": 60,
        "necrosis": 60,
        "blurry": 20,
        "lymphocytes": 0,
    }
    assert model.metrics["n_training_labels"] == 180


def test_posterior_samples_shape_and_mean(model):
    samples_S_N_K = model.posterior_samples(_query(model), n_samples=N_SAMPLES, rng=np.random.default_rng(3))
    assert samples_S_N_K.shape == (N_SAMPLES, 51, len(CATEGORIES))
    assert samples_S_N_K.dtype == np.float32
    np.testing.assert_allclose(samples_S_N_K.sum(axis=2), 1.0, atol=1e-5)
    mean_gap = np.abs(samples_S_N_K.mean(axis=0) - model.predict_proba(_query(model))).mean()
    assert mean_gap < 0.05


def test_posterior_samples_differ_between_draws(model):
    # An epistemic signal needs draws that disagree somewhere; identical draws make BALD zero.
    samples_S_N_K = model.posterior_samples(_query(model), n_samples=N_SAMPLES)
    assert samples_S_N_K.std(axis=0).max() > 1e-3


def test_seeded_training_and_sampling_are_deterministic(model):
    feats_N_D, labels_N = _labelled(model.model_name)
    again = train(feats_N_D, labels_N, CATEGORIES, model=model.model_name,
                  model_options=MODEL_OPTIONS.get(model.model_name), feature_extractor="color_stats")
    np.testing.assert_array_equal(again.predict_proba(_query(model)), model.predict_proba(_query(model)))
    first = model.posterior_samples(_query(model), n_samples=N_SAMPLES, rng=np.random.default_rng(7))
    second = again.posterior_samples(_query(model), n_samples=N_SAMPLES, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first, second)
    assert _timeless(again.metrics) == _timeless(model.metrics)


def _timeless(metrics: dict) -> dict:
    """``metrics`` without the seconds ``auto`` took per trial."""
    trials = [{k: v for k, v in trial.items() if k != "seconds"} for trial in metrics.get("auto_trials", [])]
    return metrics | {"auto_trials": trials}


def test_chunked_prediction_equals_unchunked(model):
    feats_N_D = _query(model)
    np.testing.assert_allclose(
        model.predict_proba(feats_N_D, chunk_rows=7), model.predict_proba(feats_N_D), atol=1e-6
    )
    chunked = model.posterior_samples(
        feats_N_D, n_samples=N_SAMPLES, rng=np.random.default_rng(5), chunk_rows=7
    )
    whole = model.posterior_samples(feats_N_D, n_samples=N_SAMPLES, rng=np.random.default_rng(5))
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_save_load_round_trip_predicts_identically(model, tmp_path):
    path = tmp_path / "model.slmodel"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.model_name == model.model_name
    assert loaded.categories == model.categories
    assert loaded.feature_extractor == "color_stats"
    assert loaded.metrics == model.metrics
    assert loaded.trained_classes == model.trained_classes
    np.testing.assert_array_equal(loaded.predict_proba(_query(model)), model.predict_proba(_query(model)))
    rng_seed = 11
    np.testing.assert_array_equal(
        loaded.posterior_samples(_query(model), n_samples=N_SAMPLES, rng=np.random.default_rng(rng_seed)),
        model.posterior_samples(_query(model), n_samples=N_SAMPLES, rng=np.random.default_rng(rng_seed)),
    )


def test_wrong_feature_width_is_refused(model):
    width = _query(model).shape[1]
    with pytest.raises(ValueError, match=rf"shape \(N, {width}\)"):
        model.predict_proba(np.zeros((3, width - 1), np.float32))
