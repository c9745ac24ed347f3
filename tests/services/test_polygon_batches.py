"""One shape per superpixel is traced in batches of nearby superpixels: every superpixel once, at
most SUPERPIXELS_PER_PASS a batch, and windows that scattered superpixels do not blow up."""

from __future__ import annotations

import numpy as np

from slidelabel.services.polygons import MIN_WINDOW_PX, SUPERPIXELS_PER_PASS, WINDOW_SLACK, nearby_batches


def _window_area(box_M_4: np.ndarray) -> int:
    return int((box_M_4[:, 2].max() - box_M_4[:, 0].min()) * (box_M_4[:, 3].max() - box_M_4[:, 1].min()))


def test_dense_superpixels_are_batched_once_each_and_bounded():
    per, side = 160, 12  # 25,600 superpixels tiling a 1,920 px square
    col, row = np.meshgrid(np.arange(per), np.arange(per))
    box_M_4 = np.stack([col.ravel() * side, row.ravel() * side, (col.ravel() + 1) * side, (row.ravel() + 1) * side], 1)
    batches = nearby_batches(box_M_4)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(per * per))
    assert max(b.size for b in batches) <= SUPERPIXELS_PER_PASS
    # Tiling superpixels: the windows together read the map less than twice (cells cut by the
    # count limit are read by two passes).
    assert sum(_window_area(box_M_4[b]) for b in batches) < 2 * (per * side) ** 2


def test_scattered_superpixels_read_little_more_than_their_boxes():
    rng = np.random.default_rng(0)
    corner_M_2 = rng.integers(0, 60_000, (300, 2))
    box_M_4 = np.concatenate([corner_M_2, corner_M_2 + 20], axis=1)
    batches = nearby_batches(box_M_4)
    assert np.array_equal(np.sort(np.concatenate(batches)), np.arange(300))
    for batch in batches:
        assert _window_area(box_M_4[batch]) <= max(WINDOW_SLACK * 400 * batch.size, MIN_WINDOW_PX)
    # Reading whole rows as before would have read about 60,000 x 60,000 px.
    assert sum(_window_area(box_M_4[b]) for b in batches) < 300 * MIN_WINDOW_PX
