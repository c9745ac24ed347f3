"""The guided queue: which superpixels a labeller sees next, answered from a file in milliseconds.

Each epoch ranks the project's unlabelled superpixels once by the project's strategy
(:func:`rank`) and writes the ranking next to its model (:func:`write_ranking`; the ``epoch``
job calls both). A queue request loads the latest epoch's ranking (cached per path and
modification time, so once per epoch and process), drops the superpixels labelled or reviewed
since with one SQL query per window of candidates, and returns the next ``n`` with their boxes,
predicted category and certainty. Before the first epoch the queue is a cold start
(:func:`cold_start_ranking`) spread over feature space and slides.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sqlalchemy import func, select, union_all
from sqlalchemy.orm import Session

from slidelabel.errors import OutputError
from slidelabel.pipelines.models import TrainedModel
from slidelabel.pipelines.strategies import STRATEGIES, Evidence, farthest_points, top_k
from slidelabel.pipelines.strategies import select as choose
from slidelabel.pipelines.uncertainty_scores import entropy_scores, margin_scores
from slidelabel.services.labels import superpixel_keys
from slidelabel.services.projects import merged_categories
from slidelabel.services.slides import get_slide
from slidelabel.store.atomic import atomic_path
from slidelabel.store.feature_files import feature_rows, open_features
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Label, Project, Review, Slide
from slidelabel.store.superpixel_files import TABLE_FILE
from slidelabel.store.superpixel_table import read_table

if TYPE_CHECKING:  # the loop imports this module
    from slidelabel.services.learning_loop import FeatureSource

#: Rankings kept in memory per process: a few thousand rows (~100 kB) each.
CACHED_RANKINGS = 32
#: Candidates looked up by the first SQL query (about 5 ms); each next window is 4 times larger,
#: so a ranking of a few thousand labelled to its end still costs only 3 or 4 queries.
FIRST_WINDOW = 256
WINDOW_GROWTH = 4
MAX_WINDOW = 8192
#: Cold start: superpixels drawn at random (the same share from every slide) ...
COLD_START_SAMPLE = 4000
#: ... of which greedy k-center keeps this many, in pick order.
COLD_START_PICKS = 256
COLD_START_SEED = 0
#: Superpixels kept in an epoch's ranking: more than a labelling session between two epochs uses.
RANKING_SIZE = 2000
#: Strategies that need posterior samples or features pick this many themselves (BatchBALD costs
#: seconds per pick); the rest of the ranking follows their pre-filter score.
BATCH_PICKS = 16
#: Unlabelled superpixels, by a cheap score, whose samples or features such strategies see.
CANDIDATES = 4000
POSTERIOR_SAMPLES = 16
RANK_SEED = 0


@dataclass(frozen=True)
class SlideFeatures:
    """A slide whose features exist: ``path`` holds ``(superpixels, D)`` float32 rows."""

    slide_id: int
    superpixels: int
    path: Path


@dataclass(frozen=True)
class Ranking:
    """Superpixels of a project in the order to show them; every array has length R.

    Attributes
    ----------
    slide_ids_R, superpixels_R : int64
        Which superpixel (ids 1..N of its slide).
    scores_R : float64
        The strategy's score (higher = sooner); NaN where there is none (cold start).
    predicted_R : int64
        Predicted category id; 0 where there is no model yet.
    certainty_R : float32
        Probability of the predicted category, in [0, 1]; NaN without a model.
    bbox_level0_R_4 : int64
        ``x_min, y_min, x_max, y_max`` in level-0 pixels, max exclusive.
    centroid_level0_R_2 : float64
        ``x, y`` in level-0 pixels.
    """

    slide_ids_R: np.ndarray
    superpixels_R: np.ndarray
    scores_R: np.ndarray
    predicted_R: np.ndarray
    certainty_R: np.ndarray
    bbox_level0_R_4: np.ndarray
    centroid_level0_R_2: np.ndarray


@dataclass(frozen=True)
class QueueItem:
    slide_id: int
    superpixel: int
    bbox_level0: tuple[int, int, int, int]
    centroid_level0: tuple[float, float]
    predicted: int | None
    certainty: float | None
    score: float | None


@dataclass(frozen=True)
class Queue:
    """The next superpixels to label and the epoch that ranked them (None: cold start)."""

    epoch: int | None
    items: list[QueueItem]


def write_ranking(path: Path, ranking: Ranking) -> None:
    """Write ``ranking`` to ``path`` (an ``.npz``; folders created) atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, **{name: getattr(ranking, name) for name in Ranking.__dataclass_fields__})


def read_ranking(path: Path) -> Ranking:
    """The ranking at ``path``; :class:`OutputError` when missing or not a ranking."""
    try:
        with np.load(path) as data:
            return Ranking(**{name: data[name] for name in Ranking.__dataclass_fields__})
    except (OSError, KeyError, ValueError) as error:
        raise OutputError(f"{path} holds no slidelabel ranking ({error}); train a new epoch") from None


# Memoisation, not state: a ranking file never changes under the same path and mtime.
@lru_cache(maxsize=CACHED_RANKINGS)
def _cached_ranking(path: Path, mtime_ns: int) -> Ranking:
    return read_ranking(path)


def slides_with_features(session: Session, files: ProjectFiles, extractor: str) -> list[SlideFeatures]:
    """The project's slides, by id, whose superpixels and ``extractor`` features are computed."""
    slides = session.execute(select(Slide.id, Slide.superpixels).where(
        Slide.project_id == files.project_id, Slide.superpixels.is_not(None)).order_by(Slide.id)).all()
    found = [SlideFeatures(slide_id, count, files.features(slide_id, extractor)) for slide_id, count in slides]
    return [slide for slide in found if slide.path.exists()]


def ranking_of(files: ProjectFiles, slide_ids_R: np.ndarray, superpixels_R: np.ndarray, scores_R: np.ndarray,
               predicted_R: np.ndarray, certainty_R: np.ndarray) -> Ranking:
    """A :class:`Ranking` of the given superpixels, with boxes and centroids read from their
    slides' superpixel tables."""
    bbox_R_4 = np.zeros((slide_ids_R.size, 4), np.int64)
    centroid_R_2 = np.zeros((slide_ids_R.size, 2), np.float64)
    for slide_id in np.unique(slide_ids_R):
        mine = slide_ids_R == slide_id
        table = read_table(files.superpixels(int(slide_id)) / TABLE_FILE)
        bbox_R_4[mine] = table.bbox_level0[superpixels_R[mine] - 1]
        centroid_R_2[mine] = table.centroid_level0[superpixels_R[mine] - 1]
    return Ranking(np.asarray(slide_ids_R, np.int64), np.asarray(superpixels_R, np.int64),
                   np.asarray(scores_R, np.float64), np.asarray(predicted_R, np.int64),
                   np.asarray(certainty_R, np.float32), bbox_R_4, centroid_R_2)


def cold_start_ranking(files: ProjectFiles, slides: list[SlideFeatures]) -> Ranking:
    """The queue before any model: superpixels spread over feature space and over slides.

    Up to :data:`COLD_START_SAMPLE` superpixels are drawn at random, the same number from every
    slide (a small slide is not drowned by a large one), their features are standardised, and
    greedy k-center (:func:`~slidelabel.pipelines.strategies.farthest_points`) orders
    :data:`COLD_START_PICKS` of them, each as far as possible from those before it.

    Why this and not the alternatives: plain random picks follow tissue prevalence, so a class
    covering 2 % of the tissue takes ~50 cards to appear once, and the first model cannot learn
    it; k-center on *every* superpixel would instead lead with the rarest oddities (pen marks,
    folds, out-of-focus edges). Running k-center on a random sample keeps both: each region of
    feature space is shown early, while an artefact covering 0.1 % of the slides appears in a
    4,000 sample only a handful of times (and is labelled with an excluded category when it
    does). Scores are NaN: no model has judged these yet. Cost: ``O(picks x sample x D)``, once
    per state of the feature files (cached).
    """
    mtimes = tuple(slide.path.stat().st_mtime_ns for slide in slides)
    return _cold_start(files, tuple(slides), mtimes)


@lru_cache(maxsize=CACHED_RANKINGS)
def _cold_start(files: ProjectFiles, slides: tuple[SlideFeatures, ...], _mtimes: tuple[int, ...]) -> Ranking:
    """:func:`cold_start_ranking`, cached per project, slides and feature file versions."""
    rng = np.random.default_rng(COLD_START_SEED)
    per_slide = math.ceil(COLD_START_SAMPLE / max(len(slides), 1))
    slide_parts, row_parts, feature_parts = [], [], []
    for slide in slides:
        array = open_features(slide.path)
        rows_M = np.sort(rng.choice(array.shape[0], size=min(array.shape[0], per_slide), replace=False))
        feats_M_D = feature_rows(array, rows_M)
        finite_M = np.isfinite(feats_M_D).all(axis=1)  # superpixels without pixels have NaN rows
        slide_parts.append(np.full(int(finite_M.sum()), slide.slide_id, np.int64))
        row_parts.append(rows_M[finite_M])
        feature_parts.append(feats_M_D[finite_M])
    if not slides or not sum(part.size for part in row_parts):
        empty = np.empty(0)
        return ranking_of(files, empty.astype(np.int64), empty.astype(np.int64), empty, empty, empty)
    slide_ids_S, rows_S = np.concatenate(slide_parts), np.concatenate(row_parts)
    feats_S_D = np.concatenate(feature_parts).astype(np.float64)
    std_D = feats_S_D.std(axis=0)
    feats_S_D = (feats_S_D - feats_S_D.mean(axis=0)) / np.where(std_D > 0, std_D, 1.0)
    # farthest_points starts at row 0: shuffled, so the first card is a random superpixel.
    shuffled_S = rng.permutation(rows_S.size)
    picked_K = shuffled_S[farthest_points(feats_S_D[shuffled_S], k=min(COLD_START_PICKS, rows_S.size))]
    nothing_K = np.full(picked_K.size, np.nan)
    return ranking_of(files, slide_ids_S[picked_K], rows_S[picked_K] + 1, nothing_K,
                      np.zeros(picked_K.size, np.int64), nothing_K)


@dataclass(frozen=True)
class Pool:
    """Predictions of the P superpixels of the project that have features, for the strategy."""

    slide_ids_P: np.ndarray
    superpixels_P: np.ndarray
    probs_P_C: np.ndarray
    labelled_P: np.ndarray
    """bool: has an effective label (excluded categories included): never ranked."""
    columns_P: np.ndarray
    """int64 model column of the label, -1 where unlabelled or excluded."""


def rank(strategy: str, model: TrainedModel, pool: Pool, features: FeatureSource
         ) -> tuple[np.ndarray, np.ndarray, int]:
    """Rows of ``pool`` to show, best first, by the strategy registered as ``strategy``, with
    their scores, and how many of them the strategy picked itself (``features``: the pool's
    normalised features).

    Strategies of predictions alone rank :data:`RANKING_SIZE` rows over the whole project.
    Those needing posterior samples or features would need them for every superpixel (16 x N x
    C samples, N x D features: gigabytes for a million superpixels), so they see the
    :data:`CANDIDATES` unlabelled rows with the highest entropy (an upper bound of BALD) or
    margin score (what ``diversity`` starts from), pick :data:`BATCH_PICKS`, and the rest of
    the candidates follow in that pre-filter order and with those scores.
    """
    info = STRATEGIES[strategy]
    if not (info.needs_samples or info.needs_features):
        chosen = choose(strategy, Evidence(pool.probs_P_C, pool.labelled_P, labels_N=pool.columns_P),
                        k=RANKING_SIZE, rng=RANK_SEED)
        return chosen.indices, chosen.scores, chosen.indices.size
    unlabelled_U = np.flatnonzero(~pool.labelled_P)
    cheap = entropy_scores if info.needs_samples else margin_scores
    candidates = top_k(cheap(pool.probs_P_C[unlabelled_U]), unlabelled_U, k=CANDIDATES)
    if candidates.indices.size == 0:
        return candidates.indices, candidates.scores, 0
    feats_M_D = _pool_features(features, pool, candidates.indices, model.feature_mean_D.size)
    samples_S_M_C = model.posterior_samples(feats_M_D, n_samples=POSTERIOR_SAMPLES,
                                            rng=np.random.default_rng(RANK_SEED)) if info.needs_samples else None
    z_M_D = (feats_M_D - model.feature_mean_D) / model.feature_scale_D if info.needs_features else None
    evidence = Evidence(pool.probs_P_C[candidates.indices], np.zeros(candidates.indices.size, bool),
                        samples_S_M_C, z_M_D)
    picked = choose(strategy, evidence, k=BATCH_PICKS, rng=RANK_SEED)
    rest_M = np.ones(candidates.indices.size, bool)
    rest_M[picked.indices] = False
    rows = np.concatenate([candidates.indices[picked.indices], candidates.indices[rest_M]])[:RANKING_SIZE]
    scores = np.concatenate([picked.scores, candidates.scores[rest_M]])[:RANKING_SIZE]
    return rows, scores, picked.indices.size


def _pool_features(features: FeatureSource, pool: Pool, rows_M: np.ndarray, dims: int) -> np.ndarray:
    """``(M, dims)`` float32 features of the pool rows ``rows_M``, read slide by slide."""
    feats_M_D = np.empty((rows_M.size, dims), np.float32)
    for slide_id in features.slide_ids:
        mine = np.flatnonzero(pool.slide_ids_P[rows_M] == slide_id)
        mine = mine[np.argsort(pool.superpixels_P[rows_M[mine]])]  # increasing rows for Zarr
        if mine.size:
            feats_M_D[mine] = features.rows(slide_id, pool.superpixels_P[rows_M[mine]] - 1)
    return feats_M_D


def next_superpixels(session: Session, data_dir: Path, project: Project, *, n: int,
                     slide_id: int | None = None) -> Queue:
    """The next ``n`` superpixels to label (of one slide if ``slide_id``): the latest epoch's
    ranking, or the cold start before the first epoch, without those labelled by anyone or
    reviewed since the ranking was made."""
    if slide_id is not None:
        get_slide(session, project.id, slide_id)
    files = ProjectFiles(data_dir, project.id)
    epoch = session.scalar(select(func.max(Epoch.number)).where(Epoch.project_id == project.id))
    if epoch is None:
        ranking = cold_start_ranking(files, slides_with_features(session, files, project.extractor))
    else:
        path = files.ranking(epoch)
        if not path.exists():
            raise OutputError(f"epoch {epoch} has no ranking file ({path}); train a new epoch")
        ranking = _cached_ranking(path, path.stat().st_mtime_ns)
    # Slides deleted since the ranking was made are skipped.
    shown = [slide_id] if slide_id is not None else list(
        session.scalars(select(Slide.id).where(Slide.project_id == project.id)))
    order_R = np.flatnonzero(np.isin(ranking.slide_ids_R, shown))
    chosen = _unlabelled_head(session, ranking, order_R, n)
    merged = merged_categories(session, project.id)
    return Queue(epoch, [_item(ranking, int(r), merged) for r in chosen])


def _unlabelled_head(session: Session, ranking: Ranking, order_R: np.ndarray, n: int) -> list[int]:
    """The first ``n`` rows of ``order_R`` whose superpixel nobody has labelled or reviewed.

    Windows of candidates are checked with one query each, growing while labellers have used up
    the head of the ranking."""
    chosen: list[int] = []
    start, window = 0, max(FIRST_WINDOW, 4 * n)
    while len(chosen) < n and start < order_R.size:
        rows_W = order_R[start:start + window]
        slides_W, superpixels_W = ranking.slide_ids_R[rows_W], ranking.superpixels_R[rows_W]
        taken = _taken_keys(session, slides_W, superpixels_W)
        free_W = rows_W[~np.isin(superpixel_keys(slides_W, superpixels_W), taken)]
        chosen += free_W[: n - len(chosen)].tolist()
        start, window = start + window, min(WINDOW_GROWTH * window, MAX_WINDOW)
    return chosen


def _taken_keys(session: Session, slides_W: np.ndarray, superpixels_W: np.ndarray) -> np.ndarray:
    """Keys (:func:`~slidelabel.services.labels.superpixel_keys`) of those of the given
    superpixels that have a label or a review, from one query (a superset by slide and id).

    The slides are the project's (:func:`next_superpixels` checks), so there is no project
    condition: with one, SQLite would scan the project's labels instead of using the (slide,
    superpixel) index.
    """
    slide_list, superpixel_list = np.unique(slides_W).tolist(), np.unique(superpixels_W).tolist()
    query = union_all(*(select(table.slide_id, table.superpixel).where(
        table.slide_id.in_(slide_list), table.superpixel.in_(superpixel_list)) for table in (Label, Review)))
    rows = np.fromiter(chain.from_iterable(session.execute(query).tuples()), np.int64).reshape(-1, 2)
    return superpixel_keys(rows[:, 0], rows[:, 1])


def _item(ranking: Ranking, row: int, merged: Mapping[int, int]) -> QueueItem:
    """Row ``row`` of the ranking as the queue shows it: a prediction of a category merged since
    the ranking was made reads as the category it was merged into (``merged``)."""
    predicted, certainty, score = ranking.predicted_R[row], ranking.certainty_R[row], ranking.scores_R[row]
    predicted = merged.get(int(predicted), int(predicted))
    return QueueItem(
        slide_id=int(ranking.slide_ids_R[row]), superpixel=int(ranking.superpixels_R[row]),
        bbox_level0=tuple(int(v) for v in ranking.bbox_level0_R_4[row]),
        centroid_level0=tuple(float(v) for v in ranking.centroid_level0_R_2[row]),
        predicted=int(predicted) if predicted else None,
        certainty=None if np.isnan(certainty) else float(certainty),
        score=None if np.isnan(score) else float(score))
