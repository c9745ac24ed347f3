"""Cohorts: an epoch applied to a server folder of slides, one job per slide on every worker,
their per-slide results and files."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import select

from slidelabel.server.deps import DatabaseDep, Owner, ReadSession, SettingsDep, Viewer
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.cohorts import CohortCreate, CohortPublic, CohortSlidePublic, CohortSummary
from slidelabel.server.schemas.jobs import JobPublic
from slidelabel.services import cohort_jobs as service
from slidelabel.services.shown_paths import shown_params
from slidelabel.store.models import Job

router = APIRouter(route_class=CommitInRouteThread, prefix="/projects/{project_id}", tags=["cohorts"])
FILE_URL = "/api/v1/projects/{project_id}/cohorts/{job_id}/slides/{name}/{what}"
MEDIA_TYPES = {"mask": "image/tiff", "table": "application/vnd.apache.parquet", "geojson": "application/geo+json",
               "annotation": "application/json"}


@router.post("/epochs/{number}/cohort", status_code=202)
def start_cohort(number: int, body: CohortCreate, access: Owner, database: DatabaseDep, settings: SettingsDep,
                 request: Request) -> JobPublic:
    """Apply epoch ``number`` to every slide file under a server folder: one job per slide, spread
    over every worker; the cohort's job ends when they all have. The same epoch, folder and
    formats queued, running or done return that job."""
    job = service.start_cohort(database, request.app.state.celery, settings, project=access.project, user=access.user,
                               epoch=number, folder=body.folder, formats=list(body.formats))
    return JobPublic.shown(job, admin=access.user.is_admin)


def _summary(job: Job, *, admin: bool) -> CohortSummary:
    return CohortSummary(job=JobPublic.shown(job, admin=admin), epoch=job.params["epoch"],
                         folder=shown_params(job.params["folder"], admin=admin), formats=job.params["formats"])


@router.get("/cohorts")
def list_cohorts(access: Viewer, session: ReadSession,
                 limit: Annotated[int, Query(ge=1, le=1000, description="newest cohorts to list")] = 50,
                 ) -> list[CohortSummary]:
    """The project's cohort jobs, newest first."""
    rows = session.scalars(select(Job).where(Job.project_id == access.project.id, Job.kind == service.COHORT)
                           .order_by(Job.id.desc()).limit(limit))
    return [_summary(job, admin=access.user.is_admin) for job in rows]


@router.get("/cohorts/{job_id}")
def get_cohort(job_id: int, access: Viewer, session: ReadSession, settings: SettingsDep) -> CohortPublic:
    """A cohort with each slide's state and, once predicted, its superpixels per category and files."""
    job = service.find_cohort(session, access.project.id, job_id)
    slides = []
    for found in service.cohort_slides(session, settings.data_dir, access.project.id, job_id):
        slides.append(CohortSlidePublic(
            name=found.name, slide=found.slide.removeprefix(job.params["folder"]).lstrip("/"),
            job=JobPublic.shown(found.job, admin=access.user.is_admin), counts=found.counts,
            downloads={what: FILE_URL.format(project_id=access.project.id, job_id=job_id, name=quote(found.name, safe=""),
                                             what=what)
                       for what in found.files}))
    return CohortPublic(**_summary(job, admin=access.user.is_admin).model_dump(), slides=slides)


@router.get("/cohorts/{job_id}/slides/{name}/{what}", response_class=FileResponse)
def download_cohort_file(job_id: int, name: str, what: str, access: Viewer, session: ReadSession,
                         settings: SettingsDep) -> FileResponse:
    """A predicted slide's file: ``mask`` (pyramidal TIFF, category index + 1, 0 = none), ``table``
    (Parquet), ``geojson`` (QuPath) or ``annotation`` (DSA), when the cohort asked for it."""
    path = service.cohort_file(session, settings.data_dir, access.project.id, job_id, name, what)
    return FileResponse(path, media_type=MEDIA_TYPES[what], filename=f"{name}.{path.name}")
