"""``auto``: a time-boxed search over models and their main settings by cross-validated balanced accuracy.

The AutoML idea in seconds rather than hours: the configurations of :data:`SEARCH_PLAN` (model and
options), cheapest first, then every other registered model with its defaults (``cnn`` only when
the features are patches it accepts), are scored by stratified k-fold balanced accuracy on the
current labels, all on the same folds, until ``time_budget_s`` is spent; the best is fitted on all
labels, the earlier (cheaper) one winning a tie. Balanced accuracy, because labels in a slide are
usually dominated by one or two tissue classes and plain accuracy would reward ignoring the rare ones.

The budget covers the final fit: a configuration is given up, and the search stops, as soon as its
remaining folds and the final fit of the slowest configuration scored so far would end past the
budget (estimated from its own folds). Timing decides only how far down the fixed list the search
gets, so with the same generator the same labels give the same model whenever the search gets as
far; the first configuration is always scored. A model may declare ``scoring_options(options)``:
options under which it predicts the same probabilities for less work (the boosting bag, which only
serves posterior samples), and how many times longer the real fit takes.
"""

from __future__ import annotations

import time
from typing import ClassVar

import numpy as np
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import StratifiedKFold
from threadpoolctl import threadpool_limits

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models.base import Classifier, ClassifierState, out_of_fold

__all__ = ["SEARCH_PLAN", "AutoClassifier", "config_key", "scoring_options", "search_plan"]

#: Fitted when there are too few labels to cross-validate (fewer than 2 in some class).
FALLBACK = "linear"

#: ``(model, options)`` in the order tried: cheapest first, each model's defaults before its
#: variants. Seconds for 5 folds on 300 labels x 121 MoNuSeg ``context`` features on 2 busy
#: cores: linear 0.03-0.14, random_forest 0.9-1.4, boosting (one booster) 0.7-2.7, mlp 2.3.
SEARCH_PLAN: tuple[tuple[str, dict], ...] = (
    ("linear", {}),
    ("linear", {"prior_precision": 10.0}),
    ("linear", {"prior_precision": 0.1}),
    ("random_forest", {}),
    ("random_forest", {"min_samples_leaf": 1}),
    ("random_forest", {"min_samples_leaf": 5, "max_features": 0.3}),
    ("boosting", {}),
    ("boosting", {"max_leaf_nodes": 7, "min_samples_leaf": 20}),
    ("boosting", {"learning_rate": 0.1, "max_iter": 200, "max_leaf_nodes": 31, "min_samples_leaf": 5}),
    ("mlp", {}),
)


def scoring_options(model: str, options: dict) -> tuple[dict, float]:
    """Options to cross-validate the registered ``model`` configured with ``options`` with: the same
    probabilities for less work where the model declares them (``scoring_options``); and how many
    times longer its fit with ``options`` takes."""
    from slidelabel.pipelines.models import MODELS  # the registry imports this module

    declared = getattr(MODELS[model], "scoring_options", None)
    return declared(options) if declared else (options, 1.0)


def config_key(model: str, options: dict) -> str:
    """A configuration's name in ``scores``: ``"linear"``, ``"random_forest(min_samples_leaf=1)"``."""
    return model + (f"({', '.join(f'{k}={v}' for k, v in options.items())})" if options else "")


class AutoClassifier:
    """Searches configurations of the registered models within a time budget; predicts with the best.

    Parameters
    ----------
    candidates : sequence of str, optional
        Registered model names to consider; by default every registered model whose ``inputs``
        is ``"vectors"``, and those whose ``inputs`` is ``"patches"`` and whose ``accepts(D)``
        says they take the features' width, except ``auto`` itself.
    max_folds : int, optional
        Folds at most; fewer when the rarest class has fewer labels (at least 2).
    time_budget_s : float, optional
        Seconds for the whole fit, search and final fit (> 0). On 2 busy cores, 100 labels x 121
        features with 3 s scored the linear and forest settings and returned in 2.4-2.7 s; with
        1 s, in 0.2-0.6 s.

    Attributes
    ----------
    chosen : str
        Registered name of the fitted model after :meth:`fit`.
    chosen_options : dict
        Its options.
    trials : list of dict
        Per configuration scored, in order: ``model``, ``params``, ``balanced_accuracy``,
        ``seconds`` (of its cross-validation); empty after the fallback.
    """

    name: ClassVar[str] = "auto"
    inputs: ClassVar[str] = "vectors"

    def __init__(
        self,
        *,
        candidates: tuple[str, ...] | list[str] | None = None,
        max_folds: int = 5,
        time_budget_s: float = 20.0,
    ) -> None:
        if max_folds < 2:
            raise ParameterError(f"max_folds must be >= 2, got {max_folds!r}")
        if not time_budget_s > 0:
            raise ParameterError(f"time_budget_s must be > 0 seconds, got {time_budget_s!r}")
        if candidates is not None:
            available = _candidate_models(None)
            unknown = [name for name in candidates if name not in available]
            if unknown or not candidates:
                raise ParameterError(
                    f"auto candidates {unknown or list(candidates)} are not registered models auto can "
                    f"choose (available: {', '.join(available)})"
                )
        self.candidates = None if candidates is None else tuple(candidates)
        self.max_folds = int(max_folds)
        self.time_budget_s = float(time_budget_s)
        self.chosen = ""
        self.chosen_options: dict = {}
        self.trials: list[dict] = []
        self.model: Classifier | None = None

    @property
    def scores(self) -> dict[str, float]:
        """Balanced accuracy per configuration scored, by :func:`config_key`."""
        return {config_key(t["model"], t["params"]): t["balanced_accuracy"] for t in self.trials}

    def fit(
        self, feats_N_D: np.ndarray, classes_N: np.ndarray, *, n_classes: int, rng: np.random.Generator
    ) -> None:
        """Score configurations until the budget is spent (none when a class has < 2 labels: then
        fit ``linear``), then fit the best on all labels with ``rng``."""
        from slidelabel.pipelines.models import make_model  # the registry imports this module

        deadline = time.perf_counter() + self.time_budget_s
        counts_C = np.bincount(classes_N, minlength=n_classes)
        smallest = int(counts_C[counts_C > 0].min())
        # Many small fits: on 2 busy cores, BLAS on 2 threads fitted linear on 240 labels in 2.0 s,
        # on 1 thread in 0.08 s.
        with threadpool_limits(1):
            self.trials = []
            if smallest >= 2:
                self.trials = self._search(feats_N_D, classes_N, n_classes, rng, deadline,
                                           min(self.max_folds, smallest))
            best = max(self.trials, key=lambda t: t["balanced_accuracy"], default=None)  # first of equals
            self.chosen, self.chosen_options = (best["model"], best["params"]) if best else (FALLBACK, {})
            self.model = make_model(self.chosen, **self.chosen_options)
            self.model.fit(feats_N_D, classes_N, n_classes=n_classes, rng=rng)

    def _search(self, feats_N_D: np.ndarray, classes_N: np.ndarray, n_classes: int, rng: np.random.Generator,
                deadline: float, n_folds: int) -> list[dict]:
        """Trials in plan order until one would end past ``deadline`` (the first always completes)."""
        from slidelabel.pipelines.models import make_model  # the registry imports this module

        folds = StratifiedKFold(n_folds, shuffle=True, random_state=int(rng.integers(2**31 - 1)))
        fit_seed = int(rng.integers(2**31 - 1))
        trials: list[dict] = []
        reserve = 0.0  # estimated seconds of the slowest final fit among the trials so far
        fold_seconds: dict[str, float] = {}  # per model, from its last trial
        for model, options in search_plan(self.candidates, feats_N_D.shape[1]):
            fit_options, final_factor = scoring_options(model, options)
            # A model not tried yet costs at least the slowest so far: the plan runs cheapest first.
            guess = fold_seconds.get(model, max(fold_seconds.values(), default=0.0))
            if trials and time.perf_counter() + n_folds * guess + reserve > deadline:
                break
            start, scores = time.perf_counter(), []
            for test_rows, probs_n_C in out_of_fold(
                lambda: make_model(model, **fit_options), feats_N_D, classes_N, folds, n_classes=n_classes,
                fold_rng=lambda: np.random.default_rng(fit_seed),
            ):
                scores.append(balanced_accuracy_score(classes_N[test_rows], probs_n_C.argmax(axis=1)))
                now = time.perf_counter()
                fold_seconds[model] = (now - start) / len(scores)
                final = fold_seconds[model] * final_factor * n_folds / (n_folds - 1)
                if trials and now + fold_seconds[model] * (n_folds - len(scores)) + max(reserve, final) > deadline:
                    return trials
            reserve = max(reserve, final)
            trials.append({"model": model, "params": dict(options), "balanced_accuracy": float(np.mean(scores)),
                           "seconds": round(time.perf_counter() - start, 3)})
        return trials

    def predict_proba(self, feats_N_D: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
        """Return ``probs_N_C`` (float32) of the chosen model."""
        return self._fitted().predict_proba(feats_N_D, chunk_rows=chunk_rows)

    def posterior_samples(
        self, feats_N_D: np.ndarray, *, n_samples: int, rng: np.random.Generator, chunk_rows: int = 65536
    ) -> np.ndarray:
        """Return ``samples_S_N_C`` (float32) of the chosen model."""
        return self._fitted().posterior_samples(
            feats_N_D, n_samples=n_samples, rng=rng, chunk_rows=chunk_rows
        )

    def _fitted(self) -> Classifier:
        if self.model is None:
            raise ParameterError("the auto model is not fitted yet; call fit() first")
        return self.model

    def to_state(self) -> ClassifierState:
        """The chosen model's state, with its name, options and every trial."""
        inner = self._fitted().to_state()
        config = {
            "candidates": None if self.candidates is None else list(self.candidates),
            "max_folds": self.max_folds,
            "time_budget_s": self.time_budget_s,
            "chosen": self.chosen,
            "chosen_options": self.chosen_options,
            "trials": self.trials,
            "chosen_config": inner.config,
        }
        return ClassifierState(config, inner.arrays)

    @classmethod
    def from_state(cls, state: ClassifierState) -> AutoClassifier:
        """Rebuild the fitted auto model and the model it chose."""
        from slidelabel.pipelines.models import MODELS  # the registry imports this module

        config = state.config
        model = cls(candidates=config["candidates"], max_folds=config["max_folds"],
                    time_budget_s=config.get("time_budget_s", 20.0))
        model.chosen, model.chosen_options = config["chosen"], dict(config.get("chosen_options", {}))
        # Files from before the search kept only a score per model name.
        model.trials = config.get("trials") or [
            {"model": name, "params": {}, "balanced_accuracy": float(score), "seconds": None}
            for name, score in config.get("scores", {}).items()
        ]
        if model.chosen not in _candidate_models(None):
            raise ValueError(f"auto chose {model.chosen!r}, which is not a registered model here")
        model.model = MODELS[model.chosen].from_state(ClassifierState(config["chosen_config"], state.arrays))
        return model


def search_plan(candidates: tuple[str, ...] | None, n_feats: int) -> list[tuple[str, dict]]:
    """:data:`SEARCH_PLAN`'s configurations of the candidate models, then the candidates it does not
    list with their defaults, in registry order."""
    names = candidates or tuple(_candidate_models(n_feats))
    planned = [(model, options) for model, options in SEARCH_PLAN if model in names]
    return planned + [(name, {}) for name in names if name not in {model for model, _ in planned}]


def _candidate_models(n_feats: int | None) -> list[str]:
    """Registered models, in registry order, ``auto`` left out, that take feature vectors or
    patches of ``n_feats`` columns (None: of any width)."""
    from slidelabel.pipelines.models import MODELS  # the registry imports this module

    return [
        name
        for name, factory in MODELS.items()
        if name != AutoClassifier.name
        and (factory.inputs == "vectors" or n_feats is None or factory.accepts(n_feats))
    ]
