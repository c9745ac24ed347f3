"""An epoch trains on at most ``MAX_TRAINING_LABELS`` labels: past it, a sample that keeps each
category up to an equal share, rare ones whole (tenth attack: 607,000 labels held the one epoch
worker in one model fit for over 5 minutes, with no progress report, at 4 GB)."""

from __future__ import annotations

import numpy as np

from slidelabel.services.learning_loop import TrainingSet, sampled


def _labels(counts: dict[int, int]) -> TrainingSet:
    columns_L = np.repeat(np.array(list(counts)), list(counts.values()))
    np.random.default_rng(1).shuffle(columns_L)
    feats_L_D = np.column_stack([np.arange(columns_L.size), columns_L]).astype(np.float32)
    return TrainingSet(feats_L_D, columns_L)


def test_a_small_set_is_trained_on_whole():
    data = _labels({0: 40, 1: 60})
    assert sampled(data, 100, np.random.default_rng(0)) is data


def test_a_large_set_keeps_the_rare_categories_whole_and_shares_the_rest():
    data = _labels({0: 1_000, 1: 50, 2: 200_000, 3: 30_000})
    kept = sampled(data, 10_000, np.random.default_rng(0))
    counts = dict(zip(*np.unique(kept.columns_L, return_counts=True), strict=True))
    assert counts == {0: 1_000, 1: 50, 2: 4_475, 3: 4_475}
    rows_M = kept.feats_L_D[:, 0].astype(int)
    assert (np.diff(rows_M) > 0).all()  # original order, no row twice
    np.testing.assert_array_equal(data.columns_L[rows_M], kept.columns_L)  # features stay with their labels
    again = sampled(data, 10_000, np.random.default_rng(0))
    np.testing.assert_array_equal(again.feats_L_D, kept.feats_L_D)  # the epoch's seed gives the same sample

