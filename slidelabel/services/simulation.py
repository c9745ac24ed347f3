"""Active learning against ground truth: how many labels each strategy needs.

Images with label masks (mask value = class) are cut into superpixels, each labelled by the
majority class of its pixels. Images are split into a training pool and test images; test
images never contribute a label. Per strategy and repeat, rounds of train, predict, select a
batch and reveal its truth run until the label budget is spent, and every round is scored on the
test images. A repeat starts every strategy from the same initial labels, so the strategies are
compared on equal terms.

Each round is one round of the product's own loop
(:func:`~slidelabel.services.learning_loop.run_epoch`, what the server's epoch job runs): the same
normalisation, training, candidate pre-filters and ranking, with images in the place of slides;
the next batch is the head of its ranking, as a labeller takes the guided queue's first cards.
Inputs are read by :mod:`~slidelabel.services.simulation_inputs`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models import Category, train
from slidelabel.pipelines.normalisation import NORMALISATIONS
from slidelabel.pipelines.strategies import STRATEGIES
from slidelabel.services.learning_loop import ArrayFeatures, LoopChoices, SlideLabels, run_epoch, training_set
from slidelabel.services.projects import DEFAULT_EXTRACTOR, DEFAULT_MODEL, DEFAULT_NORMALISATION, DEFAULT_STRATEGY

#: Called with (what, done, total).
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class SimulationOptions:
    """What to simulate; sizes in image pixels, label counts in superpixels."""

    superpixel_px: int = 16
    """Superpixel side for images (pixels); slides use ``size`` at ``magnification``."""
    size: str = "50um"
    magnification: float = 10.0
    # The project defaults: a simulation with no options runs what a new project runs.
    extractor: str = DEFAULT_EXTRACTOR
    model: str = DEFAULT_MODEL
    strategies: tuple[str, ...] = (DEFAULT_STRATEGY, "random")
    normalisation: str = DEFAULT_NORMALISATION
    initial_labels: int = 10
    batch_size: int = 10
    budget: int = 300
    repeats: int = 3
    test_fraction: float = 0.3
    seed: int = 0
    auto_budget_s: float | None = None
    """``auto``'s search time per round; None: its default."""

    def __post_init__(self) -> None:
        for name in self.strategies:
            STRATEGIES.get(name)
        if not 0 < self.test_fraction < 1:
            raise ParameterError(f"test fraction must be between 0 and 1, got {self.test_fraction}")
        if not 1 <= self.initial_labels <= self.budget:
            raise ParameterError(f"initial labels ({self.initial_labels}) must be between 1 and the budget ({self.budget})")
        if self.batch_size < 1 or self.repeats < 1:
            raise ParameterError("batch size and repeats must be at least 1")
        NORMALISATIONS.get(self.normalisation)

    def choices(self, strategy: str) -> LoopChoices:
        """What the loop learns with under ``strategy``."""
        return LoopChoices(self.extractor, self.model, strategy, self.normalisation, self.auto_budget_s)


@dataclass(frozen=True)
class LabelledImage:
    """One image cut into superpixels: ``superpixels_H_W`` ids 1..N, ``classes_N`` the majority
    class of each, ``feats_N_D`` their features, ``mask_H_W`` the pixel classes."""

    name: str
    superpixels_H_W: np.ndarray
    classes_N: np.ndarray
    feats_N_D: np.ndarray
    mask_H_W: np.ndarray


@dataclass
class SimulationResult:
    rows: list[dict] = field(default_factory=list)
    full_supervision: dict = field(default_factory=dict)
    class_values: list[int] = field(default_factory=list)
    train_images: list[str] = field(default_factory=list)
    test_images: list[str] = field(default_factory=list)


def split_images(n_images: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image indices (train, test), at least one of each."""
    if n_images < 2:
        raise ParameterError("a simulation needs at least two images: one to label, one to test on")
    order = np.random.default_rng(seed).permutation(n_images)
    n_test = min(max(1, round(test_fraction * n_images)), n_images - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _scores(model, test: list[LabelledImage], features: ArrayFeatures, n_classes: int) -> dict:
    """Superpixel accuracy, balanced accuracy and macro F1, and macro pixel Dice, on ``test``."""
    truth = np.concatenate([image.classes_N for image in test])
    predicted_per_image = [_predicted(model, features.all(i)) for i in range(len(test))]
    predicted = np.concatenate(predicted_per_image)
    intersections = np.zeros(n_classes)
    sizes = np.zeros(n_classes)
    for image, predicted_N in zip(test, predicted_per_image):
        pixels = np.where(image.superpixels_H_W > 0, predicted_N[np.maximum(image.superpixels_H_W, 1) - 1], -1)
        for c in range(n_classes):
            intersections[c] += np.count_nonzero((pixels == c) & (image.mask_H_W == c))
            sizes[c] += np.count_nonzero(pixels == c) + np.count_nonzero((image.mask_H_W == c) & (pixels >= 0))
    present = sizes > 0
    return {
        "accuracy": accuracy_score(truth, predicted),
        "balanced_accuracy": balanced_accuracy_score(truth, predicted),
        "macro_f1": f1_score(truth, predicted, average="macro", labels=np.arange(n_classes), zero_division=0),
        "pixel_dice": float(np.mean(2 * intersections[present] / sizes[present])),
    }


def _predicted(model, feats_N_D: np.ndarray) -> np.ndarray:
    """Predicted class per row; -1 (always wrong) for superpixels without features."""
    finite_N = np.isfinite(feats_N_D).all(axis=1)
    predicted_N = np.full(finite_N.size, -1, np.int64)
    predicted_N[finite_N] = model.predict_proba(feats_N_D[finite_N]).argmax(axis=1)
    return predicted_N


def _initial(classes_N: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random pool rows, one of each class first when there are enough (a user starts by
    labelling an example of every category)."""
    firsts = [rng.choice(np.flatnonzero(classes_N == c)) for c in np.unique(classes_N)][:n]
    rest = np.setdiff1d(np.arange(classes_N.size), firsts)
    return np.concatenate([firsts, rng.choice(rest, n - len(firsts), replace=False)]).astype(np.int64)


@dataclass(frozen=True)
class Pool:
    """The training images as the loop sees them: image ``i`` is slide id ``i``."""

    images: list[LabelledImage]
    features: ArrayFeatures
    offsets: np.ndarray
    """Row of each image's first superpixel in the concatenated pool, and the total last."""

    @classmethod
    def of(cls, images: list[LabelledImage], normalisation: str) -> Pool:
        features = ArrayFeatures({i: image.feats_N_D for i, image in enumerate(images)}, normalisation)
        return cls(images, features, np.cumsum([0] + [image.classes_N.size for image in images]))

    @property
    def classes_N(self) -> np.ndarray:
        return np.concatenate([image.classes_N for image in self.images])

    def labels(self, labelled_N: np.ndarray) -> SlideLabels:
        """The revealed truth as the loop takes labels: per image, superpixel ids and classes."""
        labels = {}
        for i, image in enumerate(self.images):
            mine = np.flatnonzero(labelled_N[self.offsets[i]:self.offsets[i + 1]])
            labels[i] = (mine + 1, image.classes_N[mine].astype(np.int64))
        return labels


def _curve(strategy: str, repeat: int, pool: Pool, test: list[LabelledImage], test_features: ArrayFeatures,
           categories: list[Category], options: SimulationOptions) -> list[dict]:
    """One run of a strategy: a row of test scores per round, from initial labels to the budget."""
    classes_N = pool.classes_N
    labelled_N = np.zeros(classes_N.size, bool)
    labelled_N[_initial(classes_N, options.initial_labels, np.random.default_rng([options.seed, repeat, 0]))] = True
    rows = []
    while True:
        outcome = run_epoch(pool.features, pool.labels(labelled_N), categories, options.choices(strategy),
                            assessed=False)
        n_labels = int(labelled_N.sum())
        rows.append({"strategy": strategy, "repeat": repeat, "labels": n_labels,
                     **_scores(outcome.model, test, test_features, len(categories))})
        if n_labels >= options.budget or labelled_N.all():
            return rows
        head_R = outcome.ranked_R[:min(options.batch_size, options.budget - n_labels)]
        image_R, superpixel_R = outcome.pool.slide_ids_P[head_R], outcome.pool.superpixels_P[head_R]
        labelled_N[pool.offsets[image_R] + superpixel_R - 1] = True


def simulate(images: list[LabelledImage], class_values: list[int], options: SimulationOptions,
             *, progress: Progress | None = None) -> SimulationResult:
    """Run every strategy ``options.repeats`` times; returns one row per round."""
    train_idx, test_idx = split_images(len(images), options.test_fraction, options.seed)
    pool = Pool.of([images[i] for i in train_idx], options.normalisation)
    test = [images[i] for i in test_idx]
    test_features = ArrayFeatures({i: image.feats_N_D for i, image in enumerate(test)}, options.normalisation)
    categories = [Category(str(value)) for value in class_values]
    result = SimulationResult(class_values=class_values, train_images=[i.name for i in pool.images],
                              test_images=[i.name for i in test])
    everything = training_set(pool.features, pool.labels(np.ones(pool.classes_N.size, bool)))
    full = train(everything.feats_L_D, everything.columns_L, categories, model=options.model,
                 model_options=options.choices(options.strategies[0]).model_options(),
                 feature_extractor=options.extractor, rng=np.random.default_rng(options.seed),
                 cross_validate_model=False)
    result.full_supervision = {"labels": int(everything.columns_L.size),
                               **_scores(full, test, test_features, len(categories))}
    runs = [(s, r) for s in options.strategies for r in range(options.repeats)]
    for done, (strategy, repeat) in enumerate(runs, 1):
        result.rows += _curve(strategy, repeat, pool, test, test_features, categories, options)
        if progress:
            progress("runs", done, len(runs))
    return result
