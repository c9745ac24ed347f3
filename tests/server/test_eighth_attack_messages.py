"""Eighth attack: what job messages and errors show.

- The slide list embedded each slide's latest step job with its raw message, so a viewer read
  "/srv/.../vanish.svs: no such file" there while the job routes showed "vanish.svs: ..."; and
  the redaction stopped at a space, showing "Patient Smith 2024 MRN 12345/biopsy.svs" (folder
  names often carry patient identifiers), only the first of comma-separated paths, and no
  ``file://`` URI.
- A segment import's summary listed every class name: 20,000 names of 1,000 characters made a
  20 MB job message in every member's job list. Job messages are now bounded where stored.
- A starter demoted from owner to annotator could retry their owner-only jobs (segment imports,
  cohorts): a retry now takes the role that starting the job's kind takes.
- Errors echoed multi-megabyte inputs (project choices, cohort file names).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from slidelabel.services import job_runs, jobs
from slidelabel.services.shown_paths import names_only
from slidelabel.services.segment_import import SUMMARY_CLASSES, SegmentImportResult
from slidelabel.store.models import Job, JobState, Membership, Role

PATIENT_FOLDER = "/srv/slides/A/Patient Smith 2024 MRN 12345"


def _job(app, project: dict, *, kind: str, message: str = "", slide_id: int | None = None,
         created_by: int | None = None, state: JobState = JobState.failed, params: dict | None = None) -> int:
    with app.state.database.session(write=True) as session:
        job = Job(project_id=project["id"], slide_id=slide_id, kind=kind, key=f"{kind}:{message[:20]}:{created_by}",
                  state=state, message=message, created_by=created_by, params=params or {})
        session.add(job)
        session.flush()
        return job.id


def test_the_slide_list_shows_a_viewer_step_jobs_as_the_job_routes_do(app, client, project, slide_row,
                                                                       member_headers, admin_headers):
    raw = f"{PATIENT_FOLDER}/biopsy.svs: no such file"
    job_id = _job(app, project, kind="superpixels", message=raw, slide_id=slide_row)
    _job(app, project, kind="features", message="internal error: /srv/code/x.py broke", slide_id=slide_row)
    viewer = member_headers(Role.viewer)
    base = f"/api/v1/projects/{project['id']}"

    listed = client.get(f"{base}/slides", headers=viewer).json()[0]
    assert listed["superpixels_job"]["message"] == "biopsy.svs: no such file"
    assert listed["features_job"]["message"] == "internal error; the admin can see the details"
    assert client.get(f"{base}/jobs/{job_id}", headers=viewer).json()["message"] == "biopsy.svs: no such file"
    assert client.get(f"{base}/slides", headers=admin_headers).json()[0]["superpixels_job"]["message"] == raw


@pytest.mark.parametrize("text, shown", [
    (f"{PATIENT_FOLDER}/biopsy.svs: no such file", "biopsy.svs: no such file"),
    (f"cannot read '{PATIENT_FOLDER}/biopsy.svs'", "cannot read 'biopsy.svs'"),
    ("cannot read \"/srv/O'Brien, J 2024/x.svs\" now", "cannot read \"x.svs\" now"),
    ("/srv/O'Brien 2024/x.svs: gone", "x.svs: gone"),
    ("/srv/a/x.svs,/srv/Patient B/y.svs", "x.svs,y.svs"),
    ("/srv/a/x.svs, /srv/Patient B/y.svs and file:///srv/Patient%20C/z.svs", "x.svs, y.svs and z.svs"),
    ("file:///srv/Patient C/z.svs: no such file", "z.svs: no such file"),
    ("folders /srv/a:/srv/Patient D", "folders a:Patient D"),
    ("/srv/x.svs: no pixel size; see POST .../slides/{s}/sources", "x.svs: no pixel size; see POST .../slides/{s}/sources"),
    ("/srv/x.svs is unreadable, see .../slides/{s}/sources", "x.svs is unreadable, see .../slides/{s}/sources"),
    ("2026-12-06 00:00:01 /srv/a b/c.svs: no\n2026-12-06 00:00:02 /srv/d e/f.svs: no",
     "2026-12-06 00:00:01 c.svs: no\n2026-12-06 00:00:02 f.svs: no"),
    ("and/or 1/2, http://host/a/b", "and/or 1/2, http://host/a/b"),
])
def test_a_viewer_reads_every_path_as_its_name(text, shown):
    assert names_only(text) == shown


def test_an_import_summary_names_its_largest_classes_briefly():
    classes = {f"{index:05d}" + "c" * 1_000: index + 1 for index in range(20_000)}
    summary = SegmentImportResult(Path("out"), "geojson", 50, {}, classes, 1.0).summary()
    assert len(summary) < 4_000
    assert summary.count("class ") == SUMMARY_CLASSES and "'19999ccc" in summary
    assert f"and {20_000 - SUMMARY_CLASSES:,} more classes" in summary


def test_a_job_message_and_log_line_are_stored_bounded(app, project, monkeypatch):
    huge = "x" * 3_000_000

    def chatty(context: job_runs.JobContext) -> dict:
        context.progress(0.5, huge, force=True)
        context.log(huge)
        return {"message": huge}

    monkeypatch.setitem(jobs.JOB_KINDS, "chatty", jobs.JobKind("chatty", chatty, jobs.SLIDE_QUEUE))
    job_id = _job(app, project, kind="chatty", state=JobState.queued)
    job_runs.run(app.state.database, app.state.settings, job_id)
    with app.state.database.session() as session:
        job = session.get(Job, job_id)
        assert job.state == JobState.done
        assert len(job.message) < jobs.MESSAGE_CHARS + 100 and "more characters" in job.message
        assert len(job.log) < jobs.LOG_LINE_CHARS + 200


@pytest.mark.parametrize("kind", ["import-segments", "import-features", "cohort"])
def test_a_starter_demoted_from_owner_cannot_retry_owner_work(app, client, project, member_headers, admin_headers,
                                                               sender, kind):
    headers = member_headers(Role.owner)
    me = client.get("/api/v1/auth/me", headers=headers).json()["id"]
    job_id = _job(app, project, kind=kind, message="boom", created_by=me)
    with app.state.database.session(write=True) as session:
        session.get(Membership, (project["id"], me)).role = Role.annotator
    url = f"/api/v1/projects/{project['id']}/jobs/{job_id}/retry"
    refused = client.post(url, headers=headers)
    assert refused.status_code == 403 and "owner" in refused.json()["detail"]
    assert sender.sent == []
    assert client.post(url, headers=admin_headers).status_code == 202


def test_errors_name_a_huge_choice_or_cohort_file_briefly(app, client, project, admin_headers):
    base = f"/api/v1/projects/{project['id']}"
    huge = "x" * 200_000
    for field in ("extractor", "model", "strategy", "normalisation"):
        answer = client.patch(base, headers=admin_headers, json={field: huge})
        assert answer.status_code == 422 and len(answer.content) < 2_000, field
        answer = client.post("/api/v1/projects", headers=admin_headers, json={"name": "n", field: huge})
        assert answer.status_code == 422 and len(answer.content) < 2_000, field
    cohort = _job(app, project, kind="cohort", state=JobState.done,
                  params={"epoch": 1, "folder": "/srv/a", "formats": ["mask"], "out": "c1"})
    answer = client.get(f"{base}/cohorts/{cohort}/slides/{'n' * 60_000}/mask", headers=admin_headers)
    assert answer.status_code == 404 and len(answer.content) < 500 and "60,000 characters" in answer.text


def test_a_huge_message_stored_before_the_bound_is_shown_cut(app, client, project, member_headers):
    job_id = _job(app, project, kind="superpixels", message="/srv/Patient E/x.svs " + "y" * 3_000_000)
    with app.state.database.session(write=True) as session:
        session.get(Job, job_id).log = "z" * 3_000_000 + "\n"
    shown = client.get(f"/api/v1/projects/{project['id']}/jobs/{job_id}", headers=member_headers(Role.viewer)).json()
    assert shown["message"].startswith("x.svs yyy") and len(shown["message"]) < jobs.MESSAGE_CHARS + 100
    assert len(shown["log"]) < jobs.LOG_LINE_CHARS + 100
