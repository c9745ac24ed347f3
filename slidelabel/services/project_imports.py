"""Segments and features made by other tools, imported into a project's slide as jobs.

``import-segments`` replaces the slide's superpixel folder by the imported segments (the files of
:func:`~slidelabel.services.segment_import.import_segments`), removes the slide's feature arrays
(their rows were the old superpixels) and computes the project's extractor on the new segments,
as the ``prepare`` job would: the ``features`` job cannot, since it only trusts superpixels made
with the project's options. A slide with labels is refused, because a label names a superpixel
id and the ids would then name other segments.

``import-features`` writes an imported array under the name ``imported-<name>``
(:data:`~slidelabel.services.projects.IMPORTED_EXTRACTOR`), which a project may choose as its
extractor. Sources are an uploaded file (kept under the slide's ``sources/`` folder, whose
path the manifest records) or a file of the server's slide folders.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from collections.abc import AsyncIterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from anyio import to_thread
from sqlalchemy import select
from sqlalchemy.orm import Session

from slidelabel.errors import ConflictError, NotFoundError, OutputError, ParameterError
from slidelabel.pipelines.features.extract import extract_slide_features
from slidelabel.pipelines.importers.feature_sources import MAX_ARRAY_METADATA_BYTES
from slidelabel.pipelines.importers.segments import ImportOptions
from slidelabel.pipelines.pinned_files import PinnedFile
from slidelabel.services.feature_import import import_features
from slidelabel.services.job_runs import JobContext
from slidelabel.services.jobs import Sender, job_kind, submit
from slidelabel.services.labels import locked_slide, set_labels
from slidelabel.services.names import look_alike_key
from slidelabel.services.projects import IMPORTED_EXTRACTOR, add_category, category_ids_by_look, room_for_categories
from slidelabel.services.segment_import import ALGORITHM, import_segments
from slidelabel.services.slide_folders import allowed_folders, resolve_in_folders
from slidelabel.services.slide_jobs import remove_unfinished_features, work_key
from slidelabel.services.slide_paths import slide_file
from slidelabel.services.slides import slide_limits
from slidelabel.services.uploads import MB, UploadReceiver
from slidelabel.settings import Settings
from slidelabel.store.atomic import replace_folder
from slidelabel.store.database import Database
from slidelabel.store.feature_files import open_features
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Epoch, Job, Label, Project, Slide
from slidelabel.store.segment_sources import SOURCES_FILE, read_segment_sources
from slidelabel.store.superpixel_files import MANIFEST_FILE, read_manifest

IMPORT_SEGMENTS, IMPORT_FEATURES = "import-segments", "import-features"


@dataclass(frozen=True)
class SegmentSource:
    """Where imported segments come from: ``path`` (server-side), its ``format`` ("auto" or a
    segment format's name), ``downsample`` (level-0 px per source px; None: the source's own) and
    the ``bboxes`` CSV of a Histomics Label pixelmap."""

    path: str
    format: str = "auto"
    downsample: float | None = None
    bboxes: str | None = None


def sources_dir(files: ProjectFiles, slide_id: int) -> Path:
    """The folder that keeps a slide's uploaded segment and feature sources."""
    return files.slide_dir(slide_id) / "sources"


async def receive_source(chunks: AsyncIterable[bytes], *, content_type: str, content_length: str | None,
                         settings: Settings, project_id: int, slide_id: int, user_id: int | None = None) -> Path:
    """Stream an uploaded source file (form field ``file``) into the slide's ``sources/`` folder, as
    one of the uploads of ``user_id`` arriving at once, under a name of its own (its extension
    kept: formats are told by it); its path is returned.
    :class:`TooLargeError` past :attr:`Settings.upload_limit_mb`, with nothing left behind;
    :class:`NotFoundError` when the slide is deleted meanwhile (its folder goes with it)."""
    folder = sources_dir(ProjectFiles(settings.data_dir, project_id), slide_id)
    declared = int(content_length) if content_length and content_length.isdigit() else None
    receiver = UploadReceiver(content_type, folder, limit_bytes=settings.upload_limit_mb * MB, declared_bytes=declared,
                              holder=user_id)
    try:
        async for chunk in chunks:
            receiver.feed(chunk)
        name, received = receiver.finish()
        kept = folder / f"{secrets.token_hex(8)}-{name}"
        try:
            await to_thread.run_sync(os.replace, received, kept)
        except FileNotFoundError:  # the folder went since finish() saw the file
            raise NotFoundError(f"slide {slide_id} was deleted while its file was uploading; nothing was kept") from None
        await to_thread.run_sync(_drop_old_sources, folder)
        return kept
    finally:
        receiver.discard()


def _drop_old_sources(folder: Path) -> list[Path]:
    """Delete all but the :data:`KEPT_SOURCES` newest uploads of a slide's ``sources/`` folder
    (an import reads its file when it runs: an upload older than that many others is neither
    imported nor retried any more); the deleted paths."""
    try:
        uploads = [path for path in folder.iterdir() if _KEPT_NAME.match(path.name)]
    except FileNotFoundError:  # the slide was deleted meanwhile
        return []
    times = {}
    for path in uploads:
        with suppress(FileNotFoundError):  # dropped by a concurrent upload meanwhile
            times[path] = path.stat().st_mtime_ns
    kept = sorted(times, key=times.get, reverse=True)
    for path in kept[KEPT_SOURCES:]:
        path.unlink(missing_ok=True)
    return kept[KEPT_SOURCES:]


#: Uploads kept per slide for imports: each up to ``upload_limit_mb``, so a slide's folder cannot
#: grow without end (the sixth attack: repeated uploads were all kept until the slide went).
KEPT_SOURCES = 8
#: How :func:`receive_source` names a kept upload: 16 hex digits, '-', the uploaded name.
_KEPT_NAME = re.compile(r"^[0-9a-f]{16}-[^/\\\x00]{1,200}$")


def uploaded_source(settings: Settings, project_id: int, slide_id: int, name: str) -> Path:
    """A file uploaded earlier for the slide (:func:`receive_source`), by the name it is kept
    under; :class:`ParameterError` when the slide has no such upload."""
    path = sources_dir(ProjectFiles(settings.data_dir, project_id), slide_id) / name
    if not _KEPT_NAME.match(name) or not path.is_file():
        raise ParameterError(f"slide {slide_id} has no uploaded file {name[:80]!r}; upload it first "
                             "(POST .../slides/{slide_id}/sources) and give the name it answers")
    return path


def server_source(settings: Settings, raw: str) -> Path:
    """A source file of the server's slide folders (:class:`PermissionDeniedError` outside them)."""
    path = resolve_in_folders(raw, allowed_folders(settings))
    if not path.is_file():
        raise ParameterError(f"{raw} is not a file; give a GeoJSON, label-mask TIFF, pixelmap or feature file")
    return path


def refuse_labelled(session: Session, slide: Slide) -> None:
    """:class:`ConflictError` when ``slide`` has labels (they name its current superpixel ids)."""
    labels = session.scalar(select(Label.id).where(Label.slide_id == slide.id).limit(1))
    if labels is not None:
        raise ConflictError(f"slide {slide.name!r} has labels, which name its current superpixels; remove them "
                            "(or the slide) before importing segments")


def submit_segment_import(database: Database, sender: Sender, session: Session, project: Project, slide: Slide,
                          source: SegmentSource, *, user_id: int | None, labels: bool = False) -> Job:
    """Queue the ``import-segments`` job of ``slide``; :class:`ConflictError` when it has labels.
    With ``labels``, the source's classes become ``user_id``'s labels (:func:`label_classes`)."""
    refuse_labelled(session, slide)
    if labels and user_id is None:
        raise ParameterError("importing classes as labels needs a user to own the labels")
    params = {"source": asdict(source), "extractor": project.extractor, "labels_for": user_id if labels else None}
    # Each request is new work: the same file imported again after another must run again.
    key = work_key(IMPORT_SEGMENTS, slide.id, {**params, "request": secrets.token_hex(8)})
    return submit(database, sender, project_id=project.id, slide_id=slide.id, kind=IMPORT_SEGMENTS, key=key,
                  params=params, user_id=user_id)


def check_feature_name(name: str) -> None:
    """:class:`ParameterError` unless ``name`` is ``imported-<name>``."""
    if not IMPORTED_EXTRACTOR.match(name):
        raise ParameterError(f"imported feature name {name[:80]!r} must be 'imported-' and then 1-55 lower-case "
                             "letters, digits, '_' or '-' (e.g. imported-uni)")


def submit_feature_import(database: Database, sender: Sender, project: Project, slide: Slide, source: Path, *,
                          name: str, format: str = "auto", user_id: int | None) -> Job:
    """Queue the ``import-features`` job writing ``source`` as the slide's ``name`` features."""
    check_feature_name(name)
    params = {"source": str(source), "name": name, "format": format}
    key = work_key(IMPORT_FEATURES, slide.id, {**params, "request": secrets.token_hex(8)})
    return submit(database, sender, project_id=project.id, slide_id=slide.id, kind=IMPORT_FEATURES, key=key,
                  params=params, user_id=user_id)


def _uploaded_name(path: str) -> str | None:
    """The name a source kept in a ``sources/`` folder was uploaded under (None: not uploaded)."""
    kept = Path(path)
    return kept.name.split("-", 1)[1] if kept.parent.name == "sources" and "-" in kept.name else None


@contextmanager
def _named_as_uploaded(path: str) -> Iterator[None]:
    """Errors about an uploaded source name the file as uploaded: the server's paths are the
    admin's to see (a slide-folder path, which the user gave, stays)."""
    try:
        yield
    except (ParameterError, OutputError) as error:  # what a source's readers raise
        name = _uploaded_name(path)
        if name is None or str(path) not in str(error):
            raise
        raise type(error)(str(error).replace(str(path), name)) from None


@dataclass(frozen=True)
class ImportedSegments:
    """A slide's imported segments: the ``source`` file (as uploaded, or its slide-folder path),
    its ``format``, the ``segments`` kept, what was ``dropped`` by reason and the ``classes``
    with their segment counts."""

    source: str
    format: str
    segments: int
    dropped: dict[str, int]
    classes: dict[str, int]


@dataclass(frozen=True)
class ImportedFeatures:
    """An imported feature array of a slide: its ``name`` (``imported-...``), ``dimensions`` and
    the ``segments`` that got features (the others are NaN rows)."""

    name: str
    dimensions: int
    segments: int


def slide_imports(files: ProjectFiles, slide_id: int) -> tuple[ImportedSegments | None, list[ImportedFeatures]]:
    """What a slide holds from other tools, read from its manifests: its imported segments
    (None when its superpixels are computed, or not made yet) and its imported feature arrays
    by name."""
    manifest = read_manifest(files.superpixels(slide_id) / MANIFEST_FILE)
    segments = None
    if manifest is not None and manifest.get("algorithm") == ALGORITHM:
        record = manifest["import"]
        path = record["source"]["path"]
        segments = ImportedSegments(_uploaded_name(path) or path, manifest["options"]["format"],
                                    int(manifest["superpixels"]), record["dropped"], record["classes"])
    features = []
    folder = files.slide_dir(slide_id) / "features"
    for path in sorted(folder.glob("imported-*.zarr")) if folder.is_dir() else []:
        if IMPORTED_EXTRACTOR.match(path.stem):
            metadata = path / "zarr.json"  # parsed whole to open the array: checked first
            if metadata.is_file() and (size := metadata.stat().st_size) > MAX_ARRAY_METADATA_BYTES:
                raise OutputError(f"slide {slide_id}'s feature array {path.stem} has {size:,} bytes of metadata "
                                  f"(zarr.json), more than the {MAX_ARRAY_METADATA_BYTES / MB:,.0f} MB an import "
                                  f"writes: it kept a file's attributes whole; import the features again")
            array = open_features(path)
            written = array.attrs.get("provenance", {}).get("segments_with_features", array.shape[0])
            features.append(ImportedFeatures(path.stem, int(array.shape[1]), int(written)))
    return segments, features


def _slide(context: JobContext) -> tuple[PinnedFile, Path]:
    """The slide file and superpixel folder of the job's slide (hold the file while it is read)."""
    with context.database.session() as session:
        pinned = slide_file(session.get(Slide, context.slide_id))
    return pinned, ProjectFiles(context.settings.data_dir, context.project_id).superpixels(context.slide_id)


def _forget_superpixels(session: Session, files: ProjectFiles, slide_id: int) -> None:
    """Remove the slide's feature arrays and its predictions of every epoch: their rows were the
    superpixels just replaced."""
    shutil.rmtree(files.slide_dir(slide_id) / "features", ignore_errors=True)
    for number in session.scalars(select(Epoch.number).where(Epoch.project_id == files.project_id)):
        files.predictions(number, slide_id).unlink(missing_ok=True)


def label_classes(session: Session, slide: Slide, folder: Path, *, user_id: int) -> dict[str, int]:
    """Label each segment of ``folder`` that has an imported class (its ``classification``) as
    ``user_id``'s label of the category of that name, adding the categories the project lacks.
    ``slide`` must come from :func:`~slidelabel.services.labels.locked_slide`; returns the
    segments labelled by class name."""
    sources = read_segment_sources(folder / SOURCES_FILE)
    if sources.class_names_N is None:
        return {}
    names_N = np.asarray(sources.class_names_N, dtype=object)
    project = session.get(Project, slide.project_id)
    by_look = category_ids_by_look(project.categories)  # 'Tumour' in a file is the category 'tumour'
    names = sorted({name for name in sources.class_names_N if name})
    room_for_categories(session, project, len({look_alike_key(name) for name in names} - set(by_look)))  # all or none
    labelled = {}
    for name in names:
        ids_M = sources.ids_N[names_N == name]
        if (category_id := by_look.get(look_alike_key(name))) is None:
            category_id = by_look[look_alike_key(name)] = add_category(session, project, name).id
        set_labels(session, slide, user_id, ids_M.tolist(), category_id)
        labelled[name] = int(ids_M.size)
    return labelled


def _labels_from_classes(context: JobContext, folder: Path) -> str:
    """The job's summary line of :func:`label_classes` (the segments stay imported when the
    classes cannot be labels: the line then says why)."""
    try:
        with context.database.session(write=True) as session:
            slide = locked_slide(session, context.project_id, context.slide_id)
            labelled = label_classes(session, slide, folder, user_id=int(context.params["labels_for"]))
    except ParameterError as error:
        return f"classes not imported as labels: {error}"
    if not labelled:
        return "no classes to import as labels"
    return "labels: " + ", ".join(f"{count:,} {name}" for name, count in labelled.items())


@job_kind(IMPORT_SEGMENTS)
def import_segments_job(context: JobContext) -> dict:
    """Import the segments into a scratch folder, swap it in for the superpixels, drop the old
    feature arrays and compute the project's (computed) extractor on the new segments."""
    source = SegmentSource(**context.params["source"])
    slide, folder = _slide(context)
    files = ProjectFiles(context.settings.data_dir, context.project_id)
    with context.database.session() as session:
        refuse_labelled(session, session.get(Slide, context.slide_id))
    context.progress(0.0, "importing segments", force=True)
    scratch = folder.with_name(f".{folder.name}.{secrets.token_hex(4)}.import")
    options = ImportOptions(source.downsample, Path(source.bboxes) if source.bboxes else None,
                            limits=slide_limits(context.settings))
    try:
        with _named_as_uploaded(source.path):
            result = import_segments(slide.reader_path, source.path, scratch, format=source.format, options=options,
                                     progress=lambda done, total: context.progress(
                                         0.5 * done / max(total, 1), f"segments: tile {done} of {total}"))
        with context.database.session(write=True) as session:
            refuse_labelled(session, session.get(Slide, context.slide_id))  # labelled while importing
            replace_folder(scratch, folder)
            _forget_superpixels(session, files, context.slide_id)
            session.get(Slide, context.slide_id).superpixels = result.segments
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    message = result.summary().replace(str(scratch), "the slide's superpixels")
    if context.params.get("labels_for") is not None:
        message += "\n" + _labels_from_classes(context, folder)
    extractor = context.params["extractor"]
    if IMPORTED_EXTRACTOR.match(extractor):
        return {"message": f"{message}\nimport the {extractor} features of these segments next"}
    context.progress(0.5, f"computing {extractor} features", force=True)
    out_path = files.features(context.slide_id, extractor)
    remove_unfinished_features(out_path)
    extract_slide_features(slide.reader_path, folder, out_path, extractor=extractor, progress=lambda done, total: (
        context.progress(0.5 + 0.5 * done / max(total, 1), f"{extractor} features: tile {done} of {total}")))
    return {"message": f"{message}\n{extractor} features"}


@job_kind(IMPORT_FEATURES)
def import_features_job(context: JobContext) -> dict:
    """Import the features of the job's source for the slide's current segments."""
    slide, folder = _slide(context)
    files = ProjectFiles(context.settings.data_dir, context.project_id)
    name = context.params["name"]
    context.progress(0.0, f"importing {name} features", force=True)
    with _named_as_uploaded(context.params["source"]):
        result = import_features(slide.reader_path, context.params["source"], folder,
                                 files.features(context.slide_id, name).parent, name=name,
                                 format=context.params["format"], limits=slide_limits(context.settings),
                                 progress=lambda done, total: context.progress(done / max(total, 1),
                                                                               f"{name}: {done} of {total}"))
    return {"message": result.summary().replace(str(result.path), f"{name} features")}
