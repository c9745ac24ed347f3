"""Epochs: train on a project's labels, predict every superpixel and rank the unlabelled ones.

The ``epoch`` job (queue ``epochs``) runs five steps, each timed into the epoch's
``metrics["seconds"]``:

1. *gather*: the effective labels (a review, else the users' majority:
   :func:`~slidelabel.services.reviews.effective_labels`) of the slides whose features exist,
   and the features of those superpixels only;
2. *train*: the project's model on the categories that are not excluded, in legend order (model
   column ``c`` is category ``category_ids_C[c]``); labels of excluded categories are left out.
   The models weight classes inversely to their counts. Balanced accuracy and macro F1 come from
   out-of-fold predictions of the chosen model once every class has 2 labels;
3. *predict*: every superpixel of every slide, a block of feature rows at a time, into one
   predictions file per slide;
4. *rank*: the superpixels without an effective label, by the project's strategy
   (:func:`~slidelabel.services.queue.rank`), into the ranking the queue serves from;
5. *publish*: all files are written under a staging folder that is renamed to ``epochs/<n>`` in
   the transaction adding the :class:`Epoch` row, with the project's row locked: two epochs never
   share a number, and a job that dies leaves no half epoch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import balanced_accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from slidelabel.errors import ConflictError, NotFoundError, ParameterError
from slidelabel.pipelines.models import Category, TrainedModel, make_model, out_of_fold, save_model, train
from slidelabel.services import reviews
from slidelabel.services.jobs import EPOCH_QUEUE, JobContext, Sender, job_kind, submit
from slidelabel.services.queue import (
    Pool, SlideFeatures, feature_rows, open_features, rank, ranking_of, slides_with_features, write_ranking)
from slidelabel.services.slides import get_slide
from slidelabel.store.database import Database
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Job, Project
from slidelabel.store.predictions import SlidePredictions, read_predictions, write_predictions

MAX_FOLDS = 5
#: Feature bytes read and predicted at once.
PREDICT_BYTES = 64 << 20
SEED = 0


@dataclass(frozen=True)
class EpochPlan:
    """What an epoch of a project trains on, read in one transaction."""

    project_id: int
    model: str
    strategy: str
    extractor: str
    categories: list[tuple[int, str, bool]]
    """``(id, name, excluded)`` of every category, in legend order."""
    slides: list[SlideFeatures]
    labels: dict[int, tuple[np.ndarray, np.ndarray]]
    """``{slide_id: (superpixels_M, category_ids_M)}``, the effective labels."""

    @property
    def category_ids_C(self) -> np.ndarray:
        """int64 ids of the trainable (not excluded) categories: model column c is ``[c]``."""
        return np.array([cid for cid, _name, excluded in self.categories if not excluded], np.int64)

    def columns(self, category_ids_M: np.ndarray) -> np.ndarray:
        """int64 model column of each category id; -1 for excluded (or unknown) categories."""
        ids_C = self.category_ids_C
        if ids_C.size == 0:
            return np.full(np.shape(category_ids_M), -1, np.int64)
        order_C = np.argsort(ids_C)
        at_M = order_C[np.minimum(np.searchsorted(ids_C, category_ids_M, sorter=order_C), ids_C.size - 1)]
        return np.where(ids_C[at_M] == category_ids_M, at_M, -1).astype(np.int64)

    def labels_of(self, slide_id: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``(superpixels_M, category_ids_M)``: the slide's effective labels of ids up to ``count``."""
        superpixels_M, category_ids_M = self.labels.get(slide_id, (np.empty(0, np.int64),) * 2)
        inside_M = superpixels_M <= count
        return superpixels_M[inside_M], category_ids_M[inside_M]

    def digest(self) -> str:
        """A hash of everything an epoch's result depends on: labels, choices, categories and
        the versions of the feature files."""
        sha = hashlib.sha256(json.dumps([self.model, self.strategy, self.extractor, self.categories, [
            (s.slide_id, s.superpixels, s.path.stat().st_mtime_ns) for s in self.slides]]).encode())
        for slide_id in sorted(self.labels):
            superpixels_M, category_ids_M = self.labels[slide_id]
            sha.update(np.asarray([slide_id, superpixels_M.size], "<i8").tobytes())
            sha.update(np.asarray(superpixels_M, "<i8").tobytes() + np.asarray(category_ids_M, "<i8").tobytes())
        return sha.hexdigest()[:32]


def plan_epoch(session: Session, data_dir: Path, project_id: int) -> EpochPlan:
    project = session.get(Project, project_id)
    return EpochPlan(project.id, project.model, project.strategy, project.extractor,
                     [(c.id, c.name, c.excluded) for c in project.categories],
                     slides_with_features(session, ProjectFiles(data_dir, project_id), project.extractor),
                     reviews.effective_labels(session, project_id))


def start_epoch(database: Database, sender: Sender, data_dir: Path, project_id: int, user_id: int) -> Job:
    """Queue an epoch of the project, or return the job that made the latest epoch when nothing
    it depends on has changed since (or the queued or running job for the same state)."""
    with database.session() as session:
        state = plan_epoch(session, data_dir, project_id).digest()
        latest = session.scalar(select(Epoch).where(Epoch.project_id == project_id).order_by(Epoch.number.desc()))
        if latest is not None and latest.metrics.get("label_state") == state:
            job = session.get(Job, latest.metrics.get("job_id", -1))
            if job is not None:
                return job
    # The latest number in the key: labels changed and changed back train again.
    after = latest.number if latest is not None else 0
    return submit(database, sender, project_id=project_id, kind="epoch", key=f"epoch:{after}:{state}",
                  user_id=user_id)


@dataclass(frozen=True)
class TrainingSet:
    feats_L_D: np.ndarray
    """float32 features of the L labelled superpixels of trainable categories."""
    columns_L: np.ndarray
    """int64 model column of each."""
    counts: dict[int, int]
    """Labelled superpixels with features per category id, excluded categories included."""


def training_set(plan: EpochPlan) -> TrainingSet:
    """The features and columns of the labelled superpixels; :class:`ParameterError` saying what
    to label when fewer than 2 trainable categories have labels."""
    if not plan.slides:
        raise ConflictError(f"no slide of this project has {plan.extractor!r} features yet: compute them "
                            "(POST .../slides/{slide_id}/features) before training")
    feats, columns, counts = [], [], dict.fromkeys((cid for cid, _n, _e in plan.categories), 0)
    for slide in plan.slides:
        array = open_features(slide.path)
        superpixels_M, category_ids_M = plan.labels_of(slide.slide_id, array.shape[0])
        feats_M_D = feature_rows(array, superpixels_M - 1)
        finite_M = np.isfinite(feats_M_D).all(axis=1)  # superpixels without pixels have NaN rows
        feats_M_D, category_ids_M = feats_M_D[finite_M], category_ids_M[finite_M]
        for cid, count in zip(*np.unique(category_ids_M, return_counts=True)):
            counts[int(cid)] = counts.get(int(cid), 0) + int(count)
        columns_M = plan.columns(category_ids_M)
        feats.append(feats_M_D[columns_M >= 0])
        columns.append(columns_M[columns_M >= 0])
    _check_trainable(plan, counts)
    return TrainingSet(np.concatenate(feats), np.concatenate(columns), counts)


def _check_trainable(plan: EpochPlan, counts: dict[int, int]) -> None:
    trainable = [(name, counts[cid]) for cid, name, excluded in plan.categories if not excluded]
    if len(trainable) < 2:
        raise ParameterError("training needs at least 2 categories that are not excluded; add one to the project")
    labelled = [f"{name} ({count})" for name, count in trainable if count]
    if len(labelled) < 2:
        missing = " or ".join(name for name, count in trainable if not count)
        raise ParameterError(
            f"training needs labelled superpixels in at least 2 categories that are not excluded; labelled so "
            f"far: {', '.join(labelled) or 'none'}. Label some as {missing} (on slides with features), "
            "then train again")


def cross_validated(model: TrainedModel, data: TrainingSet) -> dict:
    """Balanced accuracy and macro F1 of the out-of-fold predictions of ``model``'s classifier
    (the one ``auto`` chose) over stratified folds; Nones with a note when a class has < 2 labels."""
    column_K = np.full(len(model.categories), -1)
    column_K[model.trained_classes] = np.arange(len(model.trained_classes))
    classes_L, n_classes = column_K[data.columns_L], len(model.trained_classes)
    smallest = int(np.bincount(classes_L, minlength=n_classes).min())
    if smallest < 2:
        return {"cv_balanced_accuracy": None, "cv_macro_f1": None,
                "cv_note": "not cross-validated: a category has fewer than 2 labels"}
    z_L_D = ((data.feats_L_D - model.feature_mean_D) / model.feature_scale_D).astype(np.float32)
    predicted_L = np.empty_like(classes_L)
    name = model.metrics.get("auto_chosen", model.model_name)
    folds = StratifiedKFold(min(MAX_FOLDS, smallest), shuffle=True, random_state=SEED)
    for test_rows, predicted in out_of_fold(lambda: make_model(name), z_L_D, classes_L, folds, n_classes=n_classes,
                                            fold_rng=lambda: np.random.default_rng(SEED)):
        predicted_L[test_rows] = predicted
    return {"cv_balanced_accuracy": float(balanced_accuracy_score(classes_L, predicted_L)),
            "cv_macro_f1": float(f1_score(classes_L, predicted_L, average="macro")), "cv_folds": folds.n_splits}


def predict_slides(plan: EpochPlan, model: TrainedModel, staged: ProjectFiles,
                   progress: Callable[[float, str], None]) -> Pool:
    """Predict every superpixel of the plan's slides into ``staged``'s predictions files."""
    category_ids_C = plan.category_ids_C
    rows = max(1024, PREDICT_BYTES // (4 * model.feature_mean_D.size))
    parts = []
    for done, slide in enumerate(plan.slides):
        progress(done / len(plan.slides), f"predicting slide {done + 1} of {len(plan.slides)}")
        array = open_features(slide.path)
        probs_N_C = np.zeros((array.shape[0], category_ids_C.size), np.float32)
        has_N = np.zeros(array.shape[0], bool)
        for start in range(0, array.shape[0], rows):
            feats_n_D = feature_rows(array, slice(start, start + rows))
            finite_n = np.isfinite(feats_n_D).all(axis=1)
            probs_N_C[start:start + finite_n.size][finite_n] = model.predict_proba(feats_n_D[finite_n])
            has_N[start:start + finite_n.size] = finite_n
        write_predictions(staged.predictions(0, slide.slide_id), SlidePredictions(category_ids_C, probs_N_C))
        superpixels_M, category_ids_M = plan.labels_of(slide.slide_id, array.shape[0])
        columns_N = np.full(array.shape[0], -1, np.int64)
        labelled_N = np.zeros(array.shape[0], bool)
        columns_N[superpixels_M - 1] = plan.columns(category_ids_M)
        labelled_N[superpixels_M - 1] = True
        parts.append((np.full(int(has_N.sum()), slide.slide_id, np.int64), np.flatnonzero(has_N) + 1,
                      probs_N_C[has_N], labelled_N[has_N], columns_N[has_N]))
    return Pool(*(np.concatenate(arrays) for arrays in zip(*parts)))


class Stopwatch:
    """Seconds of each step of a job, rounded to ms, for its metrics."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step], self._last = round(now - self._last, 3), now


@job_kind("epoch", queue=EPOCH_QUEUE)
def epoch(context: JobContext) -> dict:
    """Train, predict, rank and publish one epoch of the job's project (see the module docstring)."""
    files = ProjectFiles(context.settings.data_dir, context.project_id)
    watch = Stopwatch()
    context.progress(0.0, "gathering labels", force=True)
    with context.database.session() as session:
        plan = plan_epoch(session, files.data_dir, context.project_id)
    state = plan.digest()
    data = training_set(plan)
    watch.lap("gather")
    context.progress(0.05, f"training {plan.model} on {data.columns_L.size} labels", force=True)
    categories = [Category(name) for _cid, name, excluded in plan.categories if not excluded]
    model = train(data.feats_L_D, data.columns_L, categories, model=plan.model, feature_extractor=plan.extractor,
                  rng=np.random.default_rng(SEED), cross_validate_model=False)
    watch.lap("train")
    context.progress(0.15, "cross-validating", force=True)
    scores = cross_validated(model, data)
    watch.lap("cross_validate")
    # A folder laid out like the data folder, so that ProjectFiles names the staged files too.
    staged = ProjectFiles(files.root / "epochs" / f".job-{context.job_id}.tmp", context.project_id)
    shutil.rmtree(staged.data_dir, ignore_errors=True)
    try:
        staged.epoch_dir(0).mkdir(parents=True)
        save_model(model, staged.model(0))
        pool = predict_slides(plan, model, staged, lambda f, message: context.progress(0.25 + 0.6 * f, message))
        watch.lap("predict")
        context.progress(0.85, f"ranking by {plan.strategy}", force=True)
        rows_R, scores_R, picks = rank(plan.strategy, model, pool, plan.slides)
        probs_R_C = pool.probs_P_C[rows_R]
        write_ranking(staged.ranking(0), ranking_of(
            files, pool.slide_ids_P[rows_R], pool.superpixels_P[rows_R], scores_R,
            plan.category_ids_C[probs_R_C.argmax(axis=1)] if rows_R.size else np.empty(0, np.int64),
            probs_R_C.max(axis=1, initial=0)))
        watch.lap("rank")
        names = {cid: (name, excluded) for cid, name, excluded in plan.categories}
        metrics = {
            "model": plan.model, "model_chosen": model.metrics.get("auto_chosen", plan.model),
            "auto_scores": model.metrics.get("auto_scores"), "extractor": plan.extractor, "strategy": plan.strategy,
            "label_counts": [{"category_id": cid, "name": names[cid][0], "excluded": names[cid][1], "labels": n}
                             for cid, n in data.counts.items() if cid in names],
            "n_training_labels": int(data.columns_L.size), **scores, "slides": len(plan.slides),
            "superpixels_predicted": int(pool.slide_ids_P.size), "ranked": int(rows_R.size),
            "strategy_picks": picks, "seconds": watch.seconds, "label_state": state, "job_id": context.job_id,
        }
        number = _publish(context.database, files, staged, metrics)
    finally:
        shutil.rmtree(staged.data_dir, ignore_errors=True)
    accuracy = scores["cv_balanced_accuracy"]
    return {"message": f"epoch {number}: {data.columns_L.size} labels" +
            (f", cross-validated balanced accuracy {accuracy:.2f}" if accuracy is not None else "")}


def _publish(database: Database, files: ProjectFiles, staged: ProjectFiles, metrics: dict) -> int:
    """Move the staged files to the next epoch number and add its row; returns the number."""
    start = time.perf_counter()
    with database.session(write=True) as session:
        # SQLite's write transaction already excludes other writers; PostgreSQL needs the lock.
        session.scalar(select(Project.id).where(Project.id == files.project_id).with_for_update())
        number = (session.scalar(select(func.max(Epoch.number)).where(Epoch.project_id == files.project_id)) or 0) + 1
        target = files.epoch_dir(number)
        if target.exists():  # left by a job that died between its rename and its commit
            shutil.rmtree(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staged.epoch_dir(0), target)
        metrics["seconds"]["publish"] = round(time.perf_counter() - start, 3)
        session.add(Epoch(project_id=files.project_id, number=number, labels=metrics["n_training_labels"],
                          metrics=metrics))
    return number


def list_epochs(session: Session, project_id: int) -> list[Epoch]:
    return list(session.scalars(select(Epoch).where(Epoch.project_id == project_id).order_by(Epoch.number)))


def get_epoch(session: Session, project_id: int, number: int | None = None) -> Epoch:
    """Epoch ``number`` of the project, or its latest; :class:`NotFoundError` when there is none."""
    query = select(Epoch).where(Epoch.project_id == project_id)
    found = session.scalar(query.where(Epoch.number == number) if number is not None
                           else query.order_by(Epoch.number.desc()))
    if found is None:
        raise NotFoundError(f"no epoch {number} in this project" if number is not None else
                            "this project has no epoch yet: label superpixels in 2 categories and train one "
                            f"(POST /api/v1/projects/{project_id}/epochs)")
    return found


def model_file(session: Session, data_dir: Path, project_id: int, number: int) -> Path:
    path = ProjectFiles(data_dir, project_id).model(get_epoch(session, project_id, number).number)
    if not path.is_file():
        raise NotFoundError(f"the model file of epoch {number} is missing ({path}); train a new epoch")
    return path


def slide_predictions(session: Session, data_dir: Path, project_id: int, slide_id: int,
                      number: int | None = None) -> tuple[int, SlidePredictions]:
    """The epoch number (latest when ``number`` is None) and its predictions for the slide."""
    get_slide(session, project_id, slide_id)
    found = get_epoch(session, project_id, number)
    path = ProjectFiles(data_dir, project_id).predictions(found.number, slide_id)
    if not path.exists():
        raise NotFoundError(f"epoch {found.number} has no predictions for slide {slide_id}: its features were not "
                            "computed when the epoch was trained; compute them and train a new epoch")
    return found.number, read_predictions(path)


def predicted_bytes(predictions: SlidePredictions) -> bytes:
    """Little-endian uint16 category id per superpixel, index = superpixel id, 0 = none."""
    predicted_N = predictions.predicted_N
    if predicted_N.size and predicted_N.max() > np.iinfo(np.uint16).max:
        raise ConflictError(f"category id {predicted_N.max()} does not fit the uint16 prediction array")
    return np.concatenate([[0], predicted_N]).astype("<u2").tobytes()


def certainty_bytes(predictions: SlidePredictions) -> bytes:
    """uint8 ``round(255 * certainty)`` per superpixel, index = superpixel id (0 at index 0)."""
    return np.concatenate([[0], np.rint(255 * predictions.certainty_N)]).astype(np.uint8).tobytes()
