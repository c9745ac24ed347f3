"""How much users agree on the superpixels they both labelled: confusion tables and Cohen's kappa.

The math is pure (arrays in, numbers out); :func:`project_agreement` reads a project's labels
and applies it to every pair of users.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from slidelabel.services.labels import integer_rows, superpixel_keys
from slidelabel.store.models import Category, Label, User


def confusion_table(first_N: np.ndarray, second_N: np.ndarray, categories_K: np.ndarray) -> np.ndarray:
    """Counts ``(K, K)`` int64 of the pairs ``(first_N[i], second_N[i])``: row = the first
    rater's category, column = the second's, both in the order of ``categories_K``.

    >>> confusion_table(np.array([1, 1, 2]), np.array([1, 2, 2]), np.array([1, 2])).tolist()
    [[1, 1], [0, 1]]
    """
    first_N, second_N = np.asarray(first_N), np.asarray(second_N)
    if first_N.shape != second_N.shape or first_N.ndim != 1:
        raise ValueError(f"ratings must be two 1-d arrays of one length, not {first_N.shape} and {second_N.shape}")
    k = len(categories_K)
    cells = _positions(first_N, categories_K) * k + _positions(second_N, categories_K)
    return np.bincount(cells, minlength=k * k).reshape(k, k).astype(np.int64)


def _positions(ratings_N: np.ndarray, categories_K: np.ndarray) -> np.ndarray:
    """The index in ``categories_K`` of each rating; ValueError for one not in it."""
    categories_K = np.asarray(categories_K)
    order_K = np.argsort(categories_K)
    sorted_K = categories_K[order_K]
    at_N = np.minimum(np.searchsorted(sorted_K, ratings_N), max(sorted_K.size - 1, 0))
    unknown = sorted_K[at_N] != ratings_N if sorted_K.size else np.ones(ratings_N.shape, bool)
    if unknown.any():
        raise ValueError(f"category {ratings_N[unknown][0]} is not in categories_K {categories_K.tolist()}")
    return order_K[at_N].astype(np.int64)


def cohen_kappa(confusion_K_K: np.ndarray) -> float:
    """Cohen's kappa ``(p_o - p_e) / (1 - p_e)`` of a confusion table: 1 = perfect agreement,
    0 = what chance gives, negative = worse than chance.

    NaN when undefined: no pairs, or ``p_e`` = 1 (both raters gave every item one and the same
    category, so agreement says nothing), as :func:`sklearn.metrics.cohen_kappa_score` does.

    >>> cohen_kappa(np.array([[2, 0], [0, 2]]))
    1.0
    """
    table = np.asarray(confusion_K_K, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] != table.shape[1]:
        raise ValueError(f"a confusion table is square, not of shape {table.shape}")
    total = table.sum()
    if total == 0:
        return math.nan
    observed = np.trace(table) / total
    expected = float(table.sum(axis=1) @ table.sum(axis=0)) / total**2
    if expected >= 1.0:
        return math.nan
    return float((observed - expected) / (1.0 - expected))


@dataclass(frozen=True)
class PairAgreement:
    """Two users' agreement on the superpixels both labelled; ``kappa`` NaN when undefined."""

    first_user_id: int
    second_user_id: int
    common: int
    agreed: int
    kappa: float
    confusion_K_K: np.ndarray
    """Rows: the first user's categories; columns: the second's (project category order)."""


def pair_agreements(user_ids_L: np.ndarray, keys_L: np.ndarray, category_ids_L: np.ndarray,
                    categories_K: np.ndarray) -> list[PairAgreement]:
    """Agreement of every pair of users (lower id first) with at least one superpixel in common,
    from labels ``(user_ids_L[i], keys_L[i], category_ids_L[i])`` with one label per user and key."""
    user_ids_L, keys_L, category_ids_L = (np.asarray(a, np.int64) for a in (user_ids_L, keys_L, category_ids_L))
    per_user = {}
    for user in np.unique(user_ids_L):
        mine = user_ids_L == user
        order = np.argsort(keys_L[mine])
        per_user[int(user)] = keys_L[mine][order], category_ids_L[mine][order]
    pairs = []
    for first, second in itertools.combinations(sorted(per_user), 2):
        (keys_a, cats_a), (keys_b, cats_b) = per_user[first], per_user[second]
        _, in_a, in_b = np.intersect1d(keys_a, keys_b, assume_unique=True, return_indices=True)
        if in_a.size == 0:
            continue
        table = confusion_table(cats_a[in_a], cats_b[in_b], categories_K)
        pairs.append(PairAgreement(first, second, int(in_a.size), int(np.trace(table)), cohen_kappa(table), table))
    return pairs


def project_agreement(session: Session, project_id: int
                      ) -> tuple[list[int], dict[int, tuple[str, int]], list[PairAgreement]]:
    """Agreement between the labellers of a project: ``(category ids in legend order,
    {user_id: (username, labels)}, pairs)``."""
    categories = list(session.scalars(select(Category.id).where(Category.project_id == project_id)
                                      .order_by(Category.position, Category.id)))
    labels_L4 = integer_rows(session, select(Label.user_id, Label.slide_id, Label.superpixel, Label.category_id)
                             .where(Label.project_id == project_id))
    users, counts = np.unique(labels_L4[:, 0], return_counts=True)
    names = dict(session.execute(select(User.id, User.username).where(User.id.in_(users.tolist()))).all())
    keys_L = superpixel_keys(labels_L4[:, 1], labels_L4[:, 2])
    pairs = pair_agreements(labels_L4[:, 0], keys_L, labels_L4[:, 3], np.asarray(categories, np.int64))
    return categories, {int(u): (names[int(u)], int(c)) for u, c in zip(users, counts)}, pairs
