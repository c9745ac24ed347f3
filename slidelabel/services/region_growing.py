"""The connected region of like superpixels grown from one (grow to similar).

Adjacency (superpixels sharing a pixel edge at the working level) is computed tile by tile and
kept per slide in ``adjacency.npz`` beside the label map, as CSR arrays indexed by superpixel id.

Likeness is agreement of the latest epoch's predictions; before any epoch, it is distance in the
slide's standardised features: the feature array is read one stored chunk of rows at a time (never
whole: 409,520 superpixels x 274 features held 2.5 GB per hover when it was), the columns'
statistics come from the array, a few seeds' distances are kept, and at most :data:`MEASURERS`
requests measure at once.
"""

from __future__ import annotations

import contextlib
import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from sqlalchemy.orm import Session

from slidelabel.errors import NotFoundError, OutputError, ParameterError
from slidelabel.pipelines.normalisation import SlideStatistics
from slidelabel.services.epochs import slide_predictions
from slidelabel.services.tiles import LabelMap, label_map, superpixel_table, superpixels_version
from slidelabel.services.turns import Turns
from slidelabel.store.atomic import atomic_path
from slidelabel.store.feature_files import chunk_rows, open_features, slide_statistics
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Project, Slide

#: The adjacency cache of a slide, in its superpixel folder.
ADJACENCY_FILE = "adjacency.npz"
#: Side of the label-map tiles read at a time while finding neighbours (memory ~ 12 bytes x side²).
ADJACENCY_TILE_PX = 2048
#: Requests measuring feature distances at once per process, each holding one stored chunk of the
#: feature array (about 26 MB) and 4-8 bytes per superpixel; the others wait their turn.
MEASURERS = 2
#: Seconds a request waits for its turn to measure before it is answered busy (503).
MEASURE_WAIT_S = 10.0
#: Seeds whose distances are kept per process (4 bytes per superpixel each): a cursor resting on a
#: superpixel, and grow at another threshold, measure nothing again.
SEED_DISTANCES = 8
_MEASURERS = Turns(MEASURERS)


def _edge_pairs(ids_H_W: np.ndarray) -> np.ndarray:
    """(P,) unique keys ``a << 32 | b`` of the pairs ``a < b`` of different non-zero ids that touch
    along a pixel edge (one int64 per pair: sorting them is several times faster than pairs)."""
    keys = []
    for a, b in ((ids_H_W[:, :-1], ids_H_W[:, 1:]), (ids_H_W[:-1, :], ids_H_W[1:, :])):
        differ = (a != b) & (a > 0) & (b > 0)
        a_P, b_P = a[differ].astype(np.int64), b[differ].astype(np.int64)
        keys.append(np.minimum(a_P, b_P) << 32 | np.maximum(a_P, b_P))
    return np.unique(np.concatenate(keys))


@dataclass(frozen=True)
class Adjacency:
    """Superpixel neighbours as CSR arrays: the neighbours of id ``i`` are
    ``indices[indptr[i]:indptr[i + 1]]`` (row 0, no superpixel, has none)."""

    indptr: np.ndarray
    indices: np.ndarray

    def neighbours(self, superpixel: int) -> np.ndarray:
        return self.indices[self.indptr[superpixel]:self.indptr[superpixel + 1]]


def adjacency_of(labels: LabelMap, count: int, *, tile_px: int = ADJACENCY_TILE_PX) -> Adjacency:
    """Which of superpixels ``1..count`` share a pixel edge at the working level, read tile by
    tile (each tile with one more column and row, so pairs across tile borders are found)."""
    if tile_px < 2:
        raise ParameterError(f"tile_px must be >= 2, got {tile_px}")
    height, width = labels.shapes[0]
    found = [np.zeros(0, np.int64)]
    for top in range(0, height, tile_px):
        for left in range(0, width, tile_px):
            ids = labels.window(0, left, top, min(tile_px + 1, width - left), min(tile_px + 1, height - top))
            found.append(_edge_pairs(ids))
    keys_P = np.unique(np.concatenate(found))
    low_P, high_P = keys_P >> 32, keys_P & 0xFFFFFFFF
    keep_P = high_P <= count
    both_Q_2 = np.concatenate([np.stack([low_P, high_P], 1)[keep_P], np.stack([high_P, low_P], 1)[keep_P]])
    both_Q_2 = both_Q_2[np.lexsort((both_Q_2[:, 1], both_Q_2[:, 0]))]
    indptr = np.zeros(count + 2, np.int64)
    np.cumsum(np.bincount(both_Q_2[:, 0], minlength=count + 1), out=indptr[1:])
    return Adjacency(indptr, both_Q_2[:, 1].astype(np.int32))


@functools.lru_cache(maxsize=16)
def _cached_adjacency(folder: str, version: str) -> Adjacency:
    path = Path(folder) / ADJACENCY_FILE
    if path.is_file():
        with np.load(path) as stored:
            if str(stored["version"]) == version:
                return Adjacency(stored["indptr"], stored["indices"])
    adjacency = adjacency_of(label_map(Path(folder)), superpixel_table(Path(folder)).ids.size)
    # Only a cache: a slide job's sweep of unfinished outputs may take the temporary file away
    # while it is written, and the next request computes the adjacency again.
    with contextlib.suppress(OutputError), atomic_path(path) as tmp, open(tmp, "wb") as out:
        np.savez(out, indptr=adjacency.indptr, indices=adjacency.indices, version=np.array(version))
    return adjacency


def slide_adjacency(folder: Path) -> Adjacency:
    """The adjacency of a finished superpixel folder, computed once per version of its superpixels."""
    return _cached_adjacency(str(folder), superpixels_version(folder))


def grow(adjacency: Adjacency, seed: int, similar_N: np.ndarray, *, max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The superpixels reached from ``seed`` through neighbours that are all ``similar``.

    Parameters
    ----------
    adjacency : the slide's neighbours.
    seed : the superpixel id grown from (always part of the region).
    similar_N : (N + 1,) bool, index = superpixel id: which superpixels the region may take.
    max_steps : most neighbour steps from the seed.

    Returns
    -------
    ``(ids, steps)``: the region's ids in the order reached and each one's number of steps from
    the seed (0 for the seed), both (M,) int64.
    """
    if not 1 <= seed < len(adjacency.indptr) - 1:
        raise ParameterError(f"no superpixel {seed}; this slide has 1..{len(adjacency.indptr) - 2}")
    steps_N = np.full(len(adjacency.indptr) - 1, -1, np.int64)
    steps_N[seed] = 0
    order, queue = [seed], deque([seed])
    while queue:
        here = queue.popleft()
        if steps_N[here] >= max_steps:
            continue
        for there in adjacency.neighbours(here):
            if steps_N[there] < 0 and similar_N[there]:
                steps_N[there] = steps_N[here] + 1
                order.append(int(there))
                queue.append(int(there))
    ids = np.asarray(order, np.int64)
    return ids, steps_N[ids]


def similar_by_prediction(predicted_N: np.ndarray, certainty_N: np.ndarray, seed: int,
                          min_certainty: float) -> np.ndarray:
    """(N + 1,) bool: predicted as the seed's category with at least ``min_certainty`` (0-1).
    ``predicted_N``/``certainty_N`` are per superpixel ``1..N`` (row ``i`` = id ``i + 1``)."""
    category = predicted_N[seed - 1]
    similar = (predicted_N == category) & (certainty_N >= min_certainty) & (category != 0)
    return np.concatenate([[False], similar])


def feature_distances(feats_N_D: np.ndarray | zarr.Array, seed: int, *,
                      statistics: SlideStatistics | None = None) -> np.ndarray:
    """(N,) float32 distance of each superpixel to the seed in standardised features (each column
    z-scored over the slide's finite rows); inf for rows with NaN.

    Parameters
    ----------
    feats_N_D : (N, D) float32, a NumPy or (lazy) Zarr array: read a stored chunk of rows
        (:func:`~slidelabel.store.feature_files.chunk_rows`, about 26 MB) at a time, so memory is
        one chunk plus 4 bytes per superpixel, whatever D.
    seed : the superpixel id measured from (row ``seed - 1``).
    statistics : the columns' mean and scale (a feature file's :func:`slide_statistics`);
        computed from the rows, a first pass over them, when None.
    """
    n, d = feats_N_D.shape
    if not 1 <= seed <= n:
        raise ParameterError(f"no superpixel {seed}; this slide has 1..{n}")
    step = chunk_rows(n, d)

    def rows(start: int) -> np.ndarray:  # a copy where they are the caller's: they change in place
        rows_n_D = np.asarray(feats_N_D[start:start + step], np.float32)
        return rows_n_D.copy() if rows_n_D.base is not None or not rows_n_D.flags.writeable else rows_n_D

    seed_D = np.array(feats_N_D[seed - 1], np.float32)  # a copy: a Zarr row can be a view of its whole chunk
    if not np.isfinite(seed_D).all():
        raise ParameterError(f"superpixel {seed} has no features; pick one on tissue")
    if statistics is None:
        statistics = SlideStatistics.of_chunks(rows(start) for start in range(0, n, step))
    mean_D, scale_D = statistics.mean_D, statistics.scale_D
    seed_z_D = (seed_D - mean_D) / scale_D
    distance_N = np.empty(n, np.float32)
    for start in range(0, n, step):  # the float32 steps of a whole-array z-score, row by row the same
        rows_n_D = rows(start)
        finite_n = np.isfinite(rows_n_D).all(axis=1)
        rows_n_D -= mean_D
        rows_n_D /= scale_D
        rows_n_D -= seed_z_D
        np.nan_to_num(rows_n_D, copy=False)
        np.square(rows_n_D, out=rows_n_D)
        distance_N[start:start + len(rows_n_D)] = np.where(finite_n, np.sqrt(rows_n_D.sum(axis=1)), np.inf)
        del rows_n_D  # before the next chunk is read: one chunk at a time
    return distance_N


@functools.lru_cache(maxsize=SEED_DISTANCES)
def _seed_distances(path: str, _mtime_ns: int, seed: int) -> np.ndarray:
    """:func:`feature_distances` of the feature file at ``path`` (a version of it), in a turn."""
    with _MEASURERS.hold(MEASURE_WAIT_S, f"the smart tool is busy measuring {MEASURERS} other superpixels' "
                                         f"likeness (over {MEASURE_WAIT_S:.0f} s); try again"):
        distance_N = feature_distances(open_features(Path(path)), seed, statistics=slide_statistics(Path(path)))
    distance_N.setflags(write=False)
    return distance_N


def similar_by_features(distance_N: np.ndarray, share: float) -> np.ndarray:
    """(N + 1,) bool: the ``share`` (0-1] of the slide's superpixels nearest to the seed by
    :func:`feature_distances`; rows without features (inf) are never similar."""
    if not 0 < share <= 1:
        raise ParameterError(f"share must be in (0, 1], got {share}")
    finite_N = np.isfinite(distance_N)
    cutoff = np.quantile(distance_N[finite_N], share)
    return np.concatenate([[False], distance_N <= cutoff])


@dataclass(frozen=True)
class Growth:
    """A proposed region: its ids in the order reached and their steps from the seed; what made
    superpixels alike (``"predictions"`` of ``epoch``, or ``"features"`` before any epoch) and the
    category the seed is predicted as (None by features)."""

    superpixels: np.ndarray
    steps: np.ndarray
    basis: str
    epoch: int | None
    category_id: int | None


#: The smart tool's three scales without a model: (threshold, most neighbour steps), strict and
#: near to loose and far.
SCALES = ((0.9, 3), (0.8, 10), (0.6, 30))


def _likeness(session: Session, data_dir: Path, project: Project, slide: Slide,
              seed: int) -> tuple[Adjacency, Callable[[float], np.ndarray], str, int | None, int | None]:
    """The slide's adjacency, a function threshold -> which superpixels are like ``seed`` ((N + 1,)
    bool), and what it judges by: ``"predictions"`` of the latest epoch (its number and the seed's
    predicted category) or, before any epoch or for a slide it did not predict, ``"features"``."""
    files = ProjectFiles(data_dir, project.id)
    adjacency = slide_adjacency(files.superpixels(slide.id))
    if not 1 <= seed < len(adjacency.indptr) - 1:
        raise ParameterError(f"no superpixel {seed}; this slide has 1..{len(adjacency.indptr) - 2}")
    try:
        epoch, predictions = slide_predictions(session, data_dir, project.id, slide.id)
    except NotFoundError:
        path = files.features(slide.id, project.extractor)
        if not path.exists():
            raise NotFoundError(f"slide {slide.id} has neither predictions nor {project.extractor} features yet: "
                                "prepare it (POST .../jobs/prepare) first") from None
        distance_N = _seed_distances(str(path), path.stat().st_mtime_ns, seed)
        return adjacency, lambda threshold: similar_by_features(distance_N, 1 - threshold), "features", None, None
    predicted_N, certainty_N = predictions.predicted_N, predictions.certainty_N
    category = int(predicted_N[seed - 1]) or None
    return (adjacency, lambda threshold: similar_by_prediction(predicted_N, certainty_N, seed, threshold),
            "predictions", epoch, category)


def grow_to_similar(session: Session, data_dir: Path, project: Project, slide: Slide, *, seed: int,
                    threshold: float, max_steps: int) -> Growth:
    """The connected region of superpixels like ``seed``: predicted by the latest epoch as the
    seed's category with certainty >= ``threshold`` (0-1); before any epoch (or for a slide the
    epoch did not predict), the ``1 - threshold`` share of the slide nearest to the seed in the
    project's standardised features. At most ``max_steps`` neighbour steps from the seed."""
    return grow_at_scales(session, data_dir, project, slide, seed=seed, scales=((threshold, max_steps),))[0]


def grow_at_scales(session: Session, data_dir: Path, project: Project, slide: Slide, *, seed: int,
                   scales: tuple[tuple[float, int], ...] = SCALES) -> list[Growth]:
    """:func:`grow_to_similar` at each ``(threshold, max_steps)`` of ``scales``, reading the
    predictions (or features) and the adjacency once."""
    for threshold, steps in scales:
        if not 0 <= threshold < 1 or steps < 0:
            raise ParameterError(f"a scale needs a threshold in [0, 1) and steps >= 0, got ({threshold}, {steps})")
    adjacency, like, basis, epoch, category = _likeness(session, data_dir, project, slide, seed)
    return [Growth(*grow(adjacency, seed, like(threshold), max_steps=steps), basis, epoch, category)
            for threshold, steps in scales]
