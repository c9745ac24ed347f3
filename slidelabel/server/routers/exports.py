"""Exports of labels and predictions (GeoJSON for QuPath, annotation JSON for the Digital Slide
Archive, mask TIFFs, predictions CSV), per slide and per project, and imports of annotations."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

from anyio import to_thread
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy.orm import Session
from starlette.types import Receive, Scope, Send

from slidelabel.errors import ParameterError
from slidelabel.server.deps import (
    Annotator,
    ExportTurn,
    ReadSession,
    SettingsDep,
    Viewer,
    WriteSession,
    release_connection,
)
from slidelabel.server.request_checks import BadInput, parse_json
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.exports import ImportReport
from slidelabel.services import exports as service
from slidelabel.services import prediction_csv
from slidelabel.services.dsa_annotation import Elements, write_annotation
from slidelabel.services.exports import ArchiveFormat
from slidelabel.services.imports import apply_label_import, plan_label_import
from slidelabel.services.labels import locked_slide
from slidelabel.services.slide_classes import SlideClasses, Source, slide_classes
from slidelabel.services.slides import get_slide, slides_of
from slidelabel.store.export_folders import new_export_folder
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Project, Slide

router = APIRouter(route_class=CommitInRouteThread, prefix="/projects/{project_id}", tags=["exports"])

EpochQuery = Annotated[int | None, Query(ge=1, description="epoch of the predictions; the latest when left out")]
DissolveQuery = Annotated[bool, Query(description="merge neighbouring superpixels of a category into one shape")]
ElementsQuery = Annotated[Elements, Query(description="polygon elements, the superpixel pixelmap, or both")]


async def uploaded_json(request: Request) -> object:
    """The request body parsed as JSON and checked as RequestChecks checks JSON bodies, whatever
    its Content-Type; :class:`ParameterError` (422) when it is not JSON or not plain data."""
    body = await request.body()
    try:
        return await to_thread.run_sync(parse_json, body)  # off the event loop: up to 10 MB
    except BadInput as error:
        raise ParameterError(f"the upload is not JSON slidelabel accepts ({error}); send a GeoJSON FeatureCollection "
                             "or a Digital Slide Archive annotation JSON as the request body") from None


UploadedJson = Annotated[object, Depends(uploaded_json)]


class _FolderResponse(FileResponse):
    """A file sent from a folder of its own that goes once the response ends, however it ends: a
    background task would not run for a client that left, nor for a request cut off by a stopping
    server (each left its folder behind: 3 folders, 20 MB, at each of two stops in the sixteenth
    attack)."""

    def __init__(self, path: Path, *, folder: Path, media_type: str, filename: str) -> None:
        super().__init__(path, media_type=media_type, filename=filename)
        self.folder = folder

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _temporary_file(data_dir: Path, filename: str, media_type: str, write: Callable[[Path], None]) -> FileResponse:
    """A download written by ``write`` into an export folder (store/export_folders.py) that is
    removed once sent: the export is built in the route (in its export turn) and sent from the
    file, a chunk at a time, so neither holds the whole document in memory."""
    folder = new_export_folder(data_dir)
    try:
        write(folder / filename)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return _FolderResponse(folder / filename, folder=folder, media_type=media_type, filename=filename)


@router.get("/slides/{slide_id}/export/geojson", response_class=FileResponse)
def export_geojson(slide_id: int, access: Viewer, _turn: ExportTurn, session: ReadSession, settings: SettingsDep,
                   source: Source = Source.labels, epoch: EpochQuery = None,
                   dissolve: DissolveQuery = True) -> FileResponse:
    """A GeoJSON FeatureCollection for QuPath (File > Import objects), level-0 pixels."""
    classes = _classes(session, settings.data_dir, access.project, slide_id, source, epoch)
    return _temporary_file(settings.data_dir, f"{service.file_stem(classes.slide)}-{source}.geojson", "application/geo+json",
                           lambda path: service.write_geojson(path, classes, access.project, dissolve=dissolve))


@router.get("/slides/{slide_id}/export/annotation", response_class=FileResponse)
def export_annotation(slide_id: int, access: Viewer, _turn: ExportTurn, session: ReadSession, settings: SettingsDep,
                      source: Source = Source.labels, epoch: EpochQuery = None, dissolve: DissolveQuery = True,
                      elements: ElementsQuery = Elements.polygons,
                      girder_id: Annotated[str | None, Query(description="Girder item of the superpixel image")] = None,
                      ) -> FileResponse:
    """A Digital Slide Archive (large_image) annotation JSON, level-0 pixels."""
    classes = _classes(session, settings.data_dir, access.project, slide_id, source, epoch)
    return _temporary_file(settings.data_dir, f"{service.file_stem(classes.slide)}-{source}.annotation.json", "application/json",
                           lambda path: write_annotation(path, classes, access.project, dissolve=dissolve,
                                                                 elements=elements, girder_id=girder_id))


@router.get("/slides/{slide_id}/export/mask.tiff", response_class=FileResponse)
def export_mask(slide_id: int, access: Viewer, _turn: ExportTurn, session: ReadSession, settings: SettingsDep,
                source: Source = Source.predictions, epoch: EpochQuery = None) -> FileResponse:
    """A pyramidal uint8 TIFF at the working level: category position + 1, 0 = none."""
    classes = _classes(session, settings.data_dir, access.project, slide_id, source, epoch)
    return _temporary_file(settings.data_dir, f"{service.file_stem(classes.slide)}-{source}.mask.tiff", "image/tiff",
                           lambda path: service.write_slide_mask(classes, access.project, path))


@router.get("/slides/{slide_id}/export/predictions.csv")
def export_slide_csv(slide_id: int, access: Viewer, _turn: ExportTurn, session: ReadSession, settings: SettingsDep,
                     epoch: EpochQuery = None) -> FileResponse:
    """One row per superpixel: centroid, bbox and area (level-0), predicted category, certainty
    and the probability of each category."""
    slide = get_slide(session, access.project.id, slide_id)
    return _csv(session, settings.data_dir, access.project, [slide], epoch, service.file_stem(slide))


@router.get("/export/predictions.csv")
def export_project_csv(access: Viewer, _turn: ExportTurn, session: ReadSession, settings: SettingsDep,
                       epoch: EpochQuery = None) -> FileResponse:
    """The predictions CSV of every slide the epoch predicted."""
    return _csv(session, settings.data_dir, access.project, slides_of(session, access.project.id), epoch,
                f"project-{access.project.id}")


@router.get("/export/{archive_format}.zip", response_class=FileResponse)
def export_archive(archive_format: ArchiveFormat, access: Viewer, _turn: ExportTurn, session: ReadSession, settings: SettingsDep,
                   source: Source = Source.labels, epoch: EpochQuery = None,
                   dissolve: DissolveQuery = True) -> FileResponse:
    """A zip of one GeoJSON, annotation JSON or mask per slide, with ``slidelabel.json`` naming
    the slides left out."""
    files = ProjectFiles(settings.data_dir, access.project.id)
    return _temporary_file(settings.data_dir, f"project-{access.project.id}-{source}-{archive_format}.zip", "application/zip",
                           lambda path: service.write_archive(session, files, access.project, path, archive_format,
                                                              source, epoch=epoch, dissolve=dissolve))


@router.post("/slides/{slide_id}/import", openapi_extra={"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"type": "object", "description": "GeoJSON or DSA annotation JSON"}}}}})
def import_annotations(slide_id: int, access: Annotator, _turn: ExportTurn, read: ReadSession, session: WriteSession,
                       settings: SettingsDep, document: UploadedJson, create_categories: bool = False) -> ImportReport:
    """Label the superpixels whose centroid lies in the uploaded polygons as the caller's labels.

    The body is a GeoJSON FeatureCollection (QuPath: classification name = category name) or a
    Digital Slide Archive annotation (polygons by ``group`` or ``label``, pixelmaps by category
    label). Unknown category names are refused with a list, unless ``create_categories`` (owners).
    The polygons are placed before the write transaction begins (in an export turn): only the
    label rows wait for, and hold, SQLite's write turn.
    """
    files = ProjectFiles(settings.data_dir, access.project.id)
    plan = plan_label_import(read, files, get_slide(read, access.project.id, slide_id), document)
    release_connection(read)
    slide = locked_slide(session, access.project.id, slide_id)
    result = apply_label_import(session, session.get(Project, access.project.id), slide, access.user, access.role,
                                plan, create_categories=create_categories)
    return ImportReport.model_validate(result)


def _classes(session: Session, data_dir: Path, project: Project, slide_id: int, source: Source,
             epoch: int | None) -> SlideClasses:
    """What the slide's superpixels are, read in a read transaction that ends here, with the
    project's categories: the document is built after it (seconds on a large slide), and a read
    transaction held meanwhile keeps SQLite's write-ahead log from starting over (1.4 GB after 45 s
    of a writer beside a viewer exporting in a loop)."""
    slide = get_slide(session, project.id, slide_id)
    classes = slide_classes(session, ProjectFiles(data_dir, project.id), slide, source, epoch)
    _ = project.categories  # loaded now, not lazily in a read transaction of its own while building
    release_connection(session)
    return classes


def _csv(session: Session, data_dir: Path, project: Project, slides: list[Slide], epoch: int | None,
         stem: str) -> FileResponse:
    """The predictions CSV, written in the route's export turn and sent from its file: streamed, it
    was formatted after the turn had ended, and 60 at once took 49 s of CPU (another user's
    requests waited 18 s, the twentieth attack)."""
    chunks = prediction_csv.slide_predictions_csv(session, ProjectFiles(data_dir, project.id), project, slides, epoch)

    def write(path: Path) -> None:
        with open(path, "w", encoding="utf-8", newline="") as out:
            out.writelines(chunks)

    return _temporary_file(data_dir, f"{stem}-predictions.csv", "text/csv", write)
