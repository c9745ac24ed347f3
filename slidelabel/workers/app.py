"""The Celery application, configured from :class:`slidelabel.settings.Settings`.

``celery -A slidelabel.workers.app worker`` and ``slidelabel worker`` use :data:`app`, built from
the environment (``SLIDELABEL_BROKER``, ``SLIDELABEL_DB``, ``SLIDELABEL_DATA_DIR``); the API builds
its own with :func:`make_celery` for sending. Results live in slidelabel's ``jobs`` table, not in
a Celery result backend.
"""

from __future__ import annotations

import gc
import time

from celery import Celery
from sqlalchemy.exc import IntegrityError, OperationalError

from slidelabel.services.job_runs import celery_time_limits
from slidelabel.services.jobs import JOB_KINDS, QUEUES, SLIDE_QUEUE
from slidelabel.settings import Settings


def make_celery(settings: Settings) -> Celery:
    """A Celery app on ``settings.broker_url`` with slidelabel's delivery guarantees."""
    celery = Celery("slidelabel", broker=settings.broker_url, include=["slidelabel.workers.tasks"])
    soft_limit_s, hard_limit_s = celery_time_limits(settings)
    celery.conf.update(
        task_ignore_result=True,
        # Acknowledge after the job, and requeue when the process running it dies, so a crash
        # never loses a job; job functions are idempotent, so a second run is harmless.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # A pool process killed on purpose (a job that would not stop, services/jobs.STOP_GRACE_S)
        # is replaced after this wait (s) for a result it might have sent: results are not kept,
        # so Celery's 10 s default only keeps the next job waiting.
        worker_lost_wait=0.1,
        task_default_queue=SLIDE_QUEUE,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        # A backstop behind the jobs' own time limits, for a job stuck where it reports nothing:
        # the soft limit raises inside it, the hard one kills its process.
        task_soft_time_limit=soft_limit_s,
        task_time_limit=hard_limit_s,
        # Memory a job leaves behind (caches, a fragmented heap) goes back with its process.
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024 or None,
        # The filesystem transport (tests, shared folders) needs its folders.
        broker_transport_options=_transport_options(settings),
    )
    celery.conf.slidelabel_settings = settings
    return celery


def run_worker(settings: Settings, queues: str, concurrency: int = 1, hostname: str | None = None,
               loglevel: str = "info", quiet: bool = False) -> None:
    """Run a prefork Celery worker for ``queues`` (comma-separated) until it is stopped."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    celery = make_celery(settings)
    declare_queues(celery)
    celery.worker_main([
        *(["--quiet"] if quiet else []), "worker", "--queues", queues, "--concurrency", str(concurrency),
        "--loglevel", loglevel, "--pool", "prefork", "--without-gossip", "--without-mingle",
        *(["--hostname", hostname] if hostname else [])])


def declare_queues(celery: Celery, attempts: int = 3) -> None:
    """Create the job queues in a SQLAlchemy broker (the embedded one) before messages flow.

    kombu's SQLAlchemy transport creates its tables when a process first connects and a queue's
    row when a message first names it; two processes doing either at once (a fresh data folder's
    first job while its worker starts) both create, and the loser's error is not caught there (its
    session is left unusable). Here the loser retries on a fresh connection, which finds what the
    winner made. Other brokers declare queues themselves: nothing to do."""
    if not celery.conf.broker_url.startswith("sqla+"):
        return
    for attempt in range(attempts):
        try:
            with celery.connection_for_write() as connection:
                for queue in QUEUES:
                    connection.default_channel.queue_declare(queue=queue)
            return
        except (IntegrityError, OperationalError):  # OperationalError: "table ... already exists"
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


def preload_jobs() -> None:
    """Import every job module now, then freeze the collector's view of the objects made so far:
    processes forked afterwards (pool processes, embedded workers) start with the modules and
    keep sharing their pages instead of each importing, and copying, its own."""
    JOB_KINDS.names()
    gc.freeze()


def _transport_options(settings: Settings) -> dict:
    if not settings.broker_url.startswith("filesystem://"):
        return {}
    folder = settings.data_dir / "broker"
    for sub in ("out", "processed"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return {"data_folder_in": str(folder / "out"), "data_folder_out": str(folder / "out"),
            "processed_folder": str(folder / "processed"), "store_processed": False}


def __getattr__(name: str) -> Celery:
    """:data:`app` for ``celery -A slidelabel.workers.app``, built from the environment when first
    asked for, not at import: ``slidelabel serve`` imports this module before it has put its
    command line's settings into the environment (the environment's settings alone may not hold)."""
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()["app"] = built = make_celery(Settings())
    return built
