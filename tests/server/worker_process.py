"""A real ``slidelabel worker`` in its own process group, for tests that run jobs through Celery."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from slidelabel.cli.serve import GRACEFUL_SHUTDOWN_S
from slidelabel.cli.server_options import settings_environment
from slidelabel.settings import Settings
from slidelabel.store.models import Job, JobState


def start_worker(settings: Settings, *args: str) -> subprocess.Popen:
    """``slidelabel worker`` with ``settings`` and the extra options ``args`` (``--hostname``, ...)."""
    env = {**os.environ, **settings_environment(settings)}
    return subprocess.Popen([sys.executable, "-m", "slidelabel.cli.main", "worker", "--loglevel", "warning", "--quiet",
                             *args],
                            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop(worker: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """``sig`` to the worker's process group, then SIGKILL after the grace ``slidelabel serve``
    gives its embedded workers (a worker of the embedded broker that has run a job does not finish
    its warm shutdown: billiard's task handler waits for its pool's queue lock)."""
    try:
        os.killpg(worker.pid, sig)
    except ProcessLookupError:
        return
    try:
        worker.wait(timeout=GRACEFUL_SHUTDOWN_S)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def wait_for(database, job_id: int, states: set[JobState], timeout: float) -> Job:
    """The job once it reaches one of ``states``; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with database.session() as session:
            job = session.get(Job, job_id)
            if job.state in states:
                return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} is {job.state} ({job.message}) after {timeout} s, expected {states}")
