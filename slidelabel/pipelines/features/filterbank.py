"""A filter bank in the style of ilastik and Trainable Weka Segmentation, on greyscale.

At each scale sigma: Gaussian smoothing, gradient magnitude, Laplacian of Gaussian, difference of
Gaussians (sigma vs 1.6 sigma), the two Hessian eigenvalues and the two structure-tensor
eigenvalues (gradients at sigma / 2 integrated over sigma, as ilastik does). Derivatives are
scale-normalised (times sigma per order) so that responses compare across scales.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from slidelabel.pipelines.features.base import PixelStatistics

SIGMAS_PX = (1.0, 2.0, 4.0, 8.0)
FILTERS = ("gaussian", "gradient", "log", "dog", "hessian_high", "hessian_low", "structure_high", "structure_low")
#: Difference of Gaussians: sigma against this multiple of it (Marr-Hildreth's LoG approximation).
DOG_RATIO = 1.6
#: Gaussian kernels are cut at this many sigmas; it also sets how much context a window needs.
TRUNCATE = 3.0


def _radius(sigma: float) -> int:
    return math.ceil(TRUNCATE * sigma)


def _gaussian(image_H_W: np.ndarray, sigma: float) -> np.ndarray:
    size = 2 * _radius(sigma) + 1
    return cv2.GaussianBlur(image_H_W, (size, size), sigma, borderType=cv2.BORDER_REFLECT)


def _derivative(image_H_W: np.ndarray, dx: int, dy: int) -> np.ndarray:
    # Central differences (Scharr is not defined for second order; Sobel at ksize 3 is).
    return cv2.Sobel(image_H_W, cv2.CV_32F, dx, dy, ksize=3, scale=0.125 if dx + dy == 1 else 0.25,
                     borderType=cv2.BORDER_REFLECT)


def _eigenvalues(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (high, low) of the symmetric 2 x 2 matrices [[a, b], [b, c]], per pixel."""
    half_trace = (a + c) / 2.0
    gap = np.sqrt(((a - c) / 2.0) ** 2 + b**2)
    return half_trace + gap, half_trace - gap


def filter_stack(grey_H_W: np.ndarray, *, sigmas: tuple[float, ...] = SIGMAS_PX) -> np.ndarray:
    """float32 (H, W, 8 * len(sigmas)) responses of :data:`FILTERS` at each sigma (px), scale by
    scale; a pixel's responses depend on pixels up to :func:`filterbank_margin` away."""
    if grey_H_W.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {grey_H_W.shape}")
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"sigmas must be positive pixels, got {sigmas}")
    grey_H_W = grey_H_W.astype(np.float32, copy=False)
    out = np.empty((*grey_H_W.shape, len(FILTERS) * len(sigmas)), np.float32)
    for s, sigma in enumerate(sigmas):
        smooth = _gaussian(grey_H_W, sigma)
        gx, gy = _derivative(smooth, 1, 0) * sigma, _derivative(smooth, 0, 1) * sigma
        dxx = _derivative(smooth, 2, 0) * sigma**2
        dyy = _derivative(smooth, 0, 2) * sigma**2
        dxy = _derivative(smooth, 1, 1) * sigma**2
        inner = _gaussian(grey_H_W, sigma / 2.0)
        ix, iy = _derivative(inner, 1, 0) * sigma, _derivative(inner, 0, 1) * sigma
        tensor = [_gaussian(product, sigma) for product in (ix * ix, ix * iy, iy * iy)]
        channels = [
            smooth, np.sqrt(gx**2 + gy**2), dxx + dyy, smooth - _gaussian(grey_H_W, DOG_RATIO * sigma),
            *_eigenvalues(dxx, dxy, dyy), *_eigenvalues(*tensor),
        ]
        out[..., s * len(FILTERS) : (s + 1) * len(FILTERS)] = np.stack(channels, axis=-1)
    return out


def filterbank_margin(sigmas: tuple[float, ...]) -> int:
    """Context (px) a window needs so that :func:`filter_stack` sees no window edge: the widest
    chain of kernels, the DoG's wider Gaussian or a structure tensor's two Gaussians and its
    derivative (1 px each)."""
    widest = max(sigmas)
    return max(_radius(DOG_RATIO * widest), _radius(widest) + 1, _radius(widest / 2.0) + 1 + _radius(widest))


@dataclass(frozen=True)
class FilterbankFeatures(PixelStatistics):
    """Mean and std of :func:`filter_stack` on greyscale at sigmas 1, 2, 4 and 8 px, and their
    mean over a ring of ``ring_px`` around the superpixel."""

    name: str = "filterbank"
    pixel_channels: tuple[str, ...] = tuple(f"{f}_s{s:g}" for s in SIGMAS_PX for f in FILTERS)
    margin_px: int = filterbank_margin(SIGMAS_PX)
    ring_px: int = 4

    def window_channels(self, rgb_H_W_3: np.ndarray) -> np.ndarray:
        if rgb_H_W_3.ndim != 3 or rgb_H_W_3.shape[2] != 3 or rgb_H_W_3.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 image, got {rgb_H_W_3.shape} {rgb_H_W_3.dtype}")
        grey_H_W = cv2.cvtColor(rgb_H_W_3, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
        return filter_stack(grey_H_W)
