"""slidelabel's jobs in Girder's job list (when Girder's ``jobs`` plugin is loaded).

The jobs themselves stay slidelabel's Celery tasks, whose state lives in slidelabel's ``jobs``
table; a thread of the Girder process copies the state of the jobs of Girder-linked projects
into Girder job documents every :data:`MIRROR_EVERY_S` seconds (status, progress, and the message
as slidelabel shows it to users other than the admin: no tracebacks or server paths), so users
follow them where they follow every DSA job. A copy rather than a hook in the workers:
the workers need no connection to Girder's database, and a mirror that falls behind or stops
never slows or fails a job.

Cancel in Girder's list (``PUT /job/{id}/cancel``) cancels the slidelabel job, with the rights
slidelabel's own cancel takes (who started it, the project's owners, the admin: a Girder user with
write access to the folder, the 'trainer' role, who started it; admin access; a site admin), and
the list then shows the job's real state: ``Canceled`` only where the job was cancelled, its end
where it had ended before. A Girder job marked final by anyone but the mirror (Girder's Cancel
before this, a script) is brought back to the slidelabel job's state at the next copy.
"""

from __future__ import annotations

import logging
import threading

from girder.api.rest import getCurrentUser
from girder.exceptions import AccessException
from girder.models.user import User as GirderUser
from girder_jobs.constants import JobStatus
from girder_jobs.models.job import Job as GirderJob
from sqlalchemy import select

from girder_slidelabel.links import linked_folders, project_of
from girder_slidelabel.users import USER_LINK, member
from slidelabel.errors import AuthenticationError, NotFoundError, PermissionDeniedError
from slidelabel.services import jobs
from slidelabel.services.access import Action, check_access
from slidelabel.services.jobs import shown_to
from slidelabel.store.database import Database
from slidelabel.store.models import Job, JobState, Role

logger = logging.getLogger(__name__)

#: Seconds between two copies of the job states.
MIRROR_EVERY_S = 2.0
JOB_LINK = "slidelabelJobId"
JOB_TYPE = "slidelabel"
#: Set on a Girder job when the mirror gave it its final status: the copy leaves it alone from then
#: on. A job Girder marked final otherwise (without the mark) is copied again, so the list shows
#: the slidelabel job's state, not a Cancel that did not stop it.
MIRRORED_FINAL = "slidelabelFinal"
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


def _show(doc: dict, row: Job) -> bool:
    """Make the Girder job ``doc`` show ``row``'s state and progress; whether it changed."""
    target, progress = STATUS_OF[row.state], round(100 * row.progress)
    if doc["status"] == target and doc.get("progress", {}).get("current") == progress:
        changed = False
    elif doc["status"] in FINAL:
        # Girder moves no job out of a final status: the mirror sets the slidelabel job's own.
        GirderJob().update({"_id": doc["_id"]}, {"$set": {
            "status": target, "progress.total": 100, "progress.current": progress,
            "progress.message": shown_to(row, admin=False)[0]}})
        doc.update(status=target)
        doc.setdefault("progress", {}).update(total=100, current=progress)
        changed = True
    else:
        for status in _path(doc["status"], target) or [target]:
            doc = GirderJob().updateJob(doc, status=status, progressTotal=100, progressCurrent=progress,
                                        progressMessage=shown_to(row, admin=False)[0])
        changed = True
    if target in FINAL and not doc.get(MIRRORED_FINAL):
        GirderJob().update({"_id": doc["_id"]}, {"$set": {MIRRORED_FINAL: True}})
        doc[MIRRORED_FINAL] = True
    return changed


def mirror_jobs(database: Database) -> int:
    """Copy the state of jobs of Girder-linked projects whose final state the mirror has not
    copied yet; returns how many Girder jobs were created or updated."""
    projects = {project_of(folder) for folder in linked_folders()}
    if not projects:
        return 0
    mirrored = {doc[JOB_LINK]: doc for doc in GirderJob().find({JOB_LINK: {"$exists": True}})}
    open_ids = [job_id for job_id, doc in mirrored.items() if not doc.get(MIRRORED_FINAL)]
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
        changed += _show(doc, row)
    return changed


def cancel_in_slidelabel(database: Database, event) -> None:
    """Bound to Girder's ``jobs.cancel``: Cancel on a mirrored job cancels the slidelabel job as
    slidelabel's own cancel does, with the rights of the Girder user who asked (refused: 403 and
    nothing cancelled), and the Girder job then shows the job's real state (Girder's own
    'canceled' is prevented: the job may have ended before)."""
    doc = event.info
    job_id = doc.get(JOB_LINK)
    if job_id is None:
        return  # not one of slidelabel's jobs
    with database.session() as session:
        row = session.get(Job, job_id)
    if row is None:
        return  # its project was deleted: nothing runs, Girder's cancel stands
    girder_user = getCurrentUser()
    if girder_user is None:
        raise AccessException("cancelling a slidelabel job takes a logged-in Girder user")
    try:
        user = member(database, girder_user, row.project_id)
        with database.session() as session:
            access = check_access(session, user, row.project_id, Action.train)
        row = jobs.cancel(database, row.project_id, job_id, user_id=user.id, is_owner=access.role == Role.owner)
    except (AuthenticationError, NotFoundError, PermissionDeniedError) as error:
        raise AccessException(f"slidelabel refused to cancel job {job_id}: {error}") from None
    event.preventDefault()
    _show(doc, row)


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
