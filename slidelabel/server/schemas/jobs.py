"""Bodies of the job routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from slidelabel.store.models import JobState


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


class JobLog(JobPublic):
    log: str
    params: dict
