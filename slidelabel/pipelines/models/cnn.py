"""``cnn``: a small convolutional network on the ``patch`` extractor's patches; MC dropout for samples.

The ``D`` feature columns of a superpixel are the ``patch`` extractor's ``(channels, side, side)``
patch flattened in C order (R, G, B and the superpixel's mask by default; see
:mod:`slidelabel.pipelines.features.patches`); features of any other width are refused. The
network is four ``conv 3x3 with stride 2 -> batch norm -> ReLU`` blocks (a 32 px patch becomes
2 x 2), global average pooling, then ``dropout -> Linear -> ReLU -> dropout -> Linear -> softmax``:
about 49,000 weights. Strided convolutions instead of max pooling: on MoNuSeg patches they were as
accurate and 12 times faster to predict on one CPU core (11,000 patches/s instead of 900). It
trains with AdamW on the class-weighted cross-entropy for a fixed number of minibatch steps (so
training time does not grow with the labels), each patch randomly flipped and turned by multiples
of 90 degrees (tissue has no up).

Every random draw (initial weights, minibatches, augmentation, dropout masks) comes from the
``rng`` given to :meth:`CNNClassifier.fit`; torch's global generator is left as it was.

Posterior sample ``s`` keeps one dropout mask over the pooled and hidden units and applies it to
every row, as :mod:`~slidelabel.pipelines.models.mlp` does: the same network draw for all rows, as
BatchBALD and chunked prediction need. The convolutions run once per row, whatever the number of
samples. :meth:`~CNNClassifier.predict_proba` runs without dropout.

The torch code lives in :mod:`~slidelabel.pipelines.models.cnn_network`, imported by the methods
that fit, predict or restore a network, as :mod:`~slidelabel.pipelines.models.mlp` does.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models.base import ClassifierState, check_chunk_rows
from slidelabel.pipelines.torch_threads import torch_threads

if TYPE_CHECKING:
    import torch

    from slidelabel.pipelines.models.cnn_network import Network

__all__ = ["CNNClassifier", "patch_side"]

#: Torch threads while training: the minibatches are small, and on 2 shared cores a step took
#: 87 ms on one thread and 360 ms on two.
FIT_THREADS = 1
#: Torch threads while predicting: on 2 cores shared with other work, 2 threads predicted 3 times
#: slower than 1 (threads waiting on each other).
PREDICT_THREADS = 1
#: Patches through the convolutions at once when predicting: bounds the activations (16 x 16 x
#: 16 float32 per patch after the first block: 8 MB for 512 patches).
PREDICT_BATCH_ROWS = 512


def patch_side(n_feats: int, channels: int) -> int | None:
    """Side (px) of a square ``channels``-channel patch of ``n_feats`` values; None if there is none."""
    side = math.isqrt(n_feats // channels) if n_feats > 0 else 0
    return side if side > 0 and channels * side * side == n_feats else None


class CNNClassifier:
    """A small CNN on patches; MC-dropout posterior samples.

    Parameters
    ----------
    channels : int, optional
        Channels of a patch (the ``patch`` extractor's R, G, B and mask: 4).
    widths : tuple of int, optional
        Channels of the convolution blocks, each halving the patch's side.
    hidden : int, optional
        Units of the hidden layer of the head.
    dropout : float, optional
        Probability of dropping a pooled or hidden unit, in training and in posterior samples.
    balanced : bool, optional
        Weight labels inversely to their class's count; False weighs every label 1.
    steps : int, optional
        Minibatch steps of training, whatever the number of labels.
    batch_rows : int, optional
        Patches per minibatch (all of them when there are fewer), at least 2.
    learning_rate, weight_decay : float, optional
        Of the AdamW optimiser; the learning rate decays to 0 along a cosine over the steps.
    augment : bool, optional
        Flip and turn each training patch at random.
    """

    name: ClassVar[str] = "cnn"
    inputs: ClassVar[str] = "patches"

    def __init__(
        self,
        *,
        channels: int = 4,
        widths: tuple[int, ...] | list[int] = (16, 32, 48, 64),
        hidden: int = 32,
        dropout: float = 0.3,
        balanced: bool = True,
        steps: int = 150,
        batch_rows: int = 32,
        learning_rate: float = 1e-2,
        weight_decay: float = 1e-4,
        augment: bool = True,
    ) -> None:
        counts = {"channels": channels, "hidden": hidden, "steps": steps}
        counts |= {f"widths[{i}]": width for i, width in enumerate(widths)}
        for option, value in counts.items():
            if int(value) != value or value < 1:
                raise ParameterError(f"{option} must be a positive integer, got {value!r}")
        if int(batch_rows) != batch_rows or batch_rows < 2:
            raise ParameterError(f"batch_rows must be an integer >= 2 (for batch norm), got {batch_rows!r}")
        if not widths:
            raise ParameterError("widths must name at least one convolution block")
        if not 0 <= dropout < 1:
            raise ParameterError(f"dropout must be in [0, 1), got {dropout!r}")
        if not learning_rate > 0 or not weight_decay >= 0:
            raise ParameterError(
                f"learning_rate must be > 0 and weight_decay >= 0, got {learning_rate!r}, {weight_decay!r}"
            )
        self.channels = int(channels)
        self.widths = tuple(int(width) for width in widths)
        self.hidden = int(hidden)
        self.dropout = float(dropout)
        self.balanced = bool(balanced)
        self.steps = int(steps)
        self.batch_rows = int(batch_rows)
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay)
        self.augment = bool(augment)
        self.side_px = 0
        self.network: Network | None = None

    @classmethod
    def accepts(cls, n_feats: int) -> bool:
        """Whether ``n_feats`` columns are square patches of the default channels (for ``auto``)."""
        return patch_side(n_feats, cls().channels) is not None

    def fit(
        self, feats_N_D: np.ndarray, classes_N: np.ndarray, *, n_classes: int, rng: np.random.Generator
    ) -> None:
        """Train from weights initialised as torch does, seeded from ``rng``.

        Raises
        ------
        ParameterError
            If the features are not ``channels`` x side x side patches (the ``patch`` extractor's).
        """
        side = patch_side(feats_N_D.shape[1], self.channels) if feats_N_D.ndim == 2 else None
        if side is None:
            raise ParameterError(
                f"the cnn model takes the 'patch' feature extractor's features ({self.channels} x side x side "
                f"columns, 4096 for 32 px patches), got features of shape {feats_N_D.shape}"
            )
        self.side_px = side
        with torch_threads(FIT_THREADS):
            self.network = _network().train_network(self, feats_N_D, classes_N, n_classes, rng)

    def predict_proba(self, feats_N_D: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
        """Return ``probs_N_K`` (float32) with every unit kept (dropout off)."""
        return self._forward(feats_N_D, _network().kept_units((self.widths[-1], self.hidden)), chunk_rows)[0]

    def posterior_samples(
        self, feats_N_D: np.ndarray, *, n_samples: int, rng: np.random.Generator, chunk_rows: int = 65536
    ) -> np.ndarray:
        """Return ``samples_S_N_K`` (float32) under ``n_samples`` dropout masks drawn from ``rng``,
        each mask applied to every row."""
        scales_S = _network().dropout_scales((self.widths[-1], self.hidden), self.dropout, n_samples, rng)
        return self._forward(feats_N_D, scales_S, chunk_rows)

    def _forward(self, feats_N_D: np.ndarray, scales_S: list[list[torch.Tensor]], chunk_rows: int) -> np.ndarray:
        """Return ``samples_S_N_K`` (float32): softmax outputs under each sample's unit scales."""
        check_chunk_rows(chunk_rows)
        network = self._fitted()
        n_feats = self.channels * self.side_px**2
        if feats_N_D.ndim != 2 or feats_N_D.shape[1] != n_feats:
            raise ParameterError(f"features must have shape (N, {n_feats}), got {feats_N_D.shape}")
        with torch_threads(PREDICT_THREADS):
            return _network().forward(network, feats_N_D, scales_S, channels=self.channels, side=self.side_px,
                                      batch_rows=min(chunk_rows, PREDICT_BATCH_ROWS))

    def _fitted(self) -> Network:
        if self.network is None:
            raise ParameterError("the cnn model is not fitted yet; call fit() first")
        return self.network

    def to_state(self) -> ClassifierState:
        """Settings, the patch side and the network's weights and batch-norm statistics."""
        network = self._fitted()
        config = {
            "channels": self.channels,
            "widths": list(self.widths),
            "hidden": self.hidden,
            "dropout": self.dropout,
            "balanced": self.balanced,
            "steps": self.steps,
            "batch_rows": self.batch_rows,
            "learning_rate": self.learning_rate,
            "weight_decay": self.weight_decay,
            "augment": self.augment,
            "side_px": self.side_px,
        }
        return ClassifierState(config, {name: t.numpy().copy() for name, t in network.state_dict().items()})

    @classmethod
    def from_state(cls, state: ClassifierState) -> CNNClassifier:
        """Rebuild the fitted network from :meth:`to_state`'s result."""
        options = dict(state.config)
        side_px = int(options.pop("side_px"))
        model = cls(**options)
        model.side_px = side_px
        model.network = _network().network_of_arrays(model, state.arrays)
        return model


def _network() -> ModuleType:
    """:mod:`~slidelabel.pipelines.models.cnn_network`, imported (with torch) on first use."""
    from slidelabel.pipelines.models import cnn_network

    return cnn_network
