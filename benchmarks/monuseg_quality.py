"""What the learning engine reaches on MoNuSeg, and what limits it: a reproducible study.

Prints one JSON object with the parts asked for:

* ``superpixels``: per superpixel step (px), how pure the superpixels are (share of a
  superpixel's pixels that agree with its majority class), the share of nucleus superpixels,
  how many nuclei no nucleus superpixel covers, and the pixel Dice of painting every superpixel
  with its own majority class (the ceiling of ``pixel_dice`` in ``curve.csv``);
* ``features``: per feature set, step and model, macro F1 on the test images of
  ``slidelabel simulate``'s split with 50, 100 and 500 labels drawn at random from the training
  images (mean over ``--repeats`` draws) and with all their labels;
* ``ceiling``: what the features allow at best, per feature set: macro F1 of gradient boosting
  fitted on all training labels; of ``random_forest`` fitted on 5,000 labels of the test images
  themselves (scored on their other superpixels: no difference between images left to bridge);
  and of ``random_forest`` on 5,000 training labels, scored on all test superpixels and on those
  at least 75% pure only (what the mixed superpixels on nuclear borders cost);
* ``strategies``: the active-learning curves of ``slidelabel simulate`` itself (its
  ``summary.json`` per configuration).

The split, the per-image standardisation and the scoring are those of
:mod:`slidelabel.services.simulation`; test images never give labels. Superpixels and features
of the 30 images are cached as ``.npy`` under ``--cache`` (default ``/tmp/quality-cache``).

Run: ``.venv/bin/python benchmarks/monuseg_quality.py [--parts superpixels,features,ceiling,strategies]``;
progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import f1_score

from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.models import Category, train
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array
from slidelabel.services.simulation import (
    LabelledImage,
    SimulationOptions,
    _initial,
    _scores,
    _standardised,
    simulate,
    split_images,
)
from slidelabel.services.simulation_report import CHECKPOINTS, mean_curves, summarise

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "monuseg-train"
STEPS_PX = (8, 12, 16, 24)
#: The pixel class of a nucleus in the masks (0 / 255), as a class index.
NUCLEUS = 1


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Cache:
    """Superpixels and features of the MoNuSeg images, computed once and kept as ``.npy``."""

    def __init__(self, data: Path, folder: Path) -> None:
        self.names = sorted(p.name for p in (data / "images").glob("*.png"))
        self.data, self.folder = data, folder
        folder.mkdir(parents=True, exist_ok=True)

    def _cached(self, key: str, compute: Callable[[], np.ndarray]) -> np.ndarray:
        path = self.folder / f"{key}.npy"
        if path.exists():
            return np.load(path)
        array = compute()
        np.save(path, array)
        return array

    def rgb(self, name: str) -> np.ndarray:
        return np.asarray(Image.open(self.data / "images" / name).convert("RGB"))

    def mask(self, name: str) -> np.ndarray:
        """(H, W) int64 class per pixel: 0 background, 1 nucleus."""
        mask = np.asarray(Image.open(self.data / "masks" / name))
        return (mask[..., 0] if mask.ndim == 3 else mask).astype(np.int64) // 255

    def superpixels(self, name: str, step: int) -> np.ndarray:
        """(H, W) int32 ids 1..N, as :mod:`slidelabel.services.simulation_inputs` makes them for images."""
        def compute() -> np.ndarray:
            seeds = superpixel_array(self.rgb(name), SuperpixelParams(step=step))
            _, dense = np.unique(seeds, return_inverse=True)
            return (dense.reshape(seeds.shape) + 1).astype(np.int32)
        return self._cached(f"{Path(name).stem}_s{step}_superpixels", compute)

    def features(self, name: str, step: int, extractor: str) -> np.ndarray:
        """(N, D) float32 features of a registered extractor, not standardised."""
        return self._cached(f"{Path(name).stem}_s{step}_{extractor}",
                            lambda: features_of_array(self.rgb(name), self.superpixels(name, step), extractor=extractor))

    def images(self, step: int, extractors: tuple[str, ...], *, normalise: bool = True) -> list[LabelledImage]:
        """The images as the simulation sees them, features of ``extractors`` side by side."""
        loaded = []
        for name in self.names:
            superpixels_H_W, mask_H_W = self.superpixels(name, step), self.mask(name)
            n = int(superpixels_H_W.max())
            votes_N_C = np.bincount((superpixels_H_W.ravel() - 1) * 2 + mask_H_W.ravel(), minlength=2 * n).reshape(n, 2)
            feats_N_D = np.concatenate([self.features(name, step, e) for e in extractors], axis=1)
            # A superpixel that ring_labels gives no ring pixels (a sliver at a junction of three
            # or more, seen at 8 px steps) has NaN ring means: it gets the image's mean instead.
            feats_N_D = np.where(np.isfinite(feats_N_D), feats_N_D, np.nanmean(feats_N_D, axis=0))
            feats_N_D = _standardised(feats_N_D) if normalise else feats_N_D.astype(np.float32)
            loaded.append(LabelledImage(name, superpixels_H_W, votes_N_C.argmax(axis=1), feats_N_D, mask_H_W))
        return loaded


def superpixel_quality(cache: Cache, steps: tuple[int, ...]) -> dict:
    """Purity of the superpixels and the pixel Dice ceiling they set, per step."""
    out = {}
    for step in steps:
        log(f"superpixels: step {step} px ...")
        totals = {"superpixels": 0, "nucleus_superpixels": 0, "impure_pixels": 0, "pixels": 0,
                  "nuclei": 0, "nuclei_lost": 0, "mixed": 0}
        intersection, sizes = np.zeros(2), np.zeros(2)
        purities = []
        for name in cache.names:
            superpixels_H_W, mask_H_W = cache.superpixels(name, step), cache.mask(name)
            n = int(superpixels_H_W.max())
            votes_N_C = np.bincount((superpixels_H_W.ravel() - 1) * 2 + mask_H_W.ravel(), minlength=2 * n).reshape(n, 2)
            majority_N = votes_N_C.argmax(axis=1)
            purity_N = votes_N_C.max(axis=1) / votes_N_C.sum(axis=1)
            purities.append(purity_N)
            painted_H_W = majority_N[superpixels_H_W - 1]
            for c in range(2):
                intersection[c] += np.count_nonzero((painted_H_W == c) & (mask_H_W == c))
                sizes[c] += np.count_nonzero(painted_H_W == c) + np.count_nonzero(mask_H_W == c)
            nuclei_H_W, n_nuclei = ndimage.label(mask_H_W == NUCLEUS)
            covered = np.unique(nuclei_H_W[(painted_H_W == NUCLEUS) & (nuclei_H_W > 0)])
            totals["superpixels"] += n
            totals["nucleus_superpixels"] += int(np.count_nonzero(majority_N == NUCLEUS))
            totals["impure_pixels"] += int(np.count_nonzero(painted_H_W != mask_H_W))
            totals["pixels"] += mask_H_W.size
            totals["nuclei"] += n_nuclei
            totals["nuclei_lost"] += n_nuclei - covered.size
            totals["mixed"] += int(np.count_nonzero(purity_N < 0.75))
        purity = np.concatenate(purities)
        dice_C = 2 * intersection / sizes
        out[str(step)] = {
            "superpixels": totals["superpixels"],
            "nucleus_share": totals["nucleus_superpixels"] / totals["superpixels"],
            "mean_purity": float(purity.mean()),
            "share_purity_below_0.75": totals["mixed"] / totals["superpixels"],
            "pixels_disagreeing_with_their_superpixel": totals["impure_pixels"] / totals["pixels"],
            "nuclei_without_a_nucleus_superpixel": totals["nuclei_lost"] / totals["nuclei"],
            "ceiling_pixel_dice": float(dice_C.mean()),
            "ceiling_nucleus_dice": float(dice_C[NUCLEUS]),
        }
    return out


#: Label counts at which ``features`` scores random draws (the curve checkpoints of the simulation).
LABEL_COUNTS = (50, 100, 500)
#: ``features`` fits all training labels only up to this many (a forest on 330,000 superpixels of
#: 8 px takes most of an hour on 2 cores).
FULL_SUPERVISION_MAX = 150_000
#: (feature extractors side by side, superpixel step px, model) studied by ``features``.
CONFIGURATIONS = [
    (("color",), 16, "linear"),
    (("filterbank",), 16, "linear"),
    (("color", "filterbank"), 16, "linear"),
    (("context",), 16, "linear"),
    (("cnn",), 16, "linear"),
    (("color", "cnn"), 16, "linear"),
    (("color",), 16, "random_forest"),
    (("color", "filterbank"), 16, "random_forest"),
    (("context",), 16, "random_forest"),
    (("cnn",), 16, "random_forest"),
    (("context", "cnn"), 16, "random_forest"),
    (("color",), 16, "mlp"),
    (("context",), 16, "mlp"),
    (("color",), 8, "random_forest"),
    (("color",), 12, "random_forest"),
    (("color",), 24, "random_forest"),
]
#: Configurations whose active-learning curves ``strategies`` runs, with the strategies compared.
STRATEGY_RUNS = [
    ((("color",), 16, "linear"), ("random", "margin")),
    ((("color",), 16, "random_forest"), ("random", "margin")),
    ((("context",), 16, "random_forest"), ("random", "margin", "entropy", "diversity", "class_balanced", "bald")),
]


def _split(images: list[LabelledImage]) -> tuple[list[LabelledImage], list[LabelledImage]]:
    options = SimulationOptions()
    train_idx, test_idx = split_images(len(images), options.test_fraction, options.seed)
    return [images[i] for i in train_idx], [images[i] for i in test_idx]


def score_configuration(images: list[LabelledImage], model: str, *, repeats: int,
                        label_counts: tuple[int, ...] = LABEL_COUNTS, full: bool = True) -> dict:
    """Test macro F1 (and pixel Dice) of ``model`` trained on random draws of ``label_counts``
    training superpixels (mean over ``repeats`` draws, each with one of every class first) and,
    with ``full``, on all of them."""
    pool, test = _split(images)
    pool_X = np.concatenate([image.feats_N_D for image in pool])
    pool_y = np.concatenate([image.classes_N for image in pool])
    categories = [Category("background"), Category("nucleus")]

    def fit_and_score(rows: np.ndarray, rng: np.random.Generator) -> dict:
        fitted = train(pool_X[rows], pool_y[rows], categories, model=model, feature_extractor="study", rng=rng,
                       cross_validate_model=False)
        return _scores(fitted, test, len(categories))

    out = {}
    for n in label_counts:
        runs = [fit_and_score(_initial(pool_y, n, np.random.default_rng([r, n])), np.random.default_rng(r))
                for r in range(repeats)]
        out[str(n)] = {key: float(np.mean([run[key] for run in runs])) for key in ("macro_f1", "pixel_dice")}
    if full and pool_y.size > FULL_SUPERVISION_MAX:
        out["all"] = {"skipped": f"{pool_y.size} training superpixels; fits up to {FULL_SUPERVISION_MAX} only"}
    elif full:
        out["all"] = {key: float(value) for key, value in fit_and_score(np.arange(pool_y.size), np.random.default_rng(0)).items()
                      if key in ("macro_f1", "pixel_dice")}
        out["all"]["labels"] = int(pool_y.size)
    return out


def feature_study(cache: Cache, configurations: list[tuple[tuple[str, ...], int, str]], repeats: int) -> dict:
    out = {}
    for extractors, step, model in configurations:
        key = f"{'+'.join(extractors)} / {step} px / {model}"
        log(f"features: {key} ...")
        out[key] = score_configuration(cache.images(step, extractors), model, repeats=repeats)
        log(f"  {json.dumps(out[key])}")
    return out


#: Feature sets whose ceiling ``ceiling`` measures (16 px superpixels), and its label count.
CEILING_FEATURES = [("color",), ("context",), ("context", "cnn")]
CEILING_LABELS = 5000


def _purity(image: LabelledImage) -> np.ndarray:
    """(N,) share of each superpixel's pixels in its majority class."""
    n = int(image.superpixels_H_W.max())
    votes_N_C = np.bincount((image.superpixels_H_W.ravel() - 1) * 2 + image.mask_H_W.ravel(), minlength=2 * n)
    votes_N_C = votes_N_C.reshape(n, 2)
    return votes_N_C.max(axis=1) / votes_N_C.sum(axis=1)


def feature_ceiling(cache: Cache, feature_sets: list[tuple[str, ...]]) -> dict:
    categories = [Category("background"), Category("nucleus")]
    out = {}
    for extractors in feature_sets:
        key = "+".join(extractors)
        log(f"ceiling: {key} ...")
        pool, test = _split(cache.images(16, extractors))
        pool_X, pool_y = np.concatenate([i.feats_N_D for i in pool]), np.concatenate([i.classes_N for i in pool])
        test_X, test_y = np.concatenate([i.feats_N_D for i in test]), np.concatenate([i.classes_N for i in test])
        rng = np.random.default_rng(0)
        forest = partial(train, categories=categories, model="random_forest", feature_extractor=key, rng=rng,
                         cross_validate_model=False)
        boosted = HistGradientBoostingClassifier(max_iter=300, random_state=0).fit(pool_X, pool_y)
        order = rng.permutation(test_y.size)
        known, unknown = order[:CEILING_LABELS], order[CEILING_LABELS:]
        within = forest(test_X[known], test_y[known]).predict_proba(test_X[unknown]).argmax(axis=1)
        rows = rng.choice(pool_y.size, CEILING_LABELS, replace=False)
        predicted_N = forest(pool_X[rows], pool_y[rows]).predict_proba(test_X).argmax(axis=1)
        pure_N = np.concatenate([_purity(i) for i in test]) >= 0.75
        out[key] = {
            "gradient_boosting_all_labels": f1_score(test_y, boosted.predict(test_X), average="macro"),
            "forest_within_test_images": f1_score(test_y[unknown], within, average="macro"),
            "forest_all_test_superpixels": f1_score(test_y, predicted_N, average="macro"),
            "forest_test_superpixels_75_percent_pure": f1_score(test_y[pure_N], predicted_N[pure_N], average="macro"),
            "share_75_percent_pure": float(pure_N.mean()),
        }
        log(f"  {json.dumps(out[key])}")
    return out


def strategy_study(cache: Cache, runs: list, repeats: int) -> dict:
    """``slidelabel simulate`` on the cached images: per configuration, the full-supervision
    scores and per strategy the mean macro F1 and pixel Dice at the checkpoints and the labels
    needed to reach 95% of full supervision."""
    out = {}
    for (extractors, step, model), strategies in runs:
        key = f"{'+'.join(extractors)} / {step} px / {model}"
        log(f"strategies: {key}: {', '.join(strategies)} ...")
        options = SimulationOptions(superpixel_px=step, extractor="+".join(extractors), model=model,
                                    strategies=strategies, repeats=repeats)
        result = simulate(cache.images(step, extractors), [0, 255], options)
        summary = summarise(result, options)
        dice = mean_curves(result, "pixel_dice")
        out[key] = {"full_supervision": summary["full_supervision"], "strategies": {}}
        for strategy, entry in summary["strategies"].items():
            labels, mean, _ = dice[strategy]
            out[key]["strategies"][strategy] = {
                "macro_f1_at": entry["macro_f1_at"],
                "pixel_dice_at": {str(n): float(mean[labels <= n][-1]) for n in CHECKPOINTS if labels[0] <= n},
                "labels_to_95_percent": entry["labels_to_95_percent"],
                "labels_saved_vs_random": entry["labels_saved_vs_random"],
            }
        log(f"  {json.dumps(out[key])}")
    return out


PARTS: dict[str, Callable[[Cache, argparse.Namespace], dict]] = {
    "superpixels": lambda cache, args: superpixel_quality(cache, tuple(args.steps)),
    "features": lambda cache, args: feature_study(cache, CONFIGURATIONS, args.repeats),
    "ceiling": lambda cache, args: feature_ceiling(cache, CEILING_FEATURES),
    "strategies": lambda cache, args: strategy_study(cache, STRATEGY_RUNS, args.repeats),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help="comma-separated parts to run")
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS_PX), help="superpixel steps (px)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/quality-cache"))
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    cache = Cache(args.data, args.cache)
    report = {name: PARTS[name](cache, args) for name in args.parts.split(",")}
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
