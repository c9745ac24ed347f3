"""What a classifier must do, and the trained model that wraps one with its categories and file.

A :class:`Classifier` sees standardised feature vectors and classes ``0..n_classes-1``; it knows
nothing of categories, exclusion or files. :class:`TrainedModel` adds what the labelling session
needs: which category each classifier column stands for, the feature standardisation, the feature
extractor's name and the metrics, and predicts over *all* categories (0 for excluded ones and for
those without labels yet).

Model files are :mod:`slidelabel.pipelines.models.model_files`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold

from slidelabel.errors import ParameterError

__all__ = [
    "Category",
    "Classifier",
    "ClassifierState",
    "TrainedModel",
    "balanced_weights",
    "check_chunk_rows",
    "cross_validate",
    "out_of_fold",
]

#: Bytes of standardised features per prediction chunk: small enough to stay in the CPU cache
#: between standardising and the classifier (1M x 1024 float32 predicts in 1.1 s instead of
#: 2.2 s with 65,536-row chunks), large enough that per-chunk overhead does not show.
CHUNK_BYTES = 16 << 20


@dataclass(frozen=True)
class Category:
    """A class the user labels superpixels with; an excluded one is never trained on nor suggested."""

    name: str
    excluded: bool = False


@dataclass
class ClassifierState:
    """A fitted classifier as data: JSON-able settings and named arrays (no Python objects)."""

    config: dict
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


class Classifier(Protocol):
    """A probabilistic classifier of feature vectors, registered by name in ``MODELS``.

    ``inputs`` declares what ``fit`` and ``predict_proba`` take: ``"vectors"`` for standardised
    feature vectors ``(N, D)``; ``auto`` chooses among the registered models that take vectors.

    Posterior sample ``s`` is one draw of the model (weights, trees, dropout masks) shared by
    every row, and the draws depend only on ``rng``'s state, never on the rows: two calls with
    equally seeded generators on two halves of the rows give the two halves of one call's result.
    Batch strategies (BatchBALD) need the first property; chunked prediction needs the second.
    """

    name: ClassVar[str]
    inputs: ClassVar[str]

    def fit(
        self, feats_N_D: np.ndarray, classes_N: np.ndarray, *, n_classes: int, rng: np.random.Generator
    ) -> None:
        """Fit on classes in ``0..n_classes-1``, weighting classes inversely to their counts."""

    def predict_proba(self, feats_N_D: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
        """Return ``probs_N_C`` (float32, rows sum to 1), computed ``chunk_rows`` rows at a time."""

    def posterior_samples(
        self, feats_N_D: np.ndarray, *, n_samples: int, rng: np.random.Generator, chunk_rows: int = 65536
    ) -> np.ndarray:
        """Return ``samples_S_N_C`` (float32): class probabilities under ``n_samples`` model draws."""

    def to_state(self) -> ClassifierState:
        """The fitted classifier as settings and arrays, for the model file."""

    @classmethod
    def from_state(cls, state: ClassifierState) -> Classifier:
        """Rebuild a fitted classifier from :meth:`to_state`'s result."""


def check_chunk_rows(chunk_rows: int) -> None:
    """Raise ParameterError unless ``chunk_rows`` is a positive integer."""
    if int(chunk_rows) != chunk_rows or chunk_rows < 1:
        raise ParameterError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")


def balanced_weights(classes_N: np.ndarray, n_classes: int) -> np.ndarray:
    """Return ``weights_N`` so every present class weighs the same in total and the sum is N."""
    counts_C = np.bincount(classes_N, minlength=n_classes)
    present = np.count_nonzero(counts_C)
    return (len(classes_N) / (present * counts_C[classes_N])).astype(np.float64)


def out_of_fold(
    make: Callable[[], Classifier],
    feats_N_D: np.ndarray,
    classes_N: np.ndarray,
    folds: StratifiedKFold,
    *,
    n_classes: int,
    fold_rng: Callable[[], np.random.Generator],
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Per fold of ``folds``: (rows held out, ``(rows, n_classes)`` probabilities ``make()`` gives
    them when fitted on the other rows with the generator ``fold_rng()`` gives)."""
    for train_idx, test_idx in folds.split(feats_N_D, classes_N):
        classifier = make()
        classifier.fit(feats_N_D[train_idx], classes_N[train_idx], n_classes=n_classes, rng=fold_rng())
        yield test_idx, classifier.predict_proba(feats_N_D[test_idx])


def cross_validate(
    make: Callable[[], Classifier],
    feats_N_D: np.ndarray,
    classes_N: np.ndarray,
    *,
    n_classes: int,
    rng: np.random.Generator,
    max_folds: int = 5,
) -> float | None:
    """Mean balanced accuracy of ``make()`` over stratified folds; None with < 2 labels per class.

    The number of folds is ``min(max_folds, smallest class count)``, so every training fold
    holds every class.
    """
    counts = np.bincount(classes_N, minlength=n_classes)
    smallest = int(counts[counts > 0].min())
    if smallest < 2:
        return None
    folds = StratifiedKFold(min(max_folds, smallest), shuffle=True, random_state=_seed(rng))
    scores = [balanced_accuracy_score(classes_N[test_idx], probs.argmax(axis=1))
              for test_idx, probs in out_of_fold(make, feats_N_D, classes_N, folds, n_classes=n_classes,
                                                     fold_rng=lambda: rng)]
    return float(np.mean(scores))


def tempered(probs_N_C: np.ndarray, temperature: float) -> np.ndarray:
    """float32 ``probs ** (1 / temperature)``, renormalised per row (softmax of the log
    probabilities divided by ``temperature``); ``temperature`` 1 returns the input."""
    if temperature == 1.0:
        return np.asarray(probs_N_C, np.float32)
    powered = np.power(np.asarray(probs_N_C, np.float64), 1.0 / temperature)
    total = powered.sum(axis=1, keepdims=True)
    return np.divide(powered, total, out=np.zeros_like(powered), where=total > 0).astype(np.float32)


def _seed(rng: np.random.Generator) -> int:
    """A seed for libraries that take an int (scikit-learn), drawn from ``rng``."""
    return int(rng.integers(2**31 - 1))


@dataclass
class TrainedModel:
    """A fitted classifier with everything needed to predict over a slide's categories.

    Attributes
    ----------
    model_name : str
        Registered name of the classifier (``"linear"``, ``"random_forest"``, ``"auto"``, ...).
    classifier : Classifier
        Fitted on standardised features; its column ``j`` stands for ``trained_classes[j]``.
    categories : list of Category
        All categories of the project, in index order, excluded ones included.
    feature_extractor : str
        Registered name of the feature extractor the features came from.
    metrics : dict
        JSON-able: label counts, cross-validated balanced accuracy, ``auto``'s scores.
    trained_classes : list of int
        Category indices the classifier's columns stand for.
    feature_mean_D, feature_scale_D : ndarray
        Standardisation applied before the classifier: ``(feats - mean) / scale``.
    normalisation : str
        How the features were normalised per slide before all this
        (:data:`slidelabel.pipelines.normalisation.NORMALISATIONS`); a user of the model applies
        it to new slides' features first.
    temperature : float
        Calibration: :meth:`predict_proba` raises the classifier's probabilities to ``1 /
        temperature`` and renormalises (temperature scaling; 1 leaves them as they are).
    """

    model_name: str
    classifier: Classifier
    categories: list[Category]
    feature_extractor: str
    metrics: dict
    trained_classes: list[int]
    feature_mean_D: np.ndarray
    feature_scale_D: np.ndarray
    normalisation: str = "none"
    temperature: float = 1.0

    def predict_proba(
        self, feats_N_D: np.ndarray, *, chunk_rows: int | None = None, calibrated: bool = True
    ) -> np.ndarray:
        """Return ``probs_N_K`` (float32) over all K categories; 0 for untrained and excluded ones.

        ``calibrated`` applies :attr:`temperature`. ``chunk_rows`` defaults to
        :data:`CHUNK_BYTES` worth of features."""
        chunk_rows = chunk_rows or self._chunk_rows()
        self._check_feats(feats_N_D, chunk_rows)
        probs_N_K = np.zeros((len(feats_N_D), len(self.categories)), np.float32)
        for rows, z_n_D in self._standardised_chunks(feats_N_D, chunk_rows):
            probs_n_C = self.classifier.predict_proba(z_n_D, chunk_rows=chunk_rows)
            probs_N_K[rows, self.trained_classes] = (
                tempered(probs_n_C, self.temperature) if calibrated else probs_n_C)
        return probs_N_K

    def posterior_samples(
        self,
        feats_N_D: np.ndarray,
        *,
        n_samples: int,
        rng: np.random.Generator | None = None,
        chunk_rows: int | None = None,
    ) -> np.ndarray:
        """Return ``samples_S_N_K`` (float32) over all K categories; 0 for untrained and excluded.

        Every chunk replays the same generator state, so sample ``s`` is one model draw for all
        rows (see :class:`Classifier`). ``rng=None`` uses a fixed seed.
        """
        chunk_rows = chunk_rows or self._chunk_rows()
        self._check_feats(feats_N_D, chunk_rows)
        if n_samples < 1:
            raise ParameterError(f"n_samples must be >= 1, got {n_samples!r}")
        seed = _seed(np.random.default_rng(0) if rng is None else rng)
        samples_S_N_K = np.zeros((n_samples, len(feats_N_D), len(self.categories)), np.float32)
        for rows, z_n_D in self._standardised_chunks(feats_N_D, chunk_rows):
            samples_S_n_C = self.classifier.posterior_samples(
                z_n_D,
                n_samples=n_samples,
                rng=np.random.default_rng(seed),
                chunk_rows=chunk_rows,
            )
            samples_S_N_K[:, rows, self.trained_classes] = samples_S_n_C
        return samples_S_N_K

    def _chunk_rows(self) -> int:
        return max(1024, CHUNK_BYTES // (4 * len(self.feature_mean_D)))

    def _standardised_chunks(
        self, feats_N_D: np.ndarray, chunk_rows: int
    ) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(rows, z_n_D)``: standardised float32 features of each chunk of rows.

        Every chunk is written into one reused buffer (:data:`CHUNK_BYTES` by default): a fresh
        array per chunk cost a third of the prediction time in page faults, and float64
        temporaries would double the memory. ``z_n_D`` is overwritten by the next chunk.
        """
        buffer = np.empty((min(chunk_rows, len(feats_N_D)), feats_N_D.shape[1]), np.float32)
        for start in range(0, len(feats_N_D), chunk_rows):
            rows = slice(start, start + chunk_rows)
            z_n_D = buffer[: len(feats_N_D[rows])]
            np.subtract(feats_N_D[rows], self.feature_mean_D, out=z_n_D, casting="unsafe")
            z_n_D /= self.feature_scale_D
            yield rows, z_n_D

    def _check_feats(self, feats_N_D: np.ndarray, chunk_rows: int) -> None:
        check_chunk_rows(chunk_rows)
        if feats_N_D.ndim != 2 or feats_N_D.shape[1] != len(self.feature_mean_D):
            raise ParameterError(
                f"features must have shape (N, {len(self.feature_mean_D)}) as in training, "
                f"got {feats_N_D.shape}"
            )
