"""Superpixels, features and prepare jobs of slides: submitted through the API with a stub sender,
run in this process, producing real files; submitting finished work again is a no-op."""

from __future__ import annotations

import pytest

from slidelabel.pipelines.features.extract import read_features
from slidelabel.services import job_runs, jobs
from slidelabel.services.projects import superpixel_options
from slidelabel.store.layout import ProjectFiles
from slidelabel.store.models import Job, JobState, Project, Role, Slide
from slidelabel.store.superpixel_files import MANIFEST_FILE, read_manifest

#: Coarse superpixels at 5x keep each run to about a second.
OPTIONS = {"magnification": 5, "size": "100um"}


@pytest.fixture
def slide_id(app, project: dict, slide_row: int) -> int:
    """The CMU sample in a project of coarse superpixels, not computed yet."""
    with app.state.database.session(write=True) as session:
        session.get(Project, project["id"]).superpixel_options = superpixel_options(OPTIONS).as_dict()
        session.get(Slide, slide_row).superpixels = None
    return slide_row


def run(app, job: dict) -> Job:
    job_runs.run(app.state.database, app.state.settings, job["id"])
    with app.state.database.session() as session:
        return session.get(Job, job["id"])


def test_superpixels_then_features_make_real_files_and_asking_again_is_a_no_op(app, client, admin_headers, project,
                                                                               sender, slide_id):
    url = f"/api/v1/projects/{project['id']}/slides/{slide_id}"
    files = ProjectFiles(app.state.settings.data_dir, project["id"])
    early = client.post(f"{url}/features", headers=admin_headers)
    assert early.status_code == 409 and "superpixels" in early.json()["detail"]

    job = client.post(f"{url}/superpixels", headers=admin_headers).json()
    assert job["state"] == "queued" and sender.sent == [(jobs.TASK_NAME, [job["id"]], jobs.SLIDE_QUEUE)]
    done = run(app, job)
    assert done.state == JobState.done, done.message
    manifest = read_manifest(files.superpixels(slide_id) / MANIFEST_FILE)
    assert manifest["options"] == superpixel_options(OPTIONS).as_dict()
    with app.state.database.session() as session:
        assert session.get(Slide, slide_id).superpixels == manifest["superpixels"] > 10

    features = client.post(f"{url}/features", headers=admin_headers).json()
    assert run(app, features).state == JobState.done
    assert read_features(files.features(slide_id, "color")).shape[0] == manifest["superpixels"]

    for step, first in (("superpixels", job), ("features", features)):
        again = client.post(f"{url}/{step}", headers=admin_headers)
        assert again.status_code == 202 and (again.json()["id"], again.json()["state"]) == (first["id"], "done")
    assert len(sender.sent) == 2
    [listed] = client.get(f"/api/v1/projects/{project['id']}/slides", headers=admin_headers).json()
    assert (listed["superpixels_job"]["id"], listed["features_job"]["id"]) == (job["id"], features["id"])
    assert listed["superpixels"] == manifest["superpixels"]


def test_prepare_runs_both_steps_once_per_slide(app, client, admin_headers, project, sender, slide_id):
    url = f"/api/v1/projects/{project['id']}/jobs/prepare"
    [job] = client.post(url, headers=admin_headers).json()
    assert (job["kind"], job["slide_id"]) == ("prepare", slide_id)
    done = run(app, job)
    assert done.state == JobState.done and "superpixels (done)" in done.message, done.message
    files = ProjectFiles(app.state.settings.data_dir, project["id"])
    assert read_features(files.features(slide_id, "color")).shape[0] > 10
    assert [j["id"] for j in client.post(url, headers=admin_headers).json()] == [job["id"]]
    [listed] = client.get(f"/api/v1/projects/{project['id']}/slides", headers=admin_headers).json()
    assert listed["superpixels_job"]["id"] == listed["features_job"]["id"] == job["id"]
    # Superpixels asked for on their own find their work finished.
    single = client.post(f"/api/v1/projects/{project['id']}/slides/{slide_id}/superpixels", headers=admin_headers)
    assert "skipped" in run(app, single.json()).message


def test_annotators_may_start_jobs_and_viewers_may_not(client, project, member_headers, sender, slide_id):
    url = f"/api/v1/projects/{project['id']}/slides/{slide_id}/superpixels"
    assert client.post(url, headers=member_headers(None)).status_code == 404
    assert client.post(url, headers=member_headers(Role.viewer)).status_code == 403
    assert client.post(url, headers=member_headers(Role.annotator)).status_code == 202
    assert client.post(f"/api/v1/projects/{project['id']}/slides/999/superpixels",
                       headers=member_headers(Role.owner)).status_code == 404


def test_unfinished_features_of_a_killed_job_are_removed_on_retry_and_at_worker_start(app, project, slide_row, settings):
    from slidelabel.services.slide_jobs import remove_unfinished_features, sweep_unfinished_outputs
    from slidelabel.store.layout import ProjectFiles

    out = ProjectFiles(settings.data_dir, project["id"]).features(slide_row, "color")
    leftovers = [out.with_name(f".{out.name}.{tag}.tmp") for tag in ("0a1b", "2c3d")]
    for leftover in leftovers:
        (leftover / "c").mkdir(parents=True)
    remove_unfinished_features(out)
    assert not any(leftover.exists() for leftover in leftovers)
    (leftovers[0] / "c").mkdir(parents=True)
    assert sweep_unfinished_outputs(app.state.database, settings.data_dir) == [leftovers[0]]
    assert not leftovers[0].exists()
