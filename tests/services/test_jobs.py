"""The job rules without a worker: idempotent submission, claim, cancel, retry and requeue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from slidelabel.errors import ConflictError
from slidelabel.services import jobs
from slidelabel.services.accounts import ensure_admin
from slidelabel.services.projects import create_project
from slidelabel.settings import Settings
from slidelabel.store.database import Database, migrate
from slidelabel.store.models import Job, JobState, User


class Recorder:
    """A Celery stand-in that records what would be sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list, str]] = []

    def send_task(self, name: str, args: list, queue: str) -> None:
        self.sent.append((name, args, queue))


@pytest.fixture
def database(tmp_path: Path):
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(database.engine)
    with database.session(write=True) as session:
        ensure_admin(session, "admin-password")
        create_project(session, session.query(User).one(), "p")
    yield database
    database.dispose()


@pytest.fixture
def ran(monkeypatch):
    """A job kind ``echo`` that records its params, failing when asked to."""
    calls = []

    def echo(context: jobs.JobContext) -> dict:
        context.progress(0.5, "half", force=True)
        if context.params.get("fail"):
            raise RuntimeError("boom")
        calls.append(context.params)
        return {"message": "echoed"}

    monkeypatch.setitem(jobs.JOB_KINDS, "echo", jobs.JobKind("echo", echo, jobs.SLIDE_QUEUE))
    monkeypatch.setattr(jobs, "JOB_MODULES", ())
    return calls


def test_submission_is_idempotent_by_key(database, ran):
    sender = Recorder()
    first = jobs.submit(database, sender, project_id=1, kind="echo", key="k", params={"x": 1})
    again = jobs.submit(database, sender, project_id=1, kind="echo", key="k", params={"x": 1})
    assert again.id == first.id and len(sender.sent) == 1
    jobs.run(database, Settings(data_dir=Path("/nonexistent")), first.id)
    assert ran == [{"x": 1}]
    done = jobs.submit(database, sender, project_id=1, kind="echo", key="k")
    assert done.id == first.id and done.state == JobState.done and len(sender.sent) == 1


def test_failure_keeps_the_traceback_and_retry_makes_a_new_job(database, ran):
    sender = Recorder()
    job = jobs.submit(database, sender, project_id=1, kind="echo", key="bad", params={"fail": True})
    jobs.run(database, Settings(data_dir=Path("/nonexistent")), job.id)
    with database.session() as session:
        failed = session.get(Job, job.id)
        assert failed.state == JobState.failed and "boom" in failed.message and "RuntimeError" in failed.log
    retried = jobs.retry(database, sender, 1, job.id)
    assert retried.id != job.id and retried.state == JobState.queued
    with pytest.raises(ConflictError):
        jobs.retry(database, sender, 1, retried.id)


def test_a_cancelled_job_stops_at_its_next_progress_report(database, ran):
    sender = Recorder()
    job = jobs.submit(database, sender, project_id=1, kind="echo", key="c")
    jobs.cancel(database, 1, job.id, user_id=1, is_owner=True)
    jobs.run(database, Settings(data_dir=Path("/nonexistent")), job.id)
    with database.session() as session:
        assert session.get(Job, job.id).state == JobState.cancelled
    assert ran == []


def _running(database, heartbeat_age_s: float, attempts: int = 1) -> int:
    with database.session(write=True) as session:
        job = Job(project_id=1, kind="echo", key=f"r{heartbeat_age_s}{attempts}", state=JobState.running,
                  attempts=attempts, heartbeat_at=datetime.now(UTC) - timedelta(seconds=heartbeat_age_s))
        session.add(job)
        session.flush()
        return job.id


def test_only_silent_running_jobs_are_requeued_and_only_a_few_times(database, ran):
    sender = Recorder()
    alive, dead, hopeless = _running(database, 1), _running(database, 60), _running(database, 60, attempts=3)
    assert jobs.requeue_stale(database, sender, stale_s=10) == [dead]
    assert [args for _, args, _ in sender.sent] == [[dead]]
    with database.session() as session:
        assert session.get(Job, alive).state == JobState.running
        assert session.get(Job, dead).state == JobState.queued
        assert session.get(Job, hopeless).state == JobState.failed
    # A redelivered message of a job that still beats is not run a second time.
    jobs.run(database, Settings(data_dir=Path("/nonexistent"), job_stale_seconds=10), alive)
    assert ran == []
