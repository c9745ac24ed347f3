"""A slide's per-superpixel predictions as Parquet (``predictions.parquet`` of ``slidelabel predict``).

Columns, one row per superpixel: ``superpixel`` (uint32 id), ``predicted`` (the category name,
null where the superpixel has no features), ``certainty`` (float32, the calibrated probability of
the predicted category, 0 where nothing was predicted) and ``p_<category>`` (float32) per category
of the model, in its order.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from slidelabel.errors import OutputError
from slidelabel.store.atomic import atomic_path


def write_prediction_table(path: Path, probs_N_K: np.ndarray, has_N: np.ndarray, names_K: list[str]) -> None:
    """Write the predictions of superpixels 1..N to ``path`` atomically.

    Parameters
    ----------
    probs_N_K : (N, K) float calibrated probabilities; row ``i`` is superpixel ``i + 1``.
    has_N : (N,) bool, the superpixels that were predicted (the others have no features).
    names_K : the K category names, in column order.
    """
    probs_N_K = np.asarray(probs_N_K, np.float32)
    if probs_N_K.ndim != 2 or probs_N_K.shape != (has_N.size, len(names_K)):
        raise ValueError(f"probabilities of shape {probs_N_K.shape} do not match {has_N.size} superpixels "
                         f"and {len(names_K)} categories")
    predicted_N = np.asarray(names_K, dtype=object)[probs_N_K.argmax(axis=1)] if names_K else np.full(has_N.size, None)
    columns = {
        "superpixel": pa.array(np.arange(1, has_N.size + 1, dtype=np.uint32)),
        "predicted": pa.array(np.where(has_N, predicted_N, None), pa.string()),
        "certainty": pa.array(np.where(has_N, probs_N_K.max(axis=1, initial=0), 0).astype(np.float32)),
    } | {f"p_{name}": pa.array(probs_N_K[:, k]) for k, name in enumerate(names_K)}
    with atomic_path(path) as tmp:
        try:
            pq.write_table(pa.table(columns), tmp, compression="zstd")
        except OSError as error:
            raise OutputError(f"cannot write {path}: {error}") from error
