"""The torch side of the ``mlp`` model: training and running its three layers.

Imported only when an mlp is fitted, predicted or restored (see
:mod:`~slidelabel.pipelines.models.mlp`), so that listing the models, or loading and predicting
another one, never imports torch (about 240 MB resident).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch

from slidelabel.pipelines.models.base import balanced_weights
from slidelabel.pipelines.models.mc_dropout import dropout_scales, kept_units

if TYPE_CHECKING:
    from slidelabel.pipelines.models.mlp import MLPClassifier

__all__ = ["Layers", "dropout_scales", "forward", "kept_units", "layers_of_arrays", "train_layers"]

#: ``(weights_in_out, bias_out)`` of each layer, input first.
Layers = list[tuple[torch.Tensor, torch.Tensor]]


def train_layers(model: MLPClassifier, feats_N_D: np.ndarray, classes_N: np.ndarray, n_classes: int,
                 rng: np.random.Generator) -> Layers:
    """The layers of ``model`` (its settings: hidden units, dropout, epochs...) trained on
    ``feats_N_D`` and ``classes_N``, from weights initialised as ``torch.nn.Linear`` does, every
    draw seeded from ``rng``."""
    generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
    feats = torch.as_tensor(np.asarray(feats_N_D, dtype=np.float32))
    targets = torch.as_tensor(np.asarray(classes_N, dtype=np.int64))
    row_weights_N = balanced_weights(classes_N, n_classes) if model.balanced else np.ones(len(classes_N))
    row_weights = torch.as_tensor(row_weights_N, dtype=torch.float32)
    widths = (feats.shape[1], *model.hidden, n_classes)
    params = []
    for fan_in, fan_out in itertools.pairwise(widths):
        bound = fan_in**-0.5
        for shape in ((fan_in, fan_out), (fan_out,)):
            param = torch.empty(shape).uniform_(-bound, bound, generator=generator)
            params.append(param.requires_grad_())
    layers = [(params[i], params[i + 1]) for i in range(0, len(params), 2)]
    optimiser = torch.optim.Adam(params, lr=model.learning_rate, weight_decay=model.weight_decay)
    keep_scale = 1.0 / (1.0 - model.dropout)  # kept units' expected input equals dropout off
    best, stale = np.inf, 0
    for _ in range(model.max_epochs):
        order = torch.randperm(len(feats), generator=generator)
        epoch_loss = 0.0
        for batch in order.split(model.batch_rows):
            scales = [
                (torch.rand(len(batch), units, generator=generator) >= model.dropout) * keep_scale
                for units in model.hidden
            ]
            log_probs = torch.log_softmax(_head(layers, _first(layers, feats[batch]), scales), dim=1)
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
            if stale >= model.patience:
                break
    return [(w.detach(), b.detach()) for w, b in layers]


def forward(layers: Layers, feats_N_D: np.ndarray, scales_S: list[list[torch.Tensor]], chunk_rows: int) -> np.ndarray:
    """Return ``samples_S_N_C`` (float32): softmax outputs under each sample's unit scales,
    ``chunk_rows`` rows at a time.

    The first layer does not depend on the dropout masks, so it is computed once per chunk.
    """
    n_classes = layers[-1][1].shape[0]
    samples_S_N_C = np.empty((len(scales_S), len(feats_N_D), n_classes), np.float32)
    with torch.no_grad():
        for start in range(0, len(feats_N_D), chunk_rows):
            chunk_n_D = torch.as_tensor(np.asarray(feats_N_D[start : start + chunk_rows], np.float32))
            hidden_n_H = _first(layers, chunk_n_D)
            for s, scales in enumerate(scales_S):
                probs_n_C = torch.softmax(_head(layers, hidden_n_H, scales), dim=1)
                samples_S_N_C[s, start : start + len(chunk_n_D)] = probs_n_C.numpy()
    return samples_S_N_C


def layers_of_arrays(arrays: dict[str, np.ndarray], names: tuple[tuple[str, str], ...]) -> Layers:
    """The layers from a model file's float arrays, ``names`` giving each layer's (weights, bias);
    arrays not named are left out."""
    def tensor(name: str) -> torch.Tensor:
        return torch.as_tensor(arrays[name], dtype=torch.float32)

    return [(tensor(weights_name), tensor(bias_name)) for weights_name, bias_name in names]


def _first(layers: Layers, feats_n_D: torch.Tensor) -> torch.Tensor:
    """``hidden_n_H``: the first hidden layer's ReLU output, before dropout."""
    weights_D_H, bias_H = layers[0]
    return torch.relu(feats_n_D @ weights_D_H + bias_H)


def _head(layers: Layers, hidden_n_H: torch.Tensor, scales: list[torch.Tensor]) -> torch.Tensor:
    """``logits_n_C`` from the first hidden layer's output; ``scales`` multiply the units of
    each hidden layer (0 for a dropped unit, ``1 / (1 - dropout)`` for a kept one, 1 with
    dropout off) and broadcast over rows."""
    (_, _), (weights_H_G, bias_G), (weights_G_C, bias_C) = layers
    hidden_n_G = torch.relu((hidden_n_H * scales[0]) @ weights_H_G + bias_G)
    return (hidden_n_G * scales[1]) @ weights_G_C + bias_C
