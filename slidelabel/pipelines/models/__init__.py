"""Classifiers of superpixel features, registered by name, and :func:`train` to fit one on labels.

:data:`MODELS` (a :class:`~slidelabel.registry.Registry`, built on first use) maps a name to a
classifier class (see :class:`~.base.Classifier`). Each lives in its own module, listed in
:data:`BUILTIN_MODELS`; a new model (``mlp``, ``cnn``) is one module and one line there, or an
entry point of the group ``slidelabel.models`` in another package. A model whose module fails to
import (a missing optional dependency such as torch) is logged and left out, not fatal.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> feats_N_D = rng.normal(size=(60, 3))
>>> labels_N = (feats_N_D[:, 0] > 0).astype(np.int64)
>>> model = train(feats_N_D, labels_N, [Category("tumour"), Category("stroma")],
...               model="linear", feature_extractor="color_stats")
>>> model.predict_proba(feats_N_D).shape
(60, 2)
"""

from __future__ import annotations

import importlib
import logging

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models.auto import AutoClassifier, config_key, scoring_options
from slidelabel.pipelines.models.base import (
    Category,
    Classifier,
    ClassifierState,
    TrainedModel,
    cross_validate,
    out_of_fold,
)
from slidelabel.pipelines.models.model_files import ModelFileError, load_model, read_header, save_model
from slidelabel.registry import Registry

__all__ = [
    "DEFAULT_MODEL",
    "MODELS",
    "Category",
    "Classifier",
    "ClassifierState",
    "ModelFileError",
    "TrainedModel",
    "load_model",
    "load_registry",
    "make_model",
    "out_of_fold",
    "read_header",
    "save_model",
    "train",
]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "slidelabel.models"
#: Built-in models as ``name: "module:Class"``, cheapest first (``auto`` prefers earlier ones on ties).
BUILTIN_MODELS = {
    "linear": "slidelabel.pipelines.models.linear:LinearClassifier",
    "random_forest": "slidelabel.pipelines.models.forest:ForestClassifier",
    "boosting": "slidelabel.pipelines.models.boosting:BoostingClassifier",
    "mlp": "slidelabel.pipelines.models.mlp:MLPClassifier",
    "cnn": "slidelabel.pipelines.models.cnn:CNNClassifier",
    "auto": "slidelabel.pipelines.models.auto:AutoClassifier",
}


#: The best measured on both development sets by the area under the learning curve to 300 labels
#: (docs/learning.md, "Defaults by evidence").
DEFAULT_MODEL = "linear"


def load_registry(entries: dict[str, str]) -> Registry[type]:
    """A registry of ``{name: "module:Class"}``, imported on first use (with the models that
    installed packages declare); a model that fails to import is logged and skipped."""

    def load(registry: Registry[type]) -> None:
        for name, target in entries.items():
            module_name, _, class_name = target.partition(":")
            try:
                model = getattr(importlib.import_module(module_name), class_name)
            except (ImportError, AttributeError) as error:
                logger.warning("model %r is unavailable: %s", name, error)
                continue
            registry.add(name, model, description=(model.__doc__ or "").strip().splitlines()[0].replace("``", ""),
                         default=name == DEFAULT_MODEL)

    return Registry("model", ENTRY_POINT_GROUP, load=load)


#: Registered classifier classes by name.
MODELS: Registry[type] = load_registry(BUILTIN_MODELS)


def make_model(name: str, **options: object) -> Classifier:
    """Return a new, unfitted classifier of the registered model ``name`` with ``options``.

    Raises
    ------
    ParameterError
        If ``name`` is not registered (the message lists those that are) or an option is bad.
    """
    factory = MODELS.get(name)
    try:
        return factory(**options)
    except TypeError as error:
        raise ParameterError(f"bad options for model {name!r}: {error}") from error


def train(
    feats_N_D: np.ndarray,
    labels_N: np.ndarray,
    categories: list[Category],
    *,
    model: str = "auto",
    model_options: dict | None = None,
    feature_extractor: str,
    rng: np.random.Generator | None = None,
    cross_validate_model: bool = True,
) -> TrainedModel:
    """Fit a classifier on the labelled superpixels.

    Labels of excluded categories are dropped; each category with labels left gets one
    classifier column (``trained_classes``). Features are standardised with the labelled rows'
    mean and standard deviation, stored with the model.

    Parameters
    ----------
    feats_N_D : ndarray, shape (N, D)
        Features of the N labelled superpixels.
    labels_N : ndarray of int, shape (N,)
        Index into ``categories`` of each row's label.
    categories : list of Category
        All categories of the project, in index order, with unique names.
    model : str, optional
        Registered model name (see :data:`MODELS`).
    model_options : dict, optional
        Options of the model's constructor, as :func:`make_model` takes them (``auto``:
        ``time_budget_s``).
    feature_extractor : str
        Name of the feature extractor that produced ``feats_N_D``, stored with the model.
    rng : numpy.random.Generator, optional
        Source of randomness (folds, trees). None uses a fixed seed, so retraining on the same
        labels gives the same model.
    cross_validate_model : bool, optional
        Score the model by cross-validation (k fits more); a simulation that scores on held-out
        images turns it off. ``auto`` cross-validates to choose in any case.

    Returns
    -------
    TrainedModel
        With ``metrics``: ``n_labels`` (per category name, excluded ones included),
        ``n_training_labels``, ``cv_balanced_accuracy`` (None, with ``cv_note``, when a class
        has fewer than 2 labels) and, for ``auto``, ``auto_chosen`` (a registered model name),
        ``auto_params`` (its options), ``auto_scores`` (balanced accuracy by configuration, as
        :func:`~.auto.config_key` names it) and ``auto_trials`` (``model``, ``params``,
        ``balanced_accuracy``, ``seconds`` of each configuration scored, in order). For
        ``auto`` the accuracy is the chosen model's score in the selection, slightly optimistic.

    Raises
    ------
    ParameterError
        On bad shapes, non-finite features, labels outside the categories, duplicate category
        names, an unknown model, or fewer than 2 non-excluded categories with labels.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    _check_inputs(feats_N_D, labels_N, categories)
    counts_K = np.bincount(labels_N, minlength=len(categories))
    excluded_K = np.array([c.excluded for c in categories], bool)
    trained_classes = [int(k) for k in np.flatnonzero((counts_K > 0) & ~excluded_K)]
    if len(trained_classes) < 2:
        raise ParameterError(
            "training needs labels in at least 2 categories that are not excluded; "
            f"labelled: {[categories[k].name for k in trained_classes]}"
        )
    keep_N = ~excluded_K[labels_N]
    column_K = np.full(len(categories), -1)
    column_K[trained_classes] = np.arange(len(trained_classes))
    classes_N = column_K[labels_N[keep_N]]

    kept_N_D = np.asarray(feats_N_D[keep_N], dtype=np.float64)
    mean_D = kept_N_D.mean(axis=0)
    std_D = kept_N_D.std(axis=0)
    scale_D = np.where(std_D > 0, std_D, 1.0)  # a constant feature stays 0 instead of NaN
    # Fold standardisation uses every labelled row, not only each training fold: it ignores the
    # labels, and the small optimism it adds is shared by all models compared.
    z_N_D = (kept_N_D - mean_D) / scale_D

    classifier = make_model(model, **(model_options or {}))
    classifier.fit(z_N_D, classes_N, n_classes=len(trained_classes), rng=rng)
    metrics: dict = {
        "n_labels": {c.name: int(n) for c, n in zip(categories, counts_K)},
        "n_training_labels": int(keep_N.sum()),
    }
    if isinstance(classifier, AutoClassifier):
        scores = classifier.scores
        metrics |= {"auto_chosen": classifier.chosen, "auto_params": classifier.chosen_options,
                    "auto_scores": scores, "auto_trials": classifier.trials}
        accuracy = scores[config_key(classifier.chosen, classifier.chosen_options)] if scores else None
    elif cross_validate_model:
        # Options that predict the same for less work (the boosting bag serves only samples).
        fold_options, _ = scoring_options(model, model_options or {})
        accuracy = cross_validate(
            lambda: make_model(model, **fold_options), z_N_D, classes_N, n_classes=len(trained_classes), rng=rng
        )
    else:
        accuracy = None
    metrics["cv_balanced_accuracy"] = accuracy
    if accuracy is None:
        metrics["cv_note"] = (
            "not cross-validated: a category has fewer than 2 labels" if cross_validate_model
            else "not cross-validated: not asked for"
        )
    return TrainedModel(
        model_name=model,
        classifier=classifier,
        categories=list(categories),
        feature_extractor=feature_extractor,
        metrics=metrics,
        trained_classes=trained_classes,
        feature_mean_D=mean_D.astype(np.float32),
        feature_scale_D=scale_D.astype(np.float32),
    )


def _check_inputs(feats_N_D: np.ndarray, labels_N: np.ndarray, categories: list[Category]) -> None:
    if feats_N_D.ndim != 2:
        raise ParameterError(f"features must be a 2-D array (N, D), got shape {feats_N_D.shape}")
    if labels_N.shape != (len(feats_N_D),):
        raise ParameterError(f"labels must have shape ({len(feats_N_D)},), got {labels_N.shape}")
    if not np.issubdtype(labels_N.dtype, np.integer):
        raise ParameterError(f"labels must be integer category indices, got dtype {labels_N.dtype}")
    if len(labels_N) and (labels_N.min() < 0 or labels_N.max() >= len(categories)):
        raise ParameterError(
            f"labels must index the {len(categories)} categories, got values "
            f"{labels_N.min()}..{labels_N.max()}"
        )
    names = [c.name for c in categories]
    if len(set(names)) != len(names):
        raise ParameterError(f"category names must be unique, got {names}")
    if not np.all(np.isfinite(feats_N_D)):
        raise ParameterError("features contain NaN or infinite values")
