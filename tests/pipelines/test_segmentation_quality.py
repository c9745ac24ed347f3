"""Superpixel quality metrics: exact values on hand-made arrays, then a MoNuSeg sanity check."""

from __future__ import annotations

from itertools import product
from pathlib import Path

import numpy as np
import pytest
from skimage.io import imread
from skimage.segmentation import slic

from slidelabel.pipelines.segmentation_quality import (
    achievable_segmentation_accuracy,
    boundary_map,
    boundary_precision,
    boundary_recall,
    count_superpixels,
    truth_segments,
    undersegmentation_error,
)

LABEL_DTYPES = [np.uint8, np.uint16, np.int32, np.int64]


def _halves(shape: tuple[int, int], split_col: int) -> np.ndarray:
    """Two segments: columns < split_col are 0, the rest 1."""
    labels = np.zeros(shape, dtype=np.int32)
    labels[:, split_col:] = 1
    return labels


def _blobs(seed: int, shape: tuple[int, int] = (40, 50)) -> np.ndarray:
    """A truth segmentation with several irregular nuclei on a background."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for row, col, radius in zip(
        rng.integers(0, shape[0], 6), rng.integers(0, shape[1], 6), rng.integers(3, 8, 6)
    ):
        mask |= (rows - row) ** 2 + (cols - col) ** 2 <= radius**2
    return truth_segments(mask)


def _use_by_loops(labels: np.ndarray, truth: np.ndarray) -> float:
    total = 0
    for segment in np.unique(truth):
        inside = truth == segment
        for superpixel in np.unique(labels[inside]):
            in_superpixel = labels == superpixel
            overlap = np.count_nonzero(in_superpixel & inside)
            total += min(overlap, np.count_nonzero(in_superpixel) - overlap)
    return total / labels.size


def _asa_by_loops(labels: np.ndarray, truth: np.ndarray) -> float:
    best = [
        np.bincount(truth[labels == superpixel]).max() for superpixel in np.unique(labels)
    ]
    return sum(best) / labels.size


def test_boundary_map_marks_the_top_or_left_pixel_of_each_label_change() -> None:
    labels = np.array([[0, 0, 0], [0, 1, 0], [0, 0, 0]])
    expected = np.array([[0, 1, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(boundary_map(labels), expected)


def test_boundary_map_of_one_segment_is_empty() -> None:
    assert not boundary_map(np.full((5, 7), 3)).any()


@pytest.mark.parametrize("dtype", LABEL_DTYPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_perfect_segmentation_scores_perfectly(dtype: type, seed: int) -> None:
    truth = _blobs(seed)
    # Same partition, other label values: the metrics must not care about the numbering.
    labels = (truth.max() - truth).astype(dtype)
    for tolerance_px in (0, 2):
        assert boundary_recall(labels, truth, tolerance_px=tolerance_px) == 1.0
        assert boundary_precision(labels, truth, tolerance_px=tolerance_px) == 1.0
    assert undersegmentation_error(labels, truth) == 0.0
    assert achievable_segmentation_accuracy(labels, truth) == 1.0


def test_refinement_of_the_truth_has_full_recall_and_no_leak() -> None:
    truth = _blobs(2)
    rows, cols = np.indices(truth.shape)
    labels = truth * 100 + (rows // 5) * 10 + cols // 5
    assert boundary_recall(labels, truth, tolerance_px=0) == 1.0
    assert boundary_precision(labels, truth, tolerance_px=0) < 1.0
    assert undersegmentation_error(labels, truth) == 0.0
    assert achievable_segmentation_accuracy(labels, truth) == 1.0


@pytest.mark.parametrize(("shift", "tolerance_px"), product([-3, -1, 0, 1, 2, 3], [0, 1, 2]))
def test_shifted_boundary_is_recalled_within_tolerance(shift: int, tolerance_px: int) -> None:
    truth = _halves((8, 8), 4)
    labels = _halves((8, 8), 4 + shift)
    expected = 1.0 if abs(shift) <= tolerance_px else 0.0
    assert boundary_recall(labels, truth, tolerance_px=tolerance_px) == expected
    assert boundary_precision(labels, truth, tolerance_px=tolerance_px) == expected


@pytest.mark.parametrize(("tolerance_px", "recall"), [(0, 4 / 8), (1, 5 / 8), (2, 6 / 8), (4, 1.0)])
def test_boundary_recalled_on_one_half_only(tolerance_px: int, recall: float) -> None:
    # Truth: a vertical boundary over all 8 rows (pixels (r, 3)). Superpixels follow it on rows
    # 0-3 and put rows 4-7 in one superpixel, which adds a horizontal boundary on row 3.
    truth = _halves((8, 8), 4)
    labels = truth.copy()
    labels[4:, :] = 2
    assert boundary_recall(labels, truth, tolerance_px=tolerance_px) == pytest.approx(recall)


def test_boundary_precision_on_one_half_only() -> None:
    truth = _halves((8, 8), 4)
    labels = truth.copy()
    labels[4:, :] = 2
    # 11 superpixel boundary pixels ((0..3, 3) and row 3), 4 of them on the truth boundary.
    assert boundary_precision(labels, truth, tolerance_px=0) == pytest.approx(4 / 11)


def test_single_superpixel_recalls_nothing_and_leaks_the_smaller_sides() -> None:
    truth = np.zeros((4, 4), dtype=np.int32)
    truth[1:3, 1:3] = 1  # a 4-pixel nucleus on 12 pixels of background
    labels = np.zeros((4, 4), dtype=np.int32)
    assert boundary_recall(labels, truth, tolerance_px=2) == 0.0
    # Nucleus: min(4, 16 - 4) = 4; background: min(12, 16 - 12) = 4.
    assert undersegmentation_error(labels, truth) == pytest.approx(8 / 16)
    assert achievable_segmentation_accuracy(labels, truth) == pytest.approx(12 / 16)
    with pytest.raises(ValueError, match="single superpixel"):
        boundary_precision(labels, truth)


def test_use_of_a_straddling_superpixel_counts_its_smaller_part() -> None:
    truth = _halves((4, 4), 2)
    labels = _halves((4, 4), 3)
    # Superpixel 0 (12 px) has 8 px in segment 0 and 4 in segment 1: min(8, 4) + min(4, 8).
    assert undersegmentation_error(labels, truth) == pytest.approx(8 / 16)
    assert achievable_segmentation_accuracy(labels, truth) == pytest.approx(12 / 16)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_use_and_asa_match_a_loop_over_segments(seed: int) -> None:
    truth = _blobs(seed)
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(truth.shape)
    labels = (rows // 6) * 20 + (cols + rng.integers(0, 3, truth.shape)) // 7
    assert undersegmentation_error(labels, truth) == pytest.approx(_use_by_loops(labels, truth))
    assert achievable_segmentation_accuracy(labels, truth) == pytest.approx(
        _asa_by_loops(labels, truth)
    )


def test_label_values_do_not_matter() -> None:
    truth = _blobs(3)
    rows, cols = np.indices(truth.shape)
    labels = (rows // 6) * 20 + cols // 7
    odd_labels = labels.astype(np.int64) * -(10**12) - 5
    for metric in (undersegmentation_error, achievable_segmentation_accuracy, boundary_recall):
        assert metric(odd_labels, truth) == metric(labels, truth)


def test_truth_segments_numbers_nuclei_and_keeps_background_as_zero() -> None:
    mask = np.zeros((6, 6), dtype=np.uint8)
    mask[0:2, 0:2] = 255
    mask[2, 2] = 255  # touches the first nucleus by a corner only
    mask[4:6, 3:6] = 255
    segments_8 = truth_segments(mask)
    segments_4 = truth_segments(mask, connectivity=1)
    assert segments_8.dtype == np.int32 and segments_8.shape == mask.shape
    assert np.all(segments_8[mask == 0] == 0)
    assert segments_8.max() == 2 and count_superpixels(segments_8) == 3
    assert segments_4.max() == 3 and count_superpixels(segments_4) == 4


def test_count_superpixels_counts_distinct_values() -> None:
    assert count_superpixels(np.array([[4, 4, 9], [-1, 9, 9]], dtype=np.int16)) == 3


@pytest.mark.parametrize(
    ("labels", "truth", "message"),
    [
        (np.zeros((4, 4), int), np.zeros((4, 5), int), "same shape"),
        (np.zeros((4, 4), float), _halves((4, 4), 2), "integer labels"),
        (np.zeros((4, 4, 3), int), _halves((4, 4), 2), "2-D"),
        (np.zeros((0, 4), int), np.zeros((0, 4), int), "empty"),
        (_halves((4, 4), 2), np.zeros((4, 4), int), "truth has a single segment"),
    ],
)
def test_bad_inputs_are_refused(labels: np.ndarray, truth: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        boundary_recall(labels, truth)


@pytest.mark.parametrize("tolerance_px", [-1, 1.5, True])
def test_bad_tolerance_is_refused(tolerance_px: object) -> None:
    truth = _halves((4, 4), 2)
    with pytest.raises(ValueError, match="tolerance_px"):
        boundary_recall(truth, truth, tolerance_px=tolerance_px)


def test_bad_connectivity_is_refused() -> None:
    with pytest.raises(ValueError, match="connectivity"):
        truth_segments(np.zeros((3, 3), bool), connectivity=3)


def test_slic_beats_a_square_grid_of_the_same_count_on_monuseg(monuseg_dir: Path) -> None:
    image_path = sorted((monuseg_dir / "images").glob("*.png"))[0]
    rgb = imread(image_path)[..., :3]
    truth = truth_segments(imread(monuseg_dir / "masks" / image_path.name))
    labels = slic(rgb, n_segments=2000, compactness=10, start_label=0)
    n_superpixels = count_superpixels(labels)
    assert 1500 <= n_superpixels <= 2500
    # The grid step is rounded down, so the grid gets at least as many superpixels as SLIC.
    step = int(np.sqrt(truth.size / n_superpixels))
    rows, cols = np.indices(truth.shape)
    grid = (rows // step) * (-(-truth.shape[1] // step)) + cols // step
    assert count_superpixels(grid) >= n_superpixels

    slic_recall = boundary_recall(labels, truth, tolerance_px=2)
    grid_recall = boundary_recall(grid, truth, tolerance_px=2)
    assert slic_recall > 0.7
    assert slic_recall > grid_recall + 0.2
    assert undersegmentation_error(labels, truth) < undersegmentation_error(grid, truth)
    assert achievable_segmentation_accuracy(labels, truth) > achievable_segmentation_accuracy(
        grid, truth
    )
