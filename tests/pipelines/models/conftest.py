"""Real features for the model tests: MoNuSeg crops, 16 px superpixels, ``context`` features."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from slidelabel.pipelines.features.extract import features_of_array
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array


def _context_features(rgb: np.ndarray, nucleus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(feats_N_D, classes_N)`` of a 400 px crop's superpixels: ``context`` features z-scored
    within the crop (the projects' default ``slide`` normalisation) and whether most of each
    superpixel is nucleus (1) or not (0)."""
    rgb, nucleus = np.ascontiguousarray(rgb[:400, :400]), nucleus[:400, :400]
    seeds = superpixel_array(rgb, SuperpixelParams(step=16))
    _, dense = np.unique(seeds, return_inverse=True)
    superpixels = dense.reshape(seeds.shape) + 1
    n = int(superpixels.max())
    area_N = np.bincount(superpixels.ravel(), minlength=n + 1)[1:]
    nucleus_N = np.bincount(superpixels.ravel(), weights=nucleus.ravel(), minlength=n + 1)[1:] > area_N / 2
    feats_N_D = features_of_array(rgb, superpixels, extractor="context", n_superpixels=n)
    finite_N = np.isfinite(feats_N_D).all(axis=1)
    feats_M_D = feats_N_D[finite_N]
    std_D = feats_M_D.std(axis=0)
    z_M_D = (feats_M_D - feats_M_D.mean(axis=0)) / np.where(std_D > 0, std_D, 1)
    return z_M_D.astype(np.float32), nucleus_N[finite_N].astype(np.int64)


@pytest.fixture(scope="session")
def monuseg_context(monuseg_pair: Callable[[int], tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """``feats``/``classes``: superpixels of two MoNuSeg crops (about 1,200, 121 features);
    ``test_feats``/``test_classes``: those of a third image's crop."""
    train = [_context_features(*monuseg_pair(i)) for i in (0, 5)]
    test_feats, test_classes = _context_features(*monuseg_pair(11))
    return {"feats": np.concatenate([f for f, _ in train]), "classes": np.concatenate([c for _, c in train]),
            "test_feats": test_feats, "test_classes": test_classes}
