"""``auto``: choose the registered model with the best cross-validated balanced accuracy.

The AutoML idea without hours of search: every registered model that takes feature vectors, and
every one that takes patches (``cnn``) when the features are patches it accepts, is scored by
stratified k-fold balanced accuracy on the current labels with its default settings, and the best
is fitted on all labels. Balanced accuracy, because labels in a slide are usually
dominated by one or two tissue classes and plain accuracy would reward ignoring the rare ones.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models.base import Classifier, ClassifierState, cross_validate

__all__ = ["AutoClassifier"]

#: Fitted when there are too few labels to cross-validate (fewer than 2 in some class).
FALLBACK = "linear"


class AutoClassifier:
    """Picks and fits the best registered feature-vector model; predicts with it.

    Parameters
    ----------
    candidates : sequence of str, optional
        Registered model names to compare; by default every registered model whose ``inputs``
        is ``"vectors"``, and those whose ``inputs`` is ``"patches"`` and whose ``accepts(D)``
        says they take the features' width, except ``auto`` itself. On a tie the earlier one wins
        (the registry lists cheaper models first).
    max_folds : int, optional
        Folds at most; fewer when the rarest class has fewer labels (at least 2).

    Attributes
    ----------
    chosen : str
        Name of the fitted model after :meth:`fit`.
    scores : dict of str to float
        Each candidate's cross-validated balanced accuracy; empty after the fallback.
    """

    name: ClassVar[str] = "auto"
    inputs: ClassVar[str] = "vectors"

    def __init__(self, *, candidates: tuple[str, ...] | list[str] | None = None, max_folds: int = 5) -> None:
        if max_folds < 2:
            raise ParameterError(f"max_folds must be >= 2, got {max_folds!r}")
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
        self.chosen = ""
        self.scores: dict[str, float] = {}
        self.model: Classifier | None = None

    def fit(
        self, feats_N_D: np.ndarray, classes_N: np.ndarray, *, n_classes: int, rng: np.random.Generator
    ) -> None:
        """Score the candidates (unless a class has < 2 labels: then fit ``linear``), fit the best."""
        from slidelabel.pipelines.models import make_model  # the registry imports this module

        candidates = self.candidates or tuple(_candidate_models(feats_N_D.shape[1]))
        self.scores = {}
        for name in candidates:
            score = cross_validate(
                lambda name=name: make_model(name),
                feats_N_D,
                classes_N,
                n_classes=n_classes,
                rng=rng,
                max_folds=self.max_folds,
            )
            if score is None:  # too few labels to cross-validate: the same for every candidate
                break
            self.scores[name] = score
        self.chosen = max(self.scores, key=self.scores.__getitem__) if self.scores else FALLBACK
        self.model = make_model(self.chosen)
        self.model.fit(feats_N_D, classes_N, n_classes=n_classes, rng=rng)

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
        """The chosen model's state, with its name and every candidate's score."""
        inner = self._fitted().to_state()
        config = {
            "candidates": None if self.candidates is None else list(self.candidates),
            "max_folds": self.max_folds,
            "chosen": self.chosen,
            "scores": self.scores,
            "chosen_config": inner.config,
        }
        return ClassifierState(config, inner.arrays)

    @classmethod
    def from_state(cls, state: ClassifierState) -> AutoClassifier:
        """Rebuild the fitted auto model and the model it chose."""
        from slidelabel.pipelines.models import MODELS  # the registry imports this module

        config = state.config
        model = cls(candidates=config["candidates"], max_folds=config["max_folds"])
        model.chosen, model.scores = config["chosen"], {k: float(v) for k, v in config["scores"].items()}
        if model.chosen not in _candidate_models(None):
            raise ValueError(f"auto chose {model.chosen!r}, which is not a registered model here")
        model.model = MODELS[model.chosen].from_state(ClassifierState(config["chosen_config"], state.arrays))
        return model


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
