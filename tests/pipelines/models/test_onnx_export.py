"""ONNX export: onnxruntime gives slidelabel's own probabilities for every exportable model."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
from model_data import gaussian_blobs, model_inputs

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models import Category, train
from slidelabel.pipelines.models.onnx_export import EXPORTERS, INPUT, model_to_onnx

#: background, nucleus, an excluded category with labels, a pale background class, one without labels.
CATEGORIES = [Category("background"), Category("nucleus"), Category("blurry", excluded=True),
              Category("pale"), Category("lymphocytes")]


def _run(model, feats_N_D: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(model_to_onnx(model).SerializeToString(),
                                           providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT: feats_N_D})[0]


def _labels(monuseg_context, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """300 labelled rows of real features; with 3 classes the background splits at its median of
    feature 0 into ``background`` and ``pale``; 10 rows carry the excluded category's label."""
    chosen = np.random.default_rng(0).choice(len(monuseg_context["feats"]), 300, replace=False)
    feats_N_D, classes_N = monuseg_context["feats"][chosen], monuseg_context["classes"][chosen]
    labels_N = classes_N.copy()
    if n_classes == 3:
        labels_N[(classes_N == 0) & (feats_N_D[:, 0] > np.median(feats_N_D[classes_N == 0, 0]))] = 3
    labels_N[:10] = 2
    return feats_N_D, labels_N


@pytest.mark.parametrize(("name", "n_classes", "temperature"), [
    ("linear", 3, 1.0), ("linear", 2, 1.6), ("random_forest", 3, 1.0), ("random_forest", 2, 0.7),
    ("boosting", 2, 1.0), ("boosting", 3, 1.6), ("mlp", 3, 1.0), ("auto", 3, 1.0),
])
def test_onnxruntime_predicts_as_slidelabel_does(monuseg_context, name, n_classes, temperature):
    feats_N_D, labels_N = _labels(monuseg_context, n_classes)
    options = {"auto": {"candidates": ("random_forest",), "time_budget_s": 600.0},
               "mlp": {"max_epochs": 20}}.get(name)
    model = train(feats_N_D, labels_N, CATEGORIES, model=name, model_options=options, feature_extractor="context",
                  cross_validate_model=False)
    model.temperature = temperature
    test_N_D = monuseg_context["test_feats"]
    expected_N_K = model.predict_proba(test_N_D)
    assert np.ptp(expected_N_K, axis=0)[model.trained_classes].min() > 0.1  # not a constant answer
    probs_N_K = _run(model, test_N_D)
    assert probs_N_K.shape == expected_N_K.shape == (len(test_N_D), len(CATEGORIES))
    np.testing.assert_allclose(probs_N_K, expected_N_K, atol=1e-5)


def test_the_cnn_on_patches_too():
    feats_N_D, classes_N = gaussian_blobs(20, n_feats=8)
    model = train(model_inputs("cnn", feats_N_D), classes_N.astype(np.int64), CATEGORIES[:3] + CATEGORIES[4:],
                  model="cnn", model_options={"steps": 20}, feature_extractor="patch", cross_validate_model=False)
    test_N_D = model_inputs("cnn", gaussian_blobs(10, n_feats=8, seed=4)[0])
    np.testing.assert_allclose(_run(model, test_N_D), model.predict_proba(test_N_D), atol=1e-5)


def test_every_builtin_vector_model_is_exportable():
    assert {"linear", "random_forest", "boosting", "mlp", "cnn"} <= set(EXPORTERS)


def test_a_model_without_a_builder_is_refused_by_name(monuseg_context):
    feats_N_D, labels_N = _labels(monuseg_context, 2)
    model = train(feats_N_D, labels_N, CATEGORIES, model="linear", feature_extractor="context",
                  cross_validate_model=False)
    model.model_name = "svm_from_a_plugin"
    with pytest.raises(ParameterError, match="'svm_from_a_plugin' model cannot be exported to ONNX; exportable: linear"):
        model_to_onnx(model)
