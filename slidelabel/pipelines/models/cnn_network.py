"""The torch side of the ``cnn`` model: its network, training with augmentation, and running it.

Imported only when a cnn is fitted, predicted or restored (see
:mod:`~slidelabel.pipelines.models.cnn`), so that listing the models, or loading and predicting
another one, never imports torch (about 240 MB resident).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from slidelabel.pipelines.models.base import balanced_weights
from slidelabel.pipelines.models.mc_dropout import dropout_scales, kept_units

if TYPE_CHECKING:
    from slidelabel.pipelines.models.cnn import CNNClassifier

__all__ = ["Network", "dropout_scales", "forward", "kept_units", "network_of_arrays", "train_network"]


class Network(torch.nn.Module):
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


def patches(feats_N_D: np.ndarray, channels: int, side: int) -> torch.Tensor:
    """``patches_N_C_S_S`` (float32) of the flattened patches."""
    return torch.as_tensor(np.asarray(feats_N_D, np.float32)).reshape(-1, channels, side, side)


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


def train_network(model: CNNClassifier, feats_N_D: np.ndarray, classes_N: np.ndarray, n_classes: int,
                  rng: np.random.Generator) -> Network:
    """The network of ``model`` (its settings: widths, dropout, steps...) trained on the patches
    ``feats_N_D`` (``model.side_px`` square) and ``classes_N``, every draw seeded from ``rng``;
    returned in eval mode without gradients."""
    all_patches = patches(feats_N_D, model.channels, model.side_px)
    generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    with torch.random.fork_rng(devices=[]):  # torch's layers draw their initial weights globally
        torch.manual_seed(int(torch.randint(2**62, (1,), generator=generator)))
        network = Network(model.channels, model.widths, model.hidden, n_classes)
    targets = torch.as_tensor(np.asarray(classes_N, np.int64))
    weights_N = balanced_weights(classes_N, n_classes) if model.balanced else np.ones(len(classes_N))
    row_weights_N = torch.as_tensor(weights_N, dtype=torch.float32)
    optimiser = torch.optim.AdamW(
        network.parameters(), lr=model.learning_rate, weight_decay=model.weight_decay, foreach=True
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, model.steps)
    keep_scale = 1.0 / (1.0 - model.dropout)
    units = (model.widths[-1], model.hidden)
    pixels_8_P = _dihedral_pixels(model.side_px)
    batches = iter(())
    network.train()
    for _ in range(model.steps):
        batch = next(batches, None)
        if batch is None:  # a new epoch: a new order
            order = torch.randperm(len(all_patches), generator=generator).split(model.batch_rows)
            # Batch norm needs two rows (a 1 x 1 map of a small patch has one value per row);
            # a lone last row waits for the next epoch.
            batches = iter([rows for rows in order if len(rows) > 1])
            batch = next(batches)
        inputs = all_patches[batch]
        if model.augment:
            inputs = _dihedral(inputs, pixels_8_P[torch.randint(8, (len(batch),), generator=generator)])
        scales = [(torch.rand(len(batch), n, generator=generator) >= model.dropout) * keep_scale for n in units]
        log_probs_n_K = torch.log_softmax(network.head(network.pooled(inputs), scales), dim=1)
        nll_n = -log_probs_n_K.gather(1, targets[batch, None])[:, 0]
        loss = (row_weights_N[batch] * nll_n).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
    return network.eval().requires_grad_(False)


def forward(network: Network, feats_N_D: np.ndarray, scales_S: list[list[torch.Tensor]], *, channels: int,
            side: int, batch_rows: int) -> np.ndarray:
    """Return ``samples_S_N_K`` (float32): softmax outputs under each sample's unit scales, the
    convolutions run once per row, ``batch_rows`` patches at a time."""
    samples_S_N_K = np.empty((len(scales_S), len(feats_N_D), network.out.out_features), np.float32)
    with torch.no_grad():
        for start in range(0, len(feats_N_D), batch_rows):
            pooled_n_F = network.pooled(patches(feats_N_D[start : start + batch_rows], channels, side))
            for s, scales in enumerate(scales_S):
                probs_n_K = torch.softmax(network.head(pooled_n_F, scales), dim=1)
                samples_S_N_K[s, start : start + len(pooled_n_F)] = probs_n_K.numpy()
    return samples_S_N_K


#: Arrays of one convolution block in a network's state (the convolution's weights; batch norm's
#: weights, biases, running means and variances, and batches seen) and of the head (two layers'
#: weights and biases).
_BLOCK_ARRAYS, _HEAD_ARRAYS = 6, 4


def network_of_arrays(model: CNNClassifier, arrays: dict[str, np.ndarray]) -> Network:
    """The network of ``model``'s settings with a model file's weights and batch-norm statistics,
    in eval mode without gradients.

    The settings are held to the arrays before anything is allocated: the network is laid out on
    torch's meta device (no memory), each of its arrays' shapes compared with the file's, and the
    file's arrays become its weights. Built first, the network of a 3 KB file's widths of 8,000 took
    2.9 GB before its arrays were found not to fit (the twenty-third attack).

    Raises
    ------
    ValueError
        If an array is missing, extra or of another shape than the network's.
    """
    n_blocks = len(model.widths)
    if len(arrays) != _BLOCK_ARRAYS * n_blocks + _HEAD_ARRAYS:
        raise ValueError(f"the header's settings name {n_blocks:,} convolution blocks, which have "
                         f"{_BLOCK_ARRAYS * n_blocks + _HEAD_ARRAYS:,} arrays, and the file holds {len(arrays):,}")
    try:
        with torch.device("meta"):
            network = Network(model.channels, model.widths, model.hidden, int(arrays["out.bias"].shape[0]))
        expected = network.state_dict()
        _check_shapes(expected, arrays)
        # assign: the file's arrays become the weights (the meta tensors have no memory to copy into).
        network.load_state_dict({name: torch.as_tensor(arrays[name], dtype=tensor.dtype)
                                 for name, tensor in expected.items()}, assign=True)
    except (RuntimeError, MemoryError) as error:
        raise ValueError(f"cnn arrays do not fit the network: {error}") from error
    return network.eval().requires_grad_(False)


def _check_shapes(expected: dict[str, torch.Tensor], arrays: dict[str, np.ndarray]) -> None:
    """ValueError unless ``arrays`` are named as the ``expected`` tensors and of their shapes."""
    if set(expected) != set(arrays):
        raise ValueError(f"cnn arrays {sorted(set(arrays) ^ set(expected))} are missing or extra")
    for name, tensor in expected.items():
        if arrays[name].shape != tuple(tensor.shape):
            raise ValueError(f"cnn array {name} has shape {arrays[name].shape}, and the header's settings make it "
                             f"{tuple(tensor.shape)}")
