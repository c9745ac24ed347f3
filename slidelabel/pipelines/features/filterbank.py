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
import numba
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


@numba.njit(cache=True, nogil=True)
def _scaled_products(ix_H_W, iy_H_W, sigma):  # pragma: no cover
    """(ix^2, ix iy, iy^2) of the gradients scaled by ``sigma``, float32 as numpy would give."""
    s = np.float32(sigma)
    xx, xy, yy = np.empty_like(ix_H_W), np.empty_like(ix_H_W), np.empty_like(ix_H_W)
    for i in range(ix_H_W.shape[0]):
        for j in range(ix_H_W.shape[1]):
            a, b = ix_H_W[i, j] * s, iy_H_W[i, j] * s
            xx[i, j], xy[i, j], yy[i, j] = a * a, a * b, b * b
    return xx, xy, yy


@numba.njit(cache=True, nogil=True, inline="always")
def _eigenvalues(a, b, c):  # pragma: no cover
    """Eigenvalues (high, low) of the symmetric 2 x 2 matrix [[a, b], [b, c]] (float32)."""
    two = np.float32(2.0)
    half_trace = (a + c) / two
    half_gap = (a - c) / two
    gap = np.sqrt(half_gap * half_gap + b * b)
    return half_trace + gap, half_trace - gap


@numba.njit(cache=True, nogil=True)
def _combine(smooth, d10, d01, d20, d02, d11, wide, txx, txy, tyy, sigma, out_H_W_C, first):  # pragma: no cover
    """Write the :data:`FILTERS` of one scale into channels ``first..first + 7`` of ``out_H_W_C``,
    from the smoothed image, its unscaled Sobel derivatives, the DoG's wider Gaussian and the
    smoothed structure tensor; one pass, no temporaries (float32 throughout, as numpy's)."""
    s1, s2 = np.float32(sigma), np.float32(sigma**2)
    for i in range(smooth.shape[0]):
        for j in range(smooth.shape[1]):
            gx, gy = d10[i, j] * s1, d01[i, j] * s1
            dxx, dyy, dxy = d20[i, j] * s2, d02[i, j] * s2, d11[i, j] * s2
            out_H_W_C[i, j, first] = smooth[i, j]
            out_H_W_C[i, j, first + 1] = np.sqrt(gx * gx + gy * gy)
            out_H_W_C[i, j, first + 2] = dxx + dyy
            out_H_W_C[i, j, first + 3] = smooth[i, j] - wide[i, j]
            out_H_W_C[i, j, first + 4], out_H_W_C[i, j, first + 5] = _eigenvalues(dxx, dxy, dyy)
            out_H_W_C[i, j, first + 6], out_H_W_C[i, j, first + 7] = _eigenvalues(txx[i, j], txy[i, j], tyy[i, j])


def filter_stack(grey_H_W: np.ndarray, *, sigmas: tuple[float, ...] = SIGMAS_PX) -> np.ndarray:
    """float32 (H, W, 8 * len(sigmas)) responses of :data:`FILTERS` at each sigma (px), scale by
    scale; a pixel's responses depend on pixels up to :func:`filterbank_margin` away."""
    if grey_H_W.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {grey_H_W.shape}")
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"sigmas must be positive pixels, got {sigmas}")
    grey_H_W = np.ascontiguousarray(grey_H_W, np.float32)
    out = np.empty((*grey_H_W.shape, len(FILTERS) * len(sigmas)), np.float32)
    smoothed: dict[float, np.ndarray] = {}  # the structure tensor's sigma / 2 is often a smaller scale

    def gaussian(sigma: float) -> np.ndarray:
        if sigma not in smoothed:
            smoothed[sigma] = _gaussian(grey_H_W, sigma)
        return smoothed[sigma]

    for s, sigma in enumerate(sigmas):
        smooth = gaussian(sigma)
        inner = gaussian(sigma / 2.0)
        products = _scaled_products(_derivative(inner, 1, 0), _derivative(inner, 0, 1), sigma)
        tensor = [_gaussian(product, sigma) for product in products]
        derivatives = [_derivative(smooth, dx, dy) for dx, dy in ((1, 0), (0, 1), (2, 0), (0, 2), (1, 1))]
        _combine(smooth, *derivatives, _gaussian(grey_H_W, DOG_RATIO * sigma), *tensor, sigma, out, s * len(FILTERS))
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
