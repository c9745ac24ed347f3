"""A real worker fleet: the API on PostgreSQL, a Redis broker, two ``slidelabel worker`` processes
started separately (one job at a time each, their own names, their own path to the same data
folder) and a cohort split over both; one worker is killed mid-slide, and the cohort still ends
with every slide predicted, its files intact and equal to a clean run's.

Skipped unless PostgreSQL (127.0.0.1:5432, ``SLIDELABEL_TEST_POSTGRES``) and Redis (127.0.0.1:6379,
``SLIDELABEL_TEST_REDIS``) answer."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from slidelabel.services.cohort import MANIFEST_FILE, PredictOptions, open_cohort_model, predict_slide
from slidelabel.services.cohort_jobs import COHORT_SLIDE, cohort_dir
from slidelabel.services.projects import superpixel_options
from slidelabel.settings import Settings
from slidelabel.store.models import Job, JobState
from slidelabel.store.superpixel_files import MANIFEST_FILE as SUPERPIXEL_MANIFEST
from slidelabel.store.superpixel_files import file_sha256, read_manifest
from slidelabel.workers.app import make_celery
from conftest import ADMIN_PASSWORD
from test_epochs import annotator, cmu_files, rule, slide_id, trained  # noqa: F401  (fixtures)
from tissue_slides import write_tissue_slide
from worker_process import start_worker, stop, wait_for

REDIS = os.environ.get("SLIDELABEL_TEST_REDIS_FLEET", "redis://127.0.0.1:6379/11")
SLIDES = 6
pytestmark = pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)


def _redis() -> object | None:
    try:
        import redis

        client = redis.Redis.from_url(REDIS, socket_connect_timeout=1)
        client.ping()
        return client
    except Exception:
        return None


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    """The API's settings: PostgreSQL, Redis, a slide folder; a dead worker's job is requeued
    after 4 s of silence."""
    redis = _redis()
    if redis is None:
        pytest.skip(f"no Redis server at {REDIS}")
    redis.flushdb()
    (tmp_path / "slides").mkdir()
    yield Settings(data_dir=tmp_path / "data", db=database_url, broker=REDIS, slide_folders=[tmp_path / "slides"],
                   admin_password=ADMIN_PASSWORD, job_stale_seconds=4.0)
    redis.flushdb()


def _worker_of(job: Job) -> str:
    """The worker that ran the job's latest attempt, from its log."""
    _before, found, after = job.log.rpartition(" on worker ")
    return after.split("\n", 1)[0] if found else ""


def _children(database, parent_id: int) -> list[Job]:
    with database.session() as session:
        return list(session.query(Job).filter(Job.kind == COHORT_SLIDE, Job.key.like(f"{COHORT_SLIDE}:{parent_id}:%")))


def test_a_cohort_survives_a_killed_worker(app, client, project, admin_headers, trained, settings,  # noqa: F811
                                           monuseg_dir, tmp_path):
    folder = settings.slide_folders[0]
    for index in range(SLIDES):
        write_tissue_slide(folder / f"slide-{index}.tiff", monuseg_dir, rows=2, cols=3, first=6 * index)
    app.state.celery = make_celery(settings)  # the `trained` fixture stubbed it
    (tmp_path / "mount-b").symlink_to(settings.data_dir, target_is_directory=True)
    workers = {"fleet-a": start_worker(settings, "--concurrency", "1", "--hostname", "fleet-a@%h"),
               "fleet-b": start_worker(settings.model_copy(update={"data_dir": tmp_path / "mount-b"}),
                                       "--concurrency", "1", "--hostname", "fleet-b@%h")}
    database = app.state.database
    try:
        response = client.post(f"/api/v1/projects/{project['id']}/epochs/1/cohort", headers=admin_headers,
                               json={"folder": str(folder)})
        assert response.status_code == 202, response.text
        cohort_id = response.json()["id"]
        # Kill worker a in the middle of a slide, once it has finished one.
        deadline, victim = time.monotonic() + 120, None
        while victim is None and time.monotonic() < deadline:
            children = _children(database, cohort_id)
            done_by_a = [c for c in children if c.state == JobState.done and _worker_of(c).startswith("fleet-a")]
            running_on_a = [c for c in children
                            if c.state == JobState.running and _worker_of(c).startswith("fleet-a")]
            if done_by_a and running_on_a:
                victim = running_on_a[0]
            time.sleep(0.05)
        assert victim is not None, f"worker a never ran a second slide: {[(c.state, c.log) for c in children]}"
        stop(workers["fleet-a"], signal.SIGKILL)
        finished = wait_for(database, cohort_id, {JobState.done, JobState.failed, JobState.cancelled}, timeout=120)
    finally:
        for worker in workers.values():
            stop(worker)

    assert finished.state == JobState.done and finished.message == f"{SLIDES} slides: {SLIDES} done, 0 failed"
    children = {child.id: child for child in _children(database, cohort_id)}
    assert len(children) == SLIDES and all(c.state == JobState.done for c in children.values())
    rerun = children[victim.id]
    assert rerun.attempts == 2 and _worker_of(rerun).startswith("fleet-b"), rerun.log
    assert "on worker fleet-a" in rerun.log, "the killed attempt is in the slide's log"
    finishers = {_worker_of(child).split("@")[0] for child in children.values()}
    assert finishers == {"fleet-a", "fleet-b"}, "both workers finished slides"

    root = cohort_dir(settings.data_dir, project["id"], finished.params["out"])
    model_path = Path(settings.data_dir) / "projects" / str(project["id"]) / "epochs" / "1" / "model.zip"
    assert not [p for p in root.rglob("*") if ".tmp" in p.name], "no temporaries left"
    for child in children.values():
        slide_folder = root / child.params["name"]
        manifest = read_manifest(slide_folder / MANIFEST_FILE)
        assert manifest["sha256"] == file_sha256(model_path) and manifest["slide"] == child.params["slide"]
        superpixels = read_manifest(slide_folder / SUPERPIXEL_MANIFEST)["superpixels"]
        assert manifest["superpixels"] == superpixels > 0
        assert pq.read_table(slide_folder / "predictions.parquet").num_rows == superpixels
        assert all((slide_folder / name).is_file() for name in manifest["files"])

    # The killed slide, finished by the other worker, equals a clean run of the same slide.
    options = PredictOptions(superpixel_options(project["superpixel_options"]))
    predict_slide(Path(rerun.params["slide"]), tmp_path / "clean", open_cohort_model(model_path), options)
    served = pq.read_table(root / rerun.params["name"] / "predictions.parquet").to_pydict()
    assert served == pq.read_table(tmp_path / "clean" / "predictions.parquet").to_pydict()
