"""The model registry and the checks ``train`` makes on its inputs."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from model_data import CATEGORIES, gaussian_blobs

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models import MODELS, Category, load_registry, make_model, train


def test_builtin_models_are_registered():
    assert {"linear", "random_forest", "auto"} <= set(MODELS)


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(ParameterError, match="unknown model 'svm'.*linear.*random_forest"):
        make_model("svm")


def test_bad_options_name_the_model():
    with pytest.raises(ParameterError, match="model 'linear'"):
        make_model("linear", n_trees=5)
    with pytest.raises(ParameterError, match="prior_precision must be > 0, got -1"):
        make_model("linear", prior_precision=-1)


def test_a_model_that_fails_to_import_is_logged_not_fatal(caplog):
    entries = {
        "linear": "slidelabel.pipelines.models.linear:LinearClassifier",
        "mlp": "no_such_torch_module:MLP",
    }
    with caplog.at_level(logging.WARNING):
        registry = load_registry(entries)
    assert list(registry) == ["linear"]
    assert "'mlp' is unavailable" in caplog.text


@pytest.fixture()
def blobs():
    feats_N_D, classes_N = gaussian_blobs(10)
    return feats_N_D, classes_N.astype(np.int64)


def test_labels_outside_the_categories_are_refused(blobs):
    feats_N_D, labels_N = blobs
    with pytest.raises(ParameterError, match=r"index the 2 categories, got values 0\.\.2"):
        train(feats_N_D, labels_N, CATEGORIES[:2], model="linear", feature_extractor="x")


def test_one_trainable_category_is_refused(blobs):
    feats_N_D, labels_N = blobs
    categories = [Category("tumour"), Category("stroma", excluded=True), Category("fat", excluded=True)]
    with pytest.raises(ParameterError, match=r"at least 2 categories.*\['tumour'\]"):
        train(feats_N_D, labels_N, categories, model="linear", feature_extractor="x")


def test_bad_features_and_names_are_refused(blobs):
    feats_N_D, labels_N = blobs
    three = CATEGORIES[:3]
    with pytest.raises(ParameterError, match=r"labels must have shape \(30,\)"):
        train(feats_N_D, labels_N[:5], three, model="linear", feature_extractor="x")
    with pytest.raises(ParameterError, match="NaN"):
        train(
            np.where(feats_N_D > 2, np.nan, feats_N_D), labels_N, three, model="linear", feature_extractor="x"
        )
    with pytest.raises(ParameterError, match="unique"):
        train(
            feats_N_D,
            labels_N,
            [Category("a"), Category("a"), Category("b")],
            model="linear",
            feature_extractor="x",
        )
    with pytest.raises(ParameterError, match="integer"):
        train(feats_N_D, labels_N.astype(float), three, model="linear", feature_extractor="x")


def test_constant_feature_is_standardised_to_zero_not_nan(blobs):
    feats_N_D, labels_N = blobs
    feats_N_D = feats_N_D.copy()
    feats_N_D[:, 0] = 5.0
    model = train(feats_N_D, labels_N, CATEGORIES[:3], model="linear", feature_extractor="x")
    assert np.all(np.isfinite(model.predict_proba(feats_N_D)))
