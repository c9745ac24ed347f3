"""Segments and features of a slide made by other tools: an uploaded file or a file of the server's
slide folders, imported by a job (``import-segments``, ``import-features``)."""

from __future__ import annotations

import json
import pathlib
from dataclasses import asdict
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field, ValidationError

from slidelabel.errors import ParameterError, TooLargeError
from slidelabel.server.deps import DatabaseDep, Owner, ReadSession, SettingsDep, Viewer
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.jobs import JobPublic
from slidelabel.services import project_imports as service
from slidelabel.services.access import ProjectAccess
from slidelabel.services.accounts import require_slide_folders
from slidelabel.services.shown_paths import shown_params
from slidelabel.services.slides import get_slide, slides_of
from slidelabel.settings import Settings
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job

router = APIRouter(route_class=CommitInRouteThread, prefix="/projects/{project_id}/slides/{slide_id}", tags=["slides"])
imports_router = APIRouter(route_class=CommitInRouteThread, prefix="/projects/{project_id}", tags=["slides"])

_FORMS = {"multipart/form-data": {"schema": {"type": "object", "properties": {"file": {"type": "string",
                                                                                      "format": "binary"}}}}}


class ServerSource(BaseModel):
    """A source file of the server's slide folders (with a pixelmap, its bounding-box CSV)."""

    path: str = Field(min_length=1, max_length=4096)
    bboxes: str | None = Field(default=None, min_length=1, max_length=4096)


FormatQuery = Annotated[str, Query(pattern=r"^[a-z0-9_-]{1,32}$", description="the source's format; auto: by its file")]


async def _upload(request: Request, settings: Settings, access: ProjectAccess, slide_id: int) -> pathlib.Path:
    """Stream the request's uploaded file into the slide's ``sources/`` folder; its path."""
    return await service.receive_source(
        request.stream(), content_type=request.headers["content-type"],
        content_length=request.headers.get("content-length"), settings=settings, project_id=access.project.id,
        slide_id=slide_id, user_id=access.user.id)


#: Most bytes of a JSON source ({"path", "bboxes"}): these routes take uploads of any size, but
#: only as multipart, streamed to disk.
MAX_SOURCE_JSON = 64 << 10


async def _small_body(request: Request) -> bytes:
    """The request's body, refused (413) once past :data:`MAX_SOURCE_JSON` bytes, before it is
    all read (a 300 MB text body took 1.2 GB of the API before)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SOURCE_JSON:
            raise TooLargeError(f"a JSON source is at most {MAX_SOURCE_JSON // 1024} KB: {{\"path\": ...}}; send "
                                "a file as multipart/form-data (field 'file')")
    return bytes(body)


async def _source(request: Request, settings: Settings, access: ProjectAccess, slide_id: int,
                  bboxes: str | None = None) -> tuple[str, str | None]:
    """The source's server-side path and bounding-box CSV: an upload (multipart/form-data, field
    ``file``; ``bboxes``: a CSV uploaded before to ``.../sources``) or a JSON
    :class:`ServerSource` (for accounts granted the slide folders)."""
    if request.headers.get("content-type", "").startswith("multipart/"):
        # Checked first: a wrong name costs no upload.
        csv = None if bboxes is None else service.uploaded_source(settings, access.project.id, slide_id, bboxes)
        path = await _upload(request, settings, access, slide_id)
        return str(path), None if csv is None else str(csv)
    if bboxes is not None:
        raise ParameterError("?bboxes= names an uploaded CSV for an uploaded pixelmap; for a file of the slide "
                             "folders give {\"path\": ..., \"bboxes\": ...}")
    try:
        body = ServerSource.model_validate(json.loads(await _small_body(request)))
    except (ValueError, ValidationError, RecursionError) as error:
        raise ParameterError("send the source as multipart/form-data (field 'file') or JSON {\"path\": ...} of a file "
                             f"in the slide folders ({str(error).splitlines()[0][:80]})") from None
    require_slide_folders(access.user)
    return (str(service.server_source(settings, body.path)),
            None if body.bboxes is None else str(service.server_source(settings, body.bboxes)))


# The app's body limit is for JSON; an upload is bounded by Settings.upload_limit_mb as it streams.
@router.post("/segments", status_code=202, max_body_size=2**62, openapi_extra={"requestBody": {"content": {
    **_FORMS, "application/json": {"schema": ServerSource.model_json_schema()}}}})
async def import_segments(slide_id: int, request: Request, access: Owner, session: ReadSession, database: DatabaseDep,
                          settings: SettingsDep, format: FormatQuery = "auto",
                          downsample: Annotated[float | None, Query(ge=1, le=1024)] = None,
                          labels: Annotated[bool, Query(description="the source's classes become your labels")] = False,
                          bboxes: Annotated[str | None, Query(max_length=255, description=(
                              "a pixelmap's bounding-box CSV uploaded before (POST .../sources)"))] = None,
                          ) -> JobPublic:
    """Replace the slide's superpixels by the segments of a GeoJSON, label-mask TIFF or Histomics
    Label pixelmap, then compute the project's features on them (one job); 409 while the slide
    has labels. With ``labels``, each segment with a class (a GeoJSON ``classification``) is
    labelled as the category of that name, added when the project lacks it."""
    slide = get_slide(session, access.project.id, slide_id)
    service.refuse_labelled(session, slide)  # before the upload; the job checks again
    session.close()  # ends the read transaction of the access check: an upload may last minutes
    path, csv = await _source(request, settings, access, slide_id, bboxes)
    source = service.SegmentSource(path, format, downsample, csv)
    def submit() -> Job:  # in a request thread: its write may wait for SQLite's write turn
        with database.session() as check:
            return service.submit_segment_import(database, request.app.state.celery, check, access.project, slide,
                                                 source, user_id=access.user.id, labels=labels)

    return JobPublic.shown(await run_in_threadpool(submit), admin=access.user.is_admin)


class SourceUploaded(BaseModel):
    """An uploaded file kept for the slide's imports, by the name it is kept under."""

    name: str


@router.post("/sources", status_code=201, max_body_size=2**62,
             openapi_extra={"requestBody": {"required": True, "content": _FORMS}})
async def upload_source(slide_id: int, request: Request, access: Owner, session: ReadSession,
                        settings: SettingsDep) -> SourceUploaded:
    """Keep an uploaded file for a later import of the slide: a Histomics Label pixelmap's
    bounding-box CSV, which ``POST .../segments?bboxes=NAME`` then uses with the pixelmap."""
    get_slide(session, access.project.id, slide_id)
    session.close()
    if not request.headers.get("content-type", "").startswith("multipart/"):
        raise ParameterError("send the file as multipart/form-data, in the field 'file'")
    return SourceUploaded(name=(await _upload(request, settings, access, slide_id)).name)


@router.post("/features/{name}", status_code=202, max_body_size=2**62, openapi_extra={"requestBody": {"content": {
    **_FORMS, "application/json": {"schema": ServerSource.model_json_schema()}}}})
async def import_features(slide_id: int, name: Annotated[str, Path(max_length=64)], request: Request, access: Owner,
                          session: ReadSession, database: DatabaseDep, settings: SettingsDep,
                          format: FormatQuery = "auto") -> JobPublic:
    """Import a TRIDENT/CLAM HDF5, a Parquet or CSV table or a Histomics Label ``feature.h5`` as the
    slide's features named ``name`` (``imported-...``), for the slide's current segments."""
    service.check_feature_name(name)
    slide = get_slide(session, access.project.id, slide_id)
    session.close()
    path, _ = await _source(request, settings, access, slide_id)
    job = await run_in_threadpool(service.submit_feature_import, database, request.app.state.celery, access.project,
                                  slide, path, name=name, format=format, user_id=access.user.id)
    return JobPublic.shown(job, admin=access.user.is_admin)


class ImportedSegmentsPublic(BaseModel):
    """A slide's imported segments: source file, format, segments kept, dropped (by reason) and
    classes (segments per class name)."""

    source: str
    format: str
    segments: int
    dropped: dict[str, int]
    classes: dict[str, int]


class ImportedFeaturesPublic(BaseModel):
    """An imported feature array: its extractor name, dimensions and the segments it covers."""

    name: str
    dimensions: int
    segments: int


class SlideImportsPublic(BaseModel):
    slide_id: int
    segments: ImportedSegmentsPublic | None
    features: list[ImportedFeaturesPublic]


class ProjectImportsPublic(BaseModel):
    """What the project's slides hold from other tools; ``extractors``: the imported feature
    names a slide has, which the project may choose as its extractor."""

    slides: list[SlideImportsPublic]
    extractors: list[str]


@imports_router.get("/imports")
def project_imports(access: Viewer, session: ReadSession, settings: SettingsDep) -> ProjectImportsPublic:
    """Each slide's imported segments and imported feature arrays, from their manifests."""
    files = ProjectFiles(settings.data_dir, access.project.id)
    slides = []
    for slide in slides_of(session, access.project.id):
        segments, features = service.slide_imports(files, slide.id)
        slides.append(SlideImportsPublic(
            slide_id=slide.id, segments=None if segments is None else ImportedSegmentsPublic(**{
                **asdict(segments), "source": shown_params(segments.source, admin=access.user.is_admin)}),
            features=[ImportedFeaturesPublic(**asdict(f)) for f in features]))
    names = sorted({feature.name for slide in slides for feature in slide.features})
    return ProjectImportsPublic(slides=slides, extractors=names)
