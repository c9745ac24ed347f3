"""The ``boosting`` model: its own tree walk predicts as scikit-learn does, the bag's samples, files."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models import Category, ModelFileError, load_model, make_model, save_model, train
from slidelabel.pipelines.models.base import balanced_weights
from slidelabel.pipelines.models.boosting import bin_codes, bin_edges, fit_booster

CATEGORIES = [Category("background"), Category("nucleus"), Category("pale")]


def _standardised(monuseg_context: dict[str, np.ndarray], n_classes: int) -> tuple[np.ndarray, ...]:
    """300 labelled rows and the test image, z-scored by the labelled rows (float32, as a
    TrainedModel gives them); with 3 classes the background splits at its median of feature 0."""
    feats_N_D, classes_N = monuseg_context["feats"], monuseg_context["classes"]
    test_N_D, test_classes_N = monuseg_context["test_feats"], monuseg_context["test_classes"]
    chosen = np.random.default_rng(0).choice(len(feats_N_D), 300, replace=False)
    feats_N_D, classes_N = feats_N_D[chosen], classes_N[chosen]
    if n_classes == 3:
        pale = np.median(feats_N_D[classes_N == 0, 0])
        classes_N = np.where((classes_N == 0) & (feats_N_D[:, 0] > pale), 2, classes_N)
    mean_D, std_D = feats_N_D.mean(axis=0), feats_N_D.std(axis=0)
    scale_D = np.where(std_D > 0, std_D, 1)
    return ((feats_N_D - mean_D) / scale_D).astype(np.float32), classes_N, \
        ((test_N_D - mean_D) / scale_D).astype(np.float32), test_classes_N


@pytest.mark.parametrize("n_classes", [2, 3])
def test_trees_predict_as_scikit_learn_does(monuseg_context, n_classes):
    z_N_D, classes_N, test_N_D, _ = _standardised(monuseg_context, n_classes)
    model = make_model("boosting", n_boosters=1)
    model.fit(z_N_D, classes_N, n_classes=n_classes, rng=np.random.default_rng(0))
    # The same booster, fitted by scikit-learn on the bin codes and kept whole.
    edges_D = bin_edges(z_N_D)
    weights_N = balanced_weights(classes_N, n_classes)
    estimator = fit_booster(bin_codes(z_N_D, edges_D), classes_N, weights_N, seed=0, **model.options)
    expected_N_C = estimator.predict_proba(bin_codes(test_N_D, edges_D))
    np.testing.assert_allclose(model.predict_proba(test_N_D), expected_N_C, atol=1e-6)


def test_a_saved_model_predicts_and_samples_as_before(monuseg_context, tmp_path):
    feats_N_D, test_N_D = monuseg_context["feats"][:300], monuseg_context["test_feats"]
    trained = train(feats_N_D, monuseg_context["classes"][:300], CATEGORIES[:2], model="boosting",
                    model_options={"n_boosters": 3}, feature_extractor="context", cross_validate_model=False)
    save_model(trained, tmp_path / "boosting.slmodel")
    loaded = load_model(tmp_path / "boosting.slmodel")
    np.testing.assert_array_equal(loaded.predict_proba(test_N_D), trained.predict_proba(test_N_D))
    np.testing.assert_array_equal(loaded.posterior_samples(test_N_D, n_samples=5, rng=np.random.default_rng(1)),
                                  trained.posterior_samples(test_N_D, n_samples=5, rng=np.random.default_rng(1)))


def test_learns_nuclei_on_a_held_out_image(monuseg_context):
    z_N_D, classes_N, test_N_D, test_classes_N = _standardised(monuseg_context, 2)
    model = make_model("boosting", n_boosters=1)
    model.fit(z_N_D, classes_N, n_classes=2, rng=np.random.default_rng(0))
    # Chance is 0.5; linear and forest reach 0.8-0.85 on these features.
    assert balanced_accuracy_score(test_classes_N, model.predict_proba(test_N_D).argmax(axis=1)) > 0.75


def test_samples_are_the_bag_consistent_across_rows(monuseg_context):
    z_N_D, classes_N, test_N_D, _ = _standardised(monuseg_context, 2)
    model = make_model("boosting", n_boosters=4)
    model.fit(z_N_D, classes_N, n_classes=2, rng=np.random.default_rng(1))
    rows_N_D = test_N_D[:60]
    samples_S_N_C = model.posterior_samples(rows_N_D, n_samples=4, rng=np.random.default_rng(2))
    # As many samples as members: each once, the main booster first.
    np.testing.assert_array_equal(samples_S_N_C[0], model.predict_proba(rows_N_D))
    assert samples_S_N_C.std(axis=0).max() > 0.05
    twice = model.posterior_samples(np.concatenate([rows_N_D, rows_N_D]), n_samples=6, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(twice[:, :60], twice[:, 60:])
    halves = [model.posterior_samples(part, n_samples=6, rng=np.random.default_rng(3), chunk_rows=7)
              for part in (rows_N_D[:25], rows_N_D[25:])]
    np.testing.assert_array_equal(np.concatenate(halves, axis=1), twice[:, :60])


def test_a_class_missing_from_the_labels_gets_zero():
    rng = np.random.default_rng(0)
    feats_N_D = rng.normal(size=(80, 4)).astype(np.float32)
    classes_N = np.where(feats_N_D[:, 0] > 0, 2, 0)
    model = make_model("boosting", n_boosters=2)
    model.fit(feats_N_D, classes_N, n_classes=3, rng=rng)
    probs_N_C = model.predict_proba(feats_N_D)
    assert np.all(probs_N_C[:, 1] == 0)
    np.testing.assert_allclose(probs_N_C.sum(axis=1), 1, atol=1e-6)
    assert np.mean(probs_N_C.argmax(axis=1) == classes_N) > 0.9


def test_bad_options_are_refused():
    with pytest.raises(ParameterError, match="learning_rate must be in"):
        make_model("boosting", learning_rate=0)
    with pytest.raises(ParameterError, match="n_boosters must be an integer >= 1, got 0"):
        make_model("boosting", n_boosters=0)


def test_a_file_with_a_dangling_child_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    feats_N_D = rng.normal(size=(60, 3)).astype(np.float32)
    trained = train(feats_N_D, (feats_N_D[:, 0] > 0).astype(np.int64), CATEGORIES[:2], model="boosting",
                    feature_extractor="x", cross_validate_model=False)
    path = tmp_path / "boosting.slmodel"
    save_model(trained, path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    left = np.lib.format.read_array(io.BytesIO(members["classifier/left.npy"]))
    left[0] = 10**9  # the compiled walk would read far outside the node arrays
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, left)
    members["classifier/left.npy"] = buffer.getvalue()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    with pytest.raises(ModelFileError, match="not valid trees"):
        load_model(path)
