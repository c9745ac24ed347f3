"""``slidelabel render``: a slide thumbnail with its superpixel boundaries, as a PNG."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from slidelabel.errors import OutputError
from slidelabel.pipelines.render import boundary_overlay
from slidelabel.pipelines.slides import Slide
from slidelabel.store.atomic import atomic_path
from slidelabel.store.label_map import label_map_shape, read_labels
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE


def superpixel_folder(slide_path: Path, superpixels: Path) -> Path:
    """The folder of ``slide_path``'s superpixels: ``superpixels`` itself or its subfolder for the slide."""
    for folder in (superpixels, superpixels / slide_path.stem):
        if (folder / MANIFEST_FILE).exists():
            return folder
    raise OutputError(
        f"no finished superpixels for {slide_path.name} in {superpixels} (looked for {MANIFEST_FILE} there "
        f"and in {slide_path.stem}/); run `slidelabel superpixels {slide_path} --out {superpixels}` first"
    )


def _level_for(labels_path: Path, width: int) -> int:
    """The smallest pyramid level that is still at least ``width`` wide."""
    level, (_, level_width) = 0, label_map_shape(labels_path)
    while level_width // 2 >= width and level_width > 256:
        level, level_width = level + 1, level_width // 2
    return level


def render_slide(
    slide_path: Path, superpixels: Path, out_png: Path, *, max_size: int = 2048, base_mpp: float | None = None
) -> Path:
    """Write a PNG of the slide at most ``max_size`` px on its long side with superpixel boundaries."""
    folder = superpixel_folder(slide_path, superpixels)
    with Slide(slide_path, base_mpp=base_mpp) as slide:
        thumbnail, _ = slide.thumbnail(max_size=max_size)
    labels_path = folder / LABELS_FILE
    labels = read_labels(labels_path, level=_level_for(labels_path, thumbnail.shape[1]))
    picture = boundary_overlay(thumbnail, labels)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        Image.fromarray(picture).save(tmp, format="PNG")
    return out_png
