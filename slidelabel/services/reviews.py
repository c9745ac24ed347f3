"""Reviews and effective labels: the one category per superpixel that training uses.

A reviewer's verdict on a superpixel (one per superpixel, whoever gave it) overrides every user's
label of it. Where there is none, the users' labels vote: see :func:`effective_labels` for the
exact rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from slidelabel.errors import ParameterError
from slidelabel.services.labels import (
    BatchResult,
    changes,
    check_category,
    check_superpixels,
    integer_rows,
    split_keys,
    superpixel_batch,
    superpixel_keys,
    write_batch,
)
from slidelabel.services.projects import merged_categories
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Label, Review, Slide, User, utcnow
from slidelabel.store.predictions import read_predictions

#: Orders of the review listing; ``-`` is descending.
SORTS = ("updated_at", "-updated_at", "certainty", "-certainty")


def set_reviews(session: Session, slide: Slide, reviewer_id: int, superpixels: Sequence[int],
                category_id: int | None) -> BatchResult:
    """Review ``superpixels`` of ``slide`` as ``category_id`` (None clears their reviews).

    A superpixel already reviewed as ``category_id`` is unchanged and keeps its reviewer. ``slide``
    must come from :func:`slidelabel.services.labels.locked_slide` in this session.
    """
    check_category(session, slide.project_id, category_id)
    ids_M = check_superpixels(slide, superpixels)
    batch = superpixel_batch(session, ids_M)
    owner = {"slide_id": slide.id}
    changed = session.scalar(select(func.count()).select_from(
        changes(Review.__table__, owner, batch, category_id).subquery()))
    write_batch(session, Review.__table__, owner, batch, category_id,
                {"project_id": slide.project_id, "reviewer_id": reviewer_id, "at": utcnow()})
    return BatchResult(changed=changed, unchanged=int(ids_M.size) - changed)


def majority_labels(keys_L: np.ndarray, category_ids_L: np.ndarray, recency_L: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    """One category per key from the labels ``(keys_L[i], category_ids_L[i])``: the category with
    the most labels of the key; among tied categories, the one labelled most recently
    (``recency_L``: distinct ranks, higher = later).

    Returns ``(keys_K, category_ids_K)``, keys sorted ascending.

    >>> majority_labels(np.array([5, 5, 5, 6]), np.array([1, 2, 2, 3]), np.arange(4))
    (array([5, 6]), array([2, 3]))
    """
    keys_L, category_ids_L, recency_L = (np.asarray(a, np.int64) for a in (keys_L, category_ids_L, recency_L))
    if keys_L.size == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    order = np.lexsort((category_ids_L, keys_L))
    keys, categories, recency = keys_L[order], category_ids_L[order], recency_L[order]
    starts_G = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]) | (categories[1:] != categories[:-1])])
    votes_G = np.diff(np.r_[starts_G, keys.size])
    latest_G = np.maximum.reduceat(recency, starts_G)
    group_keys_G, group_categories_G = keys[starts_G], categories[starts_G]
    # Sorted by key, then votes, then recency: the last group of each key wins.
    best = np.lexsort((latest_G, votes_G, group_keys_G))
    group_keys_G, group_categories_G = group_keys_G[best], group_categories_G[best]
    last = np.flatnonzero(np.r_[group_keys_G[1:] != group_keys_G[:-1], True])
    return group_keys_G[last], group_categories_G[last]


def effective_labels(session: Session, project_id: int, *, slide_id: int | None = None
                     ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """The label training uses for every labelled or reviewed superpixel of the project (or of
    one slide), as ``{slide_id: (superpixels_M, category_ids_M)}`` (int64, superpixels sorted
    ascending); slides with neither labels nor reviews are absent.

    The rule, per superpixel:

    1. if it has a review, the review's category, whatever the labels say;
    2. else the category most users labelled it with;
    3. on a tie in that count, the tied category whose most recent label (``updated_at``, then
       label id) is the latest.

    Excluded categories (glass, artefact) are returned like any other: callers that train drop
    them.
    """
    labels = select(Label.slide_id, Label.superpixel, Label.category_id).where(Label.project_id == project_id)
    reviews = select(Review.slide_id, Review.superpixel, Review.category_id).where(Review.project_id == project_id)
    if slide_id is not None:
        labels, reviews = labels.where(Label.slide_id == slide_id), reviews.where(Review.slide_id == slide_id)
    label_rows_L3 = integer_rows(session, labels.order_by(Label.updated_at, Label.id))
    review_rows_R3 = integer_rows(session, reviews)
    label_keys_L = superpixel_keys(label_rows_L3[:, 0], label_rows_L3[:, 1])
    keys_K, categories_K = majority_labels(label_keys_L, label_rows_L3[:, 2], np.arange(len(label_rows_L3)))
    review_keys_R = superpixel_keys(review_rows_R3[:, 0], review_rows_R3[:, 1])
    unreviewed = ~np.isin(keys_K, review_keys_R)
    keys = np.concatenate([keys_K[unreviewed], review_keys_R])
    categories = np.concatenate([categories_K[unreviewed], review_rows_R3[:, 2]])
    order = np.argsort(keys, kind="stable")
    keys, categories = keys[order], categories[order]
    slides, superpixels = split_keys(keys)
    starts = np.flatnonzero(np.r_[True, slides[1:] != slides[:-1]]) if keys.size else np.empty(0, np.int64)
    return {int(slides[start]): (superpixels[start:end], categories[start:end])
            for start, end in zip(starts, np.r_[starts[1:], keys.size])}


class SlidePredictionCache:
    """Predicted category and certainty per superpixel of the project's latest epoch, read from
    its prediction files once per slide, over the categories of now (a category merged since
    reads as its target); ``epoch`` is None when the project has none."""

    def __init__(self, session: Session, files: ProjectFiles) -> None:
        self.files = files
        self.epoch = session.scalar(select(func.max(Epoch.number)).where(Epoch.project_id == files.project_id))
        self.merged = merged_categories(session, files.project_id)
        self._slides: dict[int, tuple[np.ndarray, np.ndarray] | None] = {}

    def lookup(self, slide_id: int, superpixel: int) -> tuple[int | None, float | None]:
        """``(predicted category id, certainty)`` of a superpixel; Nones where it has none."""
        if self.epoch is None:
            return None, None
        if slide_id not in self._slides:
            path = self.files.predictions(self.epoch, slide_id)
            predictions = read_predictions(path).merged(self.merged) if path.exists() else None
            self._slides[slide_id] = None if predictions is None else (predictions.predicted_N,
                                                                     predictions.certainty_N)
        arrays = self._slides[slide_id]
        if arrays is None or not 0 < superpixel <= arrays[0].size or arrays[0][superpixel - 1] == 0:
            return None, None
        return int(arrays[0][superpixel - 1]), float(arrays[1][superpixel - 1])


@dataclass(frozen=True)
class ReviewQuery:
    """Which labels the review listing shows, and in which order.

    ``mismatch``: True keeps labels whose category differs from the model's prediction, False
    those equal to it (labels without a prediction are left out of both). ``sort``: ``updated_at``,
    ``certainty`` or either with ``-`` for descending; labels without a prediction sort last.
    """

    slide_id: int | None = None
    user_id: int | None = None
    category_id: int | None = None
    mismatch: bool | None = None
    reviewed: bool | None = None
    sort: str = "-updated_at"
    offset: int = 0
    limit: int = 100

    def __post_init__(self) -> None:
        if self.sort not in SORTS:
            raise ParameterError(f"sort {self.sort!r} is not one of {', '.join(SORTS)}")


@dataclass(frozen=True)
class ReviewItem:
    slide_id: int
    superpixel: int
    user_id: int
    username: str
    category_id: int
    reviewed_category_id: int | None
    updated_at: datetime
    predicted_category_id: int | None
    certainty: float | None


def review_page(session: Session, files: ProjectFiles, query: ReviewQuery) -> tuple[int, list[ReviewItem]]:
    """One page of the labels of ``files.project_id`` that match ``query``, with their reviews
    and the latest epoch's predictions: ``(total matching, items)``.

    Filters and orders the database can apply run in SQL, a page at a time; filtering by mismatch
    or sorting by certainty reads every matching label (a project has thousands, not millions).
    """
    predictions = SlidePredictionCache(session, files)
    by_certainty = query.sort.lstrip("-") == "certainty"
    if (by_certainty or query.mismatch is not None) and predictions.epoch is None:
        raise ParameterError("this project has no predictions yet, so labels cannot be filtered by mismatch "
                             "nor sorted by certainty: train an epoch first, or leave those options out")
    rows = _review_rows(files.project_id, query)
    # Newest first, unless oldest first was asked; also the order among equal certainties.
    rows = rows.order_by(*((Label.updated_at, Label.id) if query.sort == "updated_at"
                           else (Label.updated_at.desc(), Label.id.desc())))
    if not by_certainty and query.mismatch is None:
        total = session.scalar(select(func.count()).select_from(rows.order_by(None).subquery()))
        page = session.execute(rows.offset(query.offset).limit(query.limit)).all()
        return total, [ReviewItem(*row, *predictions.lookup(row.slide_id, row.superpixel)) for row in page]
    items = [ReviewItem(*row, *predictions.lookup(row.slide_id, row.superpixel)) for row in session.execute(rows)]
    if query.mismatch is not None:
        items = [item for item in items if item.predicted_category_id is not None
                 and (item.predicted_category_id != item.category_id) == query.mismatch]
    if by_certainty:
        sign = -1 if query.sort.startswith("-") else 1
        items.sort(key=lambda item: (item.certainty is None, sign * (item.certainty or 0.0)))
    return len(items), items[query.offset:query.offset + query.limit]


def _review_rows(project_id: int, query: ReviewQuery) -> Select:
    """The labels matching ``query``'s database filters, in :class:`ReviewItem`'s column order up
    to ``updated_at``."""
    rows = (select(Label.slide_id, Label.superpixel, Label.user_id, User.username, Label.category_id,
                   Review.category_id.label("reviewed_category_id"), Label.updated_at)
            .join(User, User.id == Label.user_id)
            .outerjoin(Review, and_(Review.slide_id == Label.slide_id, Review.superpixel == Label.superpixel))
            .where(Label.project_id == project_id))
    for column, value in ((Label.slide_id, query.slide_id), (Label.user_id, query.user_id),
                          (Label.category_id, query.category_id)):
        if value is not None:
            rows = rows.where(column == value)
    if query.reviewed is not None:
        rows = rows.where(Review.id.is_not(None) if query.reviewed else Review.id.is_(None))
    return rows
