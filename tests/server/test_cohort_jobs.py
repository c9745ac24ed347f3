"""An epoch applied to a server folder through the API: a cohort job submits one job per slide,
the slides' results match ``slidelabel predict`` with the epoch's model, a bad slide fails alone,
the cohort's progress follows its slides, cancelling it stops them, and roles hold.

Jobs are run here, in order, from what the app would have sent to Celery (the stub sender)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile
from test_epochs import annotator, cmu_files, rule, slide_id, trained  # noqa: F401  (fixtures)
from tissue_slides import write_tissue_slide

from slidelabel.services import job_runs, jobs
from slidelabel.services.cohort import PredictOptions, open_cohort_model, predict_cohort
from slidelabel.services.cohort_jobs import COHORT, COHORT_SLIDE
from slidelabel.services.projects import superpixel_options
from slidelabel.store.models import Job, JobState, Role

pytestmark = pytest.mark.postgresql  # what the database does: see tests/server/conftest.py


def url(project: dict, path: str = "") -> str:
    return f"/api/v1/projects/{project['id']}{path}"


@pytest.fixture
def cohort_folder(settings, monuseg_dir: Path) -> Path:
    """Two real-tissue slides and a file that only claims to be one, in a subfolder of the server's
    slide folder."""
    folder = settings.slide_folders[0] / "cohort"
    (folder / "more").mkdir(parents=True)
    write_tissue_slide(folder / "breast.tiff", monuseg_dir, rows=1, cols=2, first=0)
    write_tissue_slide(folder / "more" / "kidney.tiff", monuseg_dir, rows=2, cols=1, first=6)
    (folder / "broken.tiff").write_bytes(b"II*\x00" + b"not a slide" * 100)
    return folder


def run_sent(app, sender, start: int = 0) -> list[int]:
    """Run the jobs sent since message ``start``, in order (those they send too); their ids."""
    ran = []
    while start < len(sender.sent):
        job_id = sender.sent[start][1][0]
        job_runs.run(app.state.database, app.state.settings, job_id, sender=sender)
        ran.append(job_id)
        start += 1
    return ran


def test_a_cohort_predicts_each_slide_as_the_cli_does_and_reports_the_bad_one(
        app, client, project, admin_headers, trained, sender, cohort_folder, member_headers, tmp_path):  # noqa: F811
    response = client.post(url(project, "/epochs/1/cohort"), headers=admin_headers,
                           json={"folder": str(cohort_folder), "formats": ["geojson"]})
    assert response.status_code == 202, response.text
    cohort = response.json()
    assert cohort["kind"] == COHORT and cohort["state"] == "queued"
    sent_before = len(sender.sent)
    job_runs.run(app.state.database, app.state.settings, cohort["id"], sender=sender)
    slide_messages = sender.sent[sent_before:]
    assert len(slide_messages) == 3 and {queue for _name, _args, queue in slide_messages} == {jobs.SLIDE_QUEUE}
    with app.state.database.session() as session:  # the starter's turns on the queue (twelfth attack: nobody's)
        starters = {session.get(Job, args[0]).created_by for _name, args, _queue in slide_messages}
        assert starters == {session.get(Job, cohort["id"]).created_by} != {None}
    viewer = member_headers(Role.viewer)
    waiting = client.get(url(project, f"/cohorts/{cohort['id']}"), headers=viewer).json()
    assert waiting["job"]["state"] == "running" and waiting["job"]["progress"] == 0
    assert [s["job"]["state"] for s in waiting["slides"]] == ["queued"] * 3

    job_runs.run(app.state.database, app.state.settings, slide_messages[0][1][0], sender=sender)
    one = client.get(url(project, f"/cohorts/{cohort['id']}"), headers=viewer).json()
    assert one["job"]["state"] == "running" and one["job"]["progress"] == pytest.approx(1 / 3)
    run_sent(app, sender, sent_before + 1)

    result = client.get(url(project, f"/cohorts/{cohort['id']}"), headers=viewer).json()
    assert result["job"]["state"] == "done" and result["job"]["progress"] == 1
    assert result["job"]["message"] == "3 slides: 2 done, 1 failed"
    by_name = {s["name"]: s for s in result["slides"]}
    assert set(by_name) == {"breast", "kidney", "broken"} and by_name["kidney"]["slide"] == "more/kidney.tiff"
    assert by_name["broken"]["job"]["state"] == "failed" and "broken.tiff" in by_name["broken"]["job"]["message"]
    assert by_name["broken"]["downloads"] == {} and by_name["broken"]["counts"] == {}
    assert all(s["job"]["kind"] == COHORT_SLIDE for s in result["slides"])

    # The same slides through `slidelabel predict`'s service with the downloaded model and the
    # project's superpixel options: the same predictions, superpixel by superpixel.
    model_path = tmp_path / "model.zip"
    model_path.write_bytes(client.get(url(project, "/epochs/1/model"), headers=viewer).content)
    options = PredictOptions(superpixel_options(project["superpixel_options"]), geojson=True)
    slides = [cohort_folder / "breast.tiff", cohort_folder / "more" / "kidney.tiff"]
    report = predict_cohort(slides, tmp_path / "cli", open_cohort_model(model_path), options)
    assert not report.failures
    for name in ("breast", "kidney"):
        found = by_name[name]
        assert found["job"]["state"] == "done"
        assert set(found["downloads"]) == {"mask", "table", "geojson"}
        table = client.get(found["downloads"]["table"], headers=viewer)
        assert table.status_code == 200
        (tmp_path / f"{name}.parquet").write_bytes(table.content)
        served = pq.read_table(tmp_path / f"{name}.parquet").to_pydict()
        expected = pq.read_table(tmp_path / "cli" / name / "predictions.parquet").to_pydict()
        assert served["predicted"] == expected["predicted"]
        np.testing.assert_allclose(served["certainty"], expected["certainty"], atol=1e-6)
        assert found["counts"] == dict(Counter(p for p in served["predicted"] if p is not None))
        assert sum(found["counts"].values()) > 0
        assert set(found["counts"]) <= {"tumour", "stroma"}
        mask = client.get(found["downloads"]["mask"] + f"?token={viewer['Authorization'].split()[1]}")
        assert mask.status_code == 200 and mask.headers["content-type"] == "image/tiff"
        (tmp_path / f"{name}.tiff").write_bytes(mask.content)
        assert set(np.unique(tifffile.imread(tmp_path / f"{name}.tiff")).tolist()) <= {0, 1, 2}
        geojson = client.get(found["downloads"]["geojson"], headers=viewer).json()
        assert len(geojson["features"]) > 0

    missing = client.get(url(project, f"/cohorts/{cohort['id']}/slides/broken/mask"), headers=viewer)
    assert missing.status_code == 404
    outside = client.get(url(project, f"/cohorts/{cohort['id']}/slides/..%2F..%2Fslides/mask"), headers=viewer)
    assert outside.status_code == 404
    again = client.post(url(project, "/epochs/1/cohort"), headers=admin_headers,
                        json={"folder": str(cohort_folder), "formats": ["geojson"]})
    assert again.json()["id"] == cohort["id"], "the same finished work is returned, not run again"
    listed = client.get(url(project, "/cohorts"), headers=viewer).json()
    assert [c["job"]["id"] for c in listed] == [cohort["id"]] and listed[0]["folder"] == cohort_folder.name
    assert client.get(url(project, "/cohorts"), headers=admin_headers).json()[0]["folder"] == str(cohort_folder)


def test_cancelling_a_cohort_stops_its_slide_jobs(app, client, project, admin_headers, trained, sender,  # noqa: F811
                                                  cohort_folder):
    cohort = client.post(url(project, "/epochs/1/cohort"), headers=admin_headers,
                         json={"folder": str(cohort_folder)}).json()
    start = len(sender.sent)
    job_runs.run(app.state.database, app.state.settings, cohort["id"], sender=sender)
    cancelled = client.post(url(project, f"/jobs/{cohort['id']}/cancel"), headers=admin_headers)
    assert cancelled.json()["state"] == "cancelled"
    run_sent(app, sender, start)
    result = client.get(url(project, f"/cohorts/{cohort['id']}"), headers=admin_headers).json()
    assert result["job"]["state"] == "cancelled"
    assert [s["job"]["state"] for s in result["slides"]] == ["cancelled"] * 3
    assert all(s["job"]["message"] == "the cohort was cancelled" for s in result["slides"])


def test_who_may_start_a_cohort_and_on_what(client, project, admin_headers, member_headers,
                                            trained, sender, cohort_folder, tmp_path):  # noqa: F811
    body = {"folder": str(cohort_folder)}
    for role in (Role.viewer, Role.annotator, Role.reviewer):
        assert client.post(url(project, "/epochs/1/cohort"), headers=member_headers(role), json=body).status_code == 403
    assert client.get(url(project, "/cohorts"), headers=member_headers(None)).status_code == 404  # hidden
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    refused = client.post(url(project, "/epochs/1/cohort"), headers=admin_headers, json={"folder": str(elsewhere)})
    assert refused.status_code == 403 and "outside the slide folders" in refused.json()["detail"]
    not_folder = client.post(url(project, "/epochs/1/cohort"), headers=admin_headers,
                             json={"folder": str(cohort_folder / "breast.tiff")})
    assert not_folder.status_code == 422 and "not a folder" in not_folder.json()["detail"]
    assert client.post(url(project, "/epochs/7/cohort"), headers=admin_headers, json=body).status_code == 404
    bad_format = client.post(url(project, "/epochs/1/cohort"), headers=admin_headers,
                             json={**body, "formats": ["shapefile"]})
    assert bad_format.status_code == 422
    assert client.get(url(project, "/cohorts"), headers=admin_headers).json() == [], "nothing was started"


def test_a_waiting_cohort_is_never_taken_for_a_dead_worker_s_and_a_slide_given_up_counts(
        app, client, project, admin_headers, trained, sender, cohort_folder):  # noqa: F811
    cohort = client.post(url(project, "/epochs/1/cohort"), headers=admin_headers,
                         json={"folder": str(cohort_folder)}).json()
    start = len(sender.sent)
    job_runs.run(app.state.database, app.state.settings, cohort["id"], sender=sender)
    first, *others = [job_id for _name, (job_id,), _queue in sender.sent[start:]]
    database = app.state.database
    with database.session(write=True) as session:  # the first slide's worker died for the last time
        job = session.get(Job, first)
        job.state, job.attempts = JobState.running, job_runs.MAX_ATTEMPTS
        job.heartbeat_at = datetime.now(UTC) - timedelta(hours=1)
    requeued = job_runs.requeue_stale(database, sender, stale_s=1.0)
    assert requeued == [], "neither the waiting cohort nor a slide whose worker died too often is requeued"
    result = client.get(url(project, f"/cohorts/{cohort['id']}"), headers=admin_headers).json()
    assert result["job"]["state"] == "running" and result["job"]["progress"] == pytest.approx(1 / 3)
    assert result["job"]["message"] == "1 of 3 slides (1 failed)"
    for job_id in others:
        job_runs.run(database, app.state.settings, job_id, sender=sender)
    ended = client.get(url(project, f"/cohorts/{cohort['id']}"), headers=admin_headers).json()["job"]
    assert ended["state"] == "done" and ended["message"] == "3 slides: 1 done, 2 failed"
    retried = client.post(url(project, f"/jobs/{first}/retry"), headers=admin_headers).json()
    assert retried["id"] != first and retried["kind"] == COHORT_SLIDE
    job_runs.run(database, app.state.settings, retried["id"], sender=sender)
    result = client.get(url(project, f"/cohorts/{cohort['id']}"), headers=admin_headers).json()
    assert result["job"]["message"] == "3 slides: 2 done, 1 failed", "a retried slide updates its ended cohort"
    assert [s["job"]["id"] for s in result["slides"]][0] == retried["id"] and result["slides"][0]["counts"]
