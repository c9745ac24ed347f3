"""``auto`` searches models and settings by cross-validated balanced accuracy within a time budget."""

from __future__ import annotations

import numpy as np
import pytest
from model_data import gaussian_blobs

from slidelabel.pipelines.models import Category, ClassifierState, make_model, train
from slidelabel.pipelines.models.auto import SEARCH_PLAN, AutoClassifier, config_key

CATEGORIES = [Category("tumour"), Category("stroma")]
#: Enough seconds that the whole plan of these candidates runs on any machine: deterministic.
NO_LIMIT = 600.0


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


def _auto(feats_N_D, labels_N, **options):
    return train(feats_N_D, labels_N, CATEGORIES, model="auto", feature_extractor="x",
                 model_options={"time_budget_s": NO_LIMIT} | options)


@pytest.fixture(scope="module")
def xor_model():
    return _auto(*_xor(200), candidates=("linear", "random_forest", "boosting"))


def test_searches_settings_and_picks_a_nonlinear_model_on_xor(xor_model):
    metrics = xor_model.metrics
    tried = [(t["model"], t["params"]) for t in metrics["auto_trials"]]
    assert tried == [(m, o) for m, o in SEARCH_PLAN if m in {"linear", "random_forest", "boosting"}]
    scores = metrics["auto_scores"]
    assert list(scores) == [config_key(m, o) for m, o in tried]
    assert "random_forest(min_samples_leaf=1)" in scores and "linear(prior_precision=10.0)" in scores
    assert all(t["seconds"] > 0 for t in metrics["auto_trials"])
    assert metrics["auto_chosen"] in {"random_forest", "boosting"}
    chosen = config_key(metrics["auto_chosen"], metrics["auto_params"])
    assert scores[chosen] == max(scores.values()) > 0.9
    assert max(score for key, score in scores.items() if key.startswith("linear")) < 0.7
    assert metrics["cv_balanced_accuracy"] == scores[chosen]
    # The fitted model is the chosen configuration, options included.
    inner = xor_model.classifier.model.to_state().config
    assert all(inner[name] == value for name, value in metrics["auto_params"].items())


def test_picks_the_linear_model_on_a_separable_problem():
    model = _auto(*_oblique(200), candidates=("linear", "random_forest"))
    assert model.metrics["auto_chosen"] == "linear"
    scores = model.metrics["auto_scores"]
    assert max(v for k, v in scores.items() if k.startswith("linear")) > max(
        v for k, v in scores.items() if k.startswith("random_forest"))


def test_a_tie_goes_to_the_cheaper_configuration():
    # Far-apart blobs: every configuration scores 1; the first in the plan wins.
    feats_N_D, classes_N = gaussian_blobs(15)
    feats_N_D[:, :3] += 20 * np.eye(3)[classes_N]
    model = make_model("auto", candidates=("linear",), time_budget_s=NO_LIMIT)
    model.fit(feats_N_D, classes_N, n_classes=3, rng=np.random.default_rng(0))
    assert list(model.scores.values()) == [1.0, 1.0, 1.0]
    assert (model.chosen, model.chosen_options) == ("linear", {})


def test_a_spent_budget_stops_the_search_after_the_first_configuration():
    feats_N_D, labels_N = _xor(200)
    model = _auto(feats_N_D, labels_N, time_budget_s=1e-3)
    assert [t["model"] for t in model.metrics["auto_trials"]] == ["linear"]
    assert model.metrics["auto_chosen"] == "linear" and model.metrics["auto_params"] == {}


def test_falls_back_to_linear_with_one_label_in_a_class():
    feats_N_D, classes_N = gaussian_blobs(5)
    feats_N_D, classes_N = feats_N_D[4:], classes_N[4:]  # class 0 keeps one label
    model = train(feats_N_D, classes_N.astype(np.int64), CATEGORIES + [Category("fat")], model="auto",
                  feature_extractor="x")
    assert model.metrics["auto_chosen"] == "linear"
    assert model.metrics["auto_scores"] == {} and model.metrics["auto_trials"] == []
    assert model.metrics["cv_balanced_accuracy"] is None
    assert "fewer than 2 labels" in model.metrics["cv_note"]


def test_uses_fewer_folds_when_a_class_is_small():
    # 3 labels in the rarest class: 3 folds, each training fold still holds every class.
    feats_N_D, classes_N = gaussian_blobs(20)
    keep_N = (classes_N != 0) | (np.arange(len(classes_N)) < 3)
    model = make_model("auto", candidates=("linear", "boosting"), time_budget_s=NO_LIMIT)
    model.fit(feats_N_D[keep_N], classes_N[keep_N], n_classes=3, rng=np.random.default_rng(0))
    assert {"linear", "boosting"} <= set(model.scores)


def test_reads_a_model_file_state_from_before_the_search():
    fitted = make_model("linear")
    fitted.fit(*gaussian_blobs(10), n_classes=3, rng=np.random.default_rng(0))
    old_config = {"candidates": None, "max_folds": 5, "chosen": "linear", "scores": {"linear": 0.9, "mlp": 0.8},
                  "chosen_config": fitted.to_state().config}
    model = AutoClassifier.from_state(ClassifierState(old_config, fitted.to_state().arrays))
    assert model.scores == {"linear": 0.9, "mlp": 0.8} and model.chosen_options == {}


def test_refuses_unknown_candidates_and_a_budget_of_nothing():
    with pytest.raises(ValueError, match="'svm'"):
        make_model("auto", candidates=["linear", "svm"])
    with pytest.raises(ValueError, match="'auto'"):
        make_model("auto", candidates=["auto"])
    with pytest.raises(ValueError, match="time_budget_s must be > 0 seconds, got 0"):
        make_model("auto", time_budget_s=0)
