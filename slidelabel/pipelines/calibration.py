"""Calibrated certainty: a prediction shown as 80% should be right about 80% of the time.

Everything here works on *out-of-fold* predictions (each labelled superpixel predicted by a model
that did not see its label), the only honest evidence of how a model does on superpixels it has not
been told about:

- :func:`fit_temperature` finds the temperature ``T`` that makes ``p ** (1 / T)`` (renormalised)
  best explain the labels (least log loss). One parameter cannot overfit a hundred labels, and it
  never changes which category is predicted, only how sure the model says it is: random forests
  are typically too timid, logistic models on few labels too bold.
- :func:`reliability` bins predictions by confidence and compares each bin's mean confidence with
  its accuracy; the expected calibration error (ECE) is their weighted mean gap.
- :func:`accuracy_interval` is the accuracy with a Wilson 95% interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from slidelabel.pipelines.models.base import tempered

#: Temperatures searched, as log T: from 20 times sharper to 20 times softer.
LOG_TEMPERATURE_RANGE = (-3.0, 3.0)
#: Smallest probability in the log loss: a confidently wrong out-of-fold prediction (a forest's
#: 0) must not make every temperature infinitely bad.
PROBABILITY_FLOOR = 1e-4
RELIABILITY_BINS = 10
Z_95 = 1.959964


def _log_loss(probs_N_C: np.ndarray, classes_N: np.ndarray, temperature: float) -> float:
    picked_N = tempered(probs_N_C, temperature)[np.arange(classes_N.size), classes_N]
    return float(-np.mean(np.log(np.maximum(picked_N, PROBABILITY_FLOOR))))


def fit_temperature(probs_N_C: np.ndarray, classes_N: np.ndarray) -> float:
    """The temperature (> 0) with the least log loss of ``probs_N_C`` (rows sum to 1) against
    ``classes_N`` (column indices); 1.0 when there are fewer than 2 rows.

    Probabilities are floored at :data:`PROBABILITY_FLOOR` first, so a 0 stays finite under
    every temperature.

    Examples
    --------
    >>> probs = np.array([[0.6, 0.4]] * 9 + [[0.4, 0.6]])
    >>> classes = np.array([0] * 9 + [1])
    >>> fit_temperature(probs, classes) < 1  # right 100% of the time at 60%: sharpen
    True
    """
    if classes_N.size < 2:
        return 1.0
    floored_N_C = np.maximum(np.asarray(probs_N_C, np.float64), PROBABILITY_FLOOR)
    floored_N_C /= floored_N_C.sum(axis=1, keepdims=True)
    found = minimize_scalar(lambda log_t: _log_loss(floored_N_C, classes_N, float(np.exp(log_t))),
                            bounds=LOG_TEMPERATURE_RANGE, method="bounded", options={"xatol": 1e-3})
    return float(np.exp(found.x))


@dataclass(frozen=True)
class Reliability:
    """Confidence against accuracy in equal-width bins of confidence (empty bins left out)."""

    confidence_B: np.ndarray
    accuracy_B: np.ndarray
    count_B: np.ndarray
    ece: float
    """Expected calibration error: ``sum(count * |accuracy - confidence|) / N``."""

    def as_dict(self) -> dict:
        return {"ece": self.ece, "bins": [
            {"confidence": float(c), "accuracy": float(a), "count": int(n)}
            for c, a, n in zip(self.confidence_B, self.accuracy_B, self.count_B)]}


def reliability(probs_N_C: np.ndarray, classes_N: np.ndarray, *, bins: int = RELIABILITY_BINS) -> Reliability:
    """Reliability of the top predictions of ``probs_N_C`` against ``classes_N``.

    Examples
    --------
    >>> r = reliability(np.array([[0.9, 0.1], [0.9, 0.1]]), np.array([0, 1]))
    >>> round(r.ece, 2)
    0.4
    """
    confidence_N = probs_N_C.max(axis=1)
    correct_N = probs_N_C.argmax(axis=1) == classes_N
    bin_N = np.minimum((confidence_N * bins).astype(np.int64), bins - 1)
    count_B = np.bincount(bin_N, minlength=bins)
    used_B = count_B > 0
    mean_confidence_B = np.bincount(bin_N, confidence_N, bins)[used_B] / count_B[used_B]
    accuracy_B = np.bincount(bin_N, correct_N.astype(np.float64), bins)[used_B] / count_B[used_B]
    ece = float(np.sum(count_B[used_B] * np.abs(accuracy_B - mean_confidence_B)) / max(classes_N.size, 1))
    return Reliability(mean_confidence_B, accuracy_B, count_B[used_B], ece)


def accuracy_interval(correct_N: np.ndarray) -> dict:
    """``{"value", "low", "high", "n"}``: the share of ``correct_N`` (bool) with its Wilson 95%
    score interval (sound for small n and for shares near 0 or 1)."""
    n = int(correct_N.size)
    if n == 0:
        return {"value": None, "low": None, "high": None, "n": 0}
    share = float(np.mean(correct_N))
    denominator = 1 + Z_95**2 / n
    centre = (share + Z_95**2 / (2 * n)) / denominator
    half = Z_95 * np.sqrt(share * (1 - share) / n + Z_95**2 / (4 * n * n)) / denominator
    # Clipped to hold the share itself: at 0 or 1 rounding can leave it a hair outside.
    return {"value": share, "low": float(min(share, max(0.0, centre - half))),
            "high": float(max(share, min(1.0, centre + half))), "n": n}
