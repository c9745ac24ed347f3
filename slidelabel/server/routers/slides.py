"""Slides of a project: add from the server's slide folders or by upload, list, remove, and the
jobs that prepare them (superpixels, features)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlalchemy.orm import Session

from slidelabel.server.deps import CurrentUser, DatabaseDep, Owner, ReadSession, SettingsDep, Trainer, Viewer
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.jobs import JobPublic
from slidelabel.server.schemas.slides import (
    FolderSlidePublic,
    SkippedPath,
    SlideAdd,
    SlideFolderPublic,
    SlidePublic,
    SlidesAdded,
    StepJob,
)
from slidelabel.services import slide_folders, slide_jobs, slides
from slidelabel.services.access import ProjectAccess
from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.models import Slide

router = APIRouter(route_class=CommitInRouteThread, tags=["slides"])


def _public(slide: Slide, jobs: dict | None = None, *, admin: bool = False) -> SlidePublic:
    """The slide with its latest step jobs as ``admin`` or another member may see them."""
    jobs = jobs or {}
    return SlidePublic.model_validate(slide).model_copy(update={
        "superpixels_job": StepJob.shown(jobs.get(slide_jobs.SUPERPIXELS), admin=admin),
        "features_job": StepJob.shown(jobs.get(slide_jobs.FEATURES), admin=admin)})


@router.get("/slide-folders")
def list_slide_folders(user: CurrentUser, settings: SettingsDep) -> list[SlideFolderPublic]:
    """The server folders the caller may add slides from, with the slide files in them (all for the
    admin and the accounts granted them, those shared with the caller for others)."""
    return [SlideFolderPublic(
        path=str(listing.folder), truncated=listing.truncated, warnings=listing.warnings,
        slides=[FolderSlidePublic(path=str(s.path), size_bytes=s.size_bytes) for s in listing.slides])
        for listing in slide_folders.browse_folders(user, settings)]


@router.get("/projects/{project_id}/slides")
def list_slides(access: Viewer, session: ReadSession) -> list[SlidePublic]:
    """The project's slides with the state of their latest superpixels and features jobs."""
    return [_public(status.slide, status.jobs, admin=access.user.is_admin)
            for status in slides.list_slides(session, access.project.id)]


@router.post("/projects/{project_id}/slides", status_code=201)
def add_slides(body: SlideAdd, access: Owner, database: DatabaseDep, settings: SettingsDep) -> SlidesAdded:
    """Add a slide file of a server folder the caller may read, or every slide file of a folder or
    glob pattern in one."""
    folders = slide_folders.require_readable_folders(access.user, settings)
    added = slides.add_from_server(database, settings, access.project.id, body.path, folders=folders)
    return SlidesAdded(added=[_public(slide) for slide in added.slides],
                       skipped=[SkippedPath(path=s.path, reason=s.reason) for s in added.skipped])


# The app's body limit is for JSON; an upload is bounded by Settings.upload_limit_mb as it streams.
@router.post("/projects/{project_id}/slides/upload", status_code=201, max_body_size=2**62)
async def upload_slide(request: Request, access: Owner, session: ReadSession, database: DatabaseDep,
                       settings: SettingsDep) -> SlidePublic:
    """Upload a slide file as multipart/form-data (field ``file``); streamed to disk, checked, added."""
    session.close()  # ends the read transaction of the access check: an upload may last minutes
    slide = await slides.receive_upload(
        request.stream(), content_type=request.headers.get("content-type", ""),
        content_length=request.headers.get("content-length"), database=database, settings=settings,
        project_id=access.project.id, user_id=access.user.id)
    return _public(slide)


@router.delete("/projects/{project_id}/slides/{slide_id}", status_code=204)
def delete_slide(slide_id: int, access: Owner, database: DatabaseDep, settings: SettingsDep) -> None:
    """Remove a slide with its labels and computed files (never a file of a server folder)."""
    slides.delete_slide(database, settings, access.project.id, slide_id)


def _submit(kind: str, slide_id: int, access: ProjectAccess, session: Session, database: Database, settings: Settings,
            request: Request) -> JobPublic:
    slide = slides.get_slide(session, access.project.id, slide_id)
    job = slide_jobs.submit_slide_job(database, request.app.state.celery, settings.data_dir, access.project, slide,
                                      kind, user_id=access.user.id, max_superpixels=settings.max_superpixels_per_slide)
    return JobPublic.shown(job, admin=access.user.is_admin)


@router.post("/projects/{project_id}/slides/{slide_id}/superpixels", status_code=202)
def compute_superpixels(slide_id: int, access: Trainer, session: ReadSession, database: DatabaseDep,
                        settings: SettingsDep, request: Request) -> JobPublic:
    """Queue the slide's superpixels with the project's options (the same finished work is returned)."""
    return _submit(slide_jobs.SUPERPIXELS, slide_id, access, session, database, settings, request)


@router.post("/projects/{project_id}/slides/{slide_id}/features", status_code=202)
def compute_features(slide_id: int, access: Trainer, session: ReadSession, database: DatabaseDep,
                     settings: SettingsDep, request: Request) -> JobPublic:
    """Queue the slide's features with the project's extractor; 409 until its superpixels are finished."""
    return _submit(slide_jobs.FEATURES, slide_id, access, session, database, settings, request)


@router.post("/projects/{project_id}/jobs/prepare", status_code=202)
def prepare_slides(access: Trainer, session: ReadSession, database: DatabaseDep, settings: SettingsDep,
                   request: Request) -> list[JobPublic]:
    """Queue superpixels then features of every slide of the project, one job per slide; 422 naming
    the slides the project's superpixel options would give too many superpixels."""
    jobs = slide_jobs.submit_prepare(database, request.app.state.celery, access.project,
                                     slides.slides_of(session, access.project.id), user_id=access.user.id,
                                     data_dir=settings.data_dir, max_superpixels=settings.max_superpixels_per_slide)
    return [JobPublic.shown(job, admin=access.user.is_admin) for job in jobs]
