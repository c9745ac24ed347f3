"""One round of the learning loop: the same code for the server's epochs and ``slidelabel simulate``.

:func:`run_epoch` takes the features of a set of slides (:class:`FeatureSource`: the project's
feature files, or arrays in memory for a simulation), the labels given so far and the project's
choices, and

1. *normalises* every slide's features by the project's normalisation
   (:mod:`~slidelabel.pipelines.normalisation`);
2. *trains* the model on the labelled superpixels of trainable categories;
3. *assesses* it, when asked (the server always does): out-of-fold predictions of the same model
   over stratified folds give the balanced accuracy, the macro F1, the temperature that calibrates
   its probabilities, the reliability diagram and the estimated accuracy with its interval;
4. *predicts* every superpixel of every slide, a block of rows at a time, handing each slide's
   calibrated probabilities to the caller (the server writes them to files);
5. *ranks* the unlabelled superpixels by the strategy (:func:`~slidelabel.services.queue.rank`,
   with its candidate pre-filters and batch picks) on the uncalibrated probabilities, so that
   whether a run was assessed never changes what is asked next.

Seeds are fixed (:data:`SEED`), so the same features, labels and choices rank the same
superpixels first wherever the loop runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold

from slidelabel.pipelines.calibration import accuracy_interval, fit_temperature, reliability
from slidelabel.pipelines.models import Category, TrainedModel, make_model, out_of_fold, train
from slidelabel.pipelines.models.auto import scoring_options
from slidelabel.pipelines.models.base import tempered
from slidelabel.pipelines.normalisation import get_normalisation, normalised
from slidelabel.services.queue import Pool, rank
from slidelabel.store.feature_files import feature_rows, open_features, slide_statistics

SEED = 0
MAX_FOLDS = 5
#: Feature bytes read and predicted at once.
PREDICT_BYTES = 64 << 20
#: Most labels an epoch trains on: past it, a sample that keeps every category's labels up to an
#: equal share of it (the rarer categories whole). 607,000 labels kept the one epoch worker in one
#: model fit, with no progress report, for over 5 minutes at 4 GB (tenth attack).
MAX_TRAINING_LABELS = 100_000

#: ``{slide_id: (superpixels_M, columns_M)}``: ids (1..N) of labelled superpixels and the model
#: column of each label, -1 for excluded categories (labelled, so never ranked, but not trained on).
SlideLabels = dict[int, tuple[np.ndarray, np.ndarray]]
#: Receives ``(slide_id, probs_N_C, has_N)``: calibrated probabilities of every superpixel of a
#: slide (0 rows where ``has_N`` is False: superpixels without features).
PredictionSink = Callable[[int, np.ndarray, np.ndarray], None]


class FeatureSource(Protocol):
    """Normalised features of the slides of a loop, read by rows or in blocks."""

    slide_ids: list[int]
    dimensions: int

    def count(self, slide_id: int) -> int:
        """Rows (superpixels) of the slide."""

    def rows(self, slide_id: int, rows_M: np.ndarray) -> np.ndarray:
        """float32 ``(M, D)`` normalised features of increasing rows ``rows_M`` (id - 1)."""

    def blocks(self, slide_id: int, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """``(start, feats_n_D)`` normalised blocks covering all rows of the slide, in order."""


class FileFeatures:
    """The feature arrays of a project's slides (``{slide_id: path}``), normalised as asked."""

    def __init__(self, paths: dict[int, Path], normalisation: str) -> None:
        self.slide_ids = list(paths)
        self._arrays = {slide_id: open_features(path) for slide_id, path in paths.items()}
        per_slide = get_normalisation(normalisation).per_slide
        self._statistics = {slide_id: slide_statistics(path) for slide_id, path in paths.items()} if per_slide else {}
        self.dimensions = int(next(iter(self._arrays.values())).shape[1]) if self._arrays else 0

    def count(self, slide_id: int) -> int:
        return int(self._arrays[slide_id].shape[0])

    def _normalised(self, slide_id: int, feats_M_D: np.ndarray) -> np.ndarray:
        statistics = self._statistics.get(slide_id)
        return statistics.apply(feats_M_D) if statistics is not None else feats_M_D

    def rows(self, slide_id: int, rows_M: np.ndarray) -> np.ndarray:
        return self._normalised(slide_id, feature_rows(self._arrays[slide_id], rows_M))

    def blocks(self, slide_id: int, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        array = self._arrays[slide_id]
        for start in range(0, array.shape[0], block_rows):
            yield start, self._normalised(slide_id, feature_rows(array, slice(start, start + block_rows)))


class ArrayFeatures:
    """Features held in memory (``{slide_id: (N, D) array}``), normalised as asked."""

    def __init__(self, feats: dict[int, np.ndarray], normalisation: str) -> None:
        self.slide_ids = list(feats)
        self._feats = {slide_id: normalised(f, normalisation) for slide_id, f in feats.items()}
        self.dimensions = int(next(iter(self._feats.values())).shape[1]) if self._feats else 0

    def count(self, slide_id: int) -> int:
        return int(self._feats[slide_id].shape[0])

    def rows(self, slide_id: int, rows_M: np.ndarray) -> np.ndarray:
        return self._feats[slide_id][rows_M]

    def blocks(self, slide_id: int, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        feats_N_D = self._feats[slide_id]
        for start in range(0, feats_N_D.shape[0], block_rows):
            yield start, feats_N_D[start:start + block_rows]

    def all(self, slide_id: int) -> np.ndarray:
        """The slide's normalised ``(N, D)`` features."""
        return self._feats[slide_id]


@dataclass(frozen=True)
class LoopChoices:
    """What a project learns with, by registry name."""

    extractor: str
    model: str
    strategy: str
    normalisation: str
    auto_budget_s: float | None = None
    """``auto``'s search time per round (its own default, 20 s, when None)."""

    def model_options(self) -> dict:
        """Options for :func:`~slidelabel.pipelines.models.train`'s model."""
        return {"time_budget_s": self.auto_budget_s} if self.model == "auto" and self.auto_budget_s else {}


@dataclass(frozen=True)
class TrainingSet:
    feats_L_D: np.ndarray
    """float32 normalised features of the L labelled superpixels of trainable categories."""
    columns_L: np.ndarray
    """int64 model column of each."""


@dataclass(frozen=True)
class EpochOutcome:
    """What a round of the loop produced."""

    model: TrainedModel
    """Calibrated (its ``temperature``) when the round was assessed."""
    pool: Pool
    """Every superpixel with features, with the model's uncalibrated probabilities."""
    ranked_R: np.ndarray
    """Rows of ``pool`` to ask about, best first."""
    scores_R: np.ndarray
    picks: int
    """How many of ``ranked_R`` the strategy picked itself (the rest follow its pre-filter)."""
    assessment: dict
    """Out-of-fold figures (empty when not assessed): see :func:`assess`."""
    training: TrainingSet


def training_set(features: FeatureSource, labels: SlideLabels) -> TrainingSet:
    """Normalised features and model columns of the labelled superpixels of trainable
    categories that have finite features, slide by slide in the source's order."""
    feats, columns = [np.empty((0, features.dimensions), np.float32)], [np.empty(0, np.int64)]
    for slide_id in features.slide_ids:
        superpixels_M, columns_M = labels.get(slide_id, (np.empty(0, np.int64),) * 2)
        keep_M = (superpixels_M >= 1) & (superpixels_M <= features.count(slide_id)) & (columns_M >= 0)
        order_M = np.argsort(superpixels_M[keep_M], kind="stable")
        feats_M_D = features.rows(slide_id, superpixels_M[keep_M][order_M] - 1)
        finite_M = np.isfinite(feats_M_D).all(axis=1)  # superpixels without pixels have NaN rows
        feats.append(feats_M_D[finite_M])
        columns.append(np.asarray(columns_M[keep_M][order_M][finite_M], np.int64))
    return TrainingSet(np.concatenate(feats), np.concatenate(columns))


def sampled(data: TrainingSet, most: int, rng: np.random.Generator) -> TrainingSet:
    """``data`` itself when it has at most ``most`` labels; else ``most`` of them, drawn from each
    model column up to an equal share of ``most``, the share of columns with fewer labels passed
    on to the others (so a rare category is kept whole), in their original order."""
    if data.columns_L.size <= most:
        return data
    columns, counts = np.unique(data.columns_L, return_counts=True)
    kept, left = [], most
    for index in np.argsort(counts, kind="stable"):
        take = min(int(counts[index]), left // (len(columns) - len(kept)))
        rows = np.flatnonzero(data.columns_L == columns[index])
        kept.append(rng.choice(rows, take, replace=False))
        left -= take
    rows_M = np.sort(np.concatenate(kept))
    return TrainingSet(data.feats_L_D[rows_M], data.columns_L[rows_M])


def assess(model: TrainedModel, data: TrainingSet) -> dict:
    """Out-of-fold figures of ``model``'s classifier (the one ``auto`` chose) on ``data``.

    Returns ``cv_balanced_accuracy``, ``cv_macro_f1``, ``cv_folds``, ``calibration`` (the
    temperature, the expected calibration error before and after and the reliability bins after),
    ``estimated_accuracy`` (accuracy of the calibrated out-of-fold predictions with its Wilson
    95% interval); Nones with ``cv_note`` when a class has fewer than 2 labels.
    """
    column_K = np.full(len(model.categories), -1)
    column_K[model.trained_classes] = np.arange(len(model.trained_classes))
    classes_L, n_trained = column_K[data.columns_L], len(model.trained_classes)
    smallest = int(np.bincount(classes_L, minlength=n_trained).min())
    if smallest < 2:
        return {"cv_balanced_accuracy": None, "cv_macro_f1": None, "calibration": None, "estimated_accuracy": None,
                "cv_note": "not cross-validated: a category has fewer than 2 labels"}
    z_L_D = ((data.feats_L_D - model.feature_mean_D) / model.feature_scale_D).astype(np.float32)
    probs_L_C = np.zeros((classes_L.size, n_trained))
    name = model.metrics.get("auto_chosen", model.model_name)
    # auto's chosen settings, with the options that predict the same for less work (boosting's bag)
    options, _ = scoring_options(name, model.metrics.get("auto_params", {}))
    folds = StratifiedKFold(min(MAX_FOLDS, smallest), shuffle=True, random_state=SEED)
    for test_rows, probs in out_of_fold(lambda: make_model(name, **options), z_L_D, classes_L, folds,
                                        n_classes=n_trained, fold_rng=lambda: np.random.default_rng(SEED)):
        probs_L_C[test_rows] = probs
    predicted_L = probs_L_C.argmax(axis=1)
    temperature = fit_temperature(probs_L_C, classes_L)
    calibrated = reliability(tempered(probs_L_C, temperature), classes_L)
    return {
        "cv_balanced_accuracy": float(balanced_accuracy_score(classes_L, predicted_L)),
        "cv_macro_f1": float(f1_score(classes_L, predicted_L, average="macro")), "cv_folds": folds.n_splits,
        "calibration": {"method": "temperature", "temperature": temperature,
                        "ece_before": reliability(probs_L_C, classes_L).ece, **calibrated.as_dict()},
        "estimated_accuracy": accuracy_interval(predicted_L == classes_L),
    }


def run_epoch(features: FeatureSource, labels: SlideLabels, categories: list[Category], choices: LoopChoices, *,
              assessed: bool, sink: PredictionSink | None = None,
              progress: Callable[[float, str], None] | None = None) -> EpochOutcome:
    """Train on ``labels``, predict every superpixel of ``features`` and rank the unlabelled ones.

    ``categories`` are the trainable ones, in model-column order. ``assessed`` runs
    :func:`assess` and calibrates the model with its temperature. ``progress`` gets (share done,
    what is being done). Raises :class:`~slidelabel.errors.ParameterError` when fewer than two
    categories have labels with features.
    """
    report = progress or (lambda _share, _message: None)
    labelled = training_set(features, labels)
    data = sampled(labelled, MAX_TRAINING_LABELS, np.random.default_rng(SEED))
    sample = "" if data is labelled else f" (a sample of the {labelled.columns_L.size:,} labelled)"
    report(0.05, f"training {choices.model} on {data.columns_L.size:,} labels{sample}")
    model = train(data.feats_L_D, data.columns_L, categories, model=choices.model, model_options=choices.model_options(),
                  feature_extractor=choices.extractor, rng=np.random.default_rng(SEED), cross_validate_model=False)
    model.normalisation = choices.normalisation
    assessment = {}
    if assessed:
        report(0.15, "cross-validating")
        assessment = assess(model, data)
        if assessment["calibration"] is not None:
            model.temperature = assessment["calibration"]["temperature"]
    pool = predict_pool(features, labels, model, sink, lambda share, message: report(0.25 + 0.6 * share, message))
    report(0.85, f"ranking by {choices.strategy}")
    ranked_R, scores_R, picks = rank(choices.strategy, model, pool, features)
    return EpochOutcome(model, pool, ranked_R, scores_R, picks, assessment, data)


def predict_pool(features: FeatureSource, labels: SlideLabels, model: TrainedModel, sink: PredictionSink | None,
                 progress: Callable[[float, str], None]) -> Pool:
    """Predict every superpixel of every slide; the pool of those with features, uncalibrated."""
    rows = max(1024, PREDICT_BYTES // (4 * max(features.dimensions, 1)))
    n_classes = len(model.categories)
    parts = []
    for done, slide_id in enumerate(features.slide_ids):
        count = features.count(slide_id)
        probs_N_C = np.zeros((count, n_classes), np.float32)
        has_N = np.zeros(count, bool)
        for start, feats_n_D in features.blocks(slide_id, rows):
            # Per block, not per slide: a job's progress report is where a Cancel stops it.
            progress((done + start / count) / len(features.slide_ids),
                     f"predicting slide {done + 1} of {len(features.slide_ids)}")
            finite_n = np.isfinite(feats_n_D).all(axis=1)
            probs_N_C[start:start + finite_n.size][finite_n] = model.predict_proba(feats_n_D[finite_n],
                                                                                  calibrated=False)
            has_N[start:start + finite_n.size] = finite_n
        if sink is not None:
            sink(slide_id, tempered(probs_N_C, model.temperature), has_N)
        superpixels_M, columns_M = labels.get(slide_id, (np.empty(0, np.int64),) * 2)
        inside_M = (superpixels_M >= 1) & (superpixels_M <= count)
        columns_N = np.full(count, -1, np.int64)
        labelled_N = np.zeros(count, bool)
        columns_N[superpixels_M[inside_M] - 1] = columns_M[inside_M]
        labelled_N[superpixels_M[inside_M] - 1] = True
        parts.append((np.full(int(has_N.sum()), slide_id, np.int64), np.flatnonzero(has_N) + 1,
                      probs_N_C[has_N], labelled_N[has_N], columns_N[has_N]))
    return Pool(*(np.concatenate(arrays) for arrays in zip(*parts)))
