"""Certainty strategies: the contract every registered strategy keeps, then each one's behaviour."""

from __future__ import annotations

import gc
import tracemalloc

import numpy as np
import pytest

from slidelabel.errors import ParameterError
from slidelabel.pipelines import strategies
from slidelabel.pipelines.strategies import (
    STRATEGIES,
    Evidence,
    Selection,
    register,
    select,
)
from slidelabel.pipelines.uncertainty_scores import bald_scores, entropy_scores
from slidelabel.registry import Registry

NAMES = sorted(STRATEGIES)
#: Strategies whose result may depend on the rng; every other one must ignore it.
USES_RNG = {"random"}


def _evidence(n_rows: int = 300, classes: int = 4, *, seed: int = 0) -> Evidence:
    """Random but valid evidence with every optional field, some rows labelled."""
    rng = np.random.default_rng(seed)
    samples_S_N_C = rng.dirichlet(np.ones(classes), size=(8, n_rows)).astype(np.float32)
    labelled_N = rng.random(n_rows) < 0.3
    return Evidence(
        probs_N_C=samples_S_N_C.mean(axis=0),
        labelled_N=labelled_N,
        samples_S_N_C=samples_S_N_C,
        feats_N_D=rng.normal(size=(n_rows, 6)).astype(np.float32),
        labels_N=np.where(labelled_N, rng.integers(0, classes, n_rows), -1).astype(np.int64),
    )


def _with(evidence: Evidence, **changes: np.ndarray | None) -> Evidence:
    return Evidence(**{**evidence.__dict__, **changes})


# --- contract, for every registered strategy ----------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_returns_k_unique_unlabelled_rows_best_first(name: str) -> None:
    evidence = _evidence()
    selection = select(name, evidence, k=12, rng=3)
    assert isinstance(selection, Selection)
    assert selection.indices.dtype == np.int64 and selection.scores.dtype == np.float64
    assert selection.indices.shape == selection.scores.shape == (12,)
    assert np.unique(selection.indices).size == 12
    assert not evidence.labelled_N[selection.indices].any()
    assert np.isfinite(selection.scores).all()
    assert (np.diff(selection.scores) <= 0).all(), "scores must not increase along the selection"


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_same_result_and_inputs_untouched(name: str) -> None:
    evidence = _evidence()
    copies = {key: value.copy() for key, value in evidence.__dict__.items()}
    first = select(name, evidence, k=10, rng=7)
    second = select(name, evidence, k=10, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first.indices, second.indices)
    np.testing.assert_array_equal(first.scores, second.scores)
    for key, value in copies.items():
        np.testing.assert_array_equal(getattr(evidence, key), value, err_msg=key)
    if name not in USES_RNG:
        other = select(name, evidence, k=10, rng=8)
        np.testing.assert_array_equal(first.indices, other.indices)


@pytest.mark.parametrize("name", NAMES)
def test_k_larger_than_the_pool_returns_every_unlabelled_row(name: str) -> None:
    evidence = _evidence(n_rows=40)
    selection = select(name, evidence, k=1000, rng=0)
    assert sorted(selection.indices) == list(np.flatnonzero(~evidence.labelled_N))


@pytest.mark.parametrize("name", NAMES)
def test_nothing_unlabelled_gives_an_empty_selection(name: str) -> None:
    evidence = _evidence(n_rows=20)
    selection = select(name, _with(evidence, labelled_N=np.ones(20, bool)), k=5, rng=0)
    assert selection.indices.shape == selection.scores.shape == (0,)
    assert selection.indices.dtype == np.int64


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize(
    "field, bad",
    [
        ("probs_N_C", np.full(30, 0.5)),
        ("probs_N_C", np.full((30, 1), 1.0)),
        ("labelled_N", np.zeros(29, bool)),
        ("labelled_N", np.zeros(30, np.int64)),
        ("samples_S_N_C", np.full((3, 29, 4), 0.25)),
        ("feats_N_D", np.zeros((29, 6), np.float32)),
        ("labels_N", np.full(31, -1)),
    ],
)
def test_wrong_shapes_raise(name: str, field: str, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=field):
        select(name, _with(_evidence(n_rows=30), **{field: bad}), k=3, rng=0)


# --- checks of select ---------------------------------------------------------------------------


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(ParameterError, match="unknown strategy 'nope'.*margin"):
        select("nope", _evidence(), k=3)


@pytest.mark.parametrize("k", [0, -2, 2.5, True])
def test_k_must_be_a_positive_integer(k: object) -> None:
    with pytest.raises(ValueError, match="k must be"):
        select("margin", _evidence(), k=k)


@pytest.mark.parametrize(
    "name, field, needed",
    [(info.name, "samples_S_N_C", "samples") for info in STRATEGIES.values() if info.needs_samples]
    + [(info.name, "feats_N_D", "features") for info in STRATEGIES.values() if info.needs_features],
)
def test_missing_samples_or_features_name_the_strategy(name: str, field: str, needed: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}' needs .*{needed}"):
        select(name, _with(_evidence(), **{field: None}), k=3)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("probs_N_C", np.array([[0.5, np.nan]] * 4), "NaN"),
        ("probs_N_C", np.array([[2.0, -1.0]] * 4), r"\[0, 1\]"),
        ("probs_N_C", np.array([[0.5, 0.6]] * 4), "sum to 1"),
        ("probs_N_C", np.array([[1, 0]] * 4), "float"),
        ("labels_N", np.array([0, 1, 2, -1]), "labels_N must be -1 or a class"),
        ("feats_N_D", np.array([[np.inf], [0], [0], [0]]), "feats_N_D has NaN"),
    ],
)
def test_bad_values_raise(field: str, value: np.ndarray, message: str) -> None:
    evidence = Evidence(np.array([[0.5, 0.5]] * 4), np.zeros(4, bool), labels_N=np.full(4, -1))
    with pytest.raises(ValueError, match=message):
        select("confidence", _with(evidence, **{field: value}), k=2)


def test_a_newly_registered_strategy_is_listed_checked_and_selectable(monkeypatch) -> None:
    monkeypatch.setattr(strategies, "STRATEGIES", Registry("strategy", None, load=lambda registry: [
        registry.add(name, info) for name, info in STRATEGIES.items()]))

    @register("first_rows", needs_samples=True, description="The first unlabelled rows.")
    def _first_rows(evidence: Evidence, *, k: int, rng: np.random.Generator) -> Selection:
        pool_P = np.flatnonzero(~evidence.labelled_N)
        return strategies.top_k(-pool_P.astype(float), pool_P, k=k)

    evidence = _evidence()
    assert "first_rows" in strategies.STRATEGIES and "first_rows" not in STRATEGIES
    first_P = np.flatnonzero(~evidence.labelled_N)[:3]
    np.testing.assert_array_equal(select("first_rows", evidence, k=3).indices, first_P)
    with pytest.raises(ValueError, match="'first_rows' needs posterior samples"):
        select("first_rows", _with(evidence, samples_S_N_C=None), k=3)
    register("first_rows", description="again")(lambda evidence, *, k, rng: None)
    assert strategies.STRATEGIES["first_rows"].function is _first_rows


def test_top_k_breaks_ties_by_row_index() -> None:
    pool_P = np.arange(0, 2000, 2)
    selection = strategies.top_k(np.zeros(pool_P.size), pool_P, k=5)
    assert list(selection.indices) == [0, 2, 4, 6, 8]


# --- behaviour ----------------------------------------------------------------------------------

CONFIDENT = [0.9, 0.05, 0.05]


@pytest.mark.parametrize("name", ["confidence", "margin", "entropy"])
def test_uncertainty_strategies_pick_the_most_uncertain_unlabelled_rows(name: str) -> None:
    uniform, unsure = [1 / 3] * 3, [0.5, 0.4, 0.1]
    probs_N_C = np.array([uniform, CONFIDENT, unsure, CONFIDENT, CONFIDENT, uniform])
    labelled_N = np.array([True, False, False, False, False, False])
    selection = select(name, Evidence(probs_N_C, labelled_N), k=2)
    assert list(selection.indices) == [5, 2]


def test_confidence_margin_and_entropy_differ_with_three_classes() -> None:
    probs_N_C = np.array([[0.5, 0.5, 0.0], [0.4, 0.3, 0.3]])
    evidence = Evidence(probs_N_C, np.zeros(2, bool))
    assert select("margin", evidence, k=1).indices[0] == 0
    assert select("confidence", evidence, k=1).indices[0] == 1
    assert select("entropy", evidence, k=1).indices[0] == 1


def test_two_classes_confidence_margin_and_entropy_rank_alike() -> None:
    rng = np.random.default_rng(1)
    p_N = rng.random(500)
    evidence = Evidence(np.stack([p_N, 1 - p_N], axis=1), rng.random(500) < 0.2)
    names = ("confidence", "margin", "entropy")
    rankings = [select(name, evidence, k=60).indices for name in names]
    np.testing.assert_array_equal(rankings[0], rankings[1])
    np.testing.assert_array_equal(rankings[0], rankings[2])


def test_bald_prefers_disagreeing_samples_over_agreed_uncertainty() -> None:
    # Row 1: every sample is unsure. Row 2: each sample is sure, but they disagree. Same mean.
    samples_S_N_C = np.array(
        [[[0.95, 0.05], [0.5, 0.5], [1.0, 0.0]], [[0.95, 0.05], [0.5, 0.5], [0.0, 1.0]]] * 2
    )
    evidence = Evidence(samples_S_N_C.mean(axis=0), np.zeros(3, bool), samples_S_N_C=samples_S_N_C)
    assert list(select("bald", evidence, k=3).indices) == [2, 0, 1]
    assert select("bald", evidence, k=1).scores[0] == pytest.approx(np.log(2))
    assert select("entropy", evidence, k=1).indices[0] == 1  # entropy alone cannot tell them apart


def test_bald_scores_do_not_depend_on_the_chunk_size() -> None:
    samples_S_N_C = _evidence(n_rows=101).samples_S_N_C.astype(np.float64)
    mean_N_C = samples_S_N_C.mean(axis=0)
    mean_entropy_N = np.mean([entropy_scores(s_N_C) for s_N_C in samples_S_N_C], axis=0)
    expected_N = entropy_scores(mean_N_C) - mean_entropy_N
    np.testing.assert_allclose(bald_scores(samples_S_N_C, chunk_rows=7), expected_N, atol=1e-12)
    np.testing.assert_allclose(bald_scores(samples_S_N_C, chunk_rows=1000), expected_N, atol=1e-12)


def test_diversity_spreads_a_batch_over_feature_clusters() -> None:
    # Two tight clusters of 40 equally uncertain rows; cluster A (rows 0-39) very slightly more so.
    rng = np.random.default_rng(2)
    feats_N_D = np.concatenate([rng.normal(0, 0.01, (40, 8)), rng.normal(5, 0.01, (40, 8))])
    p_N = np.r_[np.full(40, 0.50), np.full(40, 0.51)]
    probs_N_C = np.stack([p_N, 1 - p_N], axis=1)
    evidence = Evidence(probs_N_C, np.zeros(80, bool), feats_N_D=feats_N_D.astype(np.float32))
    assert (select("margin", evidence, k=6).indices < 40).all()
    picked = select("diversity", evidence, k=6).indices
    assert (picked < 40).sum() == 3 and (picked >= 40).sum() == 3
    assert picked[0] == 0  # seeded by, and ordered from, the most uncertain


def test_class_balanced_hunts_the_class_with_fewest_labels() -> None:
    # Class 2 has one label, classes 0 and 1 ten each; unlabelled rows are equally uncertain.
    rare, common = [0.1, 0.3, 0.6], [0.6, 0.3, 0.1]
    labelled_rows = [[1.0, 0, 0]] * 10 + [[0, 1.0, 0]] * 10 + [[0, 0, 1.0]]
    probs_N_C = np.array(labelled_rows + [common] * 6 + [rare] * 3)
    labelled_N = np.arange(30) < 21
    labels_N = np.r_[np.zeros(10), np.ones(10), 2, np.full(9, -1)].astype(np.int64)
    evidence = Evidence(probs_N_C, labelled_N, labels_N=labels_N)
    assert (select("margin", evidence, k=3).indices < 27).all()
    selection = select("class_balanced", evidence, k=5)
    assert list(selection.indices[:3]) == [27, 28, 29]
    assert set(selection.indices[3:]) <= set(range(21, 27))
    # Without labels_N the counts come from the predictions of the labelled rows: same answer.
    unlabelled_classes = select("class_balanced", _with(evidence, labels_N=None), k=5)
    np.testing.assert_array_equal(unlabelled_classes.indices, selection.indices)


def test_bald_on_a_million_rows_stays_within_memory() -> None:
    n_rows = 1_000_000
    samples_S_N_C = np.random.default_rng(0).random((16, n_rows, 3), dtype=np.float32)
    probs_N_C = np.full((n_rows, 3), 1 / 3, np.float32)
    evidence = Evidence(probs_N_C, np.zeros(n_rows, bool), samples_S_N_C)
    tracemalloc.start()
    try:
        selection = select("bald", evidence, k=20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert selection.indices.size == 20
    assert peak < 300e6, f"bald peaked at {peak / 1e6:.0f} MB beyond its input"


def test_batchbald_skips_a_duplicate_that_bald_takes() -> None:
    # Rows 0 and 1 are the same question (identical samples that disagree completely); row 2's
    # samples disagree along another split, less sharply; rows 3-5 agree with each other.
    pytest.importorskip("batchbald_redux")
    split_S = np.repeat([1.0, 0.0], 4)
    other_S = np.tile([0.9, 0.1], 4)
    p_S_N = np.stack([split_S, split_S, other_S, *[np.full(8, 0.7)] * 3], axis=1)
    samples_S_N_C = np.stack([p_S_N, 1 - p_S_N], axis=2)
    evidence = Evidence(samples_S_N_C.mean(axis=0), np.zeros(6, bool), samples_S_N_C=samples_S_N_C)
    assert list(select("bald", evidence, k=2).indices) == [0, 1]
    selection = select("batchbald", evidence, k=2)
    assert list(selection.indices) == [0, 2]
    assert selection.scores[0] == pytest.approx(np.log(2))
    assert 0 < selection.scores[1] < selection.scores[0]
    # The objects it hid from the garbage collector's many collections are given back to it.
    assert gc.get_freeze_count() == 0
