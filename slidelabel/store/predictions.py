"""One epoch's predictions for one slide, as a compressed ``.npz`` file written atomically.

Arrays, row ``i`` = superpixel ``i + 1``:

- ``category_ids_C`` int64: the project's category id of each model column;
- ``probs_N_C`` float16: class probabilities (rows of superpixels without features are 0);
- ``predicted_N`` int64: the category id of the most probable column, 0 where nothing was predicted;
- ``certainty_N`` float32: the probability of the predicted column (0 where nothing was predicted).

The ids are those of the epoch's time: read them over the project's categories of now with
:meth:`SlidePredictions.merged` (a category merged since into another has no id of its own).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slidelabel.errors import OutputError
from slidelabel.store.atomic import atomic_path


@dataclass(frozen=True)
class SlidePredictions:
    category_ids_C: np.ndarray
    probs_N_C: np.ndarray

    @property
    def predicted_N(self) -> np.ndarray:
        """Category id per superpixel; 0 where the row has no probabilities."""
        has = self.probs_N_C.sum(axis=1) > 0
        return np.where(has, self.category_ids_C[self.probs_N_C.argmax(axis=1)], 0).astype(np.int64)

    @property
    def certainty_N(self) -> np.ndarray:
        return self.probs_N_C.max(axis=1, initial=0).astype(np.float32)

    def merged(self, into: Mapping[int, int]) -> SlidePredictions:
        """These predictions over the categories as they are after merges: ``into`` maps a
        merged category's id to the one it was merged into. The column of a merged category is
        added to its target's (the probability of the union, what the model says of the
        category as it is now), or takes the target's id where the model has no column of it;
        the columns keep their order, each merged one at its first place. Predicted category and
        certainty follow from the summed columns. ``self`` when no column was merged.

        >>> p = SlidePredictions(np.array([7, 8, 9]), np.array([[0.3, 0.4, 0.3]], np.float32))
        >>> merged = p.merged({9: 7})
        >>> merged.category_ids_C.tolist(), merged.predicted_N.tolist()
        ([7, 8], [7])
        """
        ids_C = self.category_ids_C.tolist()
        if not any(c in into for c in ids_C):
            return self
        ids_K = list(dict.fromkeys(into.get(c, c) for c in ids_C))
        column_of = {category_id: k for k, category_id in enumerate(ids_K)}
        probs_N_K = np.zeros((self.probs_N_C.shape[0], len(ids_K)), np.float32)
        for c, category_id in enumerate(ids_C):
            probs_N_K[:, column_of[into.get(category_id, category_id)]] += self.probs_N_C[:, c]
        return SlidePredictions(np.array(ids_K, np.int64), probs_N_K)


def write_predictions(path: Path, predictions: SlidePredictions) -> None:
    """Write ``predictions`` to ``path`` (folders created) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.savez_compressed(
            out, category_ids_C=np.asarray(predictions.category_ids_C, np.int64),
            probs_N_C=np.asarray(predictions.probs_N_C, np.float16), predicted_N=predictions.predicted_N,
            certainty_N=predictions.certainty_N,
        )


def read_predictions(path: Path) -> SlidePredictions:
    """The predictions at ``path``; :class:`OutputError` when missing or not such a file."""
    try:
        with np.load(path) as data:
            return SlidePredictions(data["category_ids_C"], data["probs_N_C"].astype(np.float32))
    except (OSError, KeyError, ValueError) as error:
        raise OutputError(f"{path} holds no slidelabel predictions: {error}") from None
