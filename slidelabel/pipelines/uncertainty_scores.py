"""Per-row uncertainty scores of a model's predictions, the kernels of the certainty strategies
(:mod:`slidelabel.pipelines.strategies`).

Each is computed over chunks of :data:`CHUNK_ROWS` rows, so that a million superpixels with many
posterior samples never need more than a few chunk-sized temporaries. Higher is more uncertain.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from scipy.special import entr

from slidelabel.errors import ParameterError

#: Rows per chunk of the per-row kernels. 65,536 rows x 16 samples x 5 classes in float64 is 42 MB,
#: and the kernels keep only a few (rows, classes) arrays of a chunk alive at a time.
CHUNK_ROWS = 65_536
def confidence_scores(probs_N_C: np.ndarray, *, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """``(N,)`` float64 least-confidence uncertainty, ``1 - max_c p_c`` (0 = certain)."""
    scores_N = np.empty(probs_N_C.shape[0], np.float64)
    for rows in row_chunks(probs_N_C.shape[0], chunk_rows):
        scores_N[rows] = 1.0 - probs_N_C[rows].max(axis=1)
    return scores_N


def margin_scores(probs_N_C: np.ndarray, *, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """``(N,)`` float64 ``-(p1 - p2)``, minus the gap between the two largest probabilities.

    0 when the two most likely classes are tied, -1 when the model is certain.
    """
    classes = probs_N_C.shape[1]
    scores_N = np.empty(probs_N_C.shape[0], np.float64)
    for rows in row_chunks(probs_N_C.shape[0], chunk_rows):
        top2_n_2 = np.partition(probs_N_C[rows], classes - 2, axis=1)[:, classes - 2 :]
        scores_N[rows] = top2_n_2[:, 0].astype(np.float64) - top2_n_2[:, 1]
    return scores_N


def entropy_scores(probs_N_C: np.ndarray, *, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """``(N,)`` float64 predictive entropy ``-sum_c p_c ln p_c`` in nats (0 = certain)."""
    scores_N = np.empty(probs_N_C.shape[0], np.float64)
    for rows in row_chunks(probs_N_C.shape[0], chunk_rows):
        scores_N[rows] = entr(probs_N_C[rows].astype(np.float64)).sum(axis=1)
    return scores_N


def bald_scores(samples_S_N_C: np.ndarray, *, chunk_rows: int = CHUNK_ROWS) -> np.ndarray:
    """``(N,)`` float64 BALD: mutual information between a row's label and the model, in nats.

    ``H[mean_s p_s] - mean_s H[p_s]`` (Houlsby et al. 2011): high where the posterior samples
    disagree with each other, 0 where they agree, however uncertain each of them is. Memory is
    a few ``(chunk_rows, C)`` float64 arrays, whatever S and N.
    """
    n_samples, n_rows, classes = samples_S_N_C.shape
    scores_N = np.empty(n_rows, np.float64)
    for rows in row_chunks(n_rows, chunk_rows):
        mean_n_C = np.zeros((rows.stop - rows.start, classes), np.float64)
        mean_entropy_n = np.zeros(rows.stop - rows.start, np.float64)
        for sample_n_C in samples_S_N_C[:, rows]:
            sample_n_C = sample_n_C.astype(np.float64)
            mean_n_C += sample_n_C
            mean_entropy_n += entr(sample_n_C).sum(axis=1)
        mean_n_C /= n_samples
        scores_N[rows] = entr(mean_n_C).sum(axis=1) - mean_entropy_n / n_samples
    # Jensen makes it >= 0; only rounding can take agreeing samples below.
    return np.maximum(scores_N, 0.0, out=scores_N)


def row_chunks(n_rows: int, chunk_rows: int) -> Iterator[slice]:
    """Consecutive slices of at most ``chunk_rows`` of ``n_rows`` rows."""
    if chunk_rows < 1:
        raise ParameterError(f"chunk_rows must be >= 1, got {chunk_rows}")
    for start in range(0, n_rows, chunk_rows):
        yield slice(start, min(start + chunk_rows, n_rows))
