"""The job rules without a worker: idempotent submission, claim, cancel, retry and requeue, and
bounded work: a cancelled or overlong job stops within seconds, leaving no outputs behind."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from slidelabel.errors import ConflictError, PermissionDeniedError
from slidelabel.services import job_runs, jobs
from slidelabel.services.accounts import create_user, ensure_admin
from slidelabel.services.projects import create_project
from slidelabel.services.slide_jobs import SUPERPIXELS, step_job
from slidelabel.settings import Settings
from slidelabel.store.database import Database, migrate
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState, Project, Slide, User
from slidelabel.store.superpixel_files import MANIFEST_FILE
from slidelabel.workers.app import make_celery

#: Superpixels of the CMU slide at full resolution with the most iterations: about 10 s of work
#: on this project's CI machine, reporting progress per 256 px tile (under a second each).
LONG_SUPERPIXELS = {"magnification": 0, "size": "8px", "tile_size": 256, "iterations": 100}


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

    def echo(context: job_runs.JobContext) -> dict:
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
    job_runs.run(database, Settings(data_dir=Path("/nonexistent")), first.id)
    assert ran == [{"x": 1}]
    done = jobs.submit(database, sender, project_id=1, kind="echo", key="k")
    assert done.id == first.id and done.state == JobState.done and len(sender.sent) == 1


def test_failure_keeps_the_traceback_and_retry_makes_a_new_job(database, ran):
    sender = Recorder()
    job = jobs.submit(database, sender, project_id=1, kind="echo", key="bad", params={"fail": True})
    job_runs.run(database, Settings(data_dir=Path("/nonexistent")), job.id)
    with database.session() as session:
        failed = session.get(Job, job.id)
        assert failed.state == JobState.failed and "boom" in failed.message and "RuntimeError" in failed.log
    retried = jobs.retry(database, sender, 1, job.id, user_id=1, is_owner=True)
    assert retried.id != job.id and retried.state == JobState.queued
    with pytest.raises(ConflictError):
        jobs.retry(database, sender, 1, retried.id, user_id=1, is_owner=True)


def test_a_cancelled_job_stops_at_its_next_progress_report(database, ran):
    sender = Recorder()
    job = jobs.submit(database, sender, project_id=1, kind="echo", key="c")
    jobs.cancel(database, 1, job.id, user_id=1, is_owner=True)
    job_runs.run(database, Settings(data_dir=Path("/nonexistent")), job.id)
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


def test_queued_jobs_are_sent_again_and_a_second_message_runs_nothing_twice(database, ran):
    sender = Recorder()
    lost = jobs.submit(database, Recorder(), project_id=1, kind="echo", key="lost")  # its message never arrives
    running = _running(database, 1)
    assert job_runs.redispatch_queued(database, sender) == [lost.id]
    assert [args for _, args, _ in sender.sent] == [[lost.id]]
    for _ in range(2):  # the first message and the one sent again
        job_runs.run(database, Settings(data_dir=Path("/nonexistent")), lost.id)
    assert len(ran) == 1
    with database.session() as session:
        assert session.get(Job, lost.id).state == JobState.done
        assert session.get(Job, running).state == JobState.running


def test_only_silent_running_jobs_are_requeued_and_only_a_few_times(database, ran):
    sender = Recorder()
    alive, dead, hopeless = _running(database, 1), _running(database, 60), _running(database, 60, attempts=3)
    assert job_runs.requeue_stale(database, sender, stale_s=10) == [dead]
    assert [args for _, args, _ in sender.sent] == [[dead]]
    with database.session() as session:
        assert session.get(Job, alive).state == JobState.running
        assert session.get(Job, dead).state == JobState.queued
        assert session.get(Job, hopeless).state == JobState.failed
    # A redelivered message of a job that still beats is not run a second time.
    job_runs.run(database, Settings(data_dir=Path("/nonexistent"), job_stale_seconds=10), alive)
    assert ran == []


@pytest.fixture
def long_job(database, cmu_slide: Path) -> dict:
    """``submit`` arguments of a long superpixel job of the CMU slide (see :data:`LONG_SUPERPIXELS`)."""
    with database.session(write=True) as session:
        admin = session.query(User).one()
        project = create_project(session, admin, "long", superpixels=LONG_SUPERPIXELS)
        slide = Slide(project_id=project.id, name=cmu_slide.name, path=str(cmu_slide), width=2220, height=2967)
        session.add(slide)
        session.flush()
        return step_job(SUPERPIXELS, session.get(Project, project.id), slide) | {"user_id": admin.id}


def _outputs(settings: Settings, submission: dict) -> tuple[bool, list[Path]]:
    """(whether the slide's superpixels are finished, the temporaries left in its folders)."""
    folder = ProjectFiles(settings.data_dir, submission["project_id"]).superpixels(submission["slide_id"])
    return (folder / MANIFEST_FILE).exists(), sorted(folder.parent.rglob("*.tmp*"))


def _wait_running(database, job_id: int) -> None:
    """Until the job has done some of its work (AssertionError after a minute)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with database.session() as session:
            job = session.get(Job, job_id)
            if job.state == JobState.running and job.progress > 0.05:
                return
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} is {job.state} at {job.progress:.0%}, expected it running")


def test_cancel_stops_a_running_job_within_seconds_and_frees_its_worker(database, ran, long_job, tmp_path):
    settings = Settings(data_dir=tmp_path / "data")
    sender = Recorder()
    first = jobs.submit(database, sender, **long_job)
    after = jobs.submit(database, sender, project_id=1, kind="echo", key="after", params={"next": True})
    # One worker thread running the two jobs in turn, as a worker process of concurrency 1 does.
    worker = threading.Thread(target=lambda: [job_runs.run(database, settings, i) for i in (first.id, after.id)])
    worker.start()
    _wait_running(database, first.id)
    jobs.cancel(database, long_job["project_id"], first.id, user_id=long_job["user_id"], is_owner=False)
    cancelled_at = time.monotonic()
    while worker.is_alive() and ran == [] and time.monotonic() - cancelled_at < 5:
        time.sleep(0.05)
    assert ran == [{"next": True}], "the worker was still busy with the cancelled job 5 s after Cancel"
    worker.join()
    with database.session() as session:
        stopped = session.get(Job, first.id)
        assert (stopped.state, stopped.message) == (JobState.cancelled, "cancelled")
        assert stopped.progress < 1
        assert session.get(Job, after.id).state == JobState.done
    assert _outputs(settings, long_job) == (False, [])


def test_a_job_past_its_time_limit_fails_naming_the_limit_and_its_setting(database, long_job, tmp_path):
    settings = Settings(data_dir=tmp_path / "data", job_time_limit_slide_s=1.0)
    job = jobs.submit(database, Recorder(), **long_job)
    job_runs.run(database, settings, job.id)
    with database.session() as session:
        stopped = session.get(Job, job.id)
    assert stopped.state == JobState.failed and stopped.progress < 1
    assert stopped.message.startswith("stopped after ")
    assert stopped.message.endswith(": the time limit for slide jobs is 1 s (SLIDELABEL_JOB_TIME_LIMIT_SLIDE_S)")
    assert _outputs(settings, long_job) == (False, [])
    # The epoch queue keeps its own limit.
    assert job_runs.time_limit(settings, jobs.EPOCH_QUEUE)[0] == Settings().job_time_limit_epoch_s


def test_celery_limits_back_the_longest_kind_soft_then_hard(tmp_path):
    settings = Settings(data_dir=tmp_path, job_time_limit_slide_s=100, job_time_limit_epoch_s=500)
    celery = make_celery(settings)
    celery.loader.import_default_modules()  # the worker's task module, as a worker imports it
    task = celery.tasks[jobs.TASK_NAME]
    assert task.soft_time_limit == 500 + job_runs.HARD_LIMIT_GRACE_S
    assert task.time_limit == 500 + 2 * job_runs.HARD_LIMIT_GRACE_S


def test_a_job_killed_by_the_hard_limit_is_failed_once(database, ran):
    job = jobs.submit(database, Recorder(), project_id=1, kind="echo", key="hard")
    assert not job_runs.fail_running(database, job.id, "killed")  # queued, not running
    with database.session(write=True) as session:
        session.get(Job, job.id).state = JobState.running
    assert job_runs.fail_running(database, job.id, "killed")
    with database.session() as session:
        assert (session.get(Job, job.id).state, session.get(Job, job.id).message) == (JobState.failed, "killed")
    assert not job_runs.fail_running(database, job.id, "again")


def test_a_job_interrupted_by_celerys_soft_limit_fails_naming_the_time_limit(database, monkeypatch, tmp_path):
    def silent(context: job_runs.JobContext) -> dict:
        time.sleep(0.2)  # past the limit without a progress report, until Celery interrupts it
        raise SoftTimeLimitExceeded()

    monkeypatch.setitem(jobs.JOB_KINDS, "silent", jobs.JobKind("silent", silent, jobs.SLIDE_QUEUE))
    monkeypatch.setattr(jobs, "JOB_MODULES", ())
    job = jobs.submit(database, Recorder(), project_id=1, kind="silent", key="silent")
    job_runs.run(database, Settings(data_dir=tmp_path, job_time_limit_slide_s=0.1), job.id)
    with database.session() as session:
        stopped = session.get(Job, job.id)
    assert stopped.state == JobState.failed and "Traceback" not in stopped.log
    assert stopped.message.startswith("stopped after ") and "(SLIDELABEL_JOB_TIME_LIMIT_SLIDE_S)" in stopped.message


def test_a_retry_runs_as_its_retrier_and_needs_the_folder_right_its_job_reads_with(database, ran):
    """Sixth attack: a retry re-ran a job reading a server folder for an owner whose folder right
    the admin had withdrawn (and for one who never had it), as the job's first starter."""
    sender = Recorder()
    data_dir = Path("/srv/slidelabel")
    with database.session(write=True) as session:
        assert create_user(session, "other-owner", "password-of-2").id == 2
    reads_folder = jobs.submit(database, sender, project_id=1, kind="echo", key="folder", user_id=1,
                               params={"folder": "/data/cohort", "fail": True})
    uploaded = jobs.submit(database, sender, project_id=1, kind="echo", key="upload", user_id=1,
                           params={"source": {"path": "/srv/slidelabel/projects/1/slides/2/sources/a.geojson"}, "fail": True})
    for job in (reads_folder, uploaded):
        job_runs.run(database, Settings(data_dir=Path("/nonexistent")), job.id)
    with pytest.raises(PermissionDeniedError, match="slide folders"):
        jobs.retry(database, sender, 1, reads_folder.id, user_id=2, is_owner=True, data_dir=data_dir,
                   may_read_folders=False)
    retried = jobs.retry(database, sender, 1, uploaded.id, user_id=2, is_owner=True, data_dir=data_dir,
                         may_read_folders=False)
    with database.session() as session:
        assert session.get(Job, retried.id).created_by == 2
    assert jobs.retry(database, sender, 1, reads_folder.id, user_id=2, is_owner=True, data_dir=data_dir,
                      may_read_folders=True).state == JobState.queued


def test_users_take_turns_on_a_queue(database, ran):
    """Eighth attack: one owner's long jobs kept everyone else's waiting on the one slide worker,
    first come first served. A job of a user who had a turn steps back (its message goes to the
    end of the queue) while another user's job waits for one, in the same project or another."""
    with database.session(write=True) as session:
        create_project(session, session.query(User).one(), "q")
        other_user = create_user(session, "other", "other-password").id
    sender, settings = Recorder(), Settings(data_dir=Path("/nonexistent"))
    first, second, third = (jobs.submit(database, sender, project_id=1 + n % 2, kind="echo", key=f"a{n}",
                                        params={"a": n}, user_id=1) for n in range(3))
    job_runs.run(database, settings, first.id, sender=sender)
    other = jobs.submit(database, sender, project_id=1, kind="echo", key="b", params={"b": 0}, user_id=other_user)
    del sender.sent[:]
    # The broker hands the messages out in the order they were sent: the first user's two, then the other's.
    for job in (second, third, other):
        job_runs.run(database, settings, job.id, sender=sender)
    assert ran == [{"a": 0}, {"b": 0}]
    assert sender.sent == [(jobs.TASK_NAME, [second.id, 1], jobs.SLIDE_QUEUE),
                           (jobs.TASK_NAME, [third.id, 1], jobs.SLIDE_QUEUE)]
    for _name, args, _queue in list(sender.sent):  # now at the end of the queue: they run in order
        job_runs.run(database, settings, args[0], sender=sender, stepped_back=args[1])
    assert ran == [{"a": 0}, {"b": 0}, {"a": 1}, {"a": 2}]


def test_a_job_steps_back_a_bounded_number_of_times(database, ran):
    """A waiting job whose message the broker lost must not keep the others going round."""
    with database.session(write=True) as session:
        other_user = create_user(session, "other", "other-password").id
    sender, settings = Recorder(), Settings(data_dir=Path("/nonexistent"))
    first, second = (jobs.submit(database, sender, project_id=1, kind="echo", key=f"a{n}", params={"a": n}, user_id=1)
                     for n in range(2))
    job_runs.run(database, settings, first.id, sender=sender)
    jobs.submit(database, sender, project_id=1, kind="echo", key="lost", user_id=other_user)
    job_runs.run(database, settings, second.id, sender=sender, stepped_back=jobs.MAX_STEPS_BACK - 1)
    assert ran == [{"a": 0}] and sender.sent[-1][1] == [second.id, jobs.MAX_STEPS_BACK]
    job_runs.run(database, settings, second.id, sender=sender, stepped_back=jobs.MAX_STEPS_BACK)
    assert ran == [{"a": 0}, {"a": 1}]
