"""Background jobs: what the API submits and what a Celery worker runs
(:mod:`~slidelabel.services.job_runs` runs them).

A job is a row of the ``jobs`` table (state, progress, log) plus a Celery message carrying its id;
the work itself is a function registered by kind with :func:`job_kind`, which gets a
:class:`~slidelabel.services.job_runs.JobContext` to report progress and learn of cancellation.
Rules:

- *Idempotent*: a job has a ``key`` naming the work (kind, slide, options). Submitting a key that
  is queued, running or done returns that job instead of a new one, and job functions skip work
  whose outputs are finished (their files are written atomically), so a retry after a crash
  redoes only what was not finished.
- *Crash-safe*: messages are acknowledged after the job ends (``acks_late``), so a worker process
  killed by the OS is redelivered; a job whose worker vanished altogether stops beating its
  heartbeat and any live worker requeues it (:func:`~slidelabel.services.job_runs.requeue_stale`).
- *Bounded*: cancelling marks the row, and ``JobContext.progress`` (which every long loop calls,
  per tile or per slide) reads the row at most every half second and raises
  :class:`~slidelabel.errors.JobCancelled`; it also stops a job past its kind's time limit
  (``Settings.job_time_limit_slide_s``, ``job_time_limit_epoch_s``). Writers remove their
  temporary outputs on that exception. Celery's soft and hard time limits (the longest kind's
  limit plus a minute, then two) stop a job stuck where it reports nothing.
  A cancelled job's heartbeat beats until its process ends, and deleting its project or slide
  waits for that (:func:`still_stopping`), so that no job writes into a deleted folder; a job
  whose row is gone stops as a cancelled one.
- *Fair*: the users who start jobs take turns on a queue. A job taken while another user's job
  waits there, whose starter's last turn came before this job's starter's, steps back: its
  message goes to the end of the broker's queue (:func:`steps_back`), so one owner's hundred
  slides, in one project or many, delay another's one by a job, not by a hundred.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Protocol

from sqlalchemy import ColumnElement, func, or_, select

from slidelabel.errors import ConflictError, NotFoundError, PermissionDeniedError
from slidelabel.registry import Registry
from slidelabel.services.access import ALLOWED, Action, roles_allowed
from slidelabel.services.shown_paths import names_only
from slidelabel.store.database import Database
from slidelabel.store.models import Job, JobState, Role

if TYPE_CHECKING:  # job_runs imports this module: the type only
    from slidelabel.services.job_runs import JobContext

logger = logging.getLogger(__name__)

#: Times a job steps back for other users' waiting jobs before it runs regardless: a waiting
#: job whose message the broker lost must not keep the others going round the queue forever.
MAX_STEPS_BACK = 1000

#: Modules whose import registers job kinds (imported by the worker before it runs a job).
JOB_MODULES = ("slidelabel.services.slide_jobs", "slidelabel.services.epochs", "slidelabel.services.project_imports",
               "slidelabel.services.cohort_jobs")
#: Queues: slide work (superpixels, features) and model work (epochs), so that a retrain never
#: waits behind a folder of slides.
SLIDE_QUEUE, EPOCH_QUEUE = "slides", "epochs"
QUEUES = (SLIDE_QUEUE, EPOCH_QUEUE)
TASK_NAME = "slidelabel.run_job"
#: Seconds a cancelled job, or one past its time limit, has to stop at a progress report before
#: the heartbeat kills its process (where the worker allows it): one computation that reports
#: nothing, such as a large superpixel tile on busy cores, must not hold the worker for minutes.
STOP_GRACE_S = 2.0
#: Seconds a delete of a project or slide waits for the processes of its cancelled jobs to end
#: (a cancelled job stops at its next progress report or is killed :data:`STOP_GRACE_S` later)
#: before it refuses: Cancel then Delete at once just works, and no job writes after the delete.
STOP_WAIT_S = STOP_GRACE_S + 3.0
#: What a job whose row went with its project or slide says (in the worker's log: no row is left).
GONE = "its project or slide was deleted"
#: Key of a job function's result that leaves the job running after the function returns: its
#: work goes on in other jobs (one per slide of a cohort), whose ``on_end`` ends it. Such a job
#: has no heartbeat (NULL), so :func:`~slidelabel.services.job_runs.requeue_stale` never takes it for a dead worker's.
WAITING = "waiting"


class Sender(Protocol):
    """What submits a Celery message: a Celery app's ``send_task``."""

    def send_task(self, name: str, args: list, queue: str) -> object: ...


@dataclass(frozen=True)
class JobKind:
    name: str
    function: Callable[[JobContext], dict | None]
    queue: str
    on_end: Callable[[Database, int], None] | None = None
    """Called with the job's id once a job of this kind has ended (done, failed or cancelled),
    whoever ended it: the worker, or ``job_runs.requeue_stale`` giving up, or the hard time limit."""
    action: Action = Action.manage
    """What starting a job of this kind takes in the project, and so retrying one (see
    :data:`~slidelabel.services.access.ALLOWED`): owners' work unless the kind says otherwise,
    so that a kind added later is never opened to weaker roles by mistake."""


def _import_job_modules(_registry: Registry[JobKind]) -> None:
    for module in JOB_MODULES:
        importlib.import_module(module)


#: Job kinds by name; built on first use by importing :data:`JOB_MODULES`, whose functions
#: declare themselves with :func:`job_kind`.
JOB_KINDS: Registry[JobKind] = Registry("job kind", None, load=_import_job_modules)


def job_kind(name: str, *, queue: str = SLIDE_QUEUE, on_end: Callable[[Database, int], None] | None = None,
             action: Action = Action.manage) -> Callable[[Callable], Callable]:
    """Register ``function(context) -> result dict or None`` as the job kind ``name`` (see
    :attr:`JobKind.on_end` and :attr:`JobKind.action`, and :data:`WAITING` for a result that
    leaves the job running)."""

    def decorator(function: Callable[[JobContext], dict | None]) -> Callable[[JobContext], dict | None]:
        JOB_KINDS.add(name, JobKind(name, function, queue, on_end, action), description=(function.__doc__ or "").strip()
                      .split("\n")[0])
        return function

    return decorator


_TRACEBACK = "Traceback (most recent call last):"
#: How the message of a job failed by a bug (not by what a user did) starts.
INTERNAL_ERROR = "internal error"


#: Characters of a job's message, and of one line of its log, that are stored: the rest is cut with
#: a note of how much (a message is in every member's job list, polled by the web client).
MESSAGE_CHARS, LOG_LINE_CHARS = 4_000, 4_000
#: Characters of a failure's traceback stored in the job's log.
TRACEBACK_CHARS = 64_000



def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters and a note of how many more there were.

    >>> bounded("abcdef", 3)
    'abc... (3 more characters)'
    """
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def shown_to(job: Job, *, admin: bool) -> tuple[str, str]:
    """The job's message and log as ``admin`` or another viewer may see them: a failure that is a
    bug keeps its traceback and error text (server paths, code) for the admin only, and others
    read every absolute path as its name (a slide file's folder on the server, the data folder).
    Every answer that shows a job's message or log goes through here."""
    if admin:
        return job.message, job.log
    message = job.message
    if message.startswith(INTERNAL_ERROR):
        message = INTERNAL_ERROR + "; the admin can see the details"
    log, _, traceback_part = job.log.partition(_TRACEBACK)
    log += "(an internal error; the admin can see its details)\n" if traceback_part else ""
    # Bounded again here for rows stored before the bounds: redaction reads each line whole.
    log = "\n".join(bounded(line, LOG_LINE_CHARS) for line in log.split("\n"))
    return names_only(bounded(message, MESSAGE_CHARS)), names_only(log)


def find_job(session, project_id: int, job_id: int) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.project_id != project_id:
        raise NotFoundError(f"no job {job_id} in this project")
    return job


def submit(database: Database, sender: Sender, *, project_id: int, kind: str, key: str, params: dict | None = None,
           slide_id: int | None = None, user_id: int | None = None) -> Job:
    """Queue a job, or return the queued, running or finished one with the same ``key``."""
    if kind not in JOB_KINDS:
        raise NotFoundError(f"no job kind {kind!r}; known: {', '.join(JOB_KINDS)}")
    with database.session(write=True) as session:
        existing = session.scalar(
            select(Job).where(Job.project_id == project_id, Job.key == key,
                              Job.state.in_([JobState.queued, JobState.running, JobState.done]))
            .order_by(Job.id.desc()))
        if existing is not None:
            return existing
        job = Job(project_id=project_id, slide_id=slide_id, kind=kind, key=key, params=params or {},
                  created_by=user_id)
        session.add(job)
        session.flush()
        job_id = job.id
    return dispatch(database, sender, job_id)


def dispatch(database: Database, sender: Sender, job_id: int, *, steps_back: int = 0) -> Job:
    """Send the Celery message of a committed, queued job (``steps_back``: how often it has let
    other users' jobs go first, carried in the message)."""
    with database.session(write=True) as session:
        job = session.get(Job, job_id)
        args = [job.id, steps_back] if steps_back else [job.id]
        result = sender.send_task(TASK_NAME, args=args, queue=JOB_KINDS[job.kind].queue)
        job.celery_id = getattr(result, "id", None)
        return job


def cancel(database: Database, project_id: int, job_id: int, *, user_id: int, is_owner: bool) -> Job:
    """Mark the job cancelled (it stops at its next progress report, within seconds: see
    :meth:`~slidelabel.services.job_runs.JobContext.progress`). Only who started it and the
    project's owners (the admin among them) may: :class:`PermissionDeniedError` for others."""
    with database.session(write=True) as session:
        job = find_job(session, project_id, job_id)
        _check_may_manage(job, user_id=user_id, is_owner=is_owner, verb="cancel")
        if job.state in (JobState.queued, JobState.running):
            job.state = JobState.cancelled
            job.message = "cancelled"
        return job


def still_stopping(where: ColumnElement[bool], *, stale_s: float) -> ColumnElement[bool]:
    """The jobs matching ``where`` that were cancelled but whose process has not ended: the
    heartbeat beats on until the process ends (:func:`run` clears it; a kill clears it first),
    and a heartbeat older than ``stale_s`` is a dead worker's."""
    fresh = Job.heartbeat_at > datetime.now(UTC) - timedelta(seconds=stale_s)
    return where & (Job.state == JobState.cancelled) & Job.heartbeat_at.is_not(None) & fresh


def wait_stopped(database: Database, where: ColumnElement[bool], *, stale_s: float,
                 wait_s: float | None = None) -> list[int]:
    """Wait up to ``wait_s`` (:data:`STOP_WAIT_S` by default) for the processes of the cancelled
    jobs matching ``where`` to end (:func:`still_stopping`); the ids of those still running."""
    deadline = time.monotonic() + (STOP_WAIT_S if wait_s is None else wait_s)
    while True:
        with database.session() as session:
            stopping = list(session.scalars(select(Job.id).where(still_stopping(where, stale_s=stale_s))
                                            .order_by(Job.id)))
        if not stopping or time.monotonic() >= deadline:
            return stopping
        time.sleep(0.2)


def stopping_message(job_ids: list[int]) -> str:
    """What a delete refused for :func:`still_stopping` jobs says."""
    return (f"job{'s' if len(job_ids) > 1 else ''} {', '.join(map(str, job_ids))} "
            f"{'were' if len(job_ids) > 1 else 'was'} cancelled but {'their' if len(job_ids) > 1 else 'its'} "
            "process has not ended yet; try again in a few seconds (if its worker was killed, the job is "
            "taken for dead once its heartbeat is SLIDELABEL_JOB_STALE_SECONDS old)")


def _check_may_manage(job: Job, *, user_id: int, is_owner: bool, verb: str) -> None:
    """:class:`PermissionDeniedError` unless ``user_id`` started the job or owns its project."""
    if not is_owner and job.created_by != user_id:
        raise PermissionDeniedError(f"job {job.id} was started by someone else; only they and the project's "
                                    f"owners may {verb} it")


def retry(database: Database, sender: Sender, project_id: int, job_id: int, *, user_id: int, is_owner: bool,
          role: Role | None = None, data_dir: Path | None = None, may_read_folders: bool = True) -> Job:
    """Run a failed or cancelled job again, as a new job of ``user_id`` with the same work. Only
    who started it and the project's owners (the admin among them) may, and only with the role
    that starting a job of its kind takes now (:attr:`JobKind.action`; ``role`` is the
    retrier's, an owner's or an annotator's by ``is_owner`` when not given):
    :class:`PermissionDeniedError` for others, for a starter since demoted, and for a job that
    reads server files outside ``data_dir`` (a folder, a file to import) unless
    ``may_read_folders``: a right withdrawn since the first run stays withdrawn."""
    role = role or (Role.owner if is_owner else Role.annotator)
    with database.session() as session:
        job = find_job(session, project_id, job_id)
        _check_may_manage(job, user_id=user_id, is_owner=role == Role.owner, verb="retry")
        action = JOB_KINDS[job.kind].action
        if role not in ALLOWED[action]:
            raise PermissionDeniedError(f"{job.kind} jobs are started, and retried, by {roles_allowed(action)}; you "
                                        f"are {role.value} in this project: ask an owner")
        if job.state not in (JobState.failed, JobState.cancelled):
            raise ConflictError(f"job {job_id} is {job.state.value}; only failed or cancelled jobs are retried")
        kind, key, params, slide_id = job.kind, job.key, job.params, job.slide_id
    if not may_read_folders and data_dir is not None and any(
            not path.is_relative_to(data_dir) for path in _absolute_paths(params)):
        raise PermissionDeniedError("this job reads the server's slide folders, a right the admin grants: ask the admin")
    return submit(database, sender, project_id=project_id, kind=kind, key=key, params=params, slide_id=slide_id,
                  user_id=user_id)


def _absolute_paths(params: object) -> Iterator[PurePath]:
    """Every absolute path in a job's parameters."""
    if isinstance(params, dict):
        for value in params.values():
            yield from _absolute_paths(value)
    elif isinstance(params, list):
        for value in params:
            yield from _absolute_paths(value)
    elif isinstance(params, str) and PurePath(params).is_absolute():
        yield PurePath(params)


def steps_back(database: Database, job_id: int) -> bool:
    """Whether the queued job ``job_id`` should let another user's job go first: one waits on the
    same queue whose starter's last turn there (a job's start) came before this job's starter's,
    or never came. Round robin over the users who start jobs (jobs no one started count as one
    user), kept in the broker's queue itself."""
    with database.session() as session:
        job = session.get(Job, job_id)
        if job is None or job.state != JobState.queued:
            return False
        queue = JOB_KINDS[job.kind].queue
        on_queue = Job.kind.in_([name for name, kind in JOB_KINDS.items() if kind.queue == queue])
        starter, mine = func.coalesce(Job.created_by, 0), job.created_by or 0
        last_turn = session.scalar(select(func.max(Job.started_at)).where(starter == mine, on_queue))
        if last_turn is None:
            return False
        waiting = select(starter).where(Job.state == JobState.queued, on_queue, starter != mine)
        earlier = func.max(Job.started_at)
        return session.scalar(select(starter).where(starter.in_(waiting), on_queue).group_by(starter)
                              .having(or_(earlier.is_(None), earlier < last_turn)).limit(1)) is not None


