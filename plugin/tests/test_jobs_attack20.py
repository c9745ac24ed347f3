"""Twentieth attack, medium, under Girder: Cancel in Girder's job list answered 200 'canceled' but the
slidelabel job ran on to done, and the list showed 'Canceled' for good (the mirror skipped jobs
Girder marked final). Cancel there now cancels the slidelabel job with the rights slidelabel's own
cancel takes, and the list shows the job's real state."""

from __future__ import annotations

import pytest
import test_plugin
from girder_jobs.constants import JobStatus
from girder_jobs.models.job import Job as GirderJob
from girder_slidelabel import job_list
from test_plugin import API, SL, headers, make_user, run_queued_jobs

from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.models import Job, JobState

project, slide_folder = test_plugin.project, test_plugin.slide_folder
pytestmark = pytest.mark.plugin("slidelabel")


@pytest.fixture
def database():
    database = Database(Settings().database_url)
    yield database
    database.dispose()


def _mirrored_job(http, who: dict, project_id: int, database) -> dict:
    started = http.post(f"{SL}/projects/{project_id}/jobs/prepare", headers=headers(who))
    assert started.status_code == 202, started.text
    job_list.mirror_jobs(database)
    return GirderJob().findOne({job_list.JOB_LINK: started.json()[0]["id"]})


def _state(database, job_id: int) -> JobState:
    with database.session() as session:
        return session.get(Job, job_id).state


def test_cancel_in_girders_list_cancels_the_slidelabel_job(http, admin, user, project, slide_folder, database):
    doc = _mirrored_job(http, user, project["project"]["id"], database)
    cancelled = http.put(f"{API}/job/{doc['_id']}/cancel", headers=headers(user))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == JobStatus.CANCELED
    assert _state(database, doc[job_list.JOB_LINK]) == JobState.cancelled
    assert [job.state for job in run_queued_jobs()] == []  # nothing left to run
    job_list.mirror_jobs(database)
    assert GirderJob().load(doc["_id"], force=True)["status"] == JobStatus.CANCELED


def test_cancel_of_a_job_that_ended_shows_its_end(http, admin, user, project, slide_folder, database):
    doc = _mirrored_job(http, user, project["project"]["id"], database)
    assert [job.state for job in run_queued_jobs()] == [JobState.done]
    cancelled = http.put(f"{API}/job/{doc['_id']}/cancel", headers=headers(user))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == JobStatus.SUCCESS
    assert _state(database, doc[job_list.JOB_LINK]) == JobState.done
    assert GirderJob().load(doc["_id"], force=True)["status"] == JobStatus.SUCCESS


def test_a_job_girder_marked_canceled_is_shown_as_it_is(http, admin, user, project, slide_folder, database):
    """A Girder job marked canceled by other means (Girder's Cancel before this fix, a script)
    while the slidelabel job ran on: the next copy shows the slidelabel job's state."""
    doc = _mirrored_job(http, user, project["project"]["id"], database)
    GirderJob().updateJob(doc, status=JobStatus.CANCELED)
    assert [job.state for job in run_queued_jobs()] == [JobState.done]
    assert job_list.mirror_jobs(database) == 1
    shown = GirderJob().load(doc["_id"], force=True)
    assert shown["status"] == JobStatus.SUCCESS and shown["progress"]["current"] == 100
    assert job_list.mirror_jobs(database) == 0  # final as the mirror copied it: left alone


def test_cancel_refused_to_a_girder_user_without_slidelabels_rights(http, admin, user, project, slide_folder,
                                                                   database):
    """Girder gives write access on a job to its owner and site admins; a Girder user given write
    access on it by other means, who neither started it nor trains in the project, is refused."""
    doc = _mirrored_job(http, user, project["project"]["id"], database)
    stranger = make_user("stranger")
    GirderJob().setUserAccess(doc, stranger, level=2, save=True)  # ADMIN on the job, none on the folder
    refused = http.put(f"{API}/job/{doc['_id']}/cancel", headers=headers(stranger))
    assert refused.status_code == 403, refused.text
    assert "slidelabel refused" in refused.json()["message"]
    assert _state(database, doc[job_list.JOB_LINK]) == JobState.queued
    assert GirderJob().load(doc["_id"], force=True)["status"] == JobStatus.QUEUED
