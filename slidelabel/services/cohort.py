"""A trained model applied to a cohort of new slides: superpixels, features and predictions per slide.

Each slide gets a folder (``DIR/<slide stem>/``) holding its superpixels (as ``slidelabel
superpixels`` writes them), its features (:func:`features_file`) and, for :func:`predict_slide`,

- :data:`TABLE_FILE`: per-superpixel predictions (:mod:`slidelabel.store.prediction_table`);
- :data:`MASK_FILE`: the predicted category of every pixel as a pyramidal uint8 TIFF at the working
  level (the category's index in the model + 1, 0 = no prediction), as the project exports write it;
- on request :data:`GEOJSON_FILE` (QuPath) and :data:`ANNOTATION_FILE` (Digital Slide Archive);
- :data:`MANIFEST_FILE`, written last: the model file's SHA-256 and the options. A folder whose
  manifest matches the model, the options and the slide is finished and is skipped, so a cohort
  run is resumable; superpixels and features are resumed by their own steps.

Features are normalised as the model says (:attr:`TrainedModel.normalisation`) and predicted block
by block by the learning loop's own code, so a slide is predicted here exactly as in a project.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from slidelabel import __version__
from slidelabel.errors import ParameterError
from slidelabel.pipelines.features import get_extractor
from slidelabel.pipelines.features.extract import extract_slide_features
from slidelabel.pipelines.memory import release_freed_memory
from slidelabel.pipelines.models import TrainedModel, load_model
from slidelabel.pipelines.normalisation import get_normalisation
from slidelabel.pipelines.superpixels import ProgressFunction
from slidelabel.services.batch import BatchReport, Failure, run_each
from slidelabel.services.dsa_annotation import annotation
from slidelabel.services.exports import geojson, write_slide_mask
from slidelabel.services.learning_loop import FileFeatures, predict_pool
from slidelabel.services.projects import PALETTE
from slidelabel.services.slide_classes import SlideClasses, Source
from slidelabel.services.superpixels import SlideResult, SuperpixelOptions, compute_slide_superpixels, finished_manifest
from slidelabel.store import models as store
from slidelabel.store.atomic import atomic_path, write_json_atomic
from slidelabel.store.prediction_table import write_prediction_table
from slidelabel.store.superpixel_files import MANIFEST_FILE as SUPERPIXEL_MANIFEST
from slidelabel.store.superpixel_files import file_sha256, read_manifest

MANIFEST_FORMAT = "slidelabel-cohort-predictions/1"
MANIFEST_FILE = "predictions.json"
TABLE_FILE = "predictions.parquet"
MASK_FILE = "predictions.mask.tiff"
GEOJSON_FILE = "predictions.geojson"
ANNOTATION_FILE = "predictions.annotation.json"
SUMMARY_FILE = "summary.json"

#: Receives a slide's result or failure as soon as it is known.
ResultFunction = Callable[[SlideResult | Failure], None]


@dataclass(frozen=True)
class CohortModel:
    """A model file read once for a whole cohort: where it is, its SHA-256 and the model."""

    path: Path
    sha256: str
    model: TrainedModel

    @property
    def category_names(self) -> list[str]:
        return [category.name for category in self.model.categories]


@dataclass(frozen=True)
class PredictOptions:
    """How a cohort is predicted: its superpixels and which optional exports to write."""

    superpixels: SuperpixelOptions
    geojson: bool = False
    annotation: bool = False

    def as_dict(self) -> dict:
        return {"superpixels": self.superpixels.as_dict(), "geojson": self.geojson, "annotation": self.annotation}


def open_cohort_model(path: Path) -> CohortModel:
    """Read a model file (``slidelabel export-model``'s input, an epoch's model download).

    Raises
    ------
    ModelFileError : not a readable model file.
    ParameterError : its feature extractor or normalisation is not available here (imported features).
    """
    model = load_model(path)
    try:
        get_extractor(model.feature_extractor)
    except ParameterError as error:
        raise ParameterError(f"{path} was trained on features slidelabel cannot compute here: {error}") from None
    get_normalisation(model.normalisation)
    return CohortModel(Path(path), file_sha256(Path(path)), model)


def features_file(folder: Path, extractor: str) -> Path:
    """Where a slide folder keeps its features by ``extractor`` (a Zarr array)."""
    return folder / f"features-{extractor}.zarr"


def slide_features(
    slide_path: Path,
    folder: Path,
    options: SuperpixelOptions,
    *,
    extractor: str,
    workers: int = 1,
    progress: ProgressFunction | None = None,
) -> SlideResult:
    """Superpixels and features by ``extractor`` of one slide into ``folder``; ``"skipped"`` when
    both were already there for this slide and these options."""
    started = time.perf_counter()
    path = features_file(folder, extractor)
    before = path.stat().st_ino if path.exists() else None
    superpixels = compute_slide_superpixels(slide_path, folder, options, workers=workers, progress=progress)
    release_freed_memory()  # the superpixel threads' arenas, which the feature tiles would not reuse
    report = (lambda done, total: progress("features", done, total)) if progress else None
    extract_slide_features(slide_path, folder, path, extractor=extractor, tile_size=options.tile_size, progress=report)
    release_freed_memory()
    # A recomputed array replaces the folder, so the same inode means it was kept as it was.
    kept = superpixels.status == "skipped" and before == path.stat().st_ino
    return SlideResult(slide_path, folder, "skipped" if kept else "done", superpixels.superpixels,
                       0.0 if kept else time.perf_counter() - started)


def predict_slide(
    slide_path: Path,
    folder: Path,
    model: CohortModel,
    options: PredictOptions,
    *,
    workers: int = 1,
    progress: ProgressFunction | None = None,
) -> SlideResult:
    """Predictions of ``model`` for every superpixel of one slide into ``folder`` (see the module
    docstring); ``"skipped"`` when the folder already holds them for this model and these options."""
    started = time.perf_counter()
    record = {"sha256": model.sha256, "options": options.as_dict()}
    finished = _finished(folder, record, options)
    # The superpixels' manifest tells whether the slide file is still the one predicted.
    if finished is not None and finished_manifest(folder, slide_path, options.superpixels) is not None:
        return SlideResult(slide_path, folder, "skipped", int(finished["superpixels"]), 0.0)
    (folder / MANIFEST_FILE).unlink(missing_ok=True)  # the predictions are unfinished from here on
    extractor = model.model.feature_extractor
    count = slide_features(slide_path, folder, options.superpixels, extractor=extractor, workers=workers,
                           progress=progress).superpixels
    if progress:
        progress("predicting", 0, 1)
    probs_N_K, has_N = _predictions(features_file(folder, extractor), model.model)
    write_prediction_table(folder / TABLE_FILE, probs_N_K, has_N, model.category_names)
    classes, project = _classes(slide_path, folder, model, probs_N_K, has_N)
    write_slide_mask(classes, project, folder / MASK_FILE)
    if options.geojson:
        _write_document(folder / GEOJSON_FILE, geojson(classes, project))
    if options.annotation:
        document = annotation(classes, project)
        document["description"] = f"predictions of {model.path.name} for {slide_path.name}, by slidelabel"
        _write_document(folder / ANNOTATION_FILE, document)
    if progress:
        progress("predicting", 1, 1)
    seconds = time.perf_counter() - started
    write_json_atomic(folder / MANIFEST_FILE, {
        "format": MANIFEST_FORMAT, "slidelabel_version": __version__, **record,
        "model": {"path": str(model.path.resolve()), "feature_extractor": extractor,
                  "normalisation": model.model.normalisation, "categories": model.category_names},
        "slide": str(slide_path.resolve()), "superpixels": count, "predicted": int(has_N.sum()),
        "files": _files(options), "seconds": round(seconds, 3),
    })
    return SlideResult(slide_path, folder, "done", count, seconds)


def _files(options: PredictOptions) -> list[str]:
    return [TABLE_FILE, MASK_FILE] + [GEOJSON_FILE] * options.geojson + [ANNOTATION_FILE] * options.annotation


def _finished(folder: Path, record: dict, options: PredictOptions) -> dict | None:
    """The predictions manifest of ``folder`` when it records this model and these options and its
    files are all there, else None."""
    manifest = read_manifest(folder / MANIFEST_FILE)
    if manifest is None or manifest.get("format") != MANIFEST_FORMAT:
        return None
    if {key: manifest.get(key) for key in record} != record:
        return None
    return manifest if all((folder / name).exists() for name in _files(options)) else None


def _predictions(path: Path, model: TrainedModel) -> tuple[np.ndarray, np.ndarray]:
    """``(probs_N_K, has_N)``: calibrated probabilities of the slide's superpixels and which have features."""
    result: dict[str, np.ndarray] = {}

    def keep(_slide_id: int, probs_N_K: np.ndarray, has_N: np.ndarray) -> None:
        result["probs"], result["has"] = probs_N_K, has_N

    predict_pool(FileFeatures({0: path}, model.normalisation), {}, model, keep, lambda _share, _message: None)
    return result["probs"], result["has"]


def _classes(slide_path: Path, folder: Path, model: CohortModel, probs_N_K: np.ndarray, has_N: np.ndarray
             ) -> tuple[SlideClasses, store.Project]:
    """The predicted category of every predicted superpixel, and a project standing for the model
    (category ids = index + 1, colours from the project palette), for the project exporters."""
    categories = [store.Category(id=k + 1, name=c.name, color=PALETTE[k % len(PALETTE)], excluded=c.excluded,
                                 position=k) for k, c in enumerate(model.model.categories)]
    project = store.Project(name=model.path.name, categories=categories)
    superpixels_M = np.flatnonzero(has_N) + 1
    working = read_manifest(folder / SUPERPIXEL_MANIFEST)["working"]
    classes = SlideClasses(
        store.Slide(name=slide_path.name, superpixels=int(has_N.size)), Source.predictions, None,
        superpixels_M.astype(np.int64), probs_N_K[has_N].argmax(axis=1).astype(np.int64) + 1,
        probs_N_K[has_N].max(axis=1, initial=0), folder, float(working["downsample"]), working.get("mpp"))
    return classes, project


def _write_document(path: Path, document: dict) -> None:
    text = json.dumps(document, separators=(",", ":"))
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def predict_cohort(
    slides: list[Path],
    out: Path,
    model: CohortModel,
    options: PredictOptions,
    *,
    workers: int = 1,
    progress_for: Callable[[Path], ProgressFunction] | None = None,
    on_result: ResultFunction | None = None,
) -> BatchReport:
    """:func:`predict_slide` for every slide into ``out/NAME/``; a failing slide is reported and skipped."""

    def work(slide: Path, folder: Path) -> SlideResult:
        return predict_slide(slide, folder, model, options, workers=workers,
                             progress=progress_for(slide) if progress_for else None)

    return run_each(slides, out, work, on_result=on_result)


def features_cohort(
    slides: list[Path],
    out: Path,
    options: SuperpixelOptions,
    *,
    extractor: str,
    workers: int = 1,
    progress_for: Callable[[Path], ProgressFunction] | None = None,
    on_result: ResultFunction | None = None,
) -> BatchReport:
    """:func:`slide_features` for every slide into ``out/NAME/``; a failing slide is reported and skipped."""
    get_extractor(extractor)  # an unknown name fails once, not once per slide

    def work(slide: Path, folder: Path) -> SlideResult:
        return slide_features(slide, folder, options, extractor=extractor, workers=workers,
                              progress=progress_for(slide) if progress_for else None)

    return run_each(slides, out, work, on_result=on_result)


def write_summary(out: Path, report: BatchReport, seconds: float) -> dict:
    """``out/summary.json`` (written atomically) and its content: slides done, skipped and failed,
    the failures' messages and the run's wall time in seconds."""
    summary = {
        "slides": len(report.results) + len(report.failures), "done": report.count("done"),
        "skipped": report.count("skipped"), "failed": len(report.failures), "seconds": round(seconds, 3),
        "failures": [{"slide": str(failure.slide), "message": failure.message} for failure in report.failures],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / SUMMARY_FILE, summary)
    return summary
