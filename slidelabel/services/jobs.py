"""Background jobs: what the API submits and what a Celery worker runs.

A job is a row of the ``jobs`` table (state, progress, log) plus a Celery message carrying its id;
the work itself is a function registered by kind with :func:`job_kind`, which gets a
:class:`JobContext` to report progress and learn of cancellation. Rules:

- *Idempotent*: a job has a ``key`` naming the work (kind, slide, options). Submitting a key that
  is queued, running or done returns that job instead of a new one, and job functions skip work
  whose outputs are finished (their files are written atomically), so a retry after a crash
  redoes only what was not finished.
- *Crash-safe*: messages are acknowledged after the job ends (``acks_late``), so a worker process
  killed by the OS is redelivered; a job whose worker vanished altogether stops beating its
  heartbeat and any live worker requeues it (:func:`requeue_stale`).
- *Bounded*: cancelling marks the row, and :meth:`JobContext.progress` (which every long loop
  calls, per tile or per slide) reads the row at most every :data:`PROGRESS_EVERY_S` and raises
  :class:`~slidelabel.errors.JobCancelled`; it also stops a job past its kind's time limit
  (``Settings.job_time_limit_slide_s``, ``job_time_limit_epoch_s``). Writers remove their
  temporary outputs on that exception. Celery's soft and hard time limits (the longest kind's
  limit plus :data:`HARD_LIMIT_GRACE_S`, then twice that) stop a job stuck where it reports nothing.
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
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePath
from typing import Protocol

from sqlalchemy import ColumnElement, func, or_, select, update

from slidelabel.errors import ConflictError, JobCancelled, NotFoundError, PermissionDeniedError, SlidelabelError
from slidelabel.registry import Registry
from slidelabel.services.access import ALLOWED, Action
from slidelabel.services.shown_paths import names_only
from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.models import Job, JobState, Role

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
#: Seconds between heartbeats of a running job; ``Settings.job_stale_seconds`` must be larger.
HEARTBEAT_S = 2.0
#: Progress is written at most this often (s), so that fine-grained reports cost no database load.
PROGRESS_EVERY_S = 0.5
MAX_ATTEMPTS = 3
#: The time limit of each queue's jobs: (what the jobs are called, the Settings field).
TIME_LIMITS = {SLIDE_QUEUE: ("slide", "job_time_limit_slide_s"), EPOCH_QUEUE: ("epoch", "job_time_limit_epoch_s")}
#: Seconds past the longest time limit before Celery's soft limit interrupts a job that reports
#: no progress, and again before its hard limit kills the worker process running it.
HARD_LIMIT_GRACE_S = 60.0
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
#: has no heartbeat (NULL), so :func:`requeue_stale` never takes it for a dead worker's.
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
    whoever ended it: the worker, or :func:`requeue_stale` giving up, or the hard time limit."""
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


def time_limit(settings: Settings, queue: str) -> tuple[float, str]:
    """``(seconds, rule)``: the time limit of ``queue``'s jobs and the sentence naming it and its
    setting, for the message of a job it stopped."""
    name, field = TIME_LIMITS[queue]
    seconds = float(getattr(settings, field))
    return seconds, f"the time limit for {name} jobs is {seconds:g} s (SLIDELABEL_{field.upper()})"


def celery_time_limits(settings: Settings) -> tuple[float, float]:
    """``(soft, hard)`` seconds for Celery, the backstop of the cooperative limits: one task runs
    every kind, so both follow the longest limit."""
    soft = max(time_limit(settings, queue)[0] for queue in TIME_LIMITS) + HARD_LIMIT_GRACE_S
    return soft, soft + HARD_LIMIT_GRACE_S


class JobContext:
    """What a running job sees: its parameters, where to report progress and log lines, and the
    ``sender`` of the jobs it submits (None where it runs outside a worker)."""

    def __init__(self, database: Database, settings: Settings, job: Job, *, queue: str,
                 sender: Sender | None = None) -> None:
        self.database, self.settings, self.sender = database, settings, sender
        self.job_id, self.project_id, self.slide_id = job.id, job.project_id, job.slide_id
        self.params = dict(job.params or {})
        self.time_limit_s, self._time_limit_rule = time_limit(settings, queue)
        self.started = time.monotonic()
        self._last_write = 0.0

    def over_time(self) -> bool:
        """True once the job has run longer than its kind's time limit."""
        return time.monotonic() - self.started > self.time_limit_s

    def over_time_message(self) -> str:
        """What a job stopped by its time limit says: how long it ran and which setting to raise."""
        return f"stopped after {time.monotonic() - self.started:.0f} s: {self._time_limit_rule}"

    def progress(self, fraction: float, message: str = "", *, force: bool = False) -> None:
        """Record ``fraction`` (0..1) done (at most every :data:`PROGRESS_EVERY_S` unless
        ``force``). Raises :class:`~slidelabel.errors.JobCancelled` when the job was cancelled
        or ran past its time limit: call it often (per tile, per slide) so that either stops
        the job within seconds."""
        if self.over_time():
            raise JobCancelled(self.over_time_message(), time_limit_s=self.time_limit_s)
        now = time.monotonic()
        if not force and now - self._last_write < PROGRESS_EVERY_S:
            return
        self._last_write = now
        with self.database.session(write=True) as session:
            job = session.get(Job, self.job_id)
            if job is None:
                raise JobCancelled(GONE)
            if job.state == JobState.cancelled:
                raise JobCancelled()
            job.progress = min(max(float(fraction), 0.0), 1.0)
            job.heartbeat_at = datetime.now(UTC)
            if message:
                job.message = bounded(message, MESSAGE_CHARS)

    def log(self, line: str) -> None:
        """Add ``line`` to the job's log (nothing once the job's row is gone)."""
        with self.database.session(write=True) as session:
            job = session.get(Job, self.job_id)
            if job is None:
                return
            job.log = f"{job.log}{datetime.now(UTC):%Y-%m-%d %H:%M:%S} {bounded(line, LOG_LINE_CHARS)}\n"


_TRACEBACK = "Traceback (most recent call last):"
_INTERNAL = "internal error"


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
    message = _INTERNAL + "; the admin can see the details" if job.message.startswith(_INTERNAL) else job.message
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
    :meth:`JobContext.progress`). Only who started it and the
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
            needed = " or ".join(sorted(r.value for r in ALLOWED[action]))
            raise PermissionDeniedError(f"{job.kind} jobs are started, and retried, by the role {needed}; you are "
                                        f"{role.value} in this project: ask an owner")
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


def _claim(database: Database, job_id: int, stale_s: float) -> Job | None:
    """Mark the job running; None when there is nothing to run: unknown, cancelled, finished, or
    running elsewhere with a live heartbeat (a message redelivered after its process died waits
    for :func:`requeue_stale`, so one job never runs twice at once)."""
    with database.session(write=True) as session:
        job = session.get(Job, job_id)
        if job is None or job.state in (JobState.cancelled, JobState.done, JobState.failed):
            return None
        if job.state == JobState.running and job.heartbeat_at is not None:
            beat = job.heartbeat_at if job.heartbeat_at.tzinfo else job.heartbeat_at.replace(tzinfo=UTC)
            if beat > datetime.now(UTC) - timedelta(seconds=stale_s):
                return None
        job.state, job.attempts = JobState.running, job.attempts + 1
        job.heartbeat_at = job.started_at = datetime.now(UTC)
        return job


def _finish(database: Database, job_id: int, state: JobState, message: str, log: str = "") -> None:
    with database.session(write=True) as session:
        job = session.get(Job, job_id)
        if job is None or (job.state == JobState.cancelled and state != JobState.cancelled):
            return
        job.state, job.message = state, bounded(message, MESSAGE_CHARS)
        if state == JobState.done:
            job.progress = 1.0
        if log:
            job.log += bounded(log, TRACEBACK_CHARS)


def _wait(database: Database, job_id: int, message: str) -> None:
    """Leave a running job running with no heartbeat (see :data:`WAITING`)."""
    with database.session(write=True) as session:
        session.execute(update(Job).where(Job.id == job_id, Job.state == JobState.running)
                        .values(message=bounded(message, MESSAGE_CHARS), heartbeat_at=None)
                        .execution_options(synchronize_session=False))


def _process_ended(database: Database, job_id: int) -> None:
    """Clear the heartbeat of the job unless it is still queued or running: no process runs it
    (:func:`still_stopping`)."""
    with database.session(write=True) as session:
        session.execute(update(Job).where(Job.id == job_id, Job.state.not_in([JobState.queued, JobState.running]))
                        .values(heartbeat_at=None).execution_options(synchronize_session=False))


def _row_gone(database: Database, job_id: int) -> bool:
    with database.session() as session:
        return session.get(Job, job_id) is None


def _ended(database: Database, job_id: int) -> None:
    """Call the ``on_end`` of the job's kind, if it has one (none when the job's row is gone)."""
    with database.session() as session:
        kind = session.scalar(select(Job.kind).where(Job.id == job_id))
    on_end = getattr(JOB_KINDS.get(kind, None), "on_end", None)
    if on_end is not None:
        on_end(database, job_id)


def _beat(database: Database, context: JobContext, stop: threading.Event, kill: Callable[[], None] | None) -> None:
    """Beat the job's heartbeat every :data:`HEARTBEAT_S` until ``stop``; with ``kill``, look at
    the job every :data:`PROGRESS_EVERY_S` and call ``kill`` once it was cancelled or ran past its
    time limit :data:`STOP_GRACE_S` ago and is still running (it reports no progress), after
    recording why in the job. A job whose row is gone (deleted with its project or slide) is
    stopped as a cancelled one. The heartbeat beats on after a Cancel until the process ends, so
    that a delete knows to wait for it (:func:`still_stopping`). A look that fails (the database
    busy past its wait, a dropped connection) is tried again at the next one: the thread that
    stops the job must not die."""
    state = _BeatState(cancelled_at=None, beaten=time.monotonic())
    while not stop.wait(PROGRESS_EVERY_S if kill is not None else HEARTBEAT_S):
        try:
            if _look(database, context, stop, kill, state):
                return
        except Exception:  # noqa: BLE001 - logged; the next look tries again
            logger.warning("job %s: its heartbeat could not be written; trying again", context.job_id, exc_info=True)


@dataclass
class _BeatState:
    cancelled_at: float | None
    beaten: float


def _look(database: Database, context: JobContext, stop: threading.Event, kill: Callable[[], None] | None,
          state: _BeatState) -> bool:
    """One heartbeat and look of :func:`_beat`; True once the job's process was killed."""
    now = time.monotonic()
    if now - state.beaten >= HEARTBEAT_S or kill is None:
        with database.session(write=True) as session:
            session.execute(update(Job).where(Job.id == context.job_id,
                                              Job.state.in_([JobState.running, JobState.cancelled]))
                            .values(heartbeat_at=datetime.now(UTC)).execution_options(synchronize_session=False))
        state.beaten = now
    if kill is None:
        return False
    with database.session() as session:
        job_state = session.scalar(select(Job.state).where(Job.id == context.job_id))
    cancelled = job_state is None or job_state == JobState.cancelled
    state.cancelled_at = (state.cancelled_at or now) if cancelled else None
    if state.cancelled_at is not None and now - state.cancelled_at > STOP_GRACE_S and not stop.is_set():
        if job_state is None:
            logger.info("job %s: %s; killed its process (no progress report within %g s)", context.job_id, GONE,
                        STOP_GRACE_S)
        else:
            context.log(f"killed its process: no progress report within {STOP_GRACE_S:g} s after it was cancelled")
        _ended(database, context.job_id)
        _process_ended(database, context.job_id)  # the process ends next: a delete need wait no longer
        kill()
        return True
    if now - context.started > context.time_limit_s + STOP_GRACE_S and not stop.is_set():
        if fail_running(database, context.job_id, context.over_time_message()):
            context.log("killed its process: no progress report past its time limit")
            kill()
        return True
    return False


def run(database: Database, settings: Settings, job_id: int, *, worker: str | None = None,
        sender: Sender | None = None, kill: Callable[[], None] | None = None, stepped_back: int = 0) -> None:
    """Run a job in this process (the worker's side; ``worker``, its name, goes in the job's log;
    ``sender`` sends the jobs it submits, and the job's own message again when it
    :func:`steps_back`, at most :data:`MAX_STEPS_BACK` times: ``stepped_back`` so far). A
    cancelled job ends cancelled; one past
    its time limit fails saying so (also when Celery's soft limit interrupted it); errors a user
    caused fail the job with their message; anything else fails it with the traceback in its log.
    ``kill`` ends this process: called when a cancelled or overlong job does not stop at a
    progress report within :data:`STOP_GRACE_S` (None: such a job runs on to its end). A job
    whose row went with its project or slide ends as a cancelled one, with a line in the worker's
    log and no traceback. Its heartbeat is cleared last: a delete waits for that
    (:func:`still_stopping`)."""
    if sender is not None and stepped_back < MAX_STEPS_BACK and steps_back(database, job_id):
        dispatch(database, sender, job_id, steps_back=stepped_back + 1)
        return
    job = _claim(database, job_id, settings.job_stale_seconds)
    if job is None:
        return
    kind = JOB_KINDS[job.kind]
    context = JobContext(database, settings, job, queue=kind.queue, sender=sender)
    if worker:
        context.log(f"attempt {job.attempts} on worker {worker}")
    stop = threading.Event()
    heart = threading.Thread(target=_beat, args=(database, context, stop, kill), daemon=True)
    heart.start()
    waiting, gone = None, ""
    try:
        result = kind.function(context) or {}
        if result.get(WAITING):
            waiting = result.get("message", "waiting")
        else:
            _finish(database, job_id, JobState.done, result.get("message", "done"))
    except JobCancelled as error:
        _finish(database, job_id, JobState.cancelled if error.time_limit_s is None else JobState.failed, str(error))
    except SlidelabelError as error:
        _finish(database, job_id, JobState.failed, str(error))
    except Exception as error:
        if context.over_time():  # Celery's soft limit, where the job reported no progress
            _finish(database, job_id, JobState.failed, context.over_time_message())
        elif _row_gone(database, job_id):  # its files went from under it: no bug, and no row to record in
            gone = f" ({type(error).__name__}: {error})"
        else:
            logger.exception("job %s (%s) failed", job_id, job.kind)
            _finish(database, job_id, JobState.failed, f"{_INTERNAL}: {error}", traceback.format_exc())
    finally:
        stop.set()
        heart.join()
    if waiting is not None:  # after the last heartbeat, so that none follows the NULL
        _wait(database, job_id, waiting)
    try:
        if _row_gone(database, job_id):
            logger.info("job %s (%s) stopped: %s%s", job_id, job.kind, GONE, gone)
        elif kind.on_end is not None:
            kind.on_end(database, job_id)
    finally:
        _process_ended(database, job_id)  # last: a delete waits for a cancelled job's process until here


def fail_running(database: Database, job_id: int, message: str) -> bool:
    """Fail the job if it is still running (a worker process killed by Celery's hard time limit
    cannot say so itself); True when it was."""
    with database.session(write=True) as session:
        failed = bool(session.execute(
            update(Job).where(Job.id == job_id, Job.state == JobState.running)
            .values(state=JobState.failed, message=bounded(message, MESSAGE_CHARS), heartbeat_at=None)
            .execution_options(synchronize_session=False)).rowcount)
    if failed:
        _ended(database, job_id)
    return failed


def redispatch_queued(database: Database, sender: Sender) -> list[int]:
    """Send again the message of every queued job; their ids. A worker calls it when it starts: a
    message that a killed worker had taken but not yet run is gone from the broker, and its job
    would wait forever (a retrain, which returns the project's queued epoch, with it). A job whose
    first message is still queued runs once all the same: the later message finds it claimed."""
    with database.session() as session:
        queued = list(session.scalars(select(Job.id).where(Job.state == JobState.queued).order_by(Job.id)))
    for job_id in queued:
        dispatch(database, sender, job_id)
    return queued


def requeue_stale(database: Database, sender: Sender, *, stale_s: float) -> list[int]:
    """Requeue running jobs whose worker stopped beating; give up after :data:`MAX_ATTEMPTS`.

    Safe to call from several workers at once: a job is taken by one conditional update.
    """
    cutoff = datetime.now(UTC) - timedelta(seconds=stale_s)
    with database.session() as session:
        stale = session.execute(select(Job.id, Job.attempts).where(Job.state == JobState.running,
                                                                   Job.heartbeat_at < cutoff)).all()
    requeued = []
    for job_id, attempts in stale:
        give_up = attempts >= MAX_ATTEMPTS
        with database.session(write=True) as session:
            taken = session.execute(
                update(Job).where(Job.id == job_id, Job.state == JobState.running, Job.heartbeat_at < cutoff)
                .values(state=JobState.failed if give_up else JobState.queued,
                        message=f"its worker died {attempts} times" if give_up else "requeued: its worker died",
                        heartbeat_at=None)
                .execution_options(synchronize_session=False)
            ).rowcount
        if taken and give_up:
            _ended(database, job_id)
        elif taken:
            dispatch(database, sender, job_id)
            requeued.append(job_id)
    return requeued
