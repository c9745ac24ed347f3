"""Tissue detection on a slide thumbnail, so that glass and background are never tiled or labelled.

The test is on optical density (OD), the amount of light a pixel absorbs: glass is near 0, stained
tissue clearly above. The threshold comes from Otsu's method on the thumbnail and is returned so
that full-resolution tiles can be tested with the same value (:func:`tissue_pixels`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from numba import njit
from scipy import ndimage as ndi
from skimage.filters import threshold_otsu

from slidelabel.errors import ParameterError

#: Lowest OD threshold ever used. Clean glass sums to about 0.05 over the three channels and the
#: palest H&E stroma to about 0.2, so 0.15 keeps faint tissue while a blank slide (where Otsu would
#: split sensor noise) gives an empty mask instead of speckle.
OD_FLOOR = 0.15
#: Added to OD before taking its log for Otsu (see :func:`detect_tissue`); keeps pure white finite.
_LOG_OD_OFFSET = 0.02
#: Default smallest tissue piece kept, in um^2: a 50 um square removes dust and debris but keeps
#: small detached fragments that may still be worth labelling.
DEFAULT_MIN_OBJECT_UM2 = 2500.0
#: Smallest piece kept when the pixel size is unknown, in mask pixels: only noise is removed.
_MIN_OBJECT_PX_WITHOUT_MPP = 16
#: Gaussian smoothing of OD before thresholding, in mask pixels, so single noisy pixels do not flip.
_SMOOTH_SIGMA_PX = 1.0
#: Radius of the closing that bridges thin gaps between fibres of one piece, in mask pixels.
_CLOSING_RADIUS_PX = 1

#: Optical density -log10((I + 1) / 256) of every uint8 intensity I; indexing this table is much
#: faster than a log per pixel.
OD_OF_INTENSITY = (-np.log10((np.arange(256, dtype=np.float64) + 1.0) / 256.0)).astype(np.float32)


@dataclass(frozen=True)
class TissueMask:
    """Where the tissue is, at thumbnail resolution.

    Attributes
    ----------
    mask : numpy.ndarray
        ``(h, w)`` bool, True where there is tissue; pixel ``(r, c)`` covers level-0 pixels
        ``[c * downsample, (c + 1) * downsample)`` horizontally (and likewise for rows).
    downsample : float
        Level-0 pixels per mask pixel.
    od_threshold : float
        Optical density (as :func:`optical_density`) above which a pixel is tissue; it applies to
        pixels at any resolution.
    """

    mask: np.ndarray
    downsample: float
    od_threshold: float

    @property
    def fraction(self) -> float:
        """Fraction of the thumbnail that is tissue, in [0, 1]."""
        return float(self.mask.mean()) if self.mask.size else 0.0


def _check_rgb(rgb: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ParameterError(
            f"expected an RGB uint8 image of shape (h, w, 3), got {rgb.dtype} of shape {rgb.shape}"
        )


def optical_density(rgb: np.ndarray) -> np.ndarray:
    """Optical density of each pixel, summed over the three channels.

    ``OD = sum_c -log10((I_c + 1) / 256)``: white (255, 255, 255) is 0, black is ``3 * log10(256)``
    (about 7.2). The ``+ 1`` keeps black finite; 256 makes white exactly 0.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(h, w, 3)`` uint8 image.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` float32 optical density (unitless).

    Examples
    --------
    >>> optical_density(np.full((1, 2, 3), 255, np.uint8)).tolist()
    [[0.0, 0.0]]
    """
    _check_rgb(rgb)
    od_h_w_c = OD_OF_INTENSITY[rgb]
    return od_h_w_c.sum(axis=2, dtype=np.float32)


def tissue_pixels(rgb: np.ndarray, od_threshold: float) -> np.ndarray:
    """Per-pixel tissue test for a tile at any resolution.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(h, w, 3)`` uint8 image.
    od_threshold : float
        Threshold on :func:`optical_density`, usually :attr:`TissueMask.od_threshold`.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` bool, True where the pixel absorbs more light than glass.
    """
    if not od_threshold > 0:
        raise ParameterError(f"od_threshold must be > 0, got {od_threshold}")
    _check_rgb(rgb)
    out = np.empty(rgb.shape[:2], np.bool_)
    _od_above(rgb, OD_OF_INTENSITY, np.float32(od_threshold), out)
    return out


@njit(cache=True, nogil=True)
def _od_above(rgb, od_of_intensity, threshold, out):  # pragma: no cover
    # The same sum as optical_density, without its (h, w, 3) float temporary: 10x faster on tiles.
    height, width = out.shape
    for y in range(height):
        for x in range(width):
            od = od_of_intensity[rgb[y, x, 0]] + od_of_intensity[rgb[y, x, 1]] + od_of_intensity[rgb[y, x, 2]]
            out[y, x] = od > threshold


def _remove_small(mask: np.ndarray, min_px: int) -> np.ndarray:
    """``mask`` without its 8-connected components smaller than ``min_px`` pixels."""
    labels, count = ndi.label(mask, structure=np.ones((3, 3), bool))
    if count == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def _min_object_px(
    min_object_um2: float | None, mpp: float | None, downsample: float
) -> int:
    if min_object_um2 is not None and mpp is None:
        raise ParameterError("min_object_um2 needs mpp (the slide's um per level-0 pixel)")
    if mpp is None:
        return _MIN_OBJECT_PX_WITHOUT_MPP
    um2_per_px = (mpp * downsample) ** 2
    area_um2 = DEFAULT_MIN_OBJECT_UM2 if min_object_um2 is None else min_object_um2
    return max(1, math.ceil(area_um2 / um2_per_px))


def detect_tissue(
    rgb: np.ndarray,
    *,
    downsample: float,
    min_object_um2: float | None = None,
    mpp: float | None = None,
) -> TissueMask:
    """Find the tissue on a thumbnail of an H&E slide.

    Otsu's threshold is computed on ``log(OD + 0.02)`` rather than OD: glass is a narrow peak near
    0 and tissue a long tail, and on plain OD Otsu splits the tail (dropping pale stroma). The
    threshold is at least :data:`OD_FLOOR`. The mask is closed to bridge thin gaps, then tissue
    pieces and holes smaller than the minimum object area are removed and filled.

    Parameters
    ----------
    rgb : numpy.ndarray
        ``(h, w, 3)`` uint8 thumbnail of the whole slide.
    downsample : float
        Level-0 pixels per thumbnail pixel (>= 1 is usual; any value > 0 is accepted).
    min_object_um2 : float, optional
        Smallest tissue piece (and largest hole filled), in um^2. Needs ``mpp``. Default
        :data:`DEFAULT_MIN_OBJECT_UM2` when ``mpp`` is given, else 16 thumbnail pixels.
    mpp : float, optional
        Micrometres per level-0 pixel of the slide.

    Returns
    -------
    TissueMask
        Mask of shape ``(h, w)`` with ``downsample`` and the OD threshold used.

    Examples
    --------
    >>> detect_tissue(np.full((64, 64, 3), 250, np.uint8), downsample=32.0).fraction
    0.0
    """
    _check_rgb(rgb)
    if not downsample > 0:
        raise ParameterError(f"downsample must be > 0, got {downsample}")
    if mpp is not None and not mpp > 0:
        raise ParameterError(f"mpp must be > 0, got {mpp}")
    if min_object_um2 is not None and not min_object_um2 > 0:
        raise ParameterError(f"min_object_um2 must be > 0, got {min_object_um2}")
    min_px = _min_object_px(min_object_um2, mpp, downsample)

    od = ndi.gaussian_filter(optical_density(rgb), _SMOOTH_SIGMA_PX)
    log_od = np.log(od + _LOG_OD_OFFSET)
    # Otsu is undefined on a constant image (a synthetic blank one); the floor decides there.
    otsu = math.exp(threshold_otsu(log_od)) - _LOG_OD_OFFSET if np.ptp(log_od) > 0 else 0.0
    threshold = max(float(otsu), OD_FLOOR)

    mask = od > threshold
    kernel = cv2.getStructuringElement(
        cv2.MORPH_ELLIPSE, (2 * _CLOSING_RADIUS_PX + 1, 2 * _CLOSING_RADIUS_PX + 1)
    )
    # Pad so the closing does not glue tissue to the image border.
    pad = _CLOSING_RADIUS_PX
    padded = np.pad(mask, pad).astype(np.uint8)
    mask = cv2.morphologyEx(padded, cv2.MORPH_CLOSE, kernel)[pad:-pad, pad:-pad].astype(bool)
    mask = _remove_small(mask, min_px)
    holes = ndi.binary_fill_holes(mask) & ~mask
    mask |= holes & ~_remove_small(holes, min_px)
    return TissueMask(mask=mask, downsample=float(downsample), od_threshold=threshold)


def mask_window(
    tissue: TissueMask,
    left: int,
    top: int,
    width: int,
    height: int,
    *,
    downsample: float,
    dilate_px: int = 0,
) -> np.ndarray:
    """The tissue mask over a window of working pixels, resampled by nearest neighbour.

    Parameters
    ----------
    tissue : TissueMask
        Mask of the whole slide.
    left, top : int
        Window corner in working pixels (level-0 pixels divided by ``downsample``); may be
        negative or beyond the slide.
    width, height : int
        Window size in working pixels (>= 0).
    downsample : float
        Level-0 pixels per working pixel (> 0).
    dilate_px : int
        Grow the tissue by this many working pixels (>= 0), e.g. to keep tiles at its edge.

    Returns
    -------
    numpy.ndarray
        ``(height, width)`` bool; pixels whose centre falls outside the mask are False.
    """
    if width < 0 or height < 0:
        raise ParameterError(f"window size must be >= 0, got {width} x {height}")
    if not downsample > 0:
        raise ParameterError(f"downsample must be > 0, got {downsample}")
    if dilate_px < 0:
        raise ParameterError(f"dilate_px must be >= 0, got {dilate_px}")
    # Sample a margin of dilate_px around the window so tissue just outside it still grows in.
    m = dilate_px
    scale = downsample / tissue.downsample
    rows = np.floor((np.arange(top - m, top + height + m) + 0.5) * scale).astype(np.int64)
    cols = np.floor((np.arange(left - m, left + width + m) + 0.5) * scale).astype(np.int64)
    mask_h, mask_w = tissue.mask.shape
    row_ok = (rows >= 0) & (rows < mask_h)
    col_ok = (cols >= 0) & (cols < mask_w)
    window = np.zeros((rows.size, cols.size), bool)
    window[np.ix_(row_ok, col_ok)] = tissue.mask[np.ix_(rows[row_ok], cols[col_ok])]
    if m:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * m + 1, 2 * m + 1))
        window = cv2.dilate(window.astype(np.uint8), kernel).astype(bool)
        window = window[m : m + height, m : m + width]
    return window
