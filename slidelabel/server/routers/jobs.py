"""Background jobs of a project: list, progress and log, cancel and retry. Jobs are started by
the routes of what they compute (slides, epochs)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from sqlalchemy import select

from slidelabel.server.deps import DatabaseDep, ReadSession, SettingsDep, Trainer, Viewer
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.jobs import JobLog, JobPublic
from slidelabel.services import jobs
from slidelabel.services.accounts import may_read_slide_folders
from slidelabel.store.models import Job, Role

router = APIRouter(route_class=CommitInRouteThread, prefix="/projects/{project_id}/jobs", tags=["jobs"])


@router.get("")
def list_jobs(access: Viewer, session: ReadSession,
              limit: Annotated[int, Query(ge=1, le=1000, description="newest jobs to list")] = 100) -> list[JobPublic]:
    rows = session.scalars(select(Job).where(Job.project_id == access.project.id).order_by(Job.id.desc()).limit(limit))
    return [JobPublic.shown(job, admin=access.user.is_admin) for job in rows]


@router.get("/{job_id}")
def get_job(job_id: int, access: Viewer, session: ReadSession) -> JobLog:
    job = jobs.find_job(session, access.project.id, job_id)
    return JobLog.shown(job, admin=access.user.is_admin)


@router.post("/{job_id}/cancel")
def cancel_job(job_id: int, access: Trainer, database: DatabaseDep) -> JobPublic:
    """Cancel a queued or running job: its starter, the project's owners and the admin may."""
    return JobPublic.shown(jobs.cancel(database, access.project.id, job_id, user_id=access.user.id,
                                       is_owner=access.role == Role.owner), admin=access.user.is_admin)


@router.post("/{job_id}/retry", status_code=202)
def retry_job(job_id: int, access: Trainer, database: DatabaseDep, settings: SettingsDep, request: Request) -> JobPublic:
    """Run a failed or cancelled job again, as yours: its starter, the project's owners and the
    admin may, with the role that starting a job of its kind takes now (an owner's for imports
    and cohorts); one reading server folders needs that right now, as its first run did."""
    job = jobs.retry(database, request.app.state.celery, access.project.id, job_id, user_id=access.user.id,
                     is_owner=access.role == Role.owner, role=access.role, data_dir=settings.data_dir,
                     may_read_folders=may_read_slide_folders(access.user))
    return JobPublic.shown(job, admin=access.user.is_admin)
