"""Consistent MC dropout, shared by the torch models: one dropout mask per posterior sample,
applied to every row, as BatchBALD needs (rows scored under the same model draw)."""

from __future__ import annotations

import numpy as np
import torch

from slidelabel.errors import ParameterError


def kept_units(widths: tuple[int, ...] | list[int]) -> list[list[torch.Tensor]]:
    """One "sample" with every unit kept (dropout off): ``[[ones(1, w) for w in widths]]``."""
    return [[torch.ones(1, width) for width in widths]]


def dropout_scales(widths: tuple[int, ...] | list[int], dropout: float, n_samples: int,
                   rng: np.random.Generator) -> list[list[torch.Tensor]]:
    """Per sample, a float32 ``(1, width)`` scale per dropped layer: 0 for dropped units,
    ``1 / (1 - dropout)`` for kept ones, drawn from ``rng``."""
    if n_samples < 1:
        raise ParameterError(f"n_samples must be >= 1, got {n_samples!r}")
    keep_scale = 1.0 / (1.0 - dropout)
    return [
        [torch.as_tensor((rng.random((1, width)) >= dropout) * keep_scale, dtype=torch.float32) for width in widths]
        for _ in range(n_samples)
    ]
