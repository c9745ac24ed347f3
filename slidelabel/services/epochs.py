"""Epochs: train on a project's labels, predict every superpixel and rank the unlabelled ones.

The ``epoch`` job (queue ``epochs``) gathers the effective labels (a review, else the users'
majority: :func:`~slidelabel.services.reviews.effective_labels`) of the slides whose features
exist, and runs one round of the learning loop on them
(:func:`~slidelabel.services.learning_loop.run_epoch`, the code ``slidelabel simulate`` runs):
normalise, train on the categories that are not excluded, in legend order (model column ``c`` is
category ``category_ids_C[c]``), assess and calibrate by out-of-fold predictions, predict every
superpixel into one predictions file per slide, rank the unlabelled ones by the project's strategy
into the ranking the queue serves from. It adds what a labeller needs to know whether to go on:
the share of predictions that changed since the previous epoch and a sentence saying so.

All files are written under a staging folder that is renamed to ``epochs/<n>`` in the
transaction adding the :class:`Epoch` row, with the project's row locked: two epochs never share
a number, and a job that dies leaves no half epoch. Each step is timed into
``metrics["seconds"]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from slidelabel.errors import ConflictError, NotFoundError, ParameterError
from slidelabel.pipelines.models import Category, save_model
from slidelabel.pipelines.models.base import tempered
from slidelabel.services import reviews
from slidelabel.services.access import Action
from slidelabel.services.job_runs import JobContext
from slidelabel.services.jobs import EPOCH_QUEUE, Sender, job_kind, submit
from slidelabel.services.labels import label_array
from slidelabel.services.learning_loop import EpochOutcome, FileFeatures, LoopChoices, SlideLabels, run_epoch
from slidelabel.services.projects import merged_categories
from slidelabel.services.queue import SlideFeatures, ranking_of, slides_with_features, write_ranking
from slidelabel.services.slides import EPOCH_KIND, get_slide
from slidelabel.services.stopping import stopping_signal
from slidelabel.store.database import Database
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Job, JobState, Project
from slidelabel.store.predictions import SlidePredictions, read_predictions, write_predictions


@dataclass(frozen=True)
class EpochPlan:
    """What an epoch of a project trains on, read in one transaction."""

    project_id: int
    choices: LoopChoices
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
        sha = hashlib.sha256(json.dumps([self.choices.model, self.choices.strategy, self.choices.extractor,
                                         self.choices.normalisation, self.categories, [
            (s.slide_id, s.superpixels, s.path.stat().st_mtime_ns) for s in self.slides]]).encode())
        for slide_id in sorted(self.labels):
            superpixels_M, category_ids_M = self.labels[slide_id]
            sha.update(np.asarray([slide_id, superpixels_M.size], "<i8").tobytes())
            sha.update(np.asarray(superpixels_M, "<i8").tobytes() + np.asarray(category_ids_M, "<i8").tobytes())
        return sha.hexdigest()[:32]


def plan_epoch(session: Session, data_dir: Path, project_id: int) -> EpochPlan:
    project = session.get(Project, project_id)
    choices = LoopChoices(project.extractor, project.model, project.strategy, project.normalisation)
    return EpochPlan(project.id, choices, [(c.id, c.name, c.excluded) for c in project.categories],
                     slides_with_features(session, ProjectFiles(data_dir, project_id), project.extractor),
                     reviews.effective_labels(session, project_id))


def start_epoch(database: Database, sender: Sender, data_dir: Path, project_id: int, user_id: int) -> Job:
    """Queue an epoch of the project, or return the job that made the latest epoch when nothing
    it depends on has changed since (or the queued or running job for the same state), or the
    project's queued epoch: it gathers the labels when it starts, so it trains on these too, and
    retrain clicks between label changes queue no more epochs than one."""
    with database.session() as session:
        queued = session.scalar(select(Job).where(Job.project_id == project_id, Job.kind == EPOCH_KIND,
                                                  Job.state == JobState.queued).order_by(Job.id))
        if queued is not None:
            return queued
        state = plan_epoch(session, data_dir, project_id).digest()
        latest = session.scalar(select(Epoch).where(Epoch.project_id == project_id).order_by(Epoch.number.desc()))
        if latest is not None and latest.metrics.get("label_state") == state:
            job = session.get(Job, latest.metrics.get("job_id", -1))
            if job is not None:
                return job
    # The latest number in the key: labels changed and changed back train again.
    after = latest.number if latest is not None else 0
    return submit(database, sender, project_id=project_id, kind=EPOCH_KIND, key=f"epoch:{after}:{state}",
                  user_id=user_id)


def loop_labels(plan: EpochPlan) -> SlideLabels:
    """The plan's labels as the loop takes them: model columns, -1 for excluded categories."""
    return {slide_id: (superpixels_M, plan.columns(category_ids_M))
            for slide_id, (superpixels_M, category_ids_M) in plan.labels.items()}


def label_counts(plan: EpochPlan) -> dict[int, int]:
    """Labelled superpixels per category id on the slides with features, excluded ones included."""
    counts = dict.fromkeys((cid for cid, _n, _e in plan.categories), 0)
    for slide in plan.slides:
        _superpixels_M, category_ids_M = plan.labels_of(slide.slide_id, slide.superpixels)
        for cid, count in zip(*np.unique(category_ids_M, return_counts=True)):
            counts[int(cid)] = counts.get(int(cid), 0) + int(count)
    return counts


def check_trainable(plan: EpochPlan, counts: dict[int, int]) -> None:
    """:class:`ConflictError` without features, :class:`ParameterError` saying what to label when
    fewer than 2 trainable categories have labels."""
    if not plan.slides:
        raise ConflictError(f"no slide of this project has {plan.choices.extractor!r} features yet: compute them "
                            "(POST .../slides/{slide_id}/features) before training")
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


class PredictionWriter:
    """The loop's sink: writes each slide's predictions into the staged epoch and counts how many
    predicted categories differ from the previous epoch's."""

    def __init__(self, staged: ProjectFiles, files: ProjectFiles, category_ids_C: np.ndarray,
                 previous: int | None, merged: dict[int, int] | None = None) -> None:
        self.staged, self.files, self.category_ids_C, self.previous = staged, files, category_ids_C, previous
        # A category merged since the previous epoch is no change of its superpixels' predictions.
        self.merged = merged or {}
        self.compared = 0
        self.changed = 0

    def __call__(self, slide_id: int, probs_N_C: np.ndarray, has_N: np.ndarray) -> None:
        predictions = SlidePredictions(self.category_ids_C, probs_N_C)
        write_predictions(self.staged.predictions(0, slide_id), predictions)
        before = self.files.predictions(self.previous, slide_id) if self.previous is not None else None
        if before is None or not before.exists():
            return
        old_N, new_N = read_predictions(before).merged(self.merged).predicted_N, predictions.predicted_N
        both_N = (old_N[: new_N.size] > 0) & (new_N[: old_N.size] > 0)
        self.compared += int(both_N.sum())
        self.changed += int((old_N[: new_N.size] != new_N[: old_N.size])[both_N].sum())

    @property
    def changed_fraction(self) -> float | None:
        return self.changed / self.compared if self.compared else None


class Stopwatch:
    """Seconds of each step of a job, rounded to ms, for its metrics."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step], self._last = round(now - self._last, 3), now


@job_kind(EPOCH_KIND, queue=EPOCH_QUEUE, action=Action.train)
def epoch(context: JobContext) -> dict:
    """Train, predict, rank and publish one epoch of the job's project (see the module docstring)."""
    files = ProjectFiles(context.settings.data_dir, context.project_id)
    watch = Stopwatch()
    context.progress(0.0, "gathering labels", force=True)
    with context.database.session() as session:
        plan = plan_epoch(session, files.data_dir, context.project_id)
        previous = session.scalar(select(Epoch).where(Epoch.project_id == context.project_id)
                                  .order_by(Epoch.number.desc()))
        before = (previous.number, previous.labels, previous.metrics) if previous is not None else None
        merged = merged_categories(session, context.project_id)
    state = plan.digest()
    counts = label_counts(plan)
    check_trainable(plan, counts)
    features = FileFeatures({slide.slide_id: slide.path for slide in plan.slides}, plan.choices.normalisation)
    watch.lap("gather")
    categories = [Category(name) for _cid, name, excluded in plan.categories if not excluded]
    # A folder laid out like the data folder, so that ProjectFiles names the staged files too.
    staged = ProjectFiles(files.root / "epochs" / f".job-{context.job_id}.tmp", context.project_id)
    _remove_abandoned_staging(context.database, files.root / "epochs", context.job_id)
    try:
        staged.epoch_dir(0).mkdir(parents=True)
        writer = PredictionWriter(staged, files, plan.category_ids_C, before[0] if before else None, merged)
        outcome = run_epoch(features, loop_labels(plan), categories, plan.choices, assessed=True, sink=writer,
                            progress=lambda share, message: context.progress(share, message, force=True))
        watch.lap("learn")
        save_model(outcome.model, staged.model(0))
        _write_ranking(files, staged, plan, outcome)
        watch.lap("rank")
        metrics = _metrics(plan, outcome, counts, writer.changed_fraction, before) | {
            "seconds": watch.seconds, "label_state": state, "job_id": context.job_id}
        number = _publish(context.database, files, staged, metrics)
    finally:
        shutil.rmtree(staged.data_dir, ignore_errors=True)
    accuracy = outcome.assessment.get("cv_balanced_accuracy")
    return {"message": f"epoch {number}: {outcome.training.columns_L.size} labels" +
            (f", cross-validated balanced accuracy {accuracy:.2f}" if accuracy is not None else "")}


def _remove_abandoned_staging(database: Database, epochs: Path, job_id: int) -> None:
    """Remove the staging folders in ``epochs`` that no running job writes: this job's own from
    an earlier attempt, and those of epochs whose process was killed (a Cancel it did not heed,
    its time limit, the OS), which nothing else removes."""
    with database.session() as session:
        running = {str(i) for i in session.scalars(select(Job.id).where(Job.state == JobState.running, Job.id != job_id))}
    for folder in epochs.glob(".job-*.tmp"):
        if folder.name[len(".job-"):-len(".tmp")] not in running:
            shutil.rmtree(folder, ignore_errors=True)


def _write_ranking(files: ProjectFiles, staged: ProjectFiles, plan: EpochPlan, outcome: EpochOutcome) -> None:
    pool, rows_R = outcome.pool, outcome.ranked_R
    probs_R_C = tempered(pool.probs_P_C[rows_R], outcome.model.temperature)
    write_ranking(staged.ranking(0), ranking_of(
        files, pool.slide_ids_P[rows_R], pool.superpixels_P[rows_R], outcome.scores_R,
        plan.category_ids_C[probs_R_C.argmax(axis=1)] if rows_R.size else np.empty(0, np.int64),
        probs_R_C.max(axis=1, initial=0)))


def _metrics(plan: EpochPlan, outcome: EpochOutcome, counts: dict[int, int], changed: float | None,
             before: tuple[int, int, dict] | None) -> dict:
    names = {cid: (name, excluded) for cid, name, excluded in plan.categories}
    n_labels = int(outcome.training.columns_L.size)
    return {
        "model": plan.choices.model, "model_chosen": outcome.model.metrics.get("auto_chosen", plan.choices.model),
        "auto_scores": outcome.model.metrics.get("auto_scores"), "extractor": plan.choices.extractor,
        "strategy": plan.choices.strategy, "normalisation": plan.choices.normalisation,
        "label_counts": [{"category_id": cid, "name": names[cid][0], "excluded": names[cid][1], "labels": n}
                         for cid, n in counts.items() if cid in names],
        "n_training_labels": n_labels, **outcome.assessment, "slides": len(plan.slides),
        "superpixels_predicted": int(outcome.pool.slide_ids_P.size), "ranked": int(outcome.ranked_R.size),
        "strategy_picks": outcome.picks, "changed_fraction": changed,
        "stopping": stopping_signal(n_labels - before[1] if before else None, changed,
                                    outcome.assessment.get("estimated_accuracy")),
    }


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
    """The epoch number (latest when ``number`` is None) and its predictions for the slide, over
    the project's categories of now (a category merged since reads as its target)."""
    get_slide(session, project_id, slide_id)
    found = get_epoch(session, project_id, number)
    path = ProjectFiles(data_dir, project_id).predictions(found.number, slide_id)
    if not path.exists():
        raise NotFoundError(f"epoch {found.number} has no predictions for slide {slide_id}: its features were not "
                            "computed when the epoch was trained; compute them and train a new epoch")
    return found.number, read_predictions(path).merged(merged_categories(session, project_id))


def predicted_bytes(predictions: SlidePredictions) -> bytes:
    """Little-endian uint32 category id per superpixel (:data:`~slidelabel.services.labels.BINARY_ID_DTYPE`),
    index = superpixel id, 0 = none."""
    predicted_N = predictions.predicted_N
    return label_array(predicted_N.size, np.arange(1, predicted_N.size + 1), predicted_N).tobytes()


def certainty_bytes(predictions: SlidePredictions) -> bytes:
    """uint8 ``round(255 * certainty)`` per superpixel, index = superpixel id (0 at index 0)."""
    return np.concatenate([[0], np.rint(255 * predictions.certainty_N)]).astype(np.uint8).tobytes()
