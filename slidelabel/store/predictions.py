"""One epoch's predictions for one slide, as a compressed ``.npz`` file written atomically.

Arrays, row ``i`` = superpixel ``i + 1``:

- ``category_ids_C`` int64: the project's category id of each model column;
- ``probs_N_C`` float16: class probabilities (rows of superpixels without features are 0);
- ``predicted_N`` int64: the category id of the most probable column, 0 where nothing was predicted;
- ``certainty_N`` float32: the probability of the predicted column (0 where nothing was predicted).
"""

from __future__ import annotations

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
