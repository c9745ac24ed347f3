"""``mlp``: a two-hidden-layer perceptron in plain torch; MC dropout gives its posterior samples.

``x -> Linear -> ReLU -> dropout -> Linear -> ReLU -> dropout -> Linear -> softmax``, trained with
Adam on the class-weighted cross-entropy over minibatches until the training loss stops falling.
Every random draw (initial weights, shuffles, dropout masks) comes from a ``torch.Generator``
seeded from the ``rng`` given to :meth:`MLPClassifier.fit`, so a seeded fit is reproducible
without touching torch's global generator.

Posterior sample ``s`` keeps one dropout mask over the hidden units (Gal & Ghahramani 2016) and
applies it to every row: the same network draw for all rows, as BatchBALD and chunked prediction
need (see :class:`~.base.Classifier`). :meth:`~MLPClassifier.predict_proba` runs without dropout.

The torch code lives in :mod:`~slidelabel.pipelines.models.mlp_network`, imported by the methods
that fit, predict or restore a network: the model registry imports this module to list the
models, and a cohort predicted by another model should not carry torch (240 MB resident).
"""

from __future__ import annotations

import itertools
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models.base import ClassifierState, check_chunk_rows
from slidelabel.pipelines.torch_threads import torch_threads

if TYPE_CHECKING:
    import torch

__all__ = ["MLPClassifier"]

#: Names of the weight and bias arrays of the three layers, input first, in the model file.
_LAYERS = (("weights_1", "bias_1"), ("weights_2", "bias_2"), ("weights_3", "bias_3"))


#: Torch threads while training. Minibatch matrices are too small to split: on 2 shared cores,
#: fitting 300 labels took 7.6 s on 2 threads and 1.2 s on 1.
FIT_THREADS = 1


class MLPClassifier:
    """Two ReLU hidden layers with dropout; MC-dropout posterior samples.

    Parameters
    ----------
    hidden : tuple of int, optional
        Units of the first and second hidden layer.
    dropout : float, optional
        Probability of dropping a hidden unit, in training and in posterior samples; in [0, 1).
    balanced : bool, optional
        Weight labels inversely to their class's count; False weighs every label 1.
    max_epochs : int, optional
        Passes over the labels at most.
    patience : int, optional
        Stop once the epoch's training loss has not fallen by 1% of its best for this many epochs.
    batch_rows : int, optional
        Labels per Adam step.
    learning_rate, weight_decay : float, optional
        Adam's step size and L2 penalty.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> feats_N_D = rng.normal(size=(100, 4)); classes_N = (feats_N_D[:, 0] > 0).astype(int)
    >>> model = MLPClassifier(hidden=(16, 8), max_epochs=20)
    >>> model.fit(feats_N_D, classes_N, n_classes=2, rng=rng)
    >>> model.posterior_samples(feats_N_D, n_samples=4, rng=rng).shape
    (4, 100, 2)
    """

    name: ClassVar[str] = "mlp"
    inputs: ClassVar[str] = "vectors"

    def __init__(
        self,
        *,
        hidden: tuple[int, int] | list[int] = (256, 128),
        dropout: float = 0.25,
        balanced: bool = True,
        max_epochs: int = 100,
        patience: int = 5,
        batch_rows: int = 128,
        learning_rate: float = 1e-3,
        weight_decay: float = 1e-4,
    ) -> None:
        if len(hidden) != 2 or any(int(units) != units or units < 1 for units in hidden):
            raise ParameterError(f"hidden must be two positive unit counts, got {hidden!r}")
        if not 0 <= dropout < 1:
            raise ParameterError(f"dropout must be in [0, 1), got {dropout!r}")
        for option, value in (("max_epochs", max_epochs), ("patience", patience), ("batch_rows", batch_rows)):
            if int(value) != value or value < 1:
                raise ParameterError(f"{option} must be a positive integer, got {value!r}")
        if not learning_rate > 0 or not weight_decay >= 0:
            raise ParameterError(
                f"learning_rate must be > 0 and weight_decay >= 0, got {learning_rate!r}, {weight_decay!r}"
            )
        self.hidden = (int(hidden[0]), int(hidden[1]))
        self.dropout = float(dropout)
        self.balanced = bool(balanced)
        self.max_epochs = int(max_epochs)
        self.patience = int(patience)
        self.batch_rows = int(batch_rows)
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []  # (weights_in_out, bias_out)

    def fit(
        self, feats_N_D: np.ndarray, classes_N: np.ndarray, *, n_classes: int, rng: np.random.Generator
    ) -> None:
        """Train from weights initialised as ``torch.nn.Linear`` does, drawn from ``rng``."""
        with torch_threads(FIT_THREADS):
            self.layers = _network().train_layers(self, feats_N_D, classes_N, n_classes, rng)

    def predict_proba(self, feats_N_D: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
        """Return ``probs_N_C`` (float32) with every hidden unit kept (dropout off)."""
        return self._forward(feats_N_D, _network().kept_units(self.hidden), chunk_rows)[0]

    def posterior_samples(
        self, feats_N_D: np.ndarray, *, n_samples: int, rng: np.random.Generator, chunk_rows: int = 65536
    ) -> np.ndarray:
        """Return ``samples_S_N_C`` (float32) under ``n_samples`` dropout masks drawn from ``rng``,
        each mask applied to every row."""
        scales_S = _network().dropout_scales(self.hidden, self.dropout, n_samples, rng)
        return self._forward(feats_N_D, scales_S, chunk_rows)

    def _forward(
        self, feats_N_D: np.ndarray, scales_S: list[list[torch.Tensor]], chunk_rows: int
    ) -> np.ndarray:
        """Return ``samples_S_N_C`` (float32): softmax outputs under each sample's unit scales."""
        check_chunk_rows(chunk_rows)
        if not self.layers:
            raise ParameterError("the mlp model is not fitted yet; call fit() first")
        n_feats = self.layers[0][0].shape[0]
        if feats_N_D.ndim != 2 or feats_N_D.shape[1] != n_feats:
            raise ParameterError(f"features must have shape (N, {n_feats}), got {feats_N_D.shape}")
        return _network().forward(self.layers, feats_N_D, scales_S, chunk_rows)

    def to_state(self) -> ClassifierState:
        """Settings and the three layers' weights and biases as float32 arrays."""
        if not self.layers:
            raise ParameterError("the mlp model is not fitted yet; call fit() first")
        config = {
            "hidden": list(self.hidden),
            "dropout": self.dropout,
            "balanced": self.balanced,
            "max_epochs": self.max_epochs,
            "patience": self.patience,
            "batch_rows": self.batch_rows,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
        }
        arrays = {}
        for (weights_name, bias_name), (weights, bias) in zip(_LAYERS, self.layers, strict=True):
            arrays[weights_name], arrays[bias_name] = weights.numpy(), bias.numpy()
        return ClassifierState(config, arrays)

    @classmethod
    def from_state(cls, state: ClassifierState) -> MLPClassifier:
        """Rebuild the fitted network from :meth:`to_state`'s result, the arrays' shapes checked
        against the settings before any is turned into a tensor (as the cnn's are: the twenty-third
        attack)."""
        model = cls(**state.config)
        shapes = [(state.arrays[weights].shape, state.arrays[bias].shape) for weights, bias in _LAYERS]
        widths = (shapes[0][0][0], *model.hidden, shapes[-1][1][0])
        if shapes != [((i, o), (o,)) for i, o in itertools.pairwise(widths)]:
            raise ValueError(f"mlp layer arrays have inconsistent shapes {shapes}")
        model.layers = _network().layers_of_arrays(state.arrays, _LAYERS)
        return model


def _network() -> ModuleType:
    """:mod:`~slidelabel.pipelines.models.mlp_network`, imported (with torch) on first use."""
    from slidelabel.pipelines.models import mlp_network

    return mlp_network
