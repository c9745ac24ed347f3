"""What each classified superpixel of a slide is, from its labels or an epoch's predictions, and
the shapes an export draws of them.

:func:`slide_classes` reads a slide's effective labels or predictions as :class:`SlideClasses`;
:func:`exported_shapes` traces them (a region per category, or a shape per superpixel, a batch of
nearby superpixels at a time) for the exports of :mod:`slidelabel.services.exports` and
:mod:`slidelabel.services.dsa_annotation`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy.orm import Session

from slidelabel.errors import ConflictError
from slidelabel.services.epochs import slide_predictions
from slidelabel.services.polygons import Polygon, label_map_polygons, nearby_batches
from slidelabel.services.reviews import effective_labels
from slidelabel.store.json_pieces import compact, key_sorted
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Category, Slide
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, TABLE_FILE, read_manifest
from slidelabel.store.superpixel_table import read_table


class Source(enum.StrEnum):
    labels = "labels"
    predictions = "predictions"


@dataclass(frozen=True)
class SlideClasses:
    """The category of each classified superpixel of one slide, from labels or predictions.

    ``superpixels_M`` (int64 ids) and ``category_ids_M`` (int64) pair up; ``certainty_M`` is set
    for predictions. ``folder`` is the slide's superpixel folder, ``downsample`` level-0 pixels
    per working pixel and ``mpp`` micrometres per working pixel (None when unknown).
    """

    slide: Slide
    source: Source
    epoch: int | None
    superpixels_M: np.ndarray
    category_ids_M: np.ndarray
    certainty_M: np.ndarray | None
    folder: Path
    downsample: float
    mpp: float | None

    @property
    def count(self) -> int:
        """Superpixels of the slide (N)."""
        return int(self.slide.superpixels or 0)


def superpixel_folder(files: ProjectFiles, slide: Slide) -> tuple[Path, dict]:
    """The slide's finished superpixel folder and its manifest; :class:`ConflictError` before
    its superpixels are computed."""
    folder = files.superpixels(slide.id)
    manifest = read_manifest(folder / MANIFEST_FILE)
    if manifest is None or not slide.superpixels:
        raise ConflictError(f"slide {slide.name!r} has no superpixels yet: compute them before exporting it")
    return folder, manifest


def slide_classes(session: Session, files: ProjectFiles, slide: Slide, source: Source,
                  epoch: int | None = None) -> SlideClasses:
    """What ``slide``'s superpixels are by ``source``: its effective labels, or the predicted
    category of every predicted superpixel of ``epoch`` (the latest when None)."""
    folder, manifest = superpixel_folder(files, slide)
    certainty = None
    if source is Source.labels:
        empty = np.empty(0, np.int64)
        labels = effective_labels(session, slide.project_id, slide_id=slide.id)
        superpixels, categories = labels.get(slide.id, (empty, empty))
    else:
        epoch, predictions = slide_predictions(session, files.data_dir, slide.project_id, slide.id, epoch)
        predicted_N = predictions.predicted_N
        superpixels = np.flatnonzero(predicted_N) + 1
        categories, certainty = predicted_N[superpixels - 1], predictions.certainty_N[superpixels - 1]
    working = manifest["working"]
    return SlideClasses(slide, source, epoch if source is Source.predictions else None,
                        np.asarray(superpixels, np.int64), np.asarray(categories, np.int64), certainty, folder,
                        float(working["downsample"]), working.get("mpp"))


def dissolved_polygons(classes: SlideClasses, *, tolerance: float = 1.0) -> dict[int, list[Polygon]]:
    """Polygons in level-0 pixels keyed by category id, neighbouring superpixels of one category
    merged; ``tolerance`` in working pixels."""
    region_of_id = np.zeros(classes.count + 1, np.int64)
    region_of_id[classes.superpixels_M] = classes.category_ids_M
    return label_map_polygons(classes.folder / LABELS_FILE, region_of_id, downsample=classes.downsample,
                              tolerance=tolerance)


def superpixel_polygons(classes: SlideClasses, *, tolerance: float = 1.0) -> Iterator[dict[int, list[Polygon]]]:
    """One shape per classified superpixel in level-0 pixels, ``{row of classes.superpixels_M:
    parts}`` a batch of nearby superpixels at a time, each traced over its bounding window (see
    :func:`nearby_batches`): memory holds one batch's shapes on a fully labelled slide, and a
    few labels on a large slide read little of it. ``tolerance`` in working pixels."""
    if classes.superpixels_M.size == 0:
        return
    labels_path = classes.folder / LABELS_FILE
    box_M_4 = _working_boxes(classes)
    batches = nearby_batches(box_M_4)
    # Regions are numbered batch after batch, so each batch is one range of regions to trace.
    order_M = np.concatenate(batches)
    region_of_id = np.zeros(classes.count + 1, np.int64)
    region_of_id[classes.superpixels_M[order_M]] = np.arange(1, order_M.size + 1)
    start = 0
    for batch in batches:
        left, top = box_M_4[batch, :2].min(axis=0)
        right, bottom = box_M_4[batch, 2:].max(axis=0)
        traced = label_map_polygons(labels_path, region_of_id, downsample=classes.downsample, tolerance=tolerance,
                                    rows=(int(top) - 1, int(bottom) + 1), cols=(int(left) - 1, int(right) + 1),
                                    regions=(start + 1, start + batch.size + 1))
        yield {int(order_M[region - 1]): parts for region, parts in traced.items()}
        start += batch.size


def _working_boxes(classes: SlideClasses) -> np.ndarray:
    """``(M, 4)`` int64 boxes (``left, top, right, bottom``, working pixels, right and bottom
    exclusive) of the classified superpixels."""
    box_M_4 = read_table(classes.folder / TABLE_FILE).bbox_level0[classes.superpixels_M - 1] / classes.downsample
    return np.concatenate([np.floor(box_M_4[:, :2]), np.ceil(box_M_4[:, 2:])], axis=1).astype(np.int64)


def rgb(color: str) -> list[int]:
    """``#rrggbb`` as ``[r, g, b]``."""
    return [int(color[i:i + 2], 16) for i in (1, 3, 5)]


#: A shape's place in an export: the legend position of its category, then its region (the
#: category id when dissolved, else the superpixel id).
Key = tuple[int, int]


def exported_shapes(classes: SlideClasses, categories: dict[int, Category], dissolve: bool
            ) -> Iterator[tuple[Key, Category, list[Polygon], dict]]:
    """``(key, category, parts, extra properties)`` per exported region, batch after batch (not
    in key order). Merged categories read as their targets (:func:`slide_classes`); an id of
    no category is left out."""
    if dissolve:
        for category_id, parts in dissolved_polygons(classes).items():
            if (category := categories.get(category_id)) is not None:
                rows = np.flatnonzero(classes.category_ids_M == category_id)
                yield (category.position, category_id), category, parts, _extra(classes, "superpixels", rows.size, rows)
        return
    for traced in superpixel_polygons(classes):
        for row, parts in traced.items():
            if (category := categories.get(int(classes.category_ids_M[row]))) is not None:
                superpixel = int(classes.superpixels_M[row])
                yield (category.position, superpixel), category, parts, _extra(classes, "superpixel", superpixel,
                                                                               np.array([row]))


def _extra(classes: SlideClasses, name: str, value: int, rows: np.ndarray) -> dict:
    """``{name: value}`` and, for predictions, the mean ``certainty`` of ``rows``."""
    extra: dict = {name: int(value)}
    if classes.certainty_M is not None:
        extra["certainty"] = round(float(classes.certainty_M[rows].mean()), 4)
    return extra


def in_order(keyed: Iterable[tuple[Key, dict]]) -> list[dict]:
    return [item for _, item in sorted(keyed, key=lambda pair: pair[0])]


def texts_in_order(keyed: Iterable[tuple[Key, dict]], spill: Path | None) -> Iterator[tuple[str]]:
    """The items' compact JSON texts in key order, through a temporary file in ``spill``
    (:func:`key_sorted`), as 1-tuples for :func:`list_pieces`."""
    return ((text,) for text in key_sorted(((*key, compact(item)) for key, item in keyed), folder=spill))
