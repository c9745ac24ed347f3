"""What ``slidelabel simulate`` learns from: images or whole slides, each with a mask of its truth.

Two kinds of input, told apart by the files' suffixes:

- *images* (PNG, JPEG) with masks of the same name and size: cut into superpixels of
  ``superpixel_px`` pixels and described by ``features_of_array``, in memory;
- *slides* (anything else: SVS, NDPI, tiled or pyramidal TIFF, ...) with masks aligned to level 0
  (PNG or TIFF, tiled or not, named after the slide's stem): run through the product's own
  steps, as a project's prepare job runs them: tiled superpixels at ``magnification`` and
  ``size`` (:func:`~slidelabel.services.superpixels.compute_slide_superpixels`) and slide
  feature extraction (:func:`~slidelabel.pipelines.features.extract.extract_slide_features`),
  into a work folder, so a second run reuses them. The mask is sampled at the centre of each
  working pixel.

A mask value is a class; every superpixel takes the majority class of its pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import tifffile
import zarr
from PIL import Image

from slidelabel.errors import ParameterError
from slidelabel.pipelines.features.extract import extract_slide_features, features_of_array, read_features
from slidelabel.pipelines.superpixels import SuperpixelParams, superpixel_array
from slidelabel.services.simulation import LabelledImage, SimulationOptions
from slidelabel.services.superpixels import SuperpixelOptions, SuperpixelSize, compute_slide_superpixels
from slidelabel.store.label_map import read_labels
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, read_manifest

#: Called with (what, done, total).
Progress = Callable[[str, int, int], None]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
MASK_SUFFIXES = (".png", ".tiff", ".tif")


def load_inputs(images: Path, masks: Path, options: SimulationOptions, *, work: Path,
                progress: Progress | None = None) -> tuple[list[LabelledImage], list[int]]:
    """The labelled images or slides of ``images`` with their masks in ``masks``, and the mask
    values that classes 0..C-1 stand for. Slides' superpixels and features go under ``work``."""
    found = sorted(p for p in images.iterdir() if p.is_file() and not p.name.startswith("."))
    if not found:
        raise ParameterError(f"{images} holds no images or slides")
    kinds = {p.suffix.lower() in IMAGE_SUFFIXES for p in found}
    if len(kinds) > 1:
        raise ParameterError(f"{images} mixes images ({', '.join(sorted(IMAGE_SUFFIXES))}) and slides: "
                             "put them in separate folders")
    pairs = [(p, _mask_of(p, masks)) for p in found]
    values = sorted(set().union(*(_mask_values(m) for _, m in pairs)))
    lookup = np.zeros(max(values) + 1, np.int64)
    lookup[values] = np.arange(len(values))
    loaded = []
    for done, (path, mask_path) in enumerate(pairs, 1):
        if path.suffix.lower() in IMAGE_SUFFIXES:
            loaded.append(_image(path, lookup[_read_mask(mask_path)], len(values), options))
        else:
            loaded.append(_slide(path, mask_path, lookup, len(values), options, work / path.stem))
        if progress:
            progress("slides" if path.suffix.lower() not in IMAGE_SUFFIXES else "images", done, len(pairs))
    return loaded, values


def _mask_of(path: Path, masks: Path) -> Path:
    for candidate in (masks / path.name, *(masks / f"{path.stem}{suffix}" for suffix in MASK_SUFFIXES)):
        if candidate.is_file():
            return candidate
    raise ParameterError(f"{path.name} has no mask in {masks} (looked for {path.name} and {path.stem} with "
                         f"{', '.join(MASK_SUFFIXES)})")


def _open_mask(path: Path) -> np.ndarray | zarr.Array:
    """The mask's level 0, lazily for TIFF (read window by window)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        try:
            return zarr.open(tifffile.imread(path, aszarr=True, level=0), mode="r")
        except (ValueError, tifffile.TiffFileError) as error:
            raise ParameterError(f"{path}: not a readable mask TIFF ({error})") from None
    return _read_mask(path)


def _own_image(path: Path, mode: str | None = None) -> np.ndarray:
    """The pixels of the user's own image file (converted to ``mode``), whatever its size: PIL's
    decompression-bomb guard (which the server keeps,
    :data:`~slidelabel.pipelines.slide_readers.MAX_DECODED_PIXELS`) would refuse a level-0 mask
    of a slide, and this file is no stranger's."""
    bound, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert(mode) if mode else image)
    finally:
        Image.MAX_IMAGE_PIXELS = bound


def _read_mask(path: Path) -> np.ndarray:
    mask = _own_image(path)
    return mask[..., 0] if mask.ndim == 3 else mask


def _mask_values(path: Path) -> set[int]:
    mask = _open_mask(path)
    rows = 4096
    return set().union(*(np.unique(np.asarray(mask[r:r + rows])).tolist() for r in range(0, mask.shape[0], rows)))


def _majority(superpixels_H_W: np.ndarray, mask_H_W: np.ndarray, n: int, n_classes: int) -> np.ndarray:
    inside = superpixels_H_W > 0
    votes = np.bincount((superpixels_H_W[inside].astype(np.int64) - 1) * n_classes + mask_H_W[inside],
                        minlength=n * n_classes)
    return votes.reshape(n, n_classes).argmax(axis=1)


def _image(path: Path, mask_H_W: np.ndarray, n_classes: int, options: SimulationOptions) -> LabelledImage:
    rgb = _own_image(path, "RGB")
    if mask_H_W.shape != rgb.shape[:2]:
        raise ParameterError(f"the mask of {path.name} is {mask_H_W.shape}, the image {rgb.shape[:2]}")
    seeds = superpixel_array(rgb, SuperpixelParams(step=options.superpixel_px))
    _, dense = np.unique(seeds, return_inverse=True)
    superpixels_H_W = (dense.reshape(seeds.shape) + 1).astype(np.int32)
    n = int(superpixels_H_W.max())
    feats_N_D = features_of_array(rgb, superpixels_H_W, extractor=options.extractor, n_superpixels=n)
    return LabelledImage(path.name, superpixels_H_W, _majority(superpixels_H_W, mask_H_W, n, n_classes),
                         feats_N_D, mask_H_W)


def _slide(path: Path, mask_path: Path, lookup: np.ndarray, n_classes: int, options: SimulationOptions,
           folder: Path) -> LabelledImage:
    """A slide through the prepare job's steps; its mask and superpixels at the working level."""
    superpixel_options = SuperpixelOptions(magnification=options.magnification,
                                           size=SuperpixelSize.parse(options.size))
    compute_slide_superpixels(path, folder / "superpixels", superpixel_options)
    manifest = read_manifest(folder / "superpixels" / MANIFEST_FILE)
    features = extract_slide_features(path, folder / "superpixels", folder / f"{options.extractor}.zarr",
                                      extractor=options.extractor)
    superpixels_H_W = np.asarray(read_labels(folder / "superpixels" / LABELS_FILE), np.int64)
    downsample = float(manifest["working"]["downsample"])
    mask = _open_mask(mask_path)
    slide_height = round(superpixels_H_W.shape[0] * downsample)
    if abs(mask.shape[0] - slide_height) > downsample or mask.ndim != 2:
        raise ParameterError(f"the mask {mask_path.name} is {tuple(mask.shape)} px; it must be one channel of the "
                             f"slide's level-0 size (about {slide_height} px high)")
    mask_H_W = lookup[_sampled(mask, superpixels_H_W.shape, downsample)]
    n = int(manifest["superpixels"])
    return LabelledImage(path.name, superpixels_H_W, _majority(superpixels_H_W, mask_H_W, n, n_classes),
                         read_features(features), mask_H_W)


def _sampled(mask: np.ndarray | zarr.Array, shape: tuple[int, int], downsample: float) -> np.ndarray:
    """The mask at the centres of the working pixels of a ``shape`` map, a band of rows at a time."""
    rows_H = np.minimum(((np.arange(shape[0]) + 0.5) * downsample).astype(np.int64), mask.shape[0] - 1)
    cols_W = np.minimum(((np.arange(shape[1]) + 0.5) * downsample).astype(np.int64), mask.shape[1] - 1)
    out = np.empty(shape, np.int64)
    band = max(1, int(4096 // downsample))
    for start in range(0, shape[0], band):
        rows = rows_H[start:start + band]
        strip = np.asarray(mask[int(rows[0]):int(rows[-1]) + 1])
        out[start:start + band] = strip[rows - rows[0]][:, cols_W]
    return out
