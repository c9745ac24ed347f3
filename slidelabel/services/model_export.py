"""A model file as ONNX for other tools: the graph and a JSON sidecar that says how to use it.

``<name>.onnx`` maps raw float32 features ``(N, D)`` to probabilities over the categories
``(N, K)`` exactly as slidelabel predicts them (:mod:`slidelabel.pipelines.models.onnx_export`);
``<name>.json`` names the feature extractor and its features, the per-slide normalisation to apply
first, the categories in output order with their colours when known, the input and output, and
the slidelabel version. :func:`export_model_file` serves the command line and
:func:`epoch_onnx_archive` a download of an epoch's model (both files in one zip).
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from slidelabel import __version__
from slidelabel.errors import OutputError, ParameterError
from slidelabel.pipelines.models import TrainedModel, load_model
from slidelabel.pipelines.models.onnx_export import INPUT, OPSETS, OUTPUT, exportable_model, model_to_onnx
from slidelabel.pipelines.normalisation import NORMALISATIONS
from slidelabel.services.epochs import model_file
from slidelabel.store.atomic import atomic_path
from slidelabel.store.models import Category

__all__ = ["SIDECAR_FORMAT", "ExportedModel", "epoch_onnx_archive", "export_model_file", "onnx_export"]

SIDECAR_FORMAT = "slidelabel-onnx"
_COLOUR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True)
class ExportedModel:
    """The files :func:`export_model_file` wrote."""

    onnx_path: Path
    sidecar_path: Path


def onnx_export(model: TrainedModel, *, name: str, colours: dict[str, str] | None = None) -> tuple[bytes, dict]:
    """Return the ONNX graph of ``model`` (serialised) and its sidecar, for files ``name.onnx`` and
    ``name.json``; ``colours`` maps category names to ``#rrggbb``.

    Raises
    ------
    ParameterError
        If the model cannot be exported or a colour is not ``#rrggbb``.
    """
    colours = colours or {}
    bad = {category: colour for category, colour in colours.items() if not _COLOUR.match(str(colour))}
    if bad:
        raise ParameterError(f"colours must be #rrggbb, got {bad}")
    graph = model_to_onnx(model).SerializeToString()
    chosen, classifier = exportable_model(model)
    n_feats = len(model.feature_mean_D)
    normalisation = NORMALISATIONS.get(model.normalisation, None)
    trained = set(model.trained_classes)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "format_version": 1,
        "slidelabel_version": __version__,
        "onnx_file": f"{name}.onnx",
        "model": model.model_name,
        "classifier": chosen,
        "classifier_settings": classifier.to_state().config,
        "feature_extractor": model.feature_extractor,
        "feature_names": _feature_names(model.feature_extractor, n_feats),
        "normalisation": model.normalisation,
        "normalisation_note": (
            "z-score every feature over all superpixels of the slide (its mean and standard deviation) "
            "before the model" if normalisation and normalisation.per_slide else "features as extracted"),
        "standardisation": "in the graph: (features - mean) / scale with the training labels' statistics",
        "temperature": float(model.temperature),
        "input": {"name": INPUT, "dtype": "float32", "shape": ["N", n_feats]},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": ["N", len(model.categories)],
                   "meaning": "probability of each category, in the order of 'categories'; 0 for those "
                              "the model was not trained on"},
        "categories": [{"index": k, "name": c.name, "excluded": c.excluded, "trained": k in trained,
                        "color": colours.get(c.name)} for k, c in enumerate(model.categories)],
        "metrics": {key: model.metrics.get(key) for key in ("n_training_labels", "cv_balanced_accuracy")},
        "opsets": OPSETS,
    }
    return graph, sidecar


def export_model_file(model_path: Path, out_dir: Path, *, colours: dict[str, str] | None = None) -> ExportedModel:
    """Write ``<stem>.onnx`` and ``<stem>.json`` of the model file ``model_path`` into ``out_dir``
    (created if missing), each atomically.

    Raises
    ------
    ModelFileError
        If ``model_path`` is not a readable model file.
    ParameterError, OutputError
        As :func:`onnx_export`; if ``out_dir`` cannot be written.
    """
    name = Path(model_path).stem
    graph, sidecar = onnx_export(load_model(model_path), name=name, colours=colours)
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot create {out_dir}: {error.strerror or error}") from error
    exported = ExportedModel(out_dir / f"{name}.onnx", out_dir / f"{name}.json")
    for path, content in ((exported.onnx_path, graph), (exported.sidecar_path, _json(sidecar))):
        with atomic_path(path) as tmp:
            tmp.write_bytes(content)
    return exported


def epoch_onnx_archive(session: Session, data_dir: Path, project_id: int, number: int) -> bytes:
    """A zip of ``project-P-epoch-E-model.onnx`` and its ``.json`` for an epoch's model, with the
    project's category colours (for a download next to the native model file).

    Raises
    ------
    NotFoundError
        If the project has no such epoch or its model file is missing.
    ParameterError
        If the model cannot be exported.
    """
    model = load_model(model_file(session, data_dir, project_id, number))
    rows = session.execute(select(Category.name, Category.color).where(Category.project_id == project_id))
    colours = {name: colour for name, colour in rows}
    name = f"project-{project_id}-epoch-{number}-model"
    graph, sidecar = onnx_export(model, name=name, colours=colours)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(f"{name}.onnx", graph)
        archive.writestr(f"{name}.json", _json(sidecar))
    return buffer.getvalue()


def _feature_names(extractor: str, n_feats: int) -> list[str] | None:
    """The registered extractor's feature names, if it is registered here and gives ``n_feats``."""
    from slidelabel.pipelines.features import FEATURES  # loads the extractors: only when exporting

    names = FEATURES[extractor].channel_names() if extractor in FEATURES else None
    return list(names) if names is not None and len(names) == n_feats else None


def _json(sidecar: dict) -> bytes:
    return (json.dumps(sidecar, indent=2, allow_nan=False) + "\n").encode()
