"""Synthetic labelled superpixel features shared by the model tests (seeded, small, fast)."""

from __future__ import annotations

import numpy as np

from slidelabel.pipelines.models import MODELS, Category

#: tumour, stroma, necrosis (labelled), "blurry" (excluded, though some rows carry its label),
#: lymphocytes (no labels yet).
CATEGORIES = [
    Category("tumour"),
    Category("stroma"),
    Category("necrosis"),
    Category("blurry", excluded=True),
    Category("lymphocytes"),
]
#: Options the tests train each model with: ``auto`` searches a short plan with time to finish
#: it, so that its choice does not depend on the machine's speed.
MODEL_OPTIONS = {"auto": {"candidates": ("linear", "boosting"), "time_budget_s": 600.0}}
LABELLED = [0, 1, 2]
EXCLUDED = 3
UNLABELLED = 4


def gaussian_blobs(n_per_class: int, *, n_classes: int = 3, n_feats: int = 6, seed: int = 0):
    """``(feats_N_D, classes_N)``: one unit Gaussian per class around fixed random centres
    (the same for every ``seed``, which only draws the points)."""
    centres_C_D = np.random.default_rng(1234).normal(size=(n_classes, n_feats)) * 2.0
    classes_N = np.repeat(np.arange(n_classes), n_per_class)
    feats_N_D = centres_C_D[classes_N] + np.random.default_rng(seed).normal(size=(len(classes_N), n_feats))
    return feats_N_D.astype(np.float32), classes_N


def labelled_set():
    """``(feats_N_D, labels_N)``: 3 labelled categories of 60 rows, plus 20 rows labelled with
    the excluded "blurry" category that sit on tumour rows, so training on them would show."""
    feats_N_D, classes_N = gaussian_blobs(60)
    labels_N = np.array(LABELLED)[classes_N]
    blurry_N_D = feats_N_D[classes_N == 0][:20] + 0.01
    feats_N_D = np.concatenate([feats_N_D, blurry_N_D])
    return feats_N_D, np.concatenate([labels_N, np.full(20, EXCLUDED)]).astype(np.int64)


def query_feats():
    """``feats_N_D`` of 51 unlabelled superpixels from the same classes."""
    return gaussian_blobs(17, seed=1)[0]


def model_inputs(name: str, feats_N_D: np.ndarray, *, side: int = 8) -> np.ndarray:
    """``feats_N_D`` as the model ``name`` takes them: unchanged for feature-vector models; for
    patch models (``cnn``) as flattened (4, side, side) patches whose channel k is feature k
    everywhere (the first 4 features, constant so that flips and turns keep them)."""
    if MODELS[name].inputs != "patches":
        return feats_N_D
    patches_N_C_S_S = np.broadcast_to(feats_N_D[:, :4, None, None], (len(feats_N_D), 4, side, side))
    return np.ascontiguousarray(patches_N_C_S_S.reshape(len(feats_N_D), -1))
