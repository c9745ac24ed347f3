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
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

from slidelabel.errors import ParameterError
from slidelabel.pipelines.models.base import ClassifierState, balanced_weights, check_chunk_rows
from slidelabel.pipelines.models.mc_dropout import dropout_scales, kept_units
from slidelabel.pipelines.torch_threads import torch_threads

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


class _Network(torch.nn.Module):
    """Convolutional trunk to pooled features, and a two-layer head with per-unit scales."""

    def __init__(self, channels: int, widths: tuple[int, ...], hidden: int, n_classes: int) -> None:
        super().__init__()
        layers: list[torch.nn.Module] = []
        width_in = channels
        for width in widths:
            layers += [
                torch.nn.Conv2d(width_in, width, 3, stride=2, padding=1, bias=False),
                torch.nn.BatchNorm2d(width),
                torch.nn.ReLU(),
            ]
            width_in = width
        self.trunk = torch.nn.Sequential(*layers)
        self.hidden = torch.nn.Linear(width_in, hidden)
        self.out = torch.nn.Linear(hidden, n_classes)

    def pooled(self, patches_n_C_S_S: torch.Tensor) -> torch.Tensor:
        """``pooled_n_F``: the last block's channels averaged over the patch."""
        return self.trunk(patches_n_C_S_S).mean(dim=(2, 3))

    def head(self, pooled_n_F: torch.Tensor, scales: list[torch.Tensor]) -> torch.Tensor:
        """``logits_n_K``; ``scales`` multiply the pooled and the hidden units (0 for a dropped
        unit, ``1 / (1 - dropout)`` for a kept one, 1 with dropout off) and broadcast over rows."""
        hidden_n_H = torch.relu(self.hidden(pooled_n_F * scales[0]))
        return self.out(hidden_n_H * scales[1])


def _dihedral_pixels(side: int) -> torch.Tensor:
    """``pixels_8_P``: for each of the 8 flips and quarter turns of a ``side`` x ``side`` patch,
    the source of each of its ``P = side**2`` pixels (row-major)."""
    grid = torch.arange(side * side).reshape(side, side)
    turns = [torch.rot90(grid, k) for k in range(4)]
    return torch.stack([g.flatten() for g in (*turns, *(torch.flip(t, dims=(1,)) for t in turns))])


def _dihedral(patches_n_C_S_S: torch.Tensor, pixels_n_P: torch.Tensor) -> torch.Tensor:
    """Each patch with its pixels taken from ``pixels_n_P`` (rows of :func:`_dihedral_pixels`)."""
    n, channels, side, _ = patches_n_C_S_S.shape
    flat_n_C_P = patches_n_C_S_S.reshape(n, channels, side * side)
    return flat_n_C_P.gather(2, pixels_n_P[:, None, :].expand(n, channels, -1)).reshape(n, channels, side, side)


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
        self.network: _Network | None = None

    @classmethod
    def accepts(cls, n_feats: int) -> bool:
        """Whether ``n_feats`` columns are square patches of the default channels (for ``auto``)."""
        return patch_side(n_feats, cls().channels) is not None

    def _patches(self, feats_N_D: np.ndarray) -> torch.Tensor:
        """``patches_N_C_S_S`` (float32) of the flattened patches."""
        side = self.side_px
        return torch.as_tensor(np.asarray(feats_N_D, np.float32)).reshape(-1, self.channels, side, side)

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
            self._train(self._patches(feats_N_D), classes_N, n_classes, rng)

    def _train(
        self, patches: torch.Tensor, classes_N: np.ndarray, n_classes: int, rng: np.random.Generator
    ) -> None:
        generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
        with torch.random.fork_rng(devices=[]):  # torch's layers draw their initial weights globally
            torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
            network = _Network(self.channels, self.widths, self.hidden, n_classes)
        targets = torch.as_tensor(np.asarray(classes_N, np.int64))
        weights_N = balanced_weights(classes_N, n_classes) if self.balanced else np.ones(len(classes_N))
        row_weights_N = torch.as_tensor(weights_N, dtype=torch.float32)
        optimiser = torch.optim.AdamW(
            network.parameters(), lr=self.learning_rate, weight_decay=self.weight_decay, foreach=True
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, self.steps)
        keep_scale = 1.0 / (1.0 - self.dropout)
        units = (self.widths[-1], self.hidden)
        pixels_8_P = _dihedral_pixels(self.side_px)
        batches = iter(())
        network.train()
        for _ in range(self.steps):
            batch = next(batches, None)
            if batch is None:  # a new epoch: a new order
                order = torch.randperm(len(patches), generator=generator).split(self.batch_rows)
                # Batch norm needs two rows (a 1 x 1 map of a small patch has one value per row);
                # a lone last row waits for the next epoch.
                batches = iter([rows for rows in order if len(rows) > 1])
                batch = next(batches)
            inputs = patches[batch]
            if self.augment:
                inputs = _dihedral(inputs, pixels_8_P[torch.randint(8, (len(batch),), generator=generator)])
            scales = [(torch.rand(len(batch), n, generator=generator) >= self.dropout) * keep_scale for n in units]
            log_probs_n_K = torch.log_softmax(network.head(network.pooled(inputs), scales), dim=1)
            nll_n = -log_probs_n_K.gather(1, targets[batch, None])[:, 0]
            loss = (row_weights_N[batch] * nll_n).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
        self.network = network.eval().requires_grad_(False)

    def predict_proba(self, feats_N_D: np.ndarray, *, chunk_rows: int = 65536) -> np.ndarray:
        """Return ``probs_N_K`` (float32) with every unit kept (dropout off)."""
        return self._forward(feats_N_D, kept_units((self.widths[-1], self.hidden)), chunk_rows)[0]

    def posterior_samples(
        self, feats_N_D: np.ndarray, *, n_samples: int, rng: np.random.Generator, chunk_rows: int = 65536
    ) -> np.ndarray:
        """Return ``samples_S_N_K`` (float32) under ``n_samples`` dropout masks drawn from ``rng``,
        each mask applied to every row."""
        scales_S = dropout_scales((self.widths[-1], self.hidden), self.dropout, n_samples, rng)
        return self._forward(feats_N_D, scales_S, chunk_rows)

    def _forward(self, feats_N_D: np.ndarray, scales_S: list[list[torch.Tensor]], chunk_rows: int) -> np.ndarray:
        """Return ``samples_S_N_K`` (float32): softmax outputs under each sample's unit scales."""
        check_chunk_rows(chunk_rows)
        network = self._fitted()
        n_feats = self.channels * self.side_px**2
        if feats_N_D.ndim != 2 or feats_N_D.shape[1] != n_feats:
            raise ParameterError(f"features must have shape (N, {n_feats}), got {feats_N_D.shape}")
        samples_S_N_K = np.empty((len(scales_S), len(feats_N_D), network.out.out_features), np.float32)
        step = min(chunk_rows, PREDICT_BATCH_ROWS)
        with torch.no_grad(), torch_threads(PREDICT_THREADS):
            for start in range(0, len(feats_N_D), step):
                pooled_n_F = network.pooled(self._patches(feats_N_D[start : start + step]))
                for s, scales in enumerate(scales_S):
                    probs_n_K = torch.softmax(network.head(pooled_n_F, scales), dim=1)
                    samples_S_N_K[s, start : start + len(pooled_n_F)] = probs_n_K.numpy()
        return samples_S_N_K

    def _fitted(self) -> _Network:
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
        n_classes = int(state.arrays["out.bias"].shape[0])
        with torch.random.fork_rng(devices=[]):  # the initial weights, replaced below
            network = _Network(model.channels, model.widths, model.hidden, n_classes)
        # strict: a missing or extra array, or one of another shape, is an error, not a silent default.
        try:
            network.load_state_dict({name: torch.as_tensor(a) for name, a in state.arrays.items()}, strict=True)
        except RuntimeError as error:
            raise ValueError(f"cnn arrays do not fit the network: {error}") from error
        model.network = network.eval().requires_grad_(False)
        return model
