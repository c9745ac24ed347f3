"""Active learning against ground truth: how many labels each strategy needs.

Images with label masks (mask value = class) are cut into superpixels, each labelled by the
majority class of its pixels. Images are split into a training pool and test images; test
images never contribute a label. Per strategy and repeat, rounds of train, predict, select a
batch and reveal its truth run until the label budget is spent, and every round is scored on the
test images. A repeat starts every strategy from the same initial labels, so the strategies are
compared on equal terms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.models import Category, train
from slidelabel.pipelines.strategies import STRATEGIES, Evidence, select
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array

#: Called with (what, done, total).
Progress = Callable[[str, int, int], None]
IMAGE_SUFFIXES = {".png", ".tif", ".tiff", ".jpg", ".jpeg"}


@dataclass(frozen=True)
class SimulationOptions:
    """What to simulate; sizes in image pixels, label counts in superpixels."""

    superpixel_px: int = 16
    # The best measured on MoNuSeg (benchmarks/monuseg_quality.py, docs/learning.md): "context"
    # over "color" adds 0.01 to 0.013 macro F1 from 250 labels on, and the forest over "linear"
    # 0.03 at 100 labels; 16 px superpixels keep 90% of nuclei (24 px: 76%).
    extractor: str = "context"
    model: str = "random_forest"
    strategies: tuple[str, ...] = ("random", "margin", "entropy", "bald", "diversity", "class_balanced")
    initial_labels: int = 10
    batch_size: int = 10
    budget: int = 500
    repeats: int = 5
    test_fraction: float = 0.3
    seed: int = 0
    normalise_per_image: bool = True
    """z-score each feature over each image's own superpixels (no labels used, so test images
    can do it too): stain and scanner differences between images otherwise dominate."""

    def __post_init__(self) -> None:
        unknown = [name for name in self.strategies if name not in STRATEGIES]
        if unknown:
            raise ParameterError(f"unknown strategies {unknown}; registered: {', '.join(STRATEGIES)}")
        if not 0 < self.test_fraction < 1:
            raise ParameterError(f"test fraction must be between 0 and 1, got {self.test_fraction}")
        if not 1 <= self.initial_labels <= self.budget:
            raise ParameterError(f"initial labels ({self.initial_labels}) must be between 1 and the budget ({self.budget})")
        if self.batch_size < 1 or self.repeats < 1:
            raise ParameterError("batch size and repeats must be at least 1")


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


def _pairs(images: Path, masks: Path) -> list[tuple[Path, Path]]:
    found = sorted(p for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ParameterError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {images}")
    missing = [p.name for p in found if not (masks / p.name).exists()]
    if missing:
        raise ParameterError(f"{len(missing)} images have no mask of the same name in {masks}, e.g. {missing[0]}")
    return [(p, masks / p.name) for p in found]


def _read_mask(path: Path) -> np.ndarray:
    mask = np.asarray(Image.open(path))
    return mask[..., 0] if mask.ndim == 3 else mask


def load_images(images: Path, masks: Path, options: SimulationOptions, *, progress: Progress | None = None) -> tuple[list[LabelledImage], list[int]]:
    """Superpixels, their majority classes and features for every image with a mask.

    Returns the images and the mask values that the classes 0..C-1 stand for.
    """
    pairs = _pairs(images, masks)
    values = sorted(set().union(*(np.unique(_read_mask(m)).tolist() for _, m in pairs)))
    lookup = np.zeros(max(values) + 1, np.int64)
    lookup[values] = np.arange(len(values))
    loaded = []
    for done, (image_path, mask_path) in enumerate(pairs, 1):
        rgb = np.asarray(Image.open(image_path).convert("RGB"))
        mask_H_W = lookup[_read_mask(mask_path)]
        if mask_H_W.shape != rgb.shape[:2]:
            raise ParameterError(f"{mask_path.name}: mask is {mask_H_W.shape}, image is {rgb.shape[:2]}")
        seeds = superpixel_array(rgb, SuperpixelParams(step=options.superpixel_px))
        _, dense = np.unique(seeds, return_inverse=True)
        superpixels_H_W = (dense.reshape(seeds.shape) + 1).astype(np.int32)
        n = int(superpixels_H_W.max())
        votes = np.bincount((superpixels_H_W.ravel() - 1) * len(values) + mask_H_W.ravel(), minlength=n * len(values))
        classes_N = votes.reshape(n, len(values)).argmax(axis=1)
        feats_N_D = features_of_array(rgb, superpixels_H_W, extractor=options.extractor, n_superpixels=n)
        if options.normalise_per_image:
            feats_N_D = _standardised(feats_N_D)
        loaded.append(LabelledImage(image_path.name, superpixels_H_W, classes_N, feats_N_D, mask_H_W))
        if progress:
            progress("images", done, len(pairs))
    return loaded, values


def split_images(n_images: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Image indices (train, test), at least one of each."""
    if n_images < 2:
        raise ParameterError("a simulation needs at least two images: one to label, one to test on")
    order = np.random.default_rng(seed).permutation(n_images)
    n_test = min(max(1, round(test_fraction * n_images)), n_images - 1)
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def _scores(model, test: list[LabelledImage], n_classes: int) -> dict:
    """Superpixel accuracy, balanced accuracy and macro F1, and macro pixel Dice, on ``test``."""
    truth = np.concatenate([image.classes_N for image in test])
    predicted_per_image = [model.predict_proba(image.feats_N_D).argmax(axis=1) for image in test]
    predicted = np.concatenate(predicted_per_image)
    intersections = np.zeros(n_classes)
    sizes = np.zeros(n_classes)
    for image, predicted_N in zip(test, predicted_per_image):
        pixels = predicted_N[image.superpixels_H_W - 1]
        for c in range(n_classes):
            intersections[c] += np.count_nonzero((pixels == c) & (image.mask_H_W == c))
            sizes[c] += np.count_nonzero(pixels == c) + np.count_nonzero(image.mask_H_W == c)
    present = sizes > 0
    return {
        "accuracy": accuracy_score(truth, predicted),
        "balanced_accuracy": balanced_accuracy_score(truth, predicted),
        "macro_f1": f1_score(truth, predicted, average="macro", labels=np.arange(n_classes), zero_division=0),
        "pixel_dice": float(np.mean(2 * intersections[present] / sizes[present])),
    }


def _initial(classes_N: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random pool rows, one of each class first when there are enough (a user starts by
    labelling an example of every category)."""
    firsts = [rng.choice(np.flatnonzero(classes_N == c)) for c in np.unique(classes_N)][:n]
    rest = np.setdiff1d(np.arange(classes_N.size), firsts)
    return np.concatenate([firsts, rng.choice(rest, n - len(firsts), replace=False)]).astype(np.int64)


def _standardised(feats_N_D: np.ndarray) -> np.ndarray:
    std = feats_N_D.std(axis=0)
    return ((feats_N_D - feats_N_D.mean(axis=0)) / np.where(std > 0, std, 1)).astype(np.float32)


def _curve(strategy: str, repeat: int, pool_X: np.ndarray, pool_y: np.ndarray, test: list[LabelledImage],
           categories: list[Category], options: SimulationOptions) -> list[dict]:
    """One run of a strategy: a row of test scores per round, from initial labels to the budget."""
    rng = np.random.default_rng([options.seed, repeat])
    labelled = np.zeros(pool_y.size, bool)
    labelled[_initial(pool_y, options.initial_labels, np.random.default_rng([options.seed, repeat, 0]))] = True
    info = STRATEGIES[strategy]
    # Distances in feature space want comparable scales: z-scores over the pool.
    feats_N_D = _standardised(pool_X) if info.needs_features else None
    rows = []
    while True:
        model = train(pool_X[labelled], pool_y[labelled], categories, model=options.model,
                      feature_extractor=options.extractor, rng=rng, cross_validate_model=False)
        n_labels = int(labelled.sum())
        rows.append({"strategy": strategy, "repeat": repeat, "labels": n_labels,
                     **_scores(model, test, len(categories))})
        if n_labels >= options.budget or labelled.all():
            return rows
        evidence = Evidence(
            probs_N_C=model.predict_proba(pool_X),
            labelled_N=labelled,
            samples_S_N_C=model.posterior_samples(pool_X, n_samples=16, rng=rng) if info.needs_samples else None,
            feats_N_D=feats_N_D,
            labels_N=np.where(labelled, pool_y, -1),
        )
        chosen = select(strategy, evidence, k=min(options.batch_size, options.budget - n_labels), rng=rng)
        labelled[chosen.indices] = True


def simulate(images: list[LabelledImage], class_values: list[int], options: SimulationOptions,
             *, progress: Progress | None = None) -> SimulationResult:
    """Run every strategy ``options.repeats`` times; returns one row per round."""
    train_idx, test_idx = split_images(len(images), options.test_fraction, options.seed)
    pool = [images[i] for i in train_idx]
    test = [images[i] for i in test_idx]
    pool_X = np.concatenate([image.feats_N_D for image in pool])
    pool_y = np.concatenate([image.classes_N for image in pool])
    categories = [Category(str(value)) for value in class_values]
    result = SimulationResult(class_values=class_values, train_images=[i.name for i in pool],
                              test_images=[i.name for i in test])
    everything = train(pool_X, pool_y, categories, model=options.model, feature_extractor=options.extractor,
                       rng=np.random.default_rng(options.seed), cross_validate_model=False)
    result.full_supervision = {"labels": int(pool_y.size), **_scores(everything, test, len(categories))}
    runs = [(s, r) for s in options.strategies for r in range(options.repeats)]
    for done, (strategy, repeat) in enumerate(runs, 1):
        result.rows += _curve(strategy, repeat, pool_X, pool_y, test, categories, options)
        if progress:
            progress("runs", done, len(runs))
    return result
