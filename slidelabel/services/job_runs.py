"""Running a job: the worker's side of :mod:`~slidelabel.services.jobs`.

:func:`run` claims a job's row, runs its kind's function with a :class:`JobContext` (progress,
log, cancellation, time limit) while a heartbeat thread beats and watches for a Cancel, records
how it ended, and calls its kind's ``on_end``. A worker calls :func:`redispatch_queued` when it
starts and :func:`requeue_stale` now and then, and :func:`fail_running` when Celery's hard time
limit killed a job's process. The rules these keep are in :mod:`~slidelabel.services.jobs`.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from slidelabel.errors import JobCancelled, SlidelabelError
from slidelabel.services import jobs
from slidelabel.services.jobs import (
    EPOCH_QUEUE,
    GONE,
    INTERNAL_ERROR,
    JOB_KINDS,
    LOG_LINE_CHARS,
    MAX_STEPS_BACK,
    MESSAGE_CHARS,
    SLIDE_QUEUE,
    TRACEBACK_CHARS,
    WAITING,
    Sender,
    bounded,
    dispatch,
    steps_back,
)
from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.models import Job, JobState

logger = logging.getLogger(__name__)

#: Seconds between heartbeats of a running job; ``Settings.job_stale_seconds`` must be larger.
HEARTBEAT_S = 2.0
#: Progress is written at most this often (s), so that fine-grained reports cost no database load.
PROGRESS_EVERY_S = 0.5
#: Times a job is run before a worker that died under it fails it.
MAX_ATTEMPTS = 3
#: The time limit of each queue's jobs: (what the jobs are called, the Settings field).
TIME_LIMITS = {SLIDE_QUEUE: ("slide", "job_time_limit_slide_s"), EPOCH_QUEUE: ("epoch", "job_time_limit_epoch_s")}
#: Seconds past the longest time limit before Celery's soft limit interrupts a job that reports
#: no progress, and again before its hard limit kills the worker process running it.
HARD_LIMIT_GRACE_S = 60.0
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
    """Leave a running job running with no heartbeat (see ``jobs.WAITING``)."""
    with database.session(write=True) as session:
        session.execute(update(Job).where(Job.id == job_id, Job.state == JobState.running)
                        .values(message=bounded(message, MESSAGE_CHARS), heartbeat_at=None)
                        .execution_options(synchronize_session=False))


def _process_ended(database: Database, job_id: int) -> None:
    """Clear the heartbeat of the job unless it is still queued or running: no process runs it
    (``jobs.still_stopping``)."""
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
    time limit ``jobs.STOP_GRACE_S`` ago and is still running (it reports no progress), after
    recording why in the job. A job whose row is gone (deleted with its project or slide) is
    stopped as a cancelled one. The heartbeat beats on after a Cancel until the process ends, so
    that a delete knows to wait for it (``jobs.still_stopping``). A look that fails (the database
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
    if state.cancelled_at is not None and now - state.cancelled_at > jobs.STOP_GRACE_S and not stop.is_set():
        if job_state is None:
            logger.info("job %s: %s; killed its process (no progress report within %g s)", context.job_id, GONE,
                        jobs.STOP_GRACE_S)
        else:
            context.log(f"killed its process: no progress report within {jobs.STOP_GRACE_S:g} s after it was cancelled")
        _ended(database, context.job_id)
        _process_ended(database, context.job_id)  # the process ends next: a delete need wait no longer
        kill()
        return True
    if now - context.started > context.time_limit_s + jobs.STOP_GRACE_S and not stop.is_set():
        if fail_running(database, context.job_id, context.over_time_message()):
            context.log("killed its process: no progress report past its time limit")
            kill()
        return True
    return False


def run(database: Database, settings: Settings, job_id: int, *, worker: str | None = None,
        sender: Sender | None = None, kill: Callable[[], None] | None = None, stepped_back: int = 0) -> None:
    """Run a job in this process (the worker's side; ``worker``, its name, goes in the job's log;
    ``sender`` sends the jobs it submits, and the job's own message again when it steps back for
    another user's waiting job (``jobs.steps_back``), at most ``jobs.MAX_STEPS_BACK`` times:
    ``stepped_back`` so far). A cancelled job ends cancelled; one past its time limit fails saying
    so (also when Celery's soft limit interrupted it); errors a user caused fail the job with their
    message; anything else fails it with the traceback in its log. ``kill`` ends this process:
    called when a cancelled or overlong job does not stop at a progress report within
    ``jobs.STOP_GRACE_S`` (None: such a job runs on to its end). A job whose row went with its
    project or slide ends as a cancelled one, with a line in the worker's log and no traceback. Its
    heartbeat is cleared last: a delete waits for that (``jobs.still_stopping``)."""
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
            _finish(database, job_id, JobState.failed, f"{INTERNAL_ERROR}: {error}", traceback.format_exc())
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
