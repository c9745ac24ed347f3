"""Cohen's kappa and confusion tables against scikit-learn, and the pairing of users' labels."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score, confusion_matrix

from slidelabel.services.agreement import cohen_kappa, confusion_table, pair_agreements
from slidelabel.services.reviews import majority_labels


@pytest.mark.parametrize("seed, n, k, agree", [(0, 20_000, 5, 0.7), (1, 50_000, 3, 0.2), (2, 1_000, 8, 0.95),
                                                (3, 7, 2, 0.5)])
def test_kappa_and_table_match_sklearn_on_random_ratings(seed, n, k, agree):
    rng = np.random.default_rng(seed)
    categories_K = rng.choice(np.arange(10, 100), size=k, replace=False)
    first_N = rng.choice(categories_K, size=n, p=rng.dirichlet(np.ones(k)))
    second_N = np.where(rng.random(n) < agree, first_N, rng.choice(categories_K, size=n))
    table = confusion_table(first_N, second_N, categories_K)
    np.testing.assert_array_equal(table, confusion_matrix(first_N, second_N, labels=categories_K))
    assert cohen_kappa(table) == pytest.approx(cohen_kappa_score(first_N, second_N), abs=1e-12)


def test_perfect_agreement_is_one():
    ratings = np.array([3, 5, 5, 7, 3])
    assert cohen_kappa(confusion_table(ratings, ratings, np.array([3, 5, 7]))) == pytest.approx(1.0)


def test_chance_agreement_is_zero_and_systematic_disagreement_negative():
    # Independent raters: the observed agreement equals the chance agreement exactly.
    assert cohen_kappa(np.array([[25, 25], [25, 25]])) == pytest.approx(0.0)
    assert cohen_kappa(np.array([[0, 10], [10, 0]])) == pytest.approx(-1.0)


@pytest.mark.filterwarnings("ignore::UserWarning")  # sklearn warns that kappa is undefined: the point here
def test_a_single_shared_category_is_undefined_like_sklearn():
    ratings = np.array([4, 4, 4])
    table = confusion_table(ratings, ratings, np.array([4, 9]))
    assert table.tolist() == [[3, 0], [0, 0]]
    assert math.isnan(cohen_kappa(table))
    assert math.isnan(cohen_kappa_score(ratings, ratings))
    assert math.isnan(cohen_kappa(np.zeros((2, 2))))


def test_unknown_category_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="category 6"):
        confusion_table(np.array([1, 6]), np.array([1, 1]), np.array([1, 2]))
    with pytest.raises(ValueError, match="one length"):
        confusion_table(np.array([1, 2]), np.array([1]), np.array([1, 2]))
    with pytest.raises(ValueError, match="square"):
        cohen_kappa(np.ones((2, 3)))


def test_pairs_compare_only_superpixels_both_labelled():
    users = np.array([1, 1, 1, 2, 2, 2, 3])
    keys = np.array([10, 11, 12, 11, 12, 13, 99])
    cats = np.array([5, 5, 6, 5, 5, 6, 5])
    (pair,) = pair_agreements(users, keys, cats, np.array([5, 6]))
    assert (pair.first_user_id, pair.second_user_id, pair.common, pair.agreed) == (1, 2, 2, 1)
    assert pair.confusion_K_K.tolist() == [[1, 0], [1, 0]]


def test_majority_breaks_ties_by_the_latest_label():
    keys = np.array([1, 1, 1, 2, 2, 3])
    cats = np.array([7, 8, 8, 7, 8, 9])
    recency = np.array([0, 1, 2, 5, 4, 3])  # key 2: one vote each, 7 is the later one
    keys_K, cats_K = majority_labels(keys, cats, recency)
    assert keys_K.tolist() == [1, 2, 3] and cats_K.tolist() == [8, 7, 9]
