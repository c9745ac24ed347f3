"""Certainty strategies: which unlabelled superpixels to show the user next.

A strategy is a pure function ``function(evidence, *, k, rng) -> Selection`` of the model's
predictions for all N superpixels of a project (:class:`Evidence`), registered by name with
:func:`register`; the CLI and the web client list :data:`STRATEGIES`. :func:`select` is the one
entry point: it checks the evidence once, so a strategy only ever sees valid arrays, at least one
unlabelled row and ``1 <= k <= unlabelled rows``. A new strategy is one decorated function::

    @register("batchbald", needs_samples=True, description="...")
    def _batchbald(evidence: Evidence, *, k: int, rng: np.random.Generator) -> Selection: ...

Per-row scores are :mod:`slidelabel.pipelines.uncertainty_scores`; the best k are
found with :func:`numpy.argpartition` (linear time) rather than a full sort. Ties are broken by row
index, lowest first, so results do not depend on the partition algorithm.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.uncertainty_scores import (
    bald_scores,
    confidence_scores,
    entropy_scores,
    margin_scores,
)
from slidelabel.registry import Registry

#: Largest allowed distance of a row sum of ``probs_N_C`` from 1 (float16 softmax outputs pass).
ROW_SUM_TOLERANCE = 1e-3
#: ``diversity`` looks for a spread batch among the ``max(DIVERSITY_POOL_PER_PICK * k,
#: DIVERSITY_MIN_POOL)`` most uncertain rows: wide enough to leave one crowded region of
#: feature space, narrow enough that every pick is still among the most uncertain.
DIVERSITY_POOL_PER_PICK = 10
DIVERSITY_MIN_POOL = 200


@dataclass(frozen=True)
class Selection:
    """The superpixels a strategy chose, most useful first.

    Attributes
    ----------
    indices : numpy.ndarray
        ``(k,)`` int64 row indices into the N superpixels; never a labelled row, no repeats.
    scores : numpy.ndarray
        ``(k,)`` float64 usefulness of each row (higher = label sooner), non-increasing.
    """

    indices: np.ndarray
    scores: np.ndarray


@dataclass(frozen=True)
class Evidence:
    """What a strategy may look at, for the N superpixels of a project and C classes.

    Attributes
    ----------
    probs_N_C : numpy.ndarray
        ``(N, C)`` float class probabilities; each row sums to 1.
    labelled_N : numpy.ndarray
        ``(N,)`` bool, True where a row is already labelled or excluded: never selected.
    samples_S_N_C : numpy.ndarray, optional
        ``(S, N, C)`` float posterior samples of the probabilities (MC dropout, trees of a forest).
    feats_N_D : numpy.ndarray, optional
        ``(N, D)`` float features of each superpixel.
    labels_N : numpy.ndarray, optional
        ``(N,)`` int64 class of each labelled row, -1 for the others (and for excluded rows).
    """

    probs_N_C: np.ndarray
    labelled_N: np.ndarray
    samples_S_N_C: np.ndarray | None = None
    feats_N_D: np.ndarray | None = None
    labels_N: np.ndarray | None = None


@dataclass(frozen=True)
class StrategyInfo:
    """A registered strategy and what it needs beyond ``probs_N_C`` and ``labelled_N``."""

    name: str
    function: Callable[..., Selection]
    needs_samples: bool
    needs_features: bool
    description: str


#: The best measured on both development sets by the area under the learning curve to 300 labels
#: (docs/learning.md, "Defaults by evidence").
DEFAULT_STRATEGY = "margin"


def _more_built_ins(_registry: Registry[StrategyInfo]) -> None:
    # BatchBALD lives in its own module to keep this one small; importing it registers it.
    importlib.import_module("slidelabel.pipelines.batchbald")


#: Registered strategies by name, in registration order; others come from the entry-point group
#: ``slidelabel.strategies`` (each a zero-argument callable returning a :class:`StrategyInfo`).
STRATEGIES: Registry[StrategyInfo] = Registry("strategy", "slidelabel.strategies", load=_more_built_ins)


def register(
    name: str, *, needs_samples: bool = False, needs_features: bool = False, description: str
) -> Callable[[Callable[..., Selection]], Callable[..., Selection]]:
    """Decorator adding ``function(evidence, *, k, rng) -> Selection`` to :data:`STRATEGIES`.

    ``description`` is one line for the CLI and the web client. A name taken keeps its first
    strategy (the second is logged).
    """
    if not description or "\n" in description:
        raise ValueError(f"strategy {name!r} needs a one-line description, got {description!r}")

    def decorator(function: Callable[..., Selection]) -> Callable[..., Selection]:
        STRATEGIES.add(name, StrategyInfo(name, function, needs_samples, needs_features, description),
                       description=description, default=name == DEFAULT_STRATEGY)
        return function

    return decorator


def select(
    name: str, evidence: Evidence, *, k: int, rng: np.random.Generator | int | None = None
) -> Selection:
    """Choose up to ``k`` unlabelled superpixels with the strategy registered as ``name``.

    Parameters
    ----------
    name : str
        A key of :data:`STRATEGIES`.
    evidence : Evidence
        Predictions for the N superpixels; checked here (shapes, finite probabilities, what the
        strategy needs).
    k : int
        How many to choose, >= 1; clipped to the number of unlabelled rows.
    rng : numpy.random.Generator or int or None
        Randomness of the strategies that use any (``random``); a seed makes them reproducible.

    Returns
    -------
    Selection
        ``min(k, unlabelled rows)`` rows, most useful first; empty when every row is labelled.

    Raises
    ------
    ParameterError
        (a ValueError) for an unknown name, ``k < 1`` or evidence the strategy cannot use.
    """
    info = STRATEGIES.get(name)
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ParameterError(f"k must be an integer >= 1, got {k!r}")
    _check_evidence(evidence, info)
    unlabelled = int(evidence.labelled_N.size - np.count_nonzero(evidence.labelled_N))
    if unlabelled == 0:
        return Selection(np.empty(0, np.int64), np.empty(0, np.float64))
    return info.function(evidence, k=min(int(k), unlabelled), rng=np.random.default_rng(rng))


def top_k(scores_P: np.ndarray, pool_P: np.ndarray, *, k: int) -> Selection:
    """The ``k`` rows of a pool with the highest scores, best first, ties by lower row index.

    Parameters
    ----------
    scores_P : numpy.ndarray
        ``(P,)`` float score of each row of the pool.
    pool_P : numpy.ndarray
        ``(P,)`` int64 increasing row indices.
    k : int
        How many; clipped to P.

    Examples
    --------
    >>> top_k(np.array([0.1, 0.9, 0.5, 0.9]), np.array([3, 4, 7, 8]), k=2).indices
    array([4, 8])
    """
    scores_P = scores_P.astype(np.float64, copy=False)
    k = min(k, pool_P.size)
    if k < pool_P.size:
        kth = pool_P.size - k
        threshold = scores_P[np.argpartition(scores_P, kth)[kth]]
        # argpartition orders ties at the threshold arbitrarily: keep the lowest-indexed ones.
        above_A = np.flatnonzero(scores_P > threshold)
        tied_T = np.flatnonzero(scores_P == threshold)[: k - above_A.size]
        chosen_K = np.concatenate([above_A, tied_T])
    else:
        chosen_K = np.arange(pool_P.size)
    chosen_K = chosen_K[np.lexsort((chosen_K, -scores_P[chosen_K]))]
    return Selection(pool_P[chosen_K].astype(np.int64), scores_P[chosen_K])


def _unlabelled(evidence: Evidence) -> np.ndarray:
    """``(P,)`` int64 increasing indices of the rows a strategy may choose."""
    return np.flatnonzero(~evidence.labelled_N)


# --- strategies --------------------------------------------------------------------------------


@register("random", description="Uniformly random unlabelled superpixels (a baseline).")
def _random(evidence: Evidence, *, k: int, rng: np.random.Generator) -> Selection:
    pool_P = _unlabelled(evidence)
    return top_k(rng.random(pool_P.size), pool_P, k=k)


@register("confidence", description="Least confident: lowest top-class probability first.")
def _confidence(evidence: Evidence, *, k: int, rng: np.random.Generator) -> Selection:
    pool_P = _unlabelled(evidence)
    return top_k(confidence_scores(evidence.probs_N_C)[pool_P], pool_P, k=k)


@register("margin", description="Smallest gap between the two most likely classes first.")
def _margin(evidence: Evidence, *, k: int, rng: np.random.Generator) -> Selection:
    pool_P = _unlabelled(evidence)
    return top_k(margin_scores(evidence.probs_N_C)[pool_P], pool_P, k=k)


@register("entropy", description="Highest predictive entropy first.")
def _entropy(evidence: Evidence, *, k: int, rng: np.random.Generator) -> Selection:
    pool_P = _unlabelled(evidence)
    return top_k(entropy_scores(evidence.probs_N_C)[pool_P], pool_P, k=k)


@register(
    "bald",
    needs_samples=True,
    description="Where posterior samples disagree most (BALD mutual information).",
)
def _bald(evidence: Evidence, *, k: int, rng: np.random.Generator) -> Selection:
    pool_P = _unlabelled(evidence)
    return top_k(bald_scores(evidence.samples_S_N_C)[pool_P], pool_P, k=k)


@register(
    "diversity",
    needs_features=True,
    description="Uncertain superpixels spread over feature space (margin, then k-center).",
)
def _diversity(evidence: Evidence, *, k: int, rng: np.random.Generator) -> Selection:
    """Margin sampling that keeps a batch from being k near-identical superpixels.

    The ``max(10 k, 200)`` unlabelled rows with the best margin score are the candidates; greedy
    k-center (farthest-point) selection on their features, seeded by the most uncertain, picks k
    of them, each as far (Euclidean) as possible from those already picked. Neighbouring
    superpixels of one tissue region have near-identical features and margins, so plain margin
    sampling fills a batch from one region; here a second pick from a region comes only once
    every other region among the candidates has one. The picks are returned most uncertain first
    with their margin scores. Cost: ``O(k M D)`` for the k-center step, with M candidates.
    """
    pool_P = _unlabelled(evidence)
    n_candidates = max(DIVERSITY_POOL_PER_PICK * k, DIVERSITY_MIN_POOL)
    candidates = top_k(margin_scores(evidence.probs_N_C)[pool_P], pool_P, k=n_candidates)
    feats_M_D = evidence.feats_N_D[candidates.indices].astype(np.float64)
    # Candidates are ordered most uncertain first, so sorted positions keep that order.
    picked_K = np.sort(farthest_points(feats_M_D, k=k))
    return Selection(candidates.indices[picked_K], candidates.scores[picked_K])


def farthest_points(feats_M_D: np.ndarray, *, k: int) -> np.ndarray:
    """Greedy k-center: ``(k,)`` int64 row positions, starting at row 0, each next the farthest.

    Each next row maximises the Euclidean distance to its nearest already-picked row; ties go to
    the lower position, and rows identical to picked ones come last, lowest position first.

    Examples
    --------
    >>> farthest_points(np.array([[0.0], [0.1], [5.0], [2.0]]), k=3)
    array([0, 2, 3])
    """
    if not 1 <= k <= feats_M_D.shape[0]:
        raise ParameterError(f"k must be between 1 and {feats_M_D.shape[0]} rows, got {k}")
    picked_K = np.zeros(k, np.int64)
    nearest_sq_M = np.full(feats_M_D.shape[0], np.inf)
    for i in range(k):
        if i:
            picked_K[i] = np.argmax(nearest_sq_M)
        offsets_M_D = feats_M_D - feats_M_D[picked_K[i]]
        np.minimum(nearest_sq_M, np.einsum("md,md->m", offsets_M_D, offsets_M_D), out=nearest_sq_M)
        nearest_sq_M[picked_K[i]] = -np.inf
    return picked_K


@register(
    "class_balanced",
    description="Uncertain superpixels of the classes with fewest labels first (rare-class hunt).",
)
def _class_balanced(evidence: Evidence, *, k: int, rng: np.random.Generator) -> Selection:
    """Uncertainty weighted by how few labels the predicted class has, including this batch.

    A row predicted as class c (argmax) scores ``u / (1 + L_c + B_c)``, where ``u = 1 - (p1 -
    p2)`` is its margin uncertainty in [0, 1], ``L_c`` the labelled rows of class c (from
    ``labels_N``; without it, the rows labelled and predicted as c) and ``B_c`` the rows of class
    c already in this batch. Picks are made greedily, one at a time, so a class with no labels
    wins over one with a hundred unless its rows are a hundred times more certain, and each pick
    from a class halves, thirds, ... its next row's weight instead of filling the whole batch
    with it. Rows of a class that is rarely labelled but often predicted are what a rare-class
    hunt wants to show; a class nothing is predicted as gets no picks. Scores never increase
    along the batch, since picks only lower the weights.
    """
    probs_N_C = evidence.probs_N_C
    classes = probs_N_C.shape[1]
    pool_P = _unlabelled(evidence)
    predicted_N = np.argmax(probs_N_C, axis=1)
    class_N = evidence.labels_N if evidence.labels_N is not None else predicted_N
    known_L = class_N[evidence.labelled_N]
    labelled_C = np.bincount(known_L[known_L >= 0], minlength=classes)
    uncertainty_P = 1.0 + margin_scores(probs_N_C)[pool_P]
    predicted_P = predicted_N[pool_P]
    queues = []  # per class: its unlabelled rows, most uncertain first (k at most are needed)
    for c in range(classes):
        is_c_P = predicted_P == c
        queues.append(top_k(uncertainty_P[is_c_P], pool_P[is_c_P], k=k))
    heads_C = np.zeros(classes, np.int64)
    indices_K = np.empty(k, np.int64)
    scores_K = np.empty(k, np.float64)
    for i in range(k):
        best = (-np.inf, 0, -1)  # (score, -row, class): the max is the highest score, lowest row
        for c, queue in enumerate(queues):
            if heads_C[c] < queue.indices.size:
                weight = 1.0 / (1 + labelled_C[c] + heads_C[c])
                best = max(best, (queue.scores[heads_C[c]] * weight, -queue.indices[heads_C[c]], c))
        scores_K[i], indices_K[i] = best[0], -best[1]
        heads_C[best[2]] += 1
    return Selection(indices_K, scores_K)


# --- checks ------------------------------------------------------------------------------------


def _check_evidence(evidence: Evidence, info: StrategyInfo) -> None:
    """Raise :class:`ParameterError` naming the first thing ``info`` cannot use in ``evidence``."""
    probs_N_C = evidence.probs_N_C
    if np.ndim(probs_N_C) != 2 or np.shape(probs_N_C)[1] < 2:
        raise ParameterError(f"probs_N_C must have shape (N, C >= 2), got {np.shape(probs_N_C)}")
    n_rows, classes = probs_N_C.shape
    _check_probabilities("probs_N_C", probs_N_C)
    if n_rows and np.abs(probs_N_C.sum(axis=1, dtype=np.float64) - 1.0).max() > ROW_SUM_TOLERANCE:
        raise ParameterError("rows of probs_N_C must sum to 1 (were logits or scores passed?)")
    labelled_N = evidence.labelled_N
    if np.shape(labelled_N) != (n_rows,) or np.asarray(labelled_N).dtype != bool:
        raise ParameterError(
            f"labelled_N must be bool of shape ({n_rows},), got "
            f"{np.asarray(labelled_N).dtype} {np.shape(labelled_N)}"
        )
    samples = evidence.samples_S_N_C
    if samples is None and info.needs_samples:
        raise ParameterError(f"strategy {info.name!r} needs posterior samples (samples_S_N_C)")
    if samples is not None:
        if np.ndim(samples) != 3 or np.shape(samples)[1:] != (n_rows, classes) or not len(samples):
            raise ParameterError(
                f"samples_S_N_C must have shape (S >= 1, {n_rows}, {classes}), got {np.shape(samples)}"
            )
        _check_probabilities("samples_S_N_C", samples)
    feats = evidence.feats_N_D
    if feats is None and info.needs_features:
        raise ParameterError(f"strategy {info.name!r} needs superpixel features (feats_N_D)")
    if feats is not None:
        if np.ndim(feats) != 2 or len(feats) != n_rows or not np.issubdtype(feats.dtype, np.floating):
            raise ParameterError(
                f"feats_N_D must be float of shape ({n_rows}, D), got {feats.dtype} {np.shape(feats)}"
            )
        if not _all_finite(feats):
            raise ParameterError("feats_N_D has NaN or infinite values")
    labels = evidence.labels_N
    if labels is not None:
        if np.shape(labels) != (n_rows,) or not np.issubdtype(labels.dtype, np.integer):
            raise ParameterError(
                f"labels_N must be integer of shape ({n_rows},), got {labels.dtype} {np.shape(labels)}"
            )
        if n_rows and (labels.min() < -1 or labels.max() >= classes):
            raise ParameterError(
                f"labels_N must be -1 or a class in [0, {classes}), got {labels.min()}..{labels.max()}"
            )


def _check_probabilities(name: str, array: np.ndarray) -> None:
    if not np.issubdtype(array.dtype, np.floating):
        raise ParameterError(f"{name} must be a float array, got {array.dtype}")
    if not _all_finite(array):
        raise ParameterError(f"{name} has NaN or infinite values")
    if array.size and (array.min() < 0.0 or array.max() > 1.0 + ROW_SUM_TOLERANCE):
        raise ParameterError(f"{name} must lie in [0, 1], got {array.min()}..{array.max()}")


def _all_finite(array: np.ndarray) -> bool:
    # The float64 sum is finite exactly when every value is (probabilities and features are far
    # from overflowing it), and unlike np.isfinite(array).all() it allocates no (S, N, C) mask.
    return bool(np.isfinite(array.sum(dtype=np.float64)))
