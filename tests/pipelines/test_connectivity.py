"""Connectivity enforcement on hand-made label maps whose right answer is known."""

import numpy as np
import pytest

from slidelabel.pipelines.connectivity import enforce_connectivity


def test_connected_superpixels_are_unchanged():
    labels = np.array([[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 4, 4]], np.int64)
    out = enforce_connectivity(labels, np.ones(labels.shape, bool))
    np.testing.assert_array_equal(out, labels)


def test_stray_piece_joins_the_neighbour_with_the_longest_border():
    # Label 2 has a main piece on the right and a one-pixel stray inside label 1's area.
    labels = np.array([
        [1, 1, 1, 2, 2],
        [1, 2, 1, 2, 2],
        [1, 1, 3, 2, 2],
    ], np.int64)
    out = enforce_connectivity(labels, np.ones(labels.shape, bool))
    # The stray 2 at (1, 1) touches 1 on three sides and 1 once more below: it becomes 1.
    assert out[1, 1] == 1
    assert (out == 2).sum() == 6


def test_unreached_pixels_are_filled_and_ties_go_to_the_lower_id():
    labels = np.array([[5, -1, 7]], np.int64)
    out = enforce_connectivity(labels, np.ones(labels.shape, bool))
    np.testing.assert_array_equal(out, [[5, 5, 7]])


def test_hole_without_neighbours_is_dropped_and_outside_stays_zero():
    labels = np.array([[-1, 0, 4, 4]], np.int64)
    mask = np.array([[True, False, True, True]])
    out = enforce_connectivity(labels, mask)
    np.testing.assert_array_equal(out, [[0, 0, 4, 4]])


def test_pieces_below_min_size_join_a_neighbour():
    labels = np.array([[1, 1, 1, 9], [1, 1, 1, 1]], np.int64)
    out = enforce_connectivity(labels, np.ones(labels.shape, bool), min_size=2)
    assert not (out == 9).any()
    assert (out == 1).all()


def test_every_output_superpixel_is_one_component_on_random_labels():
    from skimage.measure import label

    rng = np.random.default_rng(0)
    labels = rng.integers(1, 6, size=(40, 40)).astype(np.int64)
    out = enforce_connectivity(labels, np.ones(labels.shape, bool), min_size=3)
    pieces = label(out, connectivity=1, background=0)
    assert pieces.max() == len(np.unique(out[out > 0]))


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        enforce_connectivity(np.zeros((2, 2), np.int64), np.ones((2, 3), bool))
