"""slidelabel's jobs in Girder's job list (when Girder's ``jobs`` plugin is loaded).

The jobs themselves stay slidelabel's Celery tasks, whose state lives in slidelabel's ``jobs``
table; a thread of the Girder process copies the state of the jobs of Girder-linked projects
into Girder job documents every :data:`MIRROR_EVERY_S` seconds (status, progress, and the message
as slidelabel shows it to users other than the admin: no tracebacks or server paths), so users
follow them where they follow every DSA job. A copy rather than a hook in the workers:
the workers need no connection to Girder's database, and a mirror that falls behind or stops
never slows or fails a job.
"""

from __future__ import annotations

import logging
import threading

from girder.models.user import User as GirderUser
from girder_jobs.constants import JobStatus
from girder_jobs.models.job import Job as GirderJob
from sqlalchemy import select

from girder_slidelabel.links import linked_folders, project_of
from girder_slidelabel.users import USER_LINK
from slidelabel.services.jobs import shown_to
from slidelabel.store.database import Database
from slidelabel.store.models import Job, JobState

logger = logging.getLogger(__name__)

#: Seconds between two copies of the job states.
MIRROR_EVERY_S = 2.0
JOB_LINK = "slidelabelJobId"
JOB_TYPE = "slidelabel"
STATUS_OF: dict[JobState, int] = {JobState.queued: JobStatus.QUEUED, JobState.running: JobStatus.RUNNING,
                                  JobState.done: JobStatus.SUCCESS, JobState.failed: JobStatus.ERROR,
                                  JobState.cancelled: JobStatus.CANCELED}
FINAL = frozenset({JobStatus.SUCCESS, JobStatus.ERROR, JobStatus.CANCELED})
#: Girder only moves a job along INACTIVE -> QUEUED -> RUNNING -> final; the step before each
#: status that a job must have passed.
_BEFORE: dict[int, int] = {JobStatus.RUNNING: JobStatus.QUEUED, JobStatus.SUCCESS: JobStatus.RUNNING,
                           JobStatus.ERROR: JobStatus.QUEUED}
_ORDER = (JobStatus.INACTIVE, JobStatus.QUEUED, JobStatus.RUNNING)


def _path(current: int, target: int) -> list[int]:
    """The statuses to set, in order, to move a Girder job from ``current`` to ``target``."""
    steps = [target]
    while steps[0] in _BEFORE and _ORDER.index(current) < _ORDER.index(_BEFORE[steps[0]]):
        steps.insert(0, _BEFORE[steps[0]])
    return [s for s in steps if s != current]


def _girder_user(slidelabel_user_id: int | None) -> dict | None:
    return GirderUser().findOne({USER_LINK: slidelabel_user_id}) if slidelabel_user_id is not None else None


def mirror_jobs(database: Database) -> int:
    """Copy the state of jobs of Girder-linked projects not yet final in Girder; returns how
    many Girder jobs were created or updated."""
    projects = {project_of(folder) for folder in linked_folders()}
    if not projects:
        return 0
    mirrored = {doc[JOB_LINK]: doc for doc in GirderJob().find({JOB_LINK: {"$exists": True}})}
    open_ids = [job_id for job_id, doc in mirrored.items() if doc["status"] not in FINAL]
    newest = max(mirrored, default=0)
    with database.session() as session:
        rows = session.scalars(select(Job).where(Job.project_id.in_(projects))
                               .where((Job.id > newest) | Job.id.in_(open_ids)).order_by(Job.id)).all()
    changed = 0
    for row in rows:
        doc = mirrored.get(row.id)
        if doc is None:
            doc = GirderJob().createJob(
                title=f"slidelabel {row.kind} (project {row.project_id}, job {row.id})", type=JOB_TYPE,
                user=_girder_user(row.created_by), public=False,
                # A ``module`` marks a job Girder runs in its own process, which the worker
                # plugin leaves alone; no one schedules these, slidelabel's workers run them.
                otherFields={JOB_LINK: row.id, "module": __name__})
        target = STATUS_OF[row.state]
        if doc["status"] == target and doc.get("progress", {}).get("current") == round(100 * row.progress):
            continue
        for status in _path(doc["status"], target) or [target]:
            doc = GirderJob().updateJob(doc, status=status, progressTotal=100,
                                        progressCurrent=round(100 * row.progress),
                                        progressMessage=shown_to(row, admin=False)[0])
        changed += 1
    return changed


def start_mirror(database: Database) -> threading.Event:
    """Mirror jobs in a daemon thread until the returned event is set."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(MIRROR_EVERY_S):
            try:
                mirror_jobs(database)
            except Exception:  # a database hiccup must not end the mirror
                logger.exception("copying slidelabel jobs to Girder's job list failed")

    threading.Thread(target=loop, daemon=True, name="slidelabel-girder-jobs").start()
    return stop
