"""``linear``: multinomial softmax regression with an L2 prior and a Laplace posterior.

The weights are the MAP estimate under a Gaussian prior of precision ``prior_precision``, found by
L-BFGS on the class-weighted cross-entropy. Posterior samples draw the weights from a diagonal
Laplace approximation (the Hessian's diagonal at the MAP), so the spread of the samples is small
where the labels pin a weight down and large where they do not: an epistemic signal for BALD.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from threadpoolctl import threadpool_limits
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models.base import ClassifierState, balanced_weights, check_chunk_rows

__all__ = ["LinearClassifier"]


class LinearClassifier:
    """Softmax regression ``p = softmax(x @ W + b)`` with Laplace-approximate posterior samples.

    Parameters
    ----------
    prior_precision : float, optional
        Precision of the zero-mean Gaussian prior on every weight and bias (L2 strength, in
        units of one label's cross-entropy). Must be positive.
    balanced : bool, optional
        Weight labels inversely to their class's count so rare classes count as much as common
        ones. False fits every label with weight 1.
    max_iter : int, optional
        L-BFGS iterations at most.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> feats_N_D = rng.normal(size=(100, 4)); classes_N = (feats_N_D[:, 0] > 0).astype(int)
    >>> model = LinearClassifier()
    >>> model.fit(feats_N_D, classes_N, n_classes=2, rng=rng)
    >>> model.predict_proba(feats_N_D).shape
    (100, 2)
    """

    name: ClassVar[str] = "linear"
    inputs: ClassVar[str] = "vectors"

    def __init__(self, *, prior_precision: float = 1.0, balanced: bool = True, max_iter: int = 500) -> None:
        if not prior_precision > 0:
            raise ParameterError(f"prior_precision must be > 0, got {prior_precision!r}")
        if max_iter < 1:
            raise ParameterError(f"max_iter must be >= 1, got {max_iter!r}")
        self.prior_precision = float(prior_precision)
        self.balanced = bool(balanced)
        self.max_iter = int(max_iter)
        self.weights_D_C: np.ndarray | None = None
        self.bias_C: np.ndarray | None = None
        self.weights_std_D_C: np.ndarray | None = None
        self.bias_std_C: np.ndarray | None = None

    def fit(
        self, feats_N_D: np.ndarray, classes_N: np.ndarray, *, n_classes: int, rng: np.random.Generator
    ) -> None:
        """Fit the MAP weights and their diagonal Laplace variances (``rng`` is unused: L-BFGS
        from zero is deterministic)."""
        feats_N_D = np.asarray(feats_N_D, dtype=np.float64)
        n_feats = feats_N_D.shape[1]
        onehot_N_C = np.eye(n_classes)[classes_N]
        weights_N = balanced_weights(classes_N, n_classes) if self.balanced else np.ones(len(classes_N))
        # The loss is divided by N only to keep L-BFGS's tolerances meaningful; the minimum and
        # the Laplace Hessian below use the undivided negative log posterior.
        scale = 1.0 / len(classes_N)
        alpha = self.prior_precision

        def loss_and_grad(params: np.ndarray) -> tuple[float, np.ndarray]:
            weights_D_C, bias_C = params[:-n_classes].reshape(n_feats, n_classes), params[-n_classes:]
            log_probs_N_C = log_softmax(feats_N_D @ weights_D_C + bias_C, axis=1)
            loss = -np.sum(weights_N * np.sum(onehot_N_C * log_probs_N_C, axis=1))
            loss += 0.5 * alpha * (np.sum(weights_D_C**2) + np.sum(bias_C**2))
            residual_N_C = weights_N[:, None] * (np.exp(log_probs_N_C) - onehot_N_C)
            grad_W = feats_N_D.T @ residual_N_C + alpha * weights_D_C
            grad_b = residual_N_C.sum(axis=0) + alpha * bias_C
            return loss * scale, np.concatenate([grad_W.ravel(), grad_b]) * scale

        # Labelled sets are small: BLAS threads only contend (a busy 2-core machine fitted 240
        # labels in 2.0 s on two threads, 0.08 s on one).
        with threadpool_limits(1):
            result = minimize(
                loss_and_grad,
                np.zeros((n_feats + 1) * n_classes),
                jac=True,
                method="L-BFGS-B",
                options={"maxiter": self.max_iter},
            )
        self.weights_D_C = result.x[:-n_classes].reshape(n_feats, n_classes)
        self.bias_C = result.x[-n_classes:]
        probs_N_C = softmax(feats_N_D @ self.weights_D_C + self.bias_C, axis=1)
        curvature_N_C = weights_N[:, None] * probs_N_C * (1.0 - probs_N_C)
        self.weights_std_D_C = 1.0 / np.sqrt((feats_N_D**2).T @ curvature_N_C + alpha)
        self.bias_std_C = 1.0 / np.sqrt(curvature_N_C.sum(axis=0) + alpha)

    def predict_proba(self, feats_N_D: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
        """Return ``probs_N_C`` (float32) at the MAP weights."""
        self._check_fitted()
        return self._posterior(feats_N_D, self.weights_D_C[None], self.bias_C[None], chunk_rows)[0]

    def posterior_samples(
        self, feats_N_D: np.ndarray, *, n_samples: int, rng: np.random.Generator, chunk_rows: int = 65536
    ) -> np.ndarray:
        """Return ``samples_S_N_C`` (float32) under ``n_samples`` weight draws from the Laplace
        posterior, the same draws for every row."""
        self._check_fitted()
        if n_samples < 1:
            raise ParameterError(f"n_samples must be >= 1, got {n_samples!r}")
        noise_S_D_C = rng.standard_normal((n_samples, *self.weights_D_C.shape))
        noise_S_C = rng.standard_normal((n_samples, len(self.bias_C)))
        weights_S_D_C = self.weights_D_C + noise_S_D_C * self.weights_std_D_C
        bias_S_C = self.bias_C + noise_S_C * self.bias_std_C
        return self._posterior(feats_N_D, weights_S_D_C, bias_S_C, chunk_rows)

    def _posterior(
        self, feats_N_D: np.ndarray, weights_S_D_C: np.ndarray, bias_S_C: np.ndarray, chunk_rows: int
    ) -> np.ndarray:
        check_chunk_rows(chunk_rows)
        n_samples, n_feats, n_classes = weights_S_D_C.shape
        if feats_N_D.ndim != 2 or feats_N_D.shape[1] != n_feats:
            raise ParameterError(f"features must have shape (N, {n_feats}), got {feats_N_D.shape}")
        # All draws in one float32 matmul per chunk: (n, D) @ (D, S*C).
        weights_D_SC = weights_S_D_C.transpose(1, 0, 2).reshape(n_feats, -1).astype(np.float32)
        bias_SC = bias_S_C.reshape(-1).astype(np.float32)
        samples_S_N_C = np.empty((n_samples, len(feats_N_D), n_classes), np.float32)
        for start in range(0, len(feats_N_D), chunk_rows):
            chunk_n_D = np.asarray(feats_N_D[start : start + chunk_rows], dtype=np.float32)
            logits_n_S_C = (chunk_n_D @ weights_D_SC + bias_SC).reshape(len(chunk_n_D), n_samples, n_classes)
            samples_S_N_C[:, start : start + len(chunk_n_D)] = softmax(logits_n_S_C, axis=2).transpose(
                1, 0, 2
            )
        return samples_S_N_C

    def _check_fitted(self) -> None:
        if self.weights_D_C is None:
            raise ParameterError("the linear model is not fitted yet; call fit() first")

    def to_state(self) -> ClassifierState:
        """Settings and the MAP weights with their Laplace standard deviations."""
        self._check_fitted()
        return ClassifierState(
            config={
                "prior_precision": self.prior_precision,
                "balanced": self.balanced,
                "max_iter": self.max_iter,
            },
            arrays={
                "weights": self.weights_D_C,
                "bias": self.bias_C,
                "weights_std": self.weights_std_D_C,
                "bias_std": self.bias_std_C,
            },
        )

    @classmethod
    def from_state(cls, state: ClassifierState) -> LinearClassifier:
        """Rebuild a fitted model from :meth:`to_state`'s result."""
        model = cls(**state.config)
        arrays = state.arrays
        model.weights_D_C, model.bias_C = arrays["weights"], arrays["bias"]
        model.weights_std_D_C, model.bias_std_C = arrays["weights_std"], arrays["bias_std"]
        n_classes = model.bias_C.shape[0]
        if not (
            model.weights_D_C.ndim == 2
            and model.weights_D_C.shape[1] == n_classes == model.bias_std_C.shape[0]
            and model.weights_std_D_C.shape == model.weights_D_C.shape
        ):
            raise ValueError("linear model arrays have inconsistent shapes")
        return model
