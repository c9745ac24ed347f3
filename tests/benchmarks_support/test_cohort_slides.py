"""The cohort benchmark's slides: a motif repeated, mirrored every other time, read lazily."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

_MODULE_PATH = Path(__file__).resolve().parents[2] / "benchmarks" / "cohort.py"
sys.path.insert(0, str(_MODULE_PATH.parent))  # cohort.py imports its sibling tissue_mosaic
_spec = importlib.util.spec_from_file_location("cohort_benchmark", _MODULE_PATH)
cohort = sys.modules["cohort_benchmark"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(cohort)


def test_mirrored_tiling_repeats_the_motif_without_seams(monuseg_pair) -> None:
    motif = np.ascontiguousarray(monuseg_pair(0)[0][:50, :70])
    top = np.concatenate([motif, motif[:, ::-1]], axis=1)
    tile = np.concatenate([top, top[::-1]], axis=0)  # 100 x 140 px: the motif in its four mirrorings
    whole = np.tile(tile, (3, 3, 1))
    image = cohort.MirroredTiling(motif, 230, offset_px=17)
    assert image.shape == (230, 230, 3)
    np.testing.assert_array_equal(image[0:230, 0:230], whole[17:247, 17:247])
    np.testing.assert_array_equal(image[40:96, 130:230], whole[57:113, 147:247])
    # Mirrored copies meet without a jump: neighbouring columns across a seam are equal.
    np.testing.assert_array_equal(image[0:230, 52:53], image[0:230, 53:54])  # at 70 - 17 px


def test_halving_averages_two_by_two() -> None:
    rgb = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    half = cohort._halved(rgb)
    assert half.shape == (2, 3, 3) and half[0, 0, 0] == np.round((0 + 3 + 18 + 21) / 4)
