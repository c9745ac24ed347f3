"""Eighth attack, H2 and M2 through the job queue: options that give a slide too many superpixels
are refused before the job is queued and fail the job clearly if it runs all the same; and what a
job killed by a Cancel left in a slide's folders (window caches, label scratch stores, unfinished
feature arrays) goes at the next slide job or worker start, without a retry of the killed job."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from slidelabel.errors import ParameterError
from slidelabel.services import job_runs, slide_jobs
from slidelabel.services import superpixels as superpixel_service
from slidelabel.services.projects import superpixel_options
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState, Project, Slide
from slidelabel.store.superpixel_files import LABELS_FILE

#: 4 px superpixels at level 0 of the CMU sample (2220 x 2967 px): 411,810 seeds.
DENSE = {"magnification": 0, "size": "4px"}
#: Coarse superpixels at 5x keep a run to about a second.
COARSE = {"magnification": 5, "size": "100um"}


def _options(app, project: dict, options: dict) -> None:
    with app.state.database.session(write=True) as session:
        session.get(Project, project["id"]).superpixel_options = superpixel_options(options).as_dict()


def _run(app, job_id: int) -> Job:
    job_runs.run(app.state.database, app.state.settings, job_id)
    with app.state.database.session() as session:
        return session.get(Job, job_id)


def test_a_job_past_the_bound_fails_naming_the_options_the_slide_and_the_bound(app, client, admin_headers, project,
                                                                              sender, slide_row, monkeypatch):
    def no_engine(*args, **kwargs):
        raise AssertionError("the engine was built for a slide past the bound")

    monkeypatch.setattr(superpixel_service, "SuperpixelEngine", no_engine)
    _options(app, project, DENSE)
    url = f"/api/v1/projects/{project['id']}/slides/{slide_row}/superpixels"
    job = client.post(url, headers=admin_headers).json()
    # Lowered once the job is queued: the worker checks again (a job queued before a lower bound,
    # or by a caller that did not check).
    monkeypatch.setattr(app.state.settings, "max_superpixels_per_slide", 100_000)
    done = _run(app, job["id"])
    assert done.state == JobState.failed
    for part in ("411,810 superpixels", "2,220 x 2,967", "4 px", "at most 100,000",
                 "SLIDELABEL_MAX_SUPERPIXELS_PER_SLIDE"):
        assert part in done.message, done.message
    assert "internal error" not in done.message and not done.log.count("Traceback")
    folder = ProjectFiles(app.state.settings.data_dir, project["id"]).superpixels(slide_row)
    assert not (folder / LABELS_FILE).exists() and not list(folder.glob(".*.tmp*"))


def test_options_past_the_bound_are_refused_before_a_job_is_queued(app, project, sender, slide_row):
    _options(app, project, DENSE)
    database, data_dir = app.state.database, app.state.settings.data_dir
    with database.session() as session:
        proj, slide = session.get(Project, project["id"]), session.get(Slide, slide_row)
        session.expunge_all()
    with pytest.raises(ParameterError, match=r"slide 'CMU-1-Small-Region\.svs'.*411,810.*at most 100,000"):
        slide_jobs.submit_slide_job(database, sender, data_dir, proj, slide, slide_jobs.SUPERPIXELS, user_id=None,
                                    max_superpixels=100_000)
    with pytest.raises(ParameterError, match="411,810"):
        slide_jobs.submit_prepare(database, sender, proj, [slide], user_id=None, data_dir=data_dir,
                                  max_superpixels=100_000)
    with database.session() as session:
        assert session.query(Job).count() == 0
    assert sender.sent == []
    # Within the bound they are queued as before.
    job = slide_jobs.submit_slide_job(database, sender, data_dir, proj, slide, slide_jobs.SUPERPIXELS, user_id=None,
                                      max_superpixels=411_810)
    assert job.state == JobState.queued


def _leftovers(folder: Path, *, age_s: float) -> list[Path]:
    """What a hard-killed superpixel run and import leave: a window cache, a label scratch store and
    an atomic write's temporary file, and an unfinished feature array with scratch rows."""
    cache = folder / "superpixels" / ".slidelabel-windows.k2j4h.tmp"
    scratch = folder / "superpixels" / ".labels.tiff.3f9c0a1b2d4e5f60.tmp" / "c" / "0"
    zarr = folder / "features" / ".tissue.zarr.0123456789abcdef.tmp" / "c" / "0"
    for path in (cache, scratch, zarr):
        path.mkdir(parents=True)
    files = [cache / "0_0.zst", cache / "0_2048.zst", scratch / "0", folder / "superpixels" / ".labels.tiff.aa.tmp.tiff",
             zarr / "1", folder / "features" / ".tissue.0123456789abcdef.rows"]
    for file in files:
        file.write_bytes(b"x" * 1000)
    then = time.time() - age_s
    for path in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):  # children first: a folder's time last
        os.utime(path, (then, then))
    return [folder / "superpixels" / ".slidelabel-windows.k2j4h.tmp", folder / "superpixels" / ".labels.tiff.3f9c0a1b2d4e5f60.tmp",
            folder / "superpixels" / ".labels.tiff.aa.tmp.tiff", folder / "features" / ".tissue.zarr.0123456789abcdef.tmp",
            folder / "features" / ".tissue.0123456789abcdef.rows"]


def _slide(app, project: dict, cmu_slide: Path, name: str) -> int:
    with app.state.database.session(write=True) as session:
        slide = Slide(project_id=project["id"], name=name, path=str(cmu_slide), width=2220, height=2967, mpp=0.499)
        session.add(slide)
        session.flush()
        return slide.id


def _job(app, project: dict, slide_id: int, state: JobState) -> None:
    with app.state.database.session(write=True) as session:
        session.add(Job(project_id=project["id"], slide_id=slide_id, kind="superpixels", key=f"killed:{slide_id}",
                        params={"options": DENSE}, state=state))


def test_a_killed_jobs_leftovers_go_at_the_next_slide_job_without_a_retry(app, client, admin_headers, project, sender,
                                                                          cmu_slide, slide_row):
    files = ProjectFiles(app.state.settings.data_dir, project["id"])
    cancelled, busy = _slide(app, project, cmu_slide, "cancelled.svs"), _slide(app, project, cmu_slide, "busy.svs")
    _job(app, project, cancelled, JobState.cancelled)  # its process was killed: "no progress report within 2 s"
    _job(app, project, busy, JobState.running)  # another worker's job, still writing
    gone = _leftovers(files.slide_dir(cancelled), age_s=60)
    kept = _leftovers(files.slide_dir(busy), age_s=60)
    # Written after the sweep began, by a job that a worker started meanwhile: kept too.
    fresh = files.slide_dir(cancelled) / "superpixels" / ".labels.tiff.bb.tmp.tiff"
    fresh.write_bytes(b"x")
    os.utime(fresh, (time.time() + 60, time.time() + 60))

    _options(app, project, COARSE)
    job = client.post(f"/api/v1/projects/{project['id']}/slides/{slide_row}/superpixels", headers=admin_headers).json()
    assert _run(app, job["id"]).state == JobState.done
    assert [path for path in gone if path.exists()] == []
    assert all(path.exists() for path in kept) and fresh.exists()


def test_the_worker_start_sweeps_superpixel_leftovers_too(app, project, cmu_slide):
    files = ProjectFiles(app.state.settings.data_dir, project["id"])
    cancelled = _slide(app, project, cmu_slide, "cancelled.svs")
    _job(app, project, cancelled, JobState.cancelled)
    gone = _leftovers(files.slide_dir(cancelled), age_s=60)
    # The name the worker's start calls (slidelabel.workers.tasks).
    removed = slide_jobs.sweep_unfinished_outputs(app.state.database, app.state.settings.data_dir)
    assert sorted(removed) == sorted(gone) and not any(path.exists() for path in gone)
    assert (files.slide_dir(cancelled) / "superpixels").is_dir()


def test_the_api_refuses_options_past_the_bound_before_queuing(client, admin_headers, project, slide_row, sender,
                                                                app, monkeypatch):
    monkeypatch.setattr(app.state.settings, "max_superpixels_per_slide", 10)
    url = f"/api/v1/projects/{project['id']}"
    for answer in (client.post(f"{url}/slides/{slide_row}/superpixels", headers=admin_headers),
                   client.post(f"{url}/jobs/prepare", headers=admin_headers)):
        assert answer.status_code == 422 and "at most 10" in answer.json()["detail"], answer.text
    assert sender.sent == []
