"""The one Celery task: run a slidelabel job by id. The work lives in
:mod:`slidelabel.services.job_runs` and the job kinds :mod:`slidelabel.services.jobs` registers;
this module only connects it to Celery, and keeps every worker watching for jobs whose worker died."""

from __future__ import annotations

import logging
import os
import signal
import threading

from billiard.exceptions import WorkerLostError
from billiard.process import current_process
from celery import shared_task
from celery.exceptions import TimeLimitExceeded
from celery.signals import task_failure, worker_init, worker_process_init, worker_ready, worker_shutdown

from slidelabel.services import job_runs, jobs
from slidelabel.settings import Settings
from slidelabel.store.database import Database

logger = logging.getLogger(__name__)
_stop_watching = threading.Event()


_DATABASES: dict[str, Database] = {}


def _database(url: str) -> Database:
    """One engine per worker process and database."""
    if url not in _DATABASES:
        _DATABASES[url] = Database(url)
    return _DATABASES[url]


@worker_process_init.connect
def _forget_inherited_connections(**_kwargs) -> None:
    """In a new pool process: drop the engines it inherited from the worker's main process (the
    stale-job watch's, when the pool process replaces one after the worker started) without
    closing their connections, whose sockets the main process still uses; a PostgreSQL connection
    used from both sides of a fork fails ("error with status PGRES_TUPLES_OK")."""
    for database in _DATABASES.values():
        database.engine.dispose(close=False)
    _DATABASES.clear()


def _settings(task) -> Settings:
    return getattr(task.app.conf, "slidelabel_settings", None) or Settings()


def _kill_pool_process() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@shared_task(name=jobs.TASK_NAME, bind=True)
def run_job(self, job_id: int, stepped_back: int = 0) -> None:
    settings = _settings(self)
    # A job that will not stop may be killed only in a prefork pool's (daemonic) child: the pool
    # replaces it and the message goes back to the queue, where its job is no longer run. Killing a
    # solo or threaded worker would end the worker itself.
    kill = _kill_pool_process if current_process().daemon else None
    job_runs.run(_database(settings.database_url), settings, job_id, worker=self.request.hostname,
             sender=self.app, kill=kill, stepped_back=stepped_back)


@task_failure.connect
def _record_hard_time_limit(sender=None, exception=None, args=None, **_kwargs) -> None:
    """Celery's hard time limit killed the process running a job (which then cannot record
    anything): fail the job, saying which limit stopped it."""
    if getattr(sender, "name", None) != jobs.TASK_NAME or not isinstance(exception, TimeLimitExceeded) or not args:
        return
    settings = _settings(run_job)
    hard_limit_s = job_runs.celery_time_limits(settings)[1]
    variables = ", ".join(f"SLIDELABEL_{field.upper()}" for _name, field in jobs.TIME_LIMITS.values())
    job_runs.fail_running(_database(settings.database_url), int(args[0]),
                      f"stopped after {hard_limit_s:g} s by the worker's hard time limit (it reported no progress "
                      f"past its own time limit); see {variables}")


def _watch(sender_app) -> None:
    settings = _settings(run_job)
    # Three looks per stale period: a dead worker's job waits at most 4/3 of the period.
    while not _stop_watching.wait(settings.job_stale_seconds / 3):
        try:
            requeued = job_runs.requeue_stale(_database(settings.database_url), sender_app,
                                          stale_s=settings.job_stale_seconds)
            if requeued:
                logger.warning("requeued jobs %s whose worker died", requeued)
        except Exception:  # a database hiccup must not end the watch
            logger.exception("looking for stale jobs failed")


class OneLineWorkerLost(logging.Filter):
    """Celery logs a pool process that was killed (by its job's heartbeat, a cancelled job's that
    reported nothing for ``services/jobs.STOP_GRACE_S``; or by the kernel) with the traceback of
    its own bookkeeping, 12 lines that say nothing more than their first: that line only."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(getattr(error, "exc", error), WorkerLostError):
            record.exc_info = record.exc_text = None
        return True


@worker_init.connect
def _one_line_for_killed_processes(**_kwargs) -> None:
    logging.getLogger("celery.worker.request").addFilter(OneLineWorkerLost())


@worker_init.connect
def _preload_jobs(**_kwargs) -> None:
    """Before the pool forks: import the job modules once, in the worker's main process, so that
    every pool process starts with them (no import at its first job, nor in a process that
    replaces one) and shares their memory with the others."""
    from slidelabel.workers.app import preload_jobs

    preload_jobs()


@worker_ready.connect
def _start_watch(sender, **_kwargs) -> None:
    from slidelabel.services.slide_jobs import sweep_unfinished_outputs

    settings = _settings(run_job)
    removed = sweep_unfinished_outputs(_database(settings.database_url), settings.data_dir)
    if removed:
        logger.warning("removed %d unfinished outputs (scratch files, window caches, feature arrays) left by "
                       "killed jobs", len(removed))
    job_runs.redispatch_queued(_database(settings.database_url), sender.app)
    threading.Thread(target=_watch, args=(sender.app,), daemon=True, name="slidelabel-stale-jobs").start()


@worker_shutdown.connect
def _stop_watch(**_kwargs) -> None:
    _stop_watching.set()
