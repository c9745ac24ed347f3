"""How differences of stain and scanner between slides are taken out of the features.

A project chooses one :class:`Normalisation` by name (:data:`NORMALISATIONS`). ``slide``
standardises every feature over each slide's own superpixels (z-scores with the slide's mean and
standard deviation): it uses no labels, so slides that were never labelled are treated exactly
like labelled ones, and a slide scanned darker or stained bluer moves back onto the others.
``none`` leaves the features as extracted (the model still standardises them with its labelled
rows' statistics, as every model does).

Per-slide statistics are accumulated chunk by chunk (:class:`SlideStatistics`), so a slide of a
million superpixels is never read at once.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.registry import Registry


@dataclass(frozen=True)
class Normalisation:
    """One way to normalise; ``per_slide`` z-scores features within each slide."""

    name: str
    description: str
    per_slide: bool


#: The best measured on both development sets (docs/learning.md, "Normalisation").
DEFAULT_NORMALISATION = "slide"


def _built_in(registry: Registry[Normalisation]) -> None:
    for normalisation in (
        Normalisation("slide", "features z-scored within each slide (no labels used), so stain and scanner "
                      "differences between slides drop out", per_slide=True),
        Normalisation("none", "features as extracted; only the model's own standardisation by its labelled "
                      "superpixels", per_slide=False),
    ):
        registry.add(normalisation.name, normalisation, description=normalisation.description,
                     default=normalisation.name == DEFAULT_NORMALISATION)


NORMALISATIONS: Registry[Normalisation] = Registry("normalisation", None, load=_built_in)


def get_normalisation(name: str) -> Normalisation:
    """The normalisation registered as ``name``; :class:`ParameterError` listing them if none."""
    return NORMALISATIONS.get(name)


@dataclass(frozen=True)
class SlideStatistics:
    """Mean and scale (standard deviation, 1 where it is 0) of each feature over a slide's
    superpixels with finite features; ``count`` of them."""

    mean_D: np.ndarray
    scale_D: np.ndarray
    count: int

    @classmethod
    def of_chunks(cls, chunks: Iterable[np.ndarray]) -> SlideStatistics:
        """Statistics of the finite rows of ``(n, D)`` chunks, summed in float64.

        Sums are taken around the first chunk's mean, so that features with a large offset
        (log areas, optical densities near 1) keep their precision."""
        count, shift_D, sum_D, squares_D = 0, None, None, None
        for feats_n_D in chunks:
            feats_n_D = np.asarray(feats_n_D, np.float32)
            finite_n = np.isfinite(feats_n_D).all(axis=1)
            finite_n_D = feats_n_D if finite_n.all() else feats_n_D[finite_n]
            if not finite_n_D.size:
                continue
            if shift_D is None:
                shift_D = finite_n_D.mean(axis=0, dtype=np.float64).astype(np.float32)
                sum_D, squares_D = np.zeros(shift_D.size), np.zeros(shift_D.size)
            centred_n_D = finite_n_D - shift_D
            count += finite_n_D.shape[0]
            sum_D += centred_n_D.sum(axis=0, dtype=np.float64)
            np.square(centred_n_D, out=centred_n_D)
            squares_D += centred_n_D.sum(axis=0, dtype=np.float64)
        if shift_D is None:
            raise ParameterError("a slide without superpixels that have features cannot be normalised")
        mean_D = shift_D + sum_D / count
        std_D = np.sqrt(np.maximum(squares_D / count - np.square(sum_D / count), 0.0))
        return cls(mean_D.astype(np.float32), np.where(std_D > 1e-12, std_D, 1.0).astype(np.float32), count)

    def as_dict(self) -> dict:
        """JSON-able, for a feature array's attributes."""
        return {"mean": self.mean_D.tolist(), "scale": self.scale_D.tolist(), "count": self.count}

    @classmethod
    def from_dict(cls, values: dict) -> SlideStatistics:
        return cls(np.asarray(values["mean"], np.float32), np.asarray(values["scale"], np.float32),
                   int(values["count"]))

    def apply(self, feats_n_D: np.ndarray) -> np.ndarray:
        """float32 z-scores of ``(n, D)`` features (NaN rows stay NaN)."""
        return ((np.asarray(feats_n_D, np.float32) - self.mean_D) / self.scale_D).astype(np.float32, copy=False)


def normalised(feats_N_D: np.ndarray, normalisation: str | Normalisation) -> np.ndarray:
    """``feats_N_D`` (one slide or image) under ``normalisation``, as float32.

    Examples
    --------
    >>> feats = np.array([[1.0, 10.0], [3.0, 10.0]], np.float32)
    >>> normalised(feats, "slide")
    array([[-1.,  0.],
           [ 1.,  0.]], dtype=float32)
    """
    chosen = get_normalisation(normalisation) if isinstance(normalisation, str) else normalisation
    if not chosen.per_slide:
        return np.asarray(feats_N_D, np.float32)
    return SlideStatistics.of_chunks([feats_N_D]).apply(feats_N_D)
