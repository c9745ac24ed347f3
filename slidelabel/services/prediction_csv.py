"""The predictions CSV of a project's slides (RFC 4180, header included): a row per superpixel
with its place, size, predicted category, certainty and the probability of each category.

A text cell (slide or category name) that a spreadsheet would read as a formula, one starting
with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return, starts with a ``'`` (OWASP's escape
for CSV injection), so that spreadsheets take it as text.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from sqlalchemy.orm import Session

from slidelabel.errors import NotFoundError
from slidelabel.services.epochs import get_epoch
from slidelabel.services.projects import merged_categories
from slidelabel.services.slide_classes import superpixel_folder
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Category, Project, Slide
from slidelabel.store.predictions import SlidePredictions, read_predictions
from slidelabel.store.superpixel_files import TABLE_FILE
from slidelabel.store.superpixel_table import SuperpixelTable, read_table

#: First characters of a CSV cell that spreadsheets (Excel, LibreOffice, Google Sheets) read as a
#: formula or an instruction (OWASP, "CSV Injection").
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_text(text: str) -> str:
    """``text`` for a CSV cell: with a ``'`` in front when a spreadsheet would read it as a
    formula (:data:`_FORMULA_STARTS`), else unchanged."""
    return f"'{text}" if text.startswith(_FORMULA_STARTS) else text


def csv_header(category_ids_C: np.ndarray, categories: dict[int, Category]) -> list[str]:
    """Columns of :func:`predictions_csv`, one ``p_<name>`` per model column (cells, to be written
    with :mod:`csv`: a name may hold commas and quotes)."""
    names = [categories[c].name if c in categories else f"category {c}" for c in category_ids_C.tolist()]
    return ["slide", "superpixel", "centroid_x", "centroid_y", "x_min", "y_min", "x_max", "y_max", "area_um2",
            "area_px_level0", "predicted", "certainty", *(f"p_{name}" for name in names)]


def _csv_text(rows: Iterable[list]) -> str:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue()


def predictions_csv(slide: Slide, table: SuperpixelTable, predictions: SlidePredictions, downsample: float,
                    categories: dict[int, Category], columns_C: np.ndarray, *, rows_per_chunk: int = 5000
                    ) -> Iterator[str]:
    """CSV text (no header) of every superpixel of a slide, ``rows_per_chunk`` rows at a time.

    Coordinates and ``area_px_level0`` are level-0 pixels (bbox max exclusive), ``area_um2`` is
    empty when the pixel size is unknown; ``predicted``, ``certainty`` and probabilities are
    empty where nothing was predicted. Probabilities follow ``columns_C`` (category ids). Names
    pass through :func:`spreadsheet_text`.
    """
    column_of = {c: i for i, c in enumerate(predictions.category_ids_C.tolist())}
    probs_N_C = np.zeros((predictions.probs_N_C.shape[0], columns_C.size), np.float32)
    for out, category_id in enumerate(columns_C.tolist()):
        if category_id in column_of:
            probs_N_C[:, out] = predictions.probs_N_C[:, column_of[category_id]]
    predicted_N, certainty_N = predictions.predicted_N, predictions.certainty_N
    area_um2 = table.area_um2
    slide_name = spreadsheet_text(slide.name)
    names = {category_id: spreadsheet_text(category.name) for category_id, category in categories.items()}

    def row(i: int) -> list:
        cx, cy = table.centroid_level0[i]
        known = i < predicted_N.size and predicted_N[i] != 0
        return [slide_name, int(table.ids[i]), f"{cx:.1f}", f"{cy:.1f}", *table.bbox_level0[i].tolist(),
                "" if area_um2 is None else f"{area_um2[i]:.1f}", f"{table.area_px[i] * downsample ** 2:.0f}",
                names.get(int(predicted_N[i]), "") if known else "", f"{certainty_N[i]:.4f}" if known else "",
                *((f"{p:.4f}" for p in probs_N_C[i]) if known else ("",) * columns_C.size)]

    for start in range(0, table.ids.size, rows_per_chunk):
        yield _csv_text(row(i) for i in range(start, min(start + rows_per_chunk, table.ids.size)))


def slide_predictions_csv(session: Session, files: ProjectFiles, project: Project, slides: list[Slide],
                          epoch: int | None = None) -> Iterator[str]:
    """The predictions CSV of ``slides`` (header first) as chunks of text, skipping slides the
    epoch did not predict; :class:`NotFoundError` at once when none of them has predictions.

    The database is read here; the chunks only read files, so they can be streamed after the
    session has ended.
    """
    epoch = get_epoch(session, project.id, epoch).number
    categories = {category.id: category for category in project.categories}
    predicted = [slide for slide in slides if slide.superpixels and files.predictions(epoch, slide.id).exists()]
    if not predicted:
        which = "this slide" if len(slides) == 1 else "any slide"
        raise NotFoundError(f"epoch {epoch} has no predictions for {which}: compute its features and train a new epoch")
    return _csv_chunks(files, predicted, epoch, categories, merged_categories(session, project.id))


def _csv_chunks(files: ProjectFiles, slides: list[Slide], epoch: int, categories: dict[int, Category],
                merged: Mapping[int, int]) -> Iterator[str]:
    columns_C = None
    for slide in slides:
        folder, manifest = superpixel_folder(files, slide)
        predictions = read_predictions(files.predictions(epoch, slide.id)).merged(merged)
        if columns_C is None:
            columns_C = predictions.category_ids_C
            yield _csv_text([[spreadsheet_text(cell) for cell in csv_header(columns_C, categories)]])
        yield from predictions_csv(slide, read_table(folder / TABLE_FILE), predictions,
                                   float(manifest["working"]["downsample"]), categories, columns_C)
