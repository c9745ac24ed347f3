"""A job that reports no progress (one long computation between reports) is still stopped: once
cancelled, or once past its kind's time limit, it gets a short grace to stop at a progress report,
then its worker process is killed (Celery's prefork pool starts a new one) instead of keeping the
only slide worker busy until Celery's hard limit, hours later."""

from __future__ import annotations

import threading
import time

import pytest

from slidelabel.services import job_runs, jobs
from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.models import Job, JobState

from test_jobs import Recorder, database  # noqa: F401  (database is a fixture)


@pytest.fixture
def silent(monkeypatch):
    """A job kind ``silent`` that computes without a progress report until its process is
    "killed" (the event), as one 8192 px superpixel tile or one model fit does; fast beats."""
    killed = threading.Event()

    def silent_job(context: job_runs.JobContext) -> dict:
        context.progress(0.1, "started", force=True)
        deadline = time.monotonic() + 5
        while not killed.is_set() and time.monotonic() < deadline:
            time.sleep(0.02)
        if killed.is_set():  # a killed process runs nothing more; the thread stands in for it
            raise SystemExit
        return {"message": "finished the long computation"}

    monkeypatch.setitem(jobs.JOB_KINDS, "silent", jobs.JobKind("silent", silent_job, jobs.SLIDE_QUEUE))
    monkeypatch.setattr(jobs, "JOB_MODULES", ())
    monkeypatch.setattr(job_runs, "HEARTBEAT_S", 0.05)
    monkeypatch.setattr(jobs, "STOP_GRACE_S", 0.3, raising=False)
    return killed


def _run_in_thread(database: Database, settings: Settings, job_id: int, killed: threading.Event) -> threading.Thread:
    def run() -> None:
        try:
            job_runs.run(database, settings, job_id, kill=killed.set)
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

    def reporting(context: job_runs.JobContext) -> dict:
        for step in range(600):
            context.progress(step / 600, force=True)
            time.sleep(0.05)
        return {}

    monkeypatch.setitem(jobs.JOB_KINDS, "reporting", jobs.JobKind("reporting", reporting, jobs.SLIDE_QUEUE))
    monkeypatch.setattr(jobs, "JOB_MODULES", ())
    monkeypatch.setattr(job_runs, "HEARTBEAT_S", 0.05)
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
        if target is job_runs._beat:
            thread.name = "heart"
        return thread

    monkeypatch.setattr(job_runs.threading, "Thread", named)
    job = jobs.submit(database, Recorder(), project_id=1, kind="silent", key="busy-heart")
    thread = _run_in_thread(database, Settings(data_dir=tmp_path), job.id, silent)
    _wait_running(database, job.id)
    jobs.cancel(database, 1, job.id, user_id=1, is_owner=True)
    thread.join(timeout=90)
    assert failures, "the heartbeat never met the busy database"
    assert silent.is_set(), "the heartbeat thread died at the busy database: the cancelled job ran to its end"


# Sixteenth attack: Cancel then Delete at once. The job's row went with its project, so the heartbeat
# found no row (not "cancelled") and the job computed on for minutes that nobody could stop (the
# worker's only slide process, 915 MB, still busy 150 s later); and a cancelled job still writing
# its last tile put its files back into the deleted project's folder (5 runs of 5).


def _job_row_deleted(database: Database, job_id: int) -> None:
    from sqlalchemy import delete

    with database.session(write=True) as session:
        session.execute(delete(Job).where(Job.id == job_id))


def test_a_job_whose_row_went_with_its_project_is_killed_quietly(database, silent, tmp_path, caplog):
    job = jobs.submit(database, Recorder(), project_id=1, kind="silent", key="orphan")
    thread = _run_in_thread(database, Settings(data_dir=tmp_path), job.id, silent)
    _wait_running(database, job.id)
    gone = time.monotonic()
    _job_row_deleted(database, job.id)
    thread.join(timeout=90)
    assert silent.is_set(), "the job whose row was deleted ran its computation to the end"
    assert time.monotonic() - gone < jobs.STOP_GRACE_S + 2
    assert not [record for record in caplog.records if record.levelno >= 40], caplog.text


def test_cancel_then_delete_the_project_at_once_stops_the_job_before_the_delete(database, silent, tmp_path):
    from slidelabel.services.projects import delete_project

    job = jobs.submit(database, Recorder(), project_id=1, kind="silent", key="cancel-delete")
    thread = _run_in_thread(database, Settings(data_dir=tmp_path), job.id, silent)
    _wait_running(database, job.id)
    jobs.cancel(database, 1, job.id, user_id=1, is_owner=True)
    asked = time.monotonic()
    delete_project(database, Settings(data_dir=tmp_path), project_id=1)
    assert silent.is_set(), "the project was deleted while its cancelled job still computed"
    assert time.monotonic() - asked < jobs.STOP_WAIT_S
    thread.join(timeout=90)


@pytest.fixture
def late_writer(monkeypatch):
    """A job kind ``late_writer`` that, once cancelled, finishes its tile for a while without a
    progress report, puts its output into the slide's folder (made again if missing, as the
    superpixel writers do) and only then reports progress; its process is never killed. The
    test sets the event once it cancelled."""
    from slidelabel.store.layout import ProjectFiles

    cancelled = threading.Event()

    def late_writer(context: job_runs.JobContext) -> dict:
        context.progress(0.1, "started", force=True)
        cancelled.wait(timeout=60)
        time.sleep(0.6)  # the last tile
        output = ProjectFiles(context.settings.data_dir, context.project_id).superpixels(1) / "superpixels.parquet"
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_bytes(b"written after the cancel")
        context.progress(0.9, force=True)
        return {}

    monkeypatch.setitem(jobs.JOB_KINDS, "late_writer", jobs.JobKind("late_writer", late_writer, jobs.SLIDE_QUEUE))
    monkeypatch.setattr(jobs, "JOB_MODULES", ())
    monkeypatch.setattr(job_runs, "HEARTBEAT_S", 0.05)
    return cancelled


def _cancelled_as_it_writes(database: Database, settings: Settings, late_writer: threading.Event):
    """A ``late_writer`` job run in a thread, cancelled once running and told to write: the job
    and its thread."""
    job = jobs.submit(database, Recorder(), project_id=1, kind="late_writer", key="late")
    thread = threading.Thread(target=job_runs.run, args=(database, settings, job.id))
    thread.start()
    _wait_running(database, job.id)
    jobs.cancel(database, 1, job.id, user_id=1, is_owner=True)
    late_writer.set()
    return job, thread


def test_a_cancelled_job_writes_nothing_after_its_project_is_deleted(database, late_writer, tmp_path):
    from slidelabel.services.projects import delete_project

    settings = Settings(data_dir=tmp_path)
    job, thread = _cancelled_as_it_writes(database, settings, late_writer)
    delete_project(database, settings, project_id=1)
    thread.join(timeout=90)
    left = [path for path in (tmp_path / "projects").rglob("*") if path.is_file()]
    assert left == [], "the cancelled job wrote into the deleted project's folder"


def test_a_delete_refuses_while_a_cancelled_jobs_process_runs_past_the_wait(database, late_writer, tmp_path,
                                                                            monkeypatch):
    from slidelabel.errors import ConflictError
    from slidelabel.services.projects import delete_project

    monkeypatch.setattr(jobs, "STOP_WAIT_S", 0.1, raising=False)
    settings = Settings(data_dir=tmp_path)
    job, thread = _cancelled_as_it_writes(database, settings, late_writer)
    with pytest.raises(ConflictError, match=f"job {job.id} was cancelled but its process has not ended yet; try again"):
        delete_project(database, settings, project_id=1)
    thread.join(timeout=90)
    delete_project(database, settings, project_id=1)  # its process ended: the delete goes through
    assert not (tmp_path / "projects" / "1").exists()


@pytest.mark.parametrize("error", [None, FileNotFoundError("[Errno 2] .slidelabel-windows.x.tmp")],
                         ids=["at-its-progress-report", "its-files-gone"])
def test_a_job_that_finds_its_project_gone_ends_without_a_traceback(database, monkeypatch, tmp_path, caplog, error):
    def deleted_under_it(context: job_runs.JobContext) -> dict:
        context.progress(0.1, force=True)
        _job_row_deleted(context.database, context.job_id)
        if error is not None:
            raise error
        context.progress(0.2, force=True)
        return {}

    monkeypatch.setitem(jobs.JOB_KINDS, "deleted", jobs.JobKind("deleted", deleted_under_it, jobs.SLIDE_QUEUE))
    monkeypatch.setattr(jobs, "JOB_MODULES", ())
    job = jobs.submit(database, Recorder(), project_id=1, kind="deleted", key="gone")
    caplog.set_level("INFO", logger=job_runs.__name__)
    job_runs.run(database, Settings(data_dir=tmp_path), job.id, kill=lambda: None)
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.levelno >= 30], caplog.text
    assert f"job {job.id} (deleted) stopped: its project or slide was deleted" in caplog.text


def test_a_slide_job_whose_slide_was_deleted_meanwhile_removes_what_it_wrote(database, tmp_path):
    """The backstop where a delete did not wait (a cancelled job's heartbeat silent past
    ``job_stale_seconds``): the step that wrote a deleted slide's outputs removes them."""
    from slidelabel.errors import JobCancelled
    from slidelabel.services import slide_jobs
    from slidelabel.store.layout import ProjectFiles

    job = Job(id=99, project_id=1, slide_id=42, params={})
    context = job_runs.JobContext(database, Settings(data_dir=tmp_path), job, queue=jobs.SLIDE_QUEUE)
    written = ProjectFiles(tmp_path, 1).superpixels(42) / "superpixels.parquet"
    written.parent.mkdir(parents=True)
    written.write_bytes(b"computed for a deleted slide")
    with pytest.raises(JobCancelled, match="its project or slide was deleted"):
        slide_jobs._check_slide_kept(context)
    assert not ProjectFiles(tmp_path, 1).slide_dir(42).exists() and ProjectFiles(tmp_path, 1).root.exists()
