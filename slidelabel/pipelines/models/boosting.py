"""``boosting``: gradient-boosted trees (scikit-learn's histogram boosting); a bag of boosters for samples.

Fitting uses :class:`sklearn.ensemble.HistGradientBoostingClassifier`, one thread, class-weighted,
without early stopping: with 20-2,000 labels a validation split would hold out 2-200 of them and
stop on noise; ``auto`` searches the number of iterations instead. The features are binned here,
not by scikit-learn: its weighted quantiles (used whenever labels carry weights and a feature has
more than 255 distinct values) took 7 s of a 7.4 s fit on 300 labels x 121 features; unweighted
quantiles and the code of each value make the same kind of bins in milliseconds.

Only the trees are kept, as plain node arrays with thresholds on the (standardised) features, so
model files need no pickle and no scikit-learn; prediction walks them in compiled numba code
(:func:`_add_leaf_values`), comparing in float64 as scikit-learn does. The trees are read from the
fitted booster's private ``_predictors`` and ``_baseline_prediction``: a scikit-learn that changes
them breaks fitting (the tests that compare with scikit-learn's own predictions catch it), never
the model files already written.

The main booster, fitted on every label, gives :meth:`~BoostingClassifier.predict_proba`. Posterior
samples are the class probabilities of the members of a bag: the main booster and ``n_boosters - 1``
boosters fitted on stratified bootstrap resamples of the labels. Sample ``s`` is one member for
every row, as BatchBALD and chunked prediction need (see :class:`~.base.Classifier`).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from numba import njit
from scipy.special import expit, softmax
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models.base import ClassifierState, balanced_weights, check_chunk_rows

__all__ = ["BoostingClassifier", "bin_codes", "bin_edges", "fit_booster", "tree_arrays"]

#: Bins per feature at most (scikit-learn's limit).
MAX_BINS = 255
#: Node arrays of the trees, all trees of all boosters concatenated; children are absolute indices.
NODE_DTYPES = {"feature": np.int64, "threshold": np.float64, "left": np.int64, "right": np.int64,
               "leaf": np.bool_, "value": np.float64, "missing_left": np.bool_}
#: Per-tree arrays: first node, booster (0 is the main one) and raw-score column it adds to.
TREE_DTYPES = {"tree_root": np.int64, "tree_booster": np.int64, "tree_target": np.int64}
NODE_FIELDS, TREE_FIELDS = tuple(NODE_DTYPES), tuple(TREE_DTYPES)
#: Node indices, shifted when boosters' trees are concatenated.
_INDEX_FIELDS = ("left", "right", "tree_root")


class BoostingClassifier:
    """Gradient-boosted trees; the posterior samples are a bag of boosters.

    Parameters
    ----------
    learning_rate : float, optional
        Shrinkage of every tree's values, in (0, 1].
    max_iter : int, optional
        Boosting iterations (one tree per class, or one in all for two classes, per iteration).
    max_leaf_nodes : int, optional
        Leaves per tree at most (at least 2).
    min_samples_leaf : int, optional
        Labels per leaf at least. Not scikit-learn's 20, which leaves 20-40 labels unsplittable.

    The defaults are the strongest regularisation measured for 50-300 labels of MoNuSeg
    ``context`` features (held-out balanced accuracy 0.83, 0.81, 0.85 at 50, 100, 300 labels,
    against 0.80, 0.80, 0.83 with a learning rate of 0.1, 150 iterations and leaves of 5).
    l2_regularization : float, optional
        L2 penalty on leaf values (>= 0), in units of one label's hessian.
    n_boosters : int, optional
        Members of the bag: the main booster and ``n_boosters - 1`` bootstrapped ones. Fitting
        costs ``n_boosters`` fits; 1 gives no spread between posterior samples.
    balanced : bool, optional
        Weight labels inversely to their class's count; False weighs every label 1.
    """

    name: ClassVar[str] = "boosting"
    inputs: ClassVar[str] = "vectors"

    def __init__(
        self,
        *,
        learning_rate: float = 0.05,
        max_iter: int = 100,
        max_leaf_nodes: int = 15,
        min_samples_leaf: int = 10,
        l2_regularization: float = 1.0,
        n_boosters: int = 8,
        balanced: bool = True,
    ) -> None:
        if not 0 < learning_rate <= 1:
            raise ParameterError(f"learning_rate must be in (0, 1], got {learning_rate!r}")
        if not l2_regularization >= 0:
            raise ParameterError(f"l2_regularization must be >= 0, got {l2_regularization!r}")
        for option, value, least in (("max_iter", max_iter, 1), ("max_leaf_nodes", max_leaf_nodes, 2),
                                      ("min_samples_leaf", min_samples_leaf, 1), ("n_boosters", n_boosters, 1)):
            if int(value) != value or value < least:
                raise ParameterError(f"{option} must be an integer >= {least}, got {value!r}")
        self.options = {"learning_rate": float(learning_rate), "max_iter": int(max_iter),
                        "max_leaf_nodes": int(max_leaf_nodes), "min_samples_leaf": int(min_samples_leaf),
                        "l2_regularization": float(l2_regularization)}
        self.n_boosters = int(n_boosters)
        self.balanced = bool(balanced)
        self.arrays: dict[str, np.ndarray] = {}
        self.n_classes = 0
        self.n_feats = 0

    @classmethod
    def scoring_options(cls, options: dict) -> tuple[dict, float]:
        """``options`` with one booster, which predicts the same probabilities (the bag only serves
        posterior samples), for ``auto`` to cross-validate with; and how many times longer the
        fit with ``options`` takes."""
        return options | {"n_boosters": 1}, float(cls(**options).n_boosters)

    def fit(
        self, feats_N_D: np.ndarray, classes_N: np.ndarray, *, n_classes: int, rng: np.random.Generator
    ) -> None:
        """Fit the main booster on every label, then the bootstrapped ones, seeds drawn from ``rng``."""
        seen_classes = np.unique(classes_N)
        if len(seen_classes) < 2:
            raise ParameterError(f"boosting needs labels of at least 2 classes, got {seen_classes.tolist()}")
        self.n_classes, self.n_feats = int(n_classes), feats_N_D.shape[1]
        main_seed = int(rng.integers(2**31 - 1))  # drawn first, so the bag's size does not change it
        bag_seeds = rng.integers(2**31 - 1, size=self.n_boosters - 1)
        edges_D = bin_edges(feats_N_D)
        codes_N_D = bin_codes(feats_N_D, edges_D)
        parts, baselines = [], []
        for booster, seed in enumerate([main_seed, *bag_seeds]):
            rows = _stratified_bootstrap(classes_N, np.random.default_rng(seed)) if booster else slice(None)
            weights = balanced_weights(classes_N[rows], n_classes) if self.balanced else None
            estimator = fit_booster(codes_N_D[rows], classes_N[rows], weights, seed=int(seed), **self.options)
            parts.append(tree_arrays(estimator, edges_D, booster=booster))
            baselines.append(estimator._baseline_prediction[0])
        offsets = np.cumsum([0] + [len(part["value"]) for part in parts[:-1]])
        for part, offset in zip(parts, offsets):
            for name in _INDEX_FIELDS:
                part[name] += offset
        self.arrays = {name: np.concatenate([part[name] for part in parts]) for name in NODE_FIELDS + TREE_FIELDS}
        self.arrays["baseline"] = np.array(baselines, np.float64)
        self.arrays["seen_classes"] = seen_classes.astype(np.int64)

    def predict_proba(self, feats_N_D: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
        """Return ``probs_N_C`` (float32) of the main booster."""
        return self._probabilities(feats_N_D, np.zeros(1, np.int64), chunk_rows)[0]

    def posterior_samples(
        self, feats_N_D: np.ndarray, *, n_samples: int, rng: np.random.Generator, chunk_rows: int = 65536
    ) -> np.ndarray:
        """Return ``samples_S_N_C`` (float32): the probabilities of ``n_samples`` members of the bag.

        Every member ``n_samples // n_boosters`` times, in order, then ``n_samples % n_boosters``
        others drawn from ``rng`` without replacement: with as many samples as members, each once.
        """
        if n_samples < 1:
            raise ParameterError(f"n_samples must be >= 1, got {n_samples!r}")
        repeats, rest = divmod(n_samples, self.n_boosters)
        picked_S = np.concatenate([np.tile(np.arange(self.n_boosters), repeats),
                                   rng.choice(self.n_boosters, rest, replace=False)]).astype(np.int64)
        members, slot_S = np.unique(picked_S, return_inverse=True)
        return self._probabilities(feats_N_D, members, chunk_rows)[slot_S]

    def _probabilities(self, feats_N_D: np.ndarray, members: np.ndarray, chunk_rows: int) -> np.ndarray:
        """Return ``probs_P_N_C`` (float32) of the boosters ``members``, ``chunk_rows`` rows at a time."""
        check_chunk_rows(chunk_rows)
        if not self.arrays:
            raise ParameterError("the boosting model is not fitted yet; call fit() first")
        if feats_N_D.ndim != 2 or feats_N_D.shape[1] != self.n_feats:
            raise ParameterError(f"features must have shape (N, {self.n_feats}), got {feats_N_D.shape}")
        arrays = self.arrays
        slot_B = np.full(self.n_boosters, -1, np.int64)
        slot_B[members] = np.arange(len(members))
        used_T = slot_B[arrays["tree_booster"]] >= 0
        trees = (arrays["tree_root"][used_T], slot_B[arrays["tree_booster"][used_T]], arrays["tree_target"][used_T])
        nodes = tuple(arrays[name] for name in NODE_FIELDS)
        seen = arrays["seen_classes"]
        probs_P_N_C = np.zeros((len(members), len(feats_N_D), self.n_classes), np.float32)
        for start in range(0, len(feats_N_D), chunk_rows):
            chunk_n_D = np.ascontiguousarray(feats_N_D[start:start + chunk_rows], dtype=np.float32)
            raw_n_P_R = np.repeat(arrays["baseline"][members][None], len(chunk_n_D), axis=0)
            _add_leaf_values(chunk_n_D, *trees, *nodes, raw_n_P_R)
            if raw_n_P_R.shape[2] == 1:  # two classes: one raw score, the log-odds of the second
                second_n_P = expit(raw_n_P_R[:, :, 0])
                probs_n_P_R = np.stack([1 - second_n_P, second_n_P], axis=2)
            else:
                probs_n_P_R = softmax(raw_n_P_R, axis=2)
            probs_P_N_C[:, start:start + len(chunk_n_D), seen] = probs_n_P_R.transpose(1, 0, 2)
        return probs_P_N_C

    def to_state(self) -> ClassifierState:
        """Settings and the node arrays of every booster's trees."""
        if not self.arrays:
            raise ParameterError("the boosting model is not fitted yet; call fit() first")
        config = self.options | {"n_boosters": self.n_boosters, "balanced": self.balanced,
                                 "n_classes": self.n_classes, "n_feats": self.n_feats}
        return ClassifierState(config, dict(self.arrays))

    @classmethod
    def from_state(cls, state: ClassifierState) -> BoostingClassifier:
        """Rebuild the fitted bag from :meth:`to_state`'s result, checking the trees first: the
        compiled prediction trusts them, and a child out of range would read out of bounds."""
        config = dict(state.config)
        n_classes, n_feats = int(config.pop("n_classes")), int(config.pop("n_feats"))
        model = cls(**config)
        model.n_classes, model.n_feats = n_classes, n_feats
        dtypes = NODE_DTYPES | TREE_DTYPES | {"baseline": np.float64, "seen_classes": np.int64}
        model.arrays = {name: np.ascontiguousarray(state.arrays[name], dtype=dtype) for name, dtype in dtypes.items()}
        _check_trees(model.arrays, n_feats, n_classes, model.n_boosters)
        return model


def bin_edges(feats_N_D: np.ndarray) -> list[np.ndarray]:
    """Per feature, the increasing float64 edges of at most :data:`MAX_BINS` bins: midpoints between
    distinct values when there are few enough, else (unweighted) quantiles."""
    edges_D = []
    for column_N in np.asarray(feats_N_D, np.float64).T:
        distinct = np.unique(column_N)
        if len(distinct) <= MAX_BINS:
            edges_D.append((distinct[:-1] + distinct[1:]) / 2)
        else:
            quantiles = np.linspace(0, 1, MAX_BINS + 1)[1:-1]
            edges_D.append(np.unique(np.quantile(column_N, quantiles, method="averaged_inverted_cdf")))
    return edges_D


def bin_codes(feats_N_D: np.ndarray, edges_D: list[np.ndarray]) -> np.ndarray:
    """``codes_N_D`` (float64): bin ``i`` of a value ``x`` is the number of edges below ``x``, so
    ``code <= i`` exactly when ``x <= edges[i]``."""
    return np.stack([np.searchsorted(edges, column, side="left")
                     for edges, column in zip(edges_D, np.asarray(feats_N_D, np.float64).T, strict=True)],
                    axis=1).astype(np.float64)


def fit_booster(codes_N_D: np.ndarray, classes_N: np.ndarray, weights_N: np.ndarray | None, *, seed: int,
                **options: float) -> HistGradientBoostingClassifier:
    """One scikit-learn booster fitted on bin codes, on one thread (the histograms of a few hundred
    labels are too small to share: on 2 busy cores, 100 labels took 2.7 s on 2 threads, 0.23 s on 1)."""
    with threadpool_limits(1):
        return HistGradientBoostingClassifier(early_stopping=False, max_bins=MAX_BINS, random_state=seed,
                                              **options).fit(codes_N_D, classes_N, sample_weight=weights_N)


def tree_arrays(estimator: HistGradientBoostingClassifier, edges_D: list[np.ndarray], *,
                booster: int) -> dict[str, np.ndarray]:
    """The trees of ``estimator`` as :data:`NODE_FIELDS` and :data:`TREE_FIELDS` arrays, children
    numbered from 0 at its first tree, thresholds turned from bin codes back into feature values."""
    nodes = np.concatenate([tree.nodes for iteration in estimator._predictors for tree in iteration])
    sizes = [len(tree.nodes) for iteration in estimator._predictors for tree in iteration]
    roots = np.cumsum([0] + sizes[:-1])
    offset_M = np.repeat(roots, sizes)
    inner_M = nodes["is_leaf"] == 0
    # code <= t exactly when code <= floor(t), that is when x <= edges[floor(t)]; a leaf's or a
    # split on missing values' infinite threshold stays infinite (the last padded column).
    padded_D_E = np.full((len(edges_D), MAX_BINS), np.inf)
    for d, edges in enumerate(edges_D):
        padded_D_E[d, : len(edges)] = edges
    code_M = np.where(inner_M & np.isfinite(nodes["num_threshold"]), np.floor(nodes["num_threshold"]), MAX_BINS - 1)
    threshold_M = padded_D_E[nodes["feature_idx"], code_M.astype(np.int64)]
    return {
        "feature": nodes["feature_idx"].astype(np.int64), "threshold": threshold_M,
        "left": np.where(inner_M, nodes["left"] + offset_M, 0), "right": np.where(inner_M, nodes["right"] + offset_M, 0),
        "leaf": ~inner_M, "value": nodes["value"].astype(np.float64),
        "missing_left": nodes["missing_go_to_left"].astype(bool), "tree_root": roots.astype(np.int64),
        "tree_booster": np.full(len(sizes), booster, np.int64),
        "tree_target": np.tile(np.arange(estimator.n_trees_per_iteration_), len(estimator._predictors)),
    }


def _stratified_bootstrap(classes_N: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rows drawn with replacement within each class, as many as it has: every class keeps its count
    (a plain bootstrap drops a class of 2 labels 13% of the time)."""
    return np.concatenate([rng.choice(rows, len(rows)) for rows in
                           (np.flatnonzero(classes_N == c) for c in np.unique(classes_N))])


def _check_trees(arrays: dict[str, np.ndarray], n_feats: int, n_classes: int, n_boosters: int) -> None:
    n_nodes, roots_T = len(arrays["value"]), arrays["tree_root"]
    seen, baseline = arrays["seen_classes"], arrays["baseline"]
    n_raw = 1 if len(seen) == 2 else len(seen)
    ends_T = np.append(roots_T[1:], n_nodes)
    if not (all(len(arrays[name]) == n_nodes for name in NODE_FIELDS)
            and all(len(arrays[name]) == len(roots_T) for name in TREE_FIELDS) and len(roots_T)
            and roots_T[0] == 0 and np.all(ends_T > roots_T) and baseline.shape == (n_boosters, n_raw)
            and len(seen) >= 2 and np.all(np.diff(seen) > 0) and seen[0] >= 0 and seen[-1] < n_classes
            and np.all((arrays["tree_booster"] >= 0) & (arrays["tree_booster"] < n_boosters))
            and np.all((arrays["tree_target"] >= 0) & (arrays["tree_target"] < n_raw))):
        raise ValueError("boosting tree arrays do not match each other or the number of classes")
    index_M = np.arange(n_nodes)
    end_M = np.repeat(ends_T, ends_T - roots_T)
    inner_M = ~arrays["leaf"]
    inner, end = index_M[inner_M], end_M[inner_M]
    if not (np.all(arrays["leaf"][ends_T - 1])
            and all(np.all((arrays[side][inner_M] > inner) & (arrays[side][inner_M] < end)) for side in ("left", "right"))
            and np.all((arrays["feature"][inner_M] >= 0) & (arrays["feature"][inner_M] < n_feats))):
        raise ValueError("boosting node arrays are not valid trees")


@njit(cache=True, nogil=True)
def _add_leaf_values(feats_n_D, root_T, slot_T, target_T, feature_M, threshold_M, left_M, right_M, leaf_M,
                     value_M, missing_left_M, raw_n_P_R):  # pragma: no cover - compiled
    """Add to ``raw_n_P_R[i, slot_T[t], target_T[t]]`` the value of the leaf row ``i`` reaches in tree
    ``t``; NaN goes where the training's missing values went (as in scikit-learn)."""
    for i in range(feats_n_D.shape[0]):
        for t in range(root_T.shape[0]):
            node = root_T[t]
            while not leaf_M[node]:
                x = feats_n_D[i, feature_M[node]]
                go_left = missing_left_M[node] if np.isnan(x) else x <= threshold_M[node]
                node = left_M[node] if go_left else right_M[node]
            raw_n_P_R[i, slot_T[t], target_T[t]] += value_M[node]
