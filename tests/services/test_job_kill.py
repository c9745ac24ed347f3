"""A job that reports no progress (one long computation between reports) is still stopped: once
cancelled, or once past its kind's time limit, it gets a short grace to stop at a progress report,
then its worker process is killed (Celery's prefork pool starts a new one) instead of keeping the
only slide worker busy until Celery's hard limit, hours later."""

from __future__ import annotations

import threading
import time

import pytest

from slidelabel.services import jobs
from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.models import Job, JobState

from test_jobs import Recorder, database  # noqa: F401  (database is a fixture)


@pytest.fixture
def silent(monkeypatch):
    """A job kind ``silent`` that computes without a progress report until its process is
    "killed" (the event), as one 8192 px superpixel tile or one model fit does; fast beats."""
    killed = threading.Event()

    def silent_job(context: jobs.JobContext) -> dict:
        context.progress(0.1, "started", force=True)
        deadline = time.monotonic() + 5
        while not killed.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        if killed.is_set():  # a killed process runs nothing more; the thread stands in for it
            raise SystemExit
        return {"message": "finished the long computation"}

    monkeypatch.setitem(jobs.JOB_KINDS, "silent", jobs.JobKind("silent", silent_job, jobs.SLIDE_QUEUE))
    monkeypatch.setattr(jobs, "JOB_MODULES", ())
    monkeypatch.setattr(jobs, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(jobs, "STOP_GRACE_S", 0.3, raising=False)
    return killed


def _run_in_thread(database: Database, settings: Settings, job_id: int, killed: threading.Event) -> threading.Thread:
    def run() -> None:
        try:
            jobs.run(database, settings, job_id, kill=killed.set)
        except SystemExit:
            pass

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def _wait_running(database: Database, job_id: int) -> None:
    """Until the job has made its first progress report (a Cancel before it stops the job there)."""
    for _ in range(500):
        with database.session() as session:
            job = session.get(Job, job_id)
            if job.state == JobState.running and job.progress > 0:
                return
        time.sleep(0.01)
    raise AssertionError("the job did not start")


def test_a_cancelled_job_that_reports_nothing_is_killed(database, silent, tmp_path):
    job = jobs.submit(database, Recorder(), project_id=1, kind="silent", key="cancel")
    thread = _run_in_thread(database, Settings(data_dir=tmp_path), job.id, silent)
    _wait_running(database, job.id)
    jobs.cancel(database, 1, job.id, user_id=1, is_owner=True)
    thread.join(timeout=90)
    assert silent.is_set(), "the cancelled job ran its computation to the end"
    with database.session() as session:
        stopped = session.get(Job, job.id)
    assert stopped.state == JobState.cancelled
    assert "killed" in stopped.log and "after it was cancelled" in stopped.log


def test_a_job_past_its_time_limit_that_reports_nothing_is_failed_and_killed(database, silent, tmp_path):
    job = jobs.submit(database, Recorder(), project_id=1, kind="silent", key="limit")
    thread = _run_in_thread(database, Settings(data_dir=tmp_path, job_time_limit_slide_s=0.2), job.id, silent)
    thread.join(timeout=90)
    assert silent.is_set(), "the job ran past its time limit to the end"
    with database.session() as session:
        stopped = session.get(Job, job.id)
    assert stopped.state == JobState.failed, stopped.message
    assert stopped.message.startswith("stopped after ") and "(SLIDELABEL_JOB_TIME_LIMIT_SLIDE_S)" in stopped.message


def test_a_job_that_stops_at_its_progress_report_is_not_killed(database, monkeypatch, tmp_path):
    killed = threading.Event()

    def reporting(context: jobs.JobContext) -> dict:
        for step in range(600):
            context.progress(step / 600, force=True)
            time.sleep(0.05)
        return {}

    monkeypatch.setitem(jobs.JOB_KINDS, "reporting", jobs.JobKind("reporting", reporting, jobs.SLIDE_QUEUE))
    monkeypatch.setattr(jobs, "JOB_MODULES", ())
    monkeypatch.setattr(jobs, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(jobs, "STOP_GRACE_S", 5.0, raising=False)
    job = jobs.submit(database, Recorder(), project_id=1, kind="reporting", key="polite")
    thread = _run_in_thread(database, Settings(data_dir=tmp_path), job.id, killed)
    _wait_running(database, job.id)
    jobs.cancel(database, 1, job.id, user_id=1, is_owner=True)
    thread.join(timeout=90)
    assert not killed.is_set()
    with database.session() as session:
        assert session.get(Job, job.id).state == JobState.cancelled


def test_a_heartbeat_that_fails_once_goes_on_and_still_kills_a_cancelled_job(database, silent, tmp_path, monkeypatch):
    """Sixth attack: the heartbeat thread died at its first "database is locked" (a write held the
    SQLite lock past its wait), so the job was requeued as dead while it ran and could no longer be
    cancelled nor stopped at its time limit."""
    from slidelabel.errors import BusyError

    failures = []
    session = database.session

    def busy_once(*args, write: bool = False, **kwargs):
        if write and threading.current_thread().name == "heart" and not failures:
            failures.append(True)
            raise BusyError("the database stayed busy for 60 s; try again")
        return session(*args, write=write, **kwargs)

    monkeypatch.setattr(database, "session", busy_once)
    real_thread = threading.Thread

    def named(*args, target=None, **kwargs):
        thread = real_thread(*args, target=target, **kwargs)
        if target is jobs._beat:
            thread.name = "heart"
        return thread

    monkeypatch.setattr(jobs.threading, "Thread", named)
    job = jobs.submit(database, Recorder(), project_id=1, kind="silent", key="busy-heart")
    thread = _run_in_thread(database, Settings(data_dir=tmp_path), job.id, silent)
    _wait_running(database, job.id)
    jobs.cancel(database, 1, job.id, user_id=1, is_owner=True)
    thread.join(timeout=90)
    assert failures, "the heartbeat never met the busy database"
    assert silent.is_set(), "the heartbeat thread died at the busy database: the cancelled job ran to its end"
