"""The ``batchbald`` strategy: a batch that is jointly informative, not k copies of one question.

BALD scores each superpixel alone, so neighbouring superpixels of one uncertain region, with
near-identical posterior samples, fill a batch together although labelling one of them answers
the others. BatchBALD (Kirsch et al. 2019) adds rows greedily by the mutual information between
the *joint* labels of the batch and the model: a row whose samples duplicate a picked row's adds
(almost) nothing. The joint entropies come from ``batchbald_redux`` (an optional dependency,
imported only when the strategy runs): exact while ``C ** batch size`` fits in
:data:`JOINT_SAMPLES` configurations, estimated from that many sampled configurations beyond.

It lives here rather than in :mod:`~slidelabel.pipelines.strategies` to keep that module small;
:data:`~slidelabel.pipelines.strategies.STRATEGIES` imports this module when it is first used.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.strategies import Evidence, Selection, register, top_k
from slidelabel.pipelines.uncertainty_scores import bald_scores

__all__ = ["batchbald_selection"]

#: BatchBALD runs on the ``max(CANDIDATES_PER_PICK * k, MIN_CANDIDATES)`` unlabelled rows with the
#: highest BALD score: its cost grows with the candidates times the joint configurations, and a
#: row that is uninformative alone is rarely worth a place in a batch. Once the joint
#: configurations are sampled (beyond 12 picks with two classes) each pick loops over every
#: candidate (about 3 ms each), so candidates dominate: 300 instead of 1000 took a batch of 20 from
#: 60,000 rows (16 samples, 2 classes) from 14.0 s to 4.7 s with the same first picks.
CANDIDATES_PER_PICK = 10
MIN_CANDIDATES = 300
#: Joint label configurations kept, exactly or sampled (``num_samples`` of ``batchbald_redux``).
#: The candidates' joint probabilities take ``min(candidates, 1024) x JOINT_SAMPLES x C`` float64:
#: 98 MB for 4,096 and 3 classes.
JOINT_SAMPLES = 4096
#: Seed of the configuration sampling, fixed so a selection depends only on the evidence.
SAMPLING_SEED = 0


@contextmanager
def _collections_skip_older_objects() -> Iterator[None]:
    """Hide the objects alive now from the garbage collector while inside.

    ``batchbald_redux`` chunks its work with ``toma``, which runs a full ``gc.collect()`` after
    every chunk (about 40 per batch of 20). In a worker or the simulator, with millions of Python
    objects alive, each takes about 0.5 s; frozen objects are not traversed, so a collection then
    only visits what the selection itself made.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@register(
    "batchbald",
    needs_samples=True,
    description="Jointly informative batch: BALD that skips near-duplicates (BatchBALD).",
)
def _batchbald(evidence: Evidence, *, k: int, rng: np.random.Generator) -> Selection:
    pool_P = np.flatnonzero(~evidence.labelled_N)
    return batchbald_selection(evidence.samples_S_N_C, pool_P, k=k)


def batchbald_selection(
    samples_S_N_C: np.ndarray,
    pool_P: np.ndarray,
    *,
    k: int,
    joint_samples: int = JOINT_SAMPLES,
    candidates_per_pick: int = CANDIDATES_PER_PICK,
    min_candidates: int = MIN_CANDIDATES,
) -> Selection:
    """Greedy BatchBALD over a pool, after a BALD pre-filter.

    Parameters
    ----------
    samples_S_N_C : numpy.ndarray
        ``(S, N, C)`` float posterior samples; sample ``s`` is one model draw for every row.
    pool_P : numpy.ndarray
        ``(P,)`` int64 increasing indices of the rows that may be chosen, ``P >= 1``.
    k : int
        Batch size, ``1 <= k``; clipped to P.
    joint_samples : int, optional
        Joint label configurations kept (see :data:`JOINT_SAMPLES`).
    candidates_per_pick, min_candidates : int, optional
        The pre-filter keeps the ``max(candidates_per_pick * k, min_candidates)`` pool rows with
        the highest BALD score.

    Returns
    -------
    Selection
        Rows in the order picked; each score is what the row added to the batch's joint mutual
        information, in nats (the first is its BALD score).

    Raises
    ------
    ParameterError
        If ``batchbald_redux`` is not installed, or ``k`` or a size option is below 1.
    """
    for option, value in (
        ("k", k),
        ("joint_samples", joint_samples),
        ("candidates_per_pick", candidates_per_pick),
        ("min_candidates", min_candidates),
    ):
        if value < 1:
            raise ParameterError(f"{option} must be >= 1, got {value!r}")
    try:
        import torch
        from batchbald_redux.batchbald import get_batchbald_batch
    except ImportError as error:
        raise ParameterError(
            "the batchbald strategy needs batchbald_redux, which is not installed "
            f"({error}); install it with: pip install --no-deps batchbald-redux toma "
            "&& pip install psutil tqdm"
        ) from error
    n_candidates = max(candidates_per_pick * k, min_candidates)
    candidates = top_k(bald_scores(samples_S_N_C)[pool_P], pool_P, k=n_candidates)
    # log(0) would make 0 * log 0 a NaN in the library's entropies; the floor changes no sum.
    floor = np.finfo(np.float64).tiny
    log_probs_M_K_C = np.log(np.maximum(samples_S_N_C[:, candidates.indices].astype(np.float64), floor))
    log_probs_M_K_C = np.ascontiguousarray(log_probs_M_K_C.transpose(1, 0, 2))
    # Joint configurations beyond the exact range are drawn with torch's global generator:
    # fork it so the draw is seeded here and the caller's torch state is left as it was.
    with torch.random.fork_rng(devices=[]), _collections_skip_older_objects():
        torch.manual_seed(SAMPLING_SEED)
        batch = get_batchbald_batch(
            torch.from_numpy(log_probs_M_K_C), min(k, len(candidates.indices)), joint_samples,
            dtype=torch.float64,
        )
    joint_mi_K = np.asarray(batch.scores, np.float64)
    gains_K = np.diff(joint_mi_K, prepend=0.0)
    # Greedy gains of a submodular objective never increase; only rounding and the sampled joint
    # entropies can make one rise slightly, and a Selection's scores must not increase.
    gains_K = np.minimum.accumulate(gains_K)
    return Selection(candidates.indices[np.asarray(batch.indices, np.int64)], gains_K)
