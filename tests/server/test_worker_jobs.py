"""Jobs through real Celery workers (separate processes): the embedded SQLite broker and, when a
server answers, Redis. Includes killing a worker in the middle of a job."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slidelabel.server.app import create_app
from slidelabel.services import jobs
from slidelabel.services.accounts import create_user, ensure_admin
from slidelabel.services.projects import create_project
from slidelabel.services.slide_jobs import SUPERPIXELS, step_job, work_key
from slidelabel.settings import Settings
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState, Slide, User
from slidelabel.store.superpixel_files import LABELS_FILE, MANIFEST_FILE, TABLE_FILE, read_manifest
from slidelabel.store.label_map import read_labels
from worker_process import start_worker, stop, wait_for

REDIS = os.environ.get("SLIDELABEL_TEST_REDIS", "redis://127.0.0.1:6379/13")


def _redis_reachable() -> bool:
    try:
        import redis

        redis.Redis.from_url(REDIS, socket_connect_timeout=1).ping()
        return True
    except Exception:
        return False


@pytest.fixture(params=["embedded", "redis"])
def worker_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    broker = None
    if request.param == "redis":
        if not _redis_reachable():
            pytest.skip(f"no Redis server at {REDIS}")
        import redis

        redis.Redis.from_url(REDIS).flushdb()
        broker = REDIS
    yield Settings(data_dir=tmp_path / "data", broker=broker, job_stale_seconds=6.0, admin_password="admin-password")
    if broker:
        import redis

        redis.Redis.from_url(REDIS).flushdb()


@pytest.fixture
def slide_project(worker_settings: Settings, tcga_slide: Path):
    app = create_app(worker_settings)
    database = app.state.database
    with database.session(write=True) as session:
        ensure_admin(session, worker_settings.admin_password)
        admin = session.query(User).one()
        # Full resolution: a job long enough to be killed in the middle.
        project = create_project(session, admin, "kill", superpixels={"magnification": 0, "size": "24px", "tile_size": 512})
        slide = Slide(project_id=project.id, name=tcga_slide.name, path=str(tcga_slide), width=4443, height=3567)
        session.add(slide)
        session.flush()
        submission = step_job(SUPERPIXELS, project, slide)
    yield app, submission
    database.dispose()


def _small_job(database, submission: dict, cmu_slide: Path, name: str = "") -> dict:
    """A submission like ``submission`` of a quick superpixel job (seconds) on a new CMU slide row
    (named ``name``, by default as the file)."""
    with database.session(write=True) as session:
        quick = Slide(project_id=submission["project_id"], name=name or cmu_slide.name, path=str(cmu_slide),
                      width=2220, height=2967)
        session.add(quick)
        session.flush()
        params = {"options": {"magnification": 5, "size": "100um"}}
        return {**submission, "slide_id": quick.id, "params": params, "key": work_key(SUPERPIXELS, quick.id, params)}


def test_a_worker_runs_a_job_and_a_finished_job_is_not_run_again(slide_project, worker_settings):
    app, submission = slide_project
    worker = start_worker(worker_settings)
    try:
        job = jobs.submit(app.state.database, app.state.celery, **submission)
        done = wait_for(app.state.database, job.id, {JobState.done, JobState.failed}, timeout=240)
        assert done.state == JobState.done, done.message
        assert done.progress == 1.0 and done.attempts == 1
        again = jobs.submit(app.state.database, app.state.celery, **submission)
        assert again.id == job.id and again.state == JobState.done
    finally:
        stop(worker)
    with app.state.database.session() as session:
        assert session.get(Slide, submission["slide_id"]).superpixels == read_manifest(
            ProjectFiles(worker_settings.data_dir, submission["project_id"]).superpixels(submission["slide_id"]) / MANIFEST_FILE
        )["superpixels"]


def test_a_job_whose_worker_is_killed_is_rerun_by_another_with_intact_outputs(slide_project, worker_settings):
    app, submission = slide_project
    database = app.state.database
    folder = ProjectFiles(worker_settings.data_dir, submission["project_id"]).superpixels(submission["slide_id"])
    first = start_worker(worker_settings)
    job = jobs.submit(database, app.state.celery, **submission)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with database.session() as session:
                running = session.get(Job, job.id)
                if running.state == JobState.running and running.progress > 0.1:
                    break
            time.sleep(0.2)
        assert running.state == JobState.running and running.progress < 1, "the job ended before it could be killed"
    finally:
        stop(first, signal.SIGKILL)
    assert not (folder / MANIFEST_FILE).exists()
    assert list(folder.glob(".*.tmp*")), "a killed run leaves its temporaries, not half-written outputs"
    second = start_worker(worker_settings)
    try:
        finished = wait_for(database, job.id, {JobState.done, JobState.failed}, timeout=300)
    finally:
        stop(second)
    assert finished.state == JobState.done, finished.message
    assert finished.attempts == 2
    assert not list(folder.glob(".*.tmp*"))
    manifest = read_manifest(folder / MANIFEST_FILE)
    assert manifest is not None and (folder / TABLE_FILE).exists()
    working = manifest["working"]
    labels = read_labels(folder / LABELS_FILE, left=working["width"] // 2 - 256, top=working["height"] // 2 - 256,
                         width=512, height=512)
    assert labels.max() <= manifest["superpixels"] and labels.any()


def test_cancel_stops_a_running_job_and_its_worker_takes_the_next(slide_project, worker_settings, cmu_slide):
    app, submission = slide_project
    database = app.state.database
    next_submission = _small_job(database, submission, cmu_slide)
    worker = start_worker(worker_settings)  # one process: the next job runs once the first stopped
    try:
        long = jobs.submit(database, app.state.celery, **submission)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            with database.session() as session:
                running = session.get(Job, long.id)
                if running.state == JobState.running and running.progress > 0.05:
                    break
            time.sleep(0.1)
        assert running.state == JobState.running and running.progress < 1, (
            f"the job is {running.state} at {running.progress:.0%} ({running.message}), expected it running")
        jobs.cancel(database, submission["project_id"], long.id, user_id=1, is_owner=True)
        cancelled_at = time.monotonic()
        following = jobs.submit(database, app.state.celery, **next_submission)
        done = wait_for(database, following.id, {JobState.done, JobState.failed}, timeout=120)
        print(f"Cancel -> the next job done: {time.monotonic() - cancelled_at:.1f} s")
    finally:
        stop(worker)
    assert done.state == JobState.done, done.message
    with database.session() as session:
        assert session.get(Job, long.id).state == JobState.cancelled
    folder = ProjectFiles(worker_settings.data_dir, submission["project_id"]).superpixels(submission["slide_id"])
    assert not (folder / MANIFEST_FILE).exists(), "the cancelled computation went on to the end"
    assert not list(folder.glob(".*.tmp*"))


def _pool_processes(worker, timeout: float = 60) -> list:
    """The worker's pool processes, once they started: its children forked from it (running its
    program), not a program a library runs for a moment (``ctypes.util`` looking for a library)."""
    import psutil

    main = psutil.Process(worker.pid)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = [child for child in main.children() if child.cmdline() == main.cmdline()]
        except psutil.NoSuchProcess:  # a child ended while listed
            children = []
        if children:
            return children
        time.sleep(0.2)
    raise AssertionError(f"the worker started no pool process in {timeout} s")


def _maps(process, library: str) -> bool:
    return library in Path(f"/proc/{process.pid}/maps").read_text()


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/PID/maps (Linux)")
def test_pool_processes_start_with_the_job_modules_and_one_left_too_big_is_replaced(slide_project, worker_settings,
                                                                                     cmu_slide):
    app, submission = slide_project
    database = app.state.database
    small = _small_job(database, submission, cmu_slide)
    # Every process is resident in more than 1 MB after its job: each is replaced.
    worker = start_worker(worker_settings.model_copy(update={"worker_max_memory_mb": 1}))
    try:
        [first] = _pool_processes(worker)
        # Forked after the main process imported the job modules (scikit-learn among them).
        assert _maps(first, "sklearn"), "the pool process started without the job modules"
        job = jobs.submit(database, app.state.celery, **small)
        done = wait_for(database, job.id, {JobState.done, JobState.failed}, timeout=120)
        assert done.state == JobState.done, done.message
        deadline = time.monotonic() + 30
        while first.is_running() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not first.is_running(), "the pool process that ran the job was kept"
        [second] = _pool_processes(worker)
        assert second.pid != first.pid and _maps(second, "sklearn")
    finally:
        stop(worker)


def test_a_starting_worker_runs_a_queued_job_whose_message_was_lost(slide_project, worker_settings, cmu_slide):
    app, submission = slide_project
    database = app.state.database
    small = _small_job(database, submission, cmu_slide)

    class LostMessages:  # a worker killed with the message in hand: the broker no longer has it
        def send_task(self, *_args, **_kwargs) -> None:
            return None

    job = jobs.submit(database, LostMessages(), **small)
    worker = start_worker(worker_settings)
    try:
        done = wait_for(database, job.id, {JobState.done, JobState.failed}, timeout=120)
    finally:
        stop(worker)
    assert done.state == JobState.done and done.attempts == 1, done.message


def test_a_new_pool_process_opens_its_own_connections(tmp_path):
    """A pool process forked after the worker started (replacing one) inherited the main
    process's engine, whose PostgreSQL connections the stale-job watch used at the same time:
    "error with status PGRES_TUPLES_OK" failed a cohort's slide job."""
    from slidelabel.workers import tasks

    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    inherited = tasks._database(url)
    tasks._forget_inherited_connections()
    assert tasks._database(url) is not inherited


def test_users_take_turns_on_the_slide_worker(slide_project, worker_settings, cmu_slide):
    """Eighth attack: one owner's queued slides kept every other project's jobs waiting behind them.
    Three jobs of one user are queued before another user's one: that one runs second."""
    app, submission = slide_project
    database = app.state.database
    with database.session(write=True) as session:
        admin = session.query(User).one()
        other = create_project(session, admin, "other").id
        owner, annotator = admin.id, create_user(session, "annotator", "annotator-password").id
    mine = [{**_small_job(database, submission, cmu_slide, f"cmu-{number}.svs"), "user_id": owner}
            for number in range(3)]
    theirs = {**_small_job(database, {**submission, "project_id": other}, cmu_slide), "user_id": annotator}
    queued = [jobs.submit(database, app.state.celery, **small).id for small in (*mine, theirs)]
    worker = start_worker(worker_settings)
    try:
        ended = [wait_for(database, job_id, {JobState.done, JobState.failed}, timeout=120) for job_id in queued]
    finally:
        stop(worker)
    assert all(job.state == JobState.done for job in ended), [job.message for job in ended]
    order = sorted(ended, key=lambda job: job.started_at)
    assert [job.id for job in order] == [queued[0], queued[3], queued[1], queued[2]]
