"""``random_forest``: scikit-learn's random forest; its trees are the posterior samples.

Fitting uses :class:`sklearn.ensemble.RandomForestClassifier`; afterwards only the trees are kept,
as scikit-learn ``Tree`` objects, and predicted with ``Tree.predict`` (compiled). For the model file
each tree is stored as plain node arrays (children, split feature, threshold, leaf class
fractions) and rebuilt through ``Tree.__setstate__``, the path pickle itself takes, so model files
need no pickle. ``Tree`` is scikit-learn's private API: a scikit-learn that changes it makes
:func:`ForestClassifier.from_state` fail, and ``load_model`` reports the file as unreadable.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from sklearn.ensemble import RandomForestClassifier
from sklearn.tree._tree import NODE_DTYPE, TREE_LEAF, Tree

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models.base import ClassifierState, check_chunk_rows

__all__ = ["ForestClassifier"]

# Node fields needed to predict; the others (impurity, sample counts) only serve
# feature importances and are left at 0 in a rebuilt tree.
_NODE_FIELDS = ("left_child", "right_child", "feature", "threshold", "missing_go_to_left")


class ForestClassifier:
    """A random forest whose per-tree class probabilities are the posterior samples.

    Parameters
    ----------
    n_trees : int, optional
        Number of trees, and the most posterior samples one call can give.
    balanced : bool, optional
        Weight classes inversely to their count in each tree's bootstrap sample
        (``class_weight="balanced_subsample"``); False weighs every label 1.
    max_features : str or float, optional
        Features tried per split, as in scikit-learn (``"sqrt"``: 32 of 1,024).
    min_samples_leaf : int, optional
        Labels per leaf at least. Not scikit-learn's 1: a leaf of one label is pure whatever the
        class weights, so weighting could not lift a rare class (measured: minority recall 0.19
        balanced vs 0.30 unweighted with 1, 0.46 vs 0.30 with 3), and each tree's probabilities
        would be all 0 or 1, a poor posterior sample.
    """

    name: ClassVar[str] = "random_forest"
    inputs: ClassVar[str] = "vectors"

    def __init__(
        self,
        *,
        n_trees: int = 100,
        balanced: bool = True,
        max_features: str | float = "sqrt",
        min_samples_leaf: int = 3,
    ) -> None:
        if n_trees < 1:
            raise ParameterError(f"n_trees must be >= 1, got {n_trees!r}")
        if min_samples_leaf < 1:
            raise ParameterError(f"min_samples_leaf must be >= 1, got {min_samples_leaf!r}")
        self.n_trees = int(n_trees)
        self.balanced = bool(balanced)
        self.max_features = max_features
        self.min_samples_leaf = int(min_samples_leaf)
        self.trees: list[Tree] = []
        self.n_classes = 0
        self.n_feats = 0

    def fit(
        self, feats_N_D: np.ndarray, classes_N: np.ndarray, *, n_classes: int, rng: np.random.Generator
    ) -> None:
        """Grow the trees; ``n_jobs=1`` so a seeded ``rng`` gives the same forest every time."""
        forest = RandomForestClassifier(
            n_estimators=self.n_trees,
            class_weight="balanced_subsample" if self.balanced else None,
            max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf,
            n_jobs=1,
            random_state=int(rng.integers(2**31 - 1)),
        )
        forest.fit(np.asarray(feats_N_D, dtype=np.float32), classes_N)
        # Trees have one value column per class *seen*; store them with all n_classes columns so
        # a class missing from these labels simply gets probability 0.
        self.n_classes, self.n_feats = int(n_classes), feats_N_D.shape[1]
        self.trees = [
            _rebuild(
                self.n_feats,
                n_classes,
                _node_arrays(est.tree_),
                _full_values(est.tree_, forest.classes_, n_classes),
                est.tree_.max_depth,
            )
            for est in forest.estimators_
        ]

    def predict_proba(self, feats_N_D: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
        """Return ``probs_N_C`` (float32): the trees' mean class probabilities."""
        self._check(feats_N_D, chunk_rows)
        probs_N_C = np.empty((len(feats_N_D), self.n_classes), np.float32)
        for start in range(0, len(feats_N_D), chunk_rows):
            rows = slice(start, start + chunk_rows)
            probs_N_C[rows] = self._per_tree(feats_N_D[rows], range(len(self.trees))).mean(axis=0)
        return probs_N_C

    def posterior_samples(
        self, feats_N_D: np.ndarray, *, n_samples: int, rng: np.random.Generator, chunk_rows: int = 65536
    ) -> np.ndarray:
        """Return ``samples_S_N_C`` (float32): the class probabilities of ``n_samples`` trees,
        all of them in order if ``n_samples`` equals the number of trees, else a subset drawn
        from ``rng``."""
        self._check(feats_N_D, chunk_rows)
        if not 1 <= n_samples <= len(self.trees):
            raise ParameterError(
                f"n_samples must be between 1 and the forest's {len(self.trees)} trees, got {n_samples!r}"
            )
        if n_samples == len(self.trees):
            picked = np.arange(n_samples)
        else:
            picked = rng.choice(len(self.trees), n_samples, replace=False)
        samples_S_N_C = np.empty((n_samples, len(feats_N_D), self.n_classes), np.float32)
        for start in range(0, len(feats_N_D), chunk_rows):
            rows = slice(start, start + chunk_rows)
            samples_S_N_C[:, rows] = self._per_tree(feats_N_D[rows], picked)
        return samples_S_N_C

    def _per_tree(self, feats_n_D: np.ndarray, picked: range | np.ndarray) -> np.ndarray:
        """Return ``probs_T_n_C`` (float32) of the ``picked`` trees."""
        chunk_n_D = np.ascontiguousarray(feats_n_D, dtype=np.float32)
        probs_T_n_C = np.empty((len(picked), len(chunk_n_D), self.n_classes), np.float32)
        for t, tree in enumerate(picked):
            probs_n_C = self.trees[tree].predict(chunk_n_D).reshape(len(chunk_n_D), self.n_classes)
            # Leaf values are class-weighted fractions that sum to 1 only up to rounding.
            probs_T_n_C[t] = probs_n_C / probs_n_C.sum(axis=1, keepdims=True)
        return probs_T_n_C

    def _check(self, feats_N_D: np.ndarray, chunk_rows: int) -> None:
        check_chunk_rows(chunk_rows)
        if not self.trees:
            raise ParameterError("the random forest is not fitted yet; call fit() first")
        if feats_N_D.ndim != 2 or feats_N_D.shape[1] != self.n_feats:
            raise ParameterError(f"features must have shape (N, {self.n_feats}), got {feats_N_D.shape}")

    def to_state(self) -> ClassifierState:
        """Settings and every tree's node arrays, concatenated, with ``node_counts`` to split them."""
        if not self.trees:
            raise ParameterError("the random forest is not fitted yet; call fit() first")
        states = [tree.__getstate__() for tree in self.trees]
        arrays = {name: np.concatenate([s["nodes"][name] for s in states]) for name in _NODE_FIELDS}
        arrays["values"] = np.concatenate([s["values"][:, 0, :] for s in states])
        arrays["node_counts"] = np.array([s["node_count"] for s in states], np.int64)
        arrays["max_depths"] = np.array([s["max_depth"] for s in states], np.int64)
        config = {
            "n_trees": self.n_trees,
            "balanced": self.balanced,
            "max_features": self.max_features,
            "min_samples_leaf": self.min_samples_leaf,
            "n_classes": self.n_classes,
            "n_feats": self.n_feats,
        }
        return ClassifierState(config, arrays)

    @classmethod
    def from_state(cls, state: ClassifierState) -> ForestClassifier:
        """Rebuild the fitted forest from :meth:`to_state`'s result."""
        config = dict(state.config)
        n_classes, n_feats = int(config.pop("n_classes")), int(config.pop("n_feats"))
        model = cls(**config)
        model.n_classes, model.n_feats = n_classes, n_feats
        arrays = state.arrays
        ends = np.cumsum(arrays["node_counts"])
        if ends[-1] != len(arrays["values"]) or arrays["values"].shape[1:] != (n_classes,):
            raise ValueError("forest node arrays do not match the node counts or the number of classes")
        for start, end, depth in zip(ends - arrays["node_counts"], ends, arrays["max_depths"]):
            nodes = {name: arrays[name][start:end] for name in _NODE_FIELDS}
            model.trees.append(_rebuild(n_feats, n_classes, nodes, arrays["values"][start:end], int(depth)))
        return model


def _node_arrays(tree: Tree) -> dict[str, np.ndarray]:
    nodes = tree.__getstate__()["nodes"]
    return {name: nodes[name] for name in _NODE_FIELDS}


def _full_values(tree: Tree, seen_classes: np.ndarray, n_classes: int) -> np.ndarray:
    values_M_C = np.zeros((tree.node_count, n_classes))
    values_M_C[:, seen_classes] = tree.value[:, 0, :]
    return values_M_C


def _rebuild(
    n_feats: int, n_classes: int, nodes: dict[str, np.ndarray], values_M_C: np.ndarray, max_depth: int
) -> Tree:
    """A scikit-learn ``Tree`` from node arrays and leaf values ``(M nodes, C)``.

    The compiled ``Tree.predict`` trusts its nodes, so they are checked first: a child index out
    of range or a split on a missing feature would read out of bounds, and a child numbered before
    its parent could loop forever (scikit-learn always numbers children after their parent).
    """
    node_count = len(values_M_C)
    index_M = np.arange(node_count)
    left_M, right_M, feature_M = nodes["left_child"], nodes["right_child"], nodes["feature"]
    inner_M = left_M != TREE_LEAF
    if not (
        np.all((left_M[~inner_M] == TREE_LEAF) & (right_M[~inner_M] == TREE_LEAF))
        and np.all((left_M[inner_M] > index_M[inner_M]) & (left_M[inner_M] < node_count))
        and np.all((right_M[inner_M] > index_M[inner_M]) & (right_M[inner_M] < node_count))
        and np.all((feature_M[inner_M] >= 0) & (feature_M[inner_M] < n_feats))
        and 0 <= max_depth < node_count
    ):
        raise ValueError("forest node arrays are not a valid tree")
    packed = np.zeros(node_count, NODE_DTYPE)
    for name, column in nodes.items():
        packed[name] = column
    tree = Tree(n_feats, np.array([n_classes], dtype=np.intp), 1)
    values = np.ascontiguousarray(values_M_C[:, None, :], dtype=np.float64)
    tree.__setstate__({"max_depth": max_depth, "node_count": node_count, "nodes": packed, "values": values})
    return tree
