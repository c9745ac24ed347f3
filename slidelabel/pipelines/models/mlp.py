"""``mlp``: a two-hidden-layer perceptron in plain torch; MC dropout gives its posterior samples.

``x -> Linear -> ReLU -> dropout -> Linear -> ReLU -> dropout -> Linear -> softmax``, trained with
Adam on the class-weighted cross-entropy over minibatches until the training loss stops falling.
Every random draw (initial weights, shuffles, dropout masks) comes from a ``torch.Generator``
seeded from the ``rng`` given to :meth:`MLPClassifier.fit`, so a seeded fit is reproducible
without touching torch's global generator.

Posterior sample ``s`` keeps one dropout mask over the hidden units (Gal & Ghahramani 2016) and
applies it to every row: the same network draw for all rows, as BatchBALD and chunked prediction
need (see :class:`~.base.Classifier`). :meth:`~MLPClassifier.predict_proba` runs without dropout.
"""

from __future__ import annotations

import itertools
from typing import ClassVar

import numpy as np
import torch

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models.base import ClassifierState, balanced_weights, check_chunk_rows
from slidelabel.pipelines.models.mc_dropout import dropout_scales, kept_units
from slidelabel.pipelines.torch_threads import torch_threads

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
            self._train(feats_N_D, classes_N, n_classes, rng)

    def _train(
        self, feats_N_D: np.ndarray, classes_N: np.ndarray, n_classes: int, rng: np.random.Generator
    ) -> None:
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        feats = torch.as_tensor(np.asarray(feats_N_D, dtype=np.float32))
        targets = torch.as_tensor(np.asarray(classes_N, dtype=np.int64))
        row_weights_N = balanced_weights(classes_N, n_classes) if self.balanced else np.ones(len(classes_N))
        row_weights = torch.as_tensor(row_weights_N, dtype=torch.float32)
        widths = (feats.shape[1], *self.hidden, n_classes)
        params = []
        for fan_in, fan_out in itertools.pairwise(widths):
            bound = fan_in**-0.5
            for shape in ((fan_in, fan_out), (fan_out,)):
                param = torch.empty(shape).uniform_(-bound, bound, generator=generator)
                params.append(param.requires_grad_())
        self.layers = [(params[i], params[i + 1]) for i in range(0, len(params), 2)]
        optimiser = torch.optim.Adam(params, lr=self.learning_rate, weight_decay=self.weight_decay)
        keep_scale = 1.0 / (1.0 - self.dropout)  # kept units' expected input equals dropout off
        best, stale = np.inf, 0
        for _ in range(self.max_epochs):
            order = torch.randperm(len(feats), generator=generator)
            epoch_loss = 0.0
            for batch in order.split(self.batch_rows):
                scales = [
                    (torch.rand(len(batch), units, generator=generator) >= self.dropout) * keep_scale
                    for units in self.hidden
                ]
                log_probs = torch.log_softmax(self._head(self._first(feats[batch]), scales), dim=1)
                nll = -log_probs.gather(1, targets[batch, None])[:, 0]
                weighted_nll = (row_weights[batch] * nll).sum()
                optimiser.zero_grad()
                # The step follows the batch's mean loss, so weight decay is as strong for a
                # thousand labels as for fifty; the epoch's loss is the mean over all labels.
                (weighted_nll / len(batch)).backward()
                optimiser.step()
                epoch_loss += float(weighted_nll.detach()) / len(feats)
            if epoch_loss < best * 0.99:
                best, stale = epoch_loss, 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        self.layers = [(w.detach(), b.detach()) for w, b in self.layers]

    def predict_proba(self, feats_N_D: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
        """Return ``probs_N_C`` (float32) with every hidden unit kept (dropout off)."""
        return self._forward(feats_N_D, kept_units(self.hidden), chunk_rows)[0]

    def posterior_samples(
        self, feats_N_D: np.ndarray, *, n_samples: int, rng: np.random.Generator, chunk_rows: int = 65536
    ) -> np.ndarray:
        """Return ``samples_S_N_C`` (float32) under ``n_samples`` dropout masks drawn from ``rng``,
        each mask applied to every row."""
        return self._forward(feats_N_D, dropout_scales(self.hidden, self.dropout, n_samples, rng), chunk_rows)

    def _forward(
        self, feats_N_D: np.ndarray, scales_S: list[list[torch.Tensor]], chunk_rows: int
    ) -> np.ndarray:
        """Return ``samples_S_N_C`` (float32): softmax outputs under each sample's unit scales.

        The first layer does not depend on the dropout masks, so it is computed once per chunk.
        """
        check_chunk_rows(chunk_rows)
        if not self.layers:
            raise ParameterError("the mlp model is not fitted yet; call fit() first")
        n_feats, n_classes = self.layers[0][0].shape[0], self.layers[-1][1].shape[0]
        if feats_N_D.ndim != 2 or feats_N_D.shape[1] != n_feats:
            raise ParameterError(f"features must have shape (N, {n_feats}), got {feats_N_D.shape}")
        samples_S_N_C = np.empty((len(scales_S), len(feats_N_D), n_classes), np.float32)
        with torch.no_grad():
            for start in range(0, len(feats_N_D), chunk_rows):
                chunk_n_D = torch.as_tensor(np.asarray(feats_N_D[start : start + chunk_rows], np.float32))
                hidden_n_H = self._first(chunk_n_D)
                for s, scales in enumerate(scales_S):
                    probs_n_C = torch.softmax(self._head(hidden_n_H, scales), dim=1)
                    samples_S_N_C[s, start : start + len(chunk_n_D)] = probs_n_C.numpy()
        return samples_S_N_C

    def _first(self, feats_n_D: torch.Tensor) -> torch.Tensor:
        """``hidden_n_H``: the first hidden layer's ReLU output, before dropout."""
        weights_D_H, bias_H = self.layers[0]
        return torch.relu(feats_n_D @ weights_D_H + bias_H)

    def _head(self, hidden_n_H: torch.Tensor, scales: list[torch.Tensor]) -> torch.Tensor:
        """``logits_n_C`` from the first hidden layer's output; ``scales`` multiply the units of
        each hidden layer (0 for a dropped unit, ``1 / (1 - dropout)`` for a kept one, 1 with
        dropout off) and broadcast over rows."""
        (_, _), (weights_H_G, bias_G), (weights_G_C, bias_C) = self.layers
        hidden_n_G = torch.relu((hidden_n_H * scales[0]) @ weights_H_G + bias_G)
        return (hidden_n_G * scales[1]) @ weights_G_C + bias_C

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
        """Rebuild the fitted network from :meth:`to_state`'s result."""
        model = cls(**state.config)
        arrays = {name: torch.as_tensor(array, dtype=torch.float32) for name, array in state.arrays.items()}
        model.layers = [(arrays[weights_name], arrays[bias_name]) for weights_name, bias_name in _LAYERS]
        (weights_D_H, _), _, (_, bias_C) = model.layers
        widths = (weights_D_H.shape[0], *model.hidden, bias_C.shape[0])
        shapes = [(tuple(w.shape), tuple(b.shape)) for w, b in model.layers]
        if shapes != [((i, o), (o,)) for i, o in itertools.pairwise(widths)]:
            raise ValueError(f"mlp layer arrays have inconsistent shapes {shapes}")
        return model
