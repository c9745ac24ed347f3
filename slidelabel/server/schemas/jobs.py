"""Bodies of the job routes."""

from __future__ import annotations

from datetime import datetime

from typing import Self

from pydantic import BaseModel, ConfigDict

from slidelabel.services.jobs import shown_to
from slidelabel.services.shown_paths import shown_params
from slidelabel.store.models import Job, JobState


class JobPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    project_id: int
    slide_id: int | None
    kind: str
    state: JobState
    progress: float
    message: str
    attempts: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def shown(cls, job: Job, *, admin: bool) -> Self:
        """The job as the admin (``admin``) or another member may see it: a failure that is a bug
        says so without its error text (:func:`slidelabel.services.jobs.shown_to`)."""
        message, _log = shown_to(job, admin=admin)
        return cls.model_validate(job).model_copy(update={"message": message})


class JobLog(JobPublic):
    log: str
    params: dict

    @classmethod
    def shown(cls, job: Job, *, admin: bool) -> Self:
        """Also the log without tracebacks, and the parameters without server paths, for others
        than the admin."""
        _message, log = shown_to(job, admin=admin)
        return super().shown(job, admin=admin).model_copy(update={"log": log, "params": shown_params(job.params, admin=admin)})
