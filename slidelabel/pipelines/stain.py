"""Stain normalisation of H&E pixels: Reinhard's colour transfer and Macenko's stain vectors.

Both work per slide: the statistics (:func:`reinhard_statistics`, :func:`macenko_stain_matrix`)
are computed once, from a thumbnail or a sample of the slide's tissue, and the same transform
(:func:`reinhard`, :func:`macenko`) is then applied to every tile, so that neighbouring tiles
get the same colours (statistics per tile would change the colour of a tile with its content).
The transforms are per pixel, float32 and vectorised (colour conversions by lookup tables): on a
2048 x 2048 tile, Reinhard about 0.7 s and Macenko 0.4 s on one core of the 2-core development
machine, where skimage's rgb2lab and lab2rgb alone take 1.6 s.

- Reinhard, Ashikhmin, Gooch & Shirley (2001), *Color transfer between images*: shift and scale
  each CIELAB channel so that its mean and standard deviation over the tissue become the target's.
- Macenko et al. (2009), *A method for normalizing histology slides for quantitative analysis*:
  find the haematoxylin and eosin optical-density vectors of a slide as the extreme angles of its
  tissue pixels in the plane of their two main directions, unmix each pixel into the two stain
  concentrations, and remix them with the target's vectors and concentration scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from slidelabel.errors import ParameterError
from slidelabel.pipelines.tissue import OD_FLOOR, OD_OF_INTENSITY, tissue_pixels

# --- CIELAB (D65 white, 2 degree observer, as skimage.color.rgb2lab) ----------------------------

_SRGB = np.arange(256, dtype=np.float64) / 255.0
#: Linear light of each uint8 sRGB value.
_LINEAR_OF_INTENSITY = np.where(
    _SRGB <= 0.04045, _SRGB / 12.92, ((_SRGB + 0.055) / 1.055) ** 2.4).astype(np.float32)
#: sRGB uint8 of linear light quantised to 2**16 steps: one step moves an 8-bit value by at most
#: 0.05 (where the sRGB curve is steepest), so looking it up is as exact as the formula.
_LINEAR_STEPS = 2**16 - 1
_LINEAR = np.arange(_LINEAR_STEPS + 1, dtype=np.float64) / _LINEAR_STEPS
_INTENSITY_OF_LINEAR = np.clip(np.round(255.0 * np.where(
    _LINEAR <= 0.0031308, 12.92 * _LINEAR, 1.055 * _LINEAR ** (1 / 2.4) - 0.055)), 0, 255).astype(np.uint8)
_WHITE_D65 = np.array([0.95047, 1.0, 1.08883])
#: Linear sRGB to XYZ divided by the white point, so white maps to (1, 1, 1).
_RGB_TO_XYZN = (np.array([[0.412453, 0.357580, 0.180423],
                          [0.212671, 0.715160, 0.072169],
                          [0.019334, 0.119193, 0.950227]]) / _WHITE_D65[:, None])
_XYZN_TO_RGB = np.linalg.inv(_RGB_TO_XYZN).astype(np.float32)
_RGB_TO_XYZN = _RGB_TO_XYZN.astype(np.float32)
_DELTA = 6.0 / 29.0

# --- Reinhard ---------------------------------------------------------------------------------

#: Lightness (CIELAB L, 0-100) up to which a pixel gets the full Reinhard transform, and from which
#: it keeps its own colour; in between the two are blended linearly. The transform is fitted to the
#: tissue and extrapolates wildly far outside it: a dark source (mean L 32, as MoNuSeg's
#: TCGA-49-4488) would map glass to L 133, a pink or blue cast would tint it. Glass such as
#: (240, 240, 238) has L 94.6 and stays exactly itself; the palest pixels the default tissue mask
#: keeps (optical density 0.15, L about 91) are mostly left alone too, yet the tissue's statistics
#: still come within 2 units of the target's on all 30 MoNuSeg images (gamut clipping included);
#: a ramp rather than a step leaves no edge around the tissue.
GLASS_LIGHTNESS = (86.0, 92.0)


@dataclass(frozen=True)
class StainStatistics:
    """Mean and standard deviation of each CIELAB channel (L 0-100, a, b) over tissue pixels.

    Attributes
    ----------
    means_3 : tuple of float
        ``(L, a, b)`` means.
    stds_3 : tuple of float
        ``(L, a, b)`` standard deviations, each > 0.
    """

    means_3: tuple[float, float, float]
    stds_3: tuple[float, float, float]

    def __post_init__(self) -> None:
        means, stds = np.asarray(self.means_3, float), np.asarray(self.stds_3, float)
        if means.shape != (3,) or stds.shape != (3,) or not np.isfinite([means, stds]).all() or not (stds > 0).all():
            raise ParameterError(f"stain statistics need 3 finite means and 3 standard deviations > 0, got "
                                 f"means {self.means_3} and standard deviations {self.stds_3}")
        object.__setattr__(self, "means_3", tuple(float(v) for v in means))
        object.__setattr__(self, "stds_3", tuple(float(v) for v in stds))


#: A typical H&E: the tissue of MoNuSeg's TCGA-B0-5711-01Z-00-DX1 (kidney, 40x), the training image
#: whose statistics are nearest the median of all 30 (in units of their spread), as computed by
#: :func:`reinhard_statistics` with its default tissue mask.
REFERENCE = StainStatistics(means_3=(59.1033, 27.6548, -10.5786), stds_3=(18.2333, 7.9432, 6.3641))


def _describe(array: object) -> str:
    return f"{getattr(array, 'dtype', type(array).__name__)} of shape {getattr(array, 'shape', None)}"


def _check_image(rgb_H_W_3: np.ndarray, tissue_H_W: np.ndarray | None = None) -> None:
    if not isinstance(rgb_H_W_3, np.ndarray) or rgb_H_W_3.dtype != np.uint8 or rgb_H_W_3.ndim != 3 \
            or rgb_H_W_3.shape[2] != 3:
        raise ParameterError(f"expected an (H, W, 3) uint8 RGB image, got {_describe(rgb_H_W_3)}")
    if tissue_H_W is not None and (not isinstance(tissue_H_W, np.ndarray) or tissue_H_W.dtype != np.bool_
                                   or tissue_H_W.shape != rgb_H_W_3.shape[:2]):
        raise ParameterError(f"the tissue mask must be bool of the image's shape {rgb_H_W_3.shape[:2]}, "
                             f"got {_describe(tissue_H_W)}")


def _tissue(rgb_H_W_3: np.ndarray, tissue_H_W: np.ndarray | None) -> np.ndarray:
    """The given tissue mask, or the pixels darker than glass (:data:`~tissue.OD_FLOOR`); at least
    one pixel."""
    _check_image(rgb_H_W_3, tissue_H_W)
    tissue_H_W = tissue_pixels(rgb_H_W_3, OD_FLOOR) if tissue_H_W is None else tissue_H_W
    if not tissue_H_W.any():
        raise ParameterError("the image has no tissue pixels to compute stain statistics from "
                             "(pass a tissue mask, or an image that is not all glass)")
    return tissue_H_W


def _mix(values_N_3: np.ndarray, matrix_3_3: np.ndarray) -> np.ndarray:
    """``values_N_3 @ matrix_3_3.T`` as three weighted sums of columns (twice BLAS's speed here)."""
    out_N_3 = np.empty_like(values_N_3)
    for row, weights in enumerate(matrix_3_3):
        np.multiply(values_N_3[:, 0], weights[0], out=out_N_3[:, row])
        out_N_3[:, row] += values_N_3[:, 1] * weights[1]
        out_N_3[:, row] += values_N_3[:, 2] * weights[2]
    return out_N_3


def rgb_to_lab(rgb_N_3: np.ndarray) -> np.ndarray:
    """float32 CIELAB ``(N, 3)`` (L 0-100) of uint8 sRGB pixels ``(N, 3)``, as skimage's rgb2lab."""
    xyzn_N_3 = _mix(_LINEAR_OF_INTENSITY[rgb_N_3], _RGB_TO_XYZN)
    f_N_3 = np.cbrt(xyzn_N_3)
    dark = xyzn_N_3 <= _DELTA**3  # few pixels: indexing beats computing both branches everywhere
    f_N_3[dark] = xyzn_N_3[dark] / np.float32(3 * _DELTA**2) + np.float32(4 / 29)
    lab_N_3 = xyzn_N_3  # reused: its values are no longer needed
    np.multiply(f_N_3[:, 1], 116, out=lab_N_3[:, 0])
    lab_N_3[:, 0] -= 16
    np.subtract(f_N_3[:, 0], f_N_3[:, 1], out=lab_N_3[:, 1])
    lab_N_3[:, 1] *= 500
    np.subtract(f_N_3[:, 1], f_N_3[:, 2], out=lab_N_3[:, 2])
    lab_N_3[:, 2] *= 200
    return lab_N_3


def _lightness(rgb_N_3: np.ndarray) -> np.ndarray:
    """float32 CIELAB lightness ``(N, 1)`` of uint8 sRGB pixels ``(N, 3)``."""
    y_N_1 = _LINEAR_OF_INTENSITY[rgb_N_3] @ _RGB_TO_XYZN[1:2].T
    dark = y_N_1 <= _DELTA**3
    f_N_1 = np.cbrt(y_N_1)
    f_N_1[dark] = y_N_1[dark] / np.float32(3 * _DELTA**2) + np.float32(4 / 29)
    return 116 * f_N_1 - 16


def lab_to_rgb(lab_N_3: np.ndarray) -> np.ndarray:
    """uint8 sRGB ``(N, 3)`` of float32 CIELAB pixels ``(N, 3)``; colours outside sRGB are clipped."""
    f_N_3 = np.empty_like(lab_N_3)
    np.add(lab_N_3[:, 0], 16, out=f_N_3[:, 1])
    f_N_3[:, 1] /= 116
    np.add(f_N_3[:, 1], lab_N_3[:, 1] / 500, out=f_N_3[:, 0])
    np.subtract(f_N_3[:, 1], lab_N_3[:, 2] / 200, out=f_N_3[:, 2])
    xyzn_N_3 = f_N_3 * f_N_3
    xyzn_N_3 *= f_N_3
    dark = f_N_3 <= _DELTA
    xyzn_N_3[dark] = np.float32(3 * _DELTA**2) * (f_N_3[dark] - np.float32(4 / 29))
    linear_N_3 = _mix(xyzn_N_3, _XYZN_TO_RGB)
    np.clip(linear_N_3, 0, 1, out=linear_N_3)
    linear_N_3 *= _LINEAR_STEPS
    linear_N_3 += 0.5
    return _INTENSITY_OF_LINEAR[linear_N_3.astype(np.int32)]


def _transformed_share(lightness_N_1: np.ndarray) -> np.ndarray:
    """How much of the transform each pixel gets, from 1 (tissue) to 0 (glass), by its CIELAB
    lightness: see :data:`GLASS_LIGHTNESS`."""
    low, high = GLASS_LIGHTNESS
    return np.clip((np.float32(high) - lightness_N_1) / np.float32(high - low), 0, 1)


def reinhard_statistics(rgb_H_W_3: np.ndarray, *, tissue_H_W: np.ndarray | None = None) -> StainStatistics:
    """CIELAB mean and standard deviation of a slide's tissue, for :func:`reinhard`.

    Parameters
    ----------
    rgb_H_W_3 : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB: a thumbnail of the slide, or a sample of its tissue.
    tissue_H_W : numpy.ndarray, optional
        ``(H, W)`` bool, the pixels to use; default those darker than glass (optical density above
        :data:`slidelabel.pipelines.tissue.OD_FLOOR`).

    Returns
    -------
    StainStatistics

    Raises
    ------
    ParameterError
        A bad shape or dtype, or no tissue pixel.

    Examples
    --------
    >>> rgb = np.array([[[200, 100, 150], [100, 50, 120]]], np.uint8)
    >>> [round(m) for m in reinhard_statistics(rgb).means_3]
    [43, 40, -20]
    """
    tissue_H_W = _tissue(rgb_H_W_3, tissue_H_W)
    lab_N_3 = rgb_to_lab(rgb_H_W_3[tissue_H_W]).astype(np.float64)
    # A single colour has no spread; a tiny floor keeps the transform defined (it then only shifts).
    return StainStatistics(tuple(lab_N_3.mean(axis=0)), tuple(np.maximum(lab_N_3.std(axis=0), 1e-3)))


def reinhard(rgb_H_W_3: np.ndarray, source: StainStatistics, target: StainStatistics) -> np.ndarray:
    """Reinhard's colour transfer of an image (a tile) from ``source`` to ``target`` statistics.

    Each CIELAB channel becomes ``(x - source mean) / source std * target std + target mean``;
    glass keeps its colour (see :data:`GLASS_LIGHTNESS`).

    Parameters
    ----------
    rgb_H_W_3 : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB, any part of the slide ``source`` was computed on.
    source, target : StainStatistics
        The slide's (:func:`reinhard_statistics`) and the reference's (e.g. :data:`REFERENCE`).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.

    Examples
    --------
    >>> glass = np.full((2, 2, 3), 245, np.uint8)
    >>> bool((reinhard(glass, REFERENCE, StainStatistics((60, 30, -10), (20, 10, 8))) == 245).all())
    True
    """
    _check_image(rgb_H_W_3)
    height, width = rgb_H_W_3.shape[:2]
    lab_N_3 = rgb_to_lab(rgb_H_W_3.reshape(-1, 3))
    scale_3 = np.asarray(target.stds_3, np.float32) / np.asarray(source.stds_3, np.float32)
    shift_3 = np.asarray(target.means_3, np.float32) - np.asarray(source.means_3, np.float32) * scale_3
    change_N_3 = lab_N_3 * (scale_3 - 1)
    change_N_3 += shift_3
    change_N_3 *= _transformed_share(lab_N_3[:, :1])
    lab_N_3 += change_N_3
    np.clip(lab_N_3[:, 0], 0, 100, out=lab_N_3[:, 0])
    return lab_to_rgb(lab_N_3).reshape(height, width, 3)


# --- Macenko ----------------------------------------------------------------------------------

#: Optical density (per channel, log10) below which a channel counts as transparent: Macenko's
#: beta, 0.15 in natural-log units. Pixels with any channel below it are left out of the fit.
MACENKO_BETA = 0.15 / math.log(10)
#: Percentile of the angles taken as the extreme (pure) stains: Macenko's alpha, robust to outliers.
MACENKO_ALPHA = 1.0
#: Percentile of each stain's concentration taken as its maximum.
MAX_CONCENTRATION_PERCENTILE = 99.0
#: Pixels used for the fit at most; larger images are sampled with a regular stride.
MACENKO_PIXELS = 1_000_000


@dataclass(frozen=True)
class StainVectors:
    """A slide's haematoxylin and eosin optical-density vectors and their maximal concentrations.

    Attributes
    ----------
    he_2_3 : tuple of two tuples of three floats
        Unit OD vectors (R, G, B; OD as ``-log10((I + 1) / 256)``), haematoxylin first.
    max_concentrations_2 : tuple of float
        The 99th percentile of each stain's concentration over the tissue, each > 0.
    """

    he_2_3: tuple[tuple[float, float, float], tuple[float, float, float]]
    max_concentrations_2: tuple[float, float]

    def __post_init__(self) -> None:
        he, top = np.asarray(self.he_2_3, float), np.asarray(self.max_concentrations_2, float)
        if he.shape != (2, 3) or top.shape != (2,) or not np.isfinite(he).all() or not np.isfinite(top).all() \
                or not (top > 0).all() or abs(np.linalg.det(he @ he.T)) < 1e-9:
            raise ParameterError(f"stain vectors need two independent finite OD vectors of 3 values and two "
                                 f"maximal concentrations > 0, got {self.he_2_3} and {self.max_concentrations_2}")
        object.__setattr__(self, "he_2_3", tuple(tuple(float(v) for v in row) for row in he))
        object.__setattr__(self, "max_concentrations_2", tuple(float(v) for v in top))


#: The stain vectors of the image :data:`REFERENCE` comes from (MoNuSeg's TCGA-B0-5711-01Z-00-DX1),
#: as computed by :func:`macenko_stain_matrix` with its default tissue mask.
MACENKO_REFERENCE = StainVectors(he_2_3=((0.5711, 0.7194, 0.3954), (0.2179, 0.8308, 0.5122)),
                                 max_concentrations_2=(1.2377, 0.5394))


def _unmixing(he_2_3: np.ndarray) -> np.ndarray:
    """``(3, 2)`` float32 matrix whose product with OD rows gives the least-squares concentrations."""
    return np.linalg.pinv(he_2_3).astype(np.float32)


def macenko_stain_matrix(rgb_H_W_3: np.ndarray, *, tissue_H_W: np.ndarray | None = None) -> StainVectors:
    """Macenko's haematoxylin and eosin vectors of a slide, for :func:`macenko`.

    Parameters
    ----------
    rgb_H_W_3 : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB: a thumbnail of the slide, or a sample of its tissue.
    tissue_H_W : numpy.ndarray, optional
        ``(H, W)`` bool, the pixels to use; default those darker than glass.

    Returns
    -------
    StainVectors
        Haematoxylin is the vector that absorbs more red (its colour is the bluer one).

    Raises
    ------
    ParameterError
        A bad shape or dtype, or too few stained pixels (fewer than 10 with OD above
        :data:`MACENKO_BETA` in every channel).
    """
    tissue_H_W = _tissue(rgb_H_W_3, tissue_H_W)
    od_N_3 = OD_OF_INTENSITY[rgb_H_W_3[tissue_H_W][:: max(1, math.ceil(tissue_H_W.sum() / MACENKO_PIXELS))]]
    stained_M_3 = od_N_3[(od_N_3 > MACENKO_BETA).all(axis=1)].astype(np.float64)
    if len(stained_M_3) < 10:
        raise ParameterError(f"only {len(stained_M_3)} stained pixels (optical density above {MACENKO_BETA} in "
                             "every channel) to find stain vectors from; pass an image with more tissue")
    _, eigenvectors_3_3 = np.linalg.eigh(np.cov(stained_M_3, rowvar=False))
    plane_3_2 = eigenvectors_3_3[:, [2, 1]]  # the two main directions of the stains' OD
    plane_3_2 *= np.where(plane_3_2.sum(axis=0) < 0, -1, 1)  # eigenvectors' sign is arbitrary
    projected_M_2 = stained_M_3 @ plane_3_2
    angles_M = np.arctan2(projected_M_2[:, 1], projected_M_2[:, 0])
    extremes = np.percentile(angles_M, [MACENKO_ALPHA, 100 - MACENKO_ALPHA])
    vectors_2_3 = np.stack([plane_3_2 @ [np.cos(angle), np.sin(angle)] for angle in extremes])
    vectors_2_3 *= np.where(vectors_2_3.sum(axis=1, keepdims=True) < 0, -1, 1)
    vectors_2_3 /= np.linalg.norm(vectors_2_3, axis=1, keepdims=True)
    he_2_3 = vectors_2_3 if vectors_2_3[0, 0] >= vectors_2_3[1, 0] else vectors_2_3[::-1]
    concentrations_N_2 = od_N_3 @ _unmixing(he_2_3)
    top_2 = np.percentile(concentrations_N_2, MAX_CONCENTRATION_PERCENTILE, axis=0)
    return StainVectors(tuple(map(tuple, he_2_3)), tuple(np.maximum(top_2, 1e-6)))


def macenko(rgb_H_W_3: np.ndarray, source: StainVectors, target: StainVectors) -> np.ndarray:
    """Macenko's normalisation of an image (a tile) from ``source`` to ``target`` stain vectors.

    Each pixel's OD is unmixed into haematoxylin and eosin concentrations with ``source``'s
    vectors (least squares; negative amounts are none), each concentration is scaled by the ratio
    of the target's maximum to the source's, and the pixel is remixed with ``target``'s vectors.
    Colour that neither stain explains is dropped; glass keeps its colour, as in :func:`reinhard`
    (see :data:`GLASS_LIGHTNESS`).

    Parameters
    ----------
    rgb_H_W_3 : numpy.ndarray
        ``(H, W, 3)`` uint8 RGB, any part of the slide ``source`` was computed on.
    source, target : StainVectors
        The slide's (:func:`macenko_stain_matrix`) and the reference's (e.g.
        :data:`MACENKO_REFERENCE`).

    Returns
    -------
    numpy.ndarray
        ``(H, W, 3)`` uint8 RGB.
    """
    _check_image(rgb_H_W_3)
    height, width = rgb_H_W_3.shape[:2]
    rgb_N_3 = rgb_H_W_3.reshape(-1, 3)
    scale_2 = np.asarray(target.max_concentrations_2, np.float32) / np.asarray(source.max_concentrations_2, np.float32)
    unmix_3_2 = _unmixing(np.asarray(source.he_2_3)) * scale_2
    concentrations_N_2 = np.maximum(OD_OF_INTENSITY[rgb_N_3] @ unmix_3_2, 0)
    od_N_3 = concentrations_N_2 @ np.asarray(target.he_2_3, np.float32)
    # The inverse of OD = -log10((I + 1) / 256).
    change_N_3 = np.power(np.float32(10), -od_N_3)
    change_N_3 *= 256
    change_N_3 -= rgb_N_3 + np.float32(1)
    change_N_3 *= _transformed_share(_lightness(rgb_N_3))
    change_N_3 += rgb_N_3
    return np.clip(np.round(change_N_3), 0, 255).astype(np.uint8).reshape(height, width, 3)
