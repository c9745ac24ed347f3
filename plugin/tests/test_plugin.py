"""The plugin through Girder's HTTP interface: a folder of slide items becomes a project of its
owner, Girder users label with their Girder tokens and folder roles, jobs run and show in
Girder's job list, and the export is a valid large_image annotation on the item."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from girder.constants import AccessType
from girder.models.folder import Folder
from girder.models.token import Token
from girder.models.upload import Upload
from girder.models.user import User
from girder.plugin import getPluginStaticContent
from girder_jobs.constants import JobStatus
from girder_jobs.models.job import Job as GirderJob
from girder_large_image_annotation.models.annotation import AnnotationSchema
from sqlalchemy import select

from girder_slidelabel import job_list
from girder_slidelabel.links import SLIDE_LINK, SUPERPIXELS_OF
from slidelabel.services import job_runs
from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.models import Job, JobState

API = "/api/v1"
SL = "/slidelabel/api/v1"
pytestmark = pytest.mark.plugin("slidelabel")


def headers(user: dict) -> dict[str, str]:
    return {"Girder-Token": str(Token().createToken(user)["_id"])}


def make_user(login: str) -> dict:
    return User().createUser(login=login, password="password", firstName=login, lastName="test",
                             email=f"{login}@girder.test")


def grant_project_creation(http, admin: dict, user: dict) -> None:
    """Let ``user`` create projects, as a Girder admin does in slidelabel's user settings."""
    me = http.get(f"{SL}/auth/me", headers=headers(user)).json()
    granted = http.patch(f"{SL}/users/{me['id']}", headers=headers(admin), json={"can_create_projects": True})
    assert granted.status_code == 200, granted.text


def run_queued_jobs() -> list[Job]:
    """Run every queued slidelabel job in this process, as a worker's Celery task does."""
    settings = Settings()
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            queued = list(session.scalars(select(Job.id).where(Job.state == JobState.queued)))
        for job_id in queued:
            job_runs.run(database, settings, job_id)
        with database.session() as session:
            return [session.get(Job, job_id) for job_id in queued]
    finally:
        database.dispose()


@pytest.fixture
def slide_folder(user, fsAssetstore, cmu_slide: Path, http) -> dict:
    """A folder of ``user`` with the CMU sample as a large-image item."""
    folder = Folder().createFolder(user, "slides", parentType="user", creator=user)
    with cmu_slide.open("rb") as stream:
        file = Upload().uploadFromFile(stream, cmu_slide.stat().st_size, cmu_slide.name, "folder", folder, user)
    item_id = str(file["itemId"])
    item = http.get(f"{API}/item/{item_id}", headers=headers(user)).json()
    if "largeImage" not in item:  # large_image makes readable uploads large images itself
        made = http.post(f"{API}/item/{item_id}/tiles", params={"fileId": str(file["_id"])}, headers=headers(user))
        assert made.status_code == 200, made.text
    return folder


@pytest.fixture
def project(http, admin, user, slide_folder) -> dict:
    grant_project_creation(http, admin, user)
    response = http.post(f"{API}/folder/{slide_folder['_id']}/slidelabel", headers=headers(user), json={
        "name": "skin", "superpixels": {"size": "60um"},
        "categories": [{"name": "tissue"}, {"name": "glass"}]})
    assert response.status_code == 200, response.text
    created = response.json()
    assert len(created["added"]) == 1 and created["skipped"] == []
    return created


def test_the_plugin_serves_slidelabel_and_its_navigation_entry(http, server):
    assert "slidelabel" in getPluginStaticContent()
    script = getPluginStaticContent()["slidelabel"].js[0]
    assert http.get(f"/{script}").status_code == 200
    assert http.get("/slidelabel/docs").status_code == 200
    assert http.get(f"{SL}/projects").status_code == 401  # no Girder token, no slidelabel


def test_the_web_client_loads_under_the_mount_with_the_girder_login(http, server, user):
    page = http.get("/slidelabel/")
    assert page.status_code == 200 and "<title>slidelabel</title>" in page.text
    # The bundle's URLs are relative to the page, so they resolve under /slidelabel/.
    scripts = re.findall(r'src="\./(assets/[^"]+\.js)"', page.text)
    assert scripts and http.get(f"/slidelabel/{scripts[0]}").status_code == 200
    # The client reads Girder's login cookie and sends it as its token: no second login.
    token = headers(user)["Girder-Token"]
    assert http.get(f"{SL}/auth/me", headers={"Authorization": f"Bearer {token}"}).json()["username"] == user["login"]


def test_a_girder_folder_is_labelled_trained_and_exported_by_girder_users(http, admin, user, project, slide_folder):
    owner = headers(user)
    p = project["project"]["id"]
    tissue, glass = (c["id"] for c in project["project"]["categories"])
    me = http.get(f"{SL}/auth/me", headers=owner).json()
    assert me["username"] == user["login"]
    assert [(pr["id"], pr["role"]) for pr in http.get(f"{SL}/projects", headers=owner).json()] == [(p, "owner")]
    assert http.get(f"{API}/folder/{slide_folder['_id']}/slidelabel", headers=owner).json() == {"projectId": p}

    prepared = http.post(f"{SL}/projects/{p}/jobs/prepare", headers=owner)
    assert prepared.status_code == 202, prepared.text
    assert {job.state for job in run_queued_jobs()} == {JobState.done}
    slide = http.get(f"{SL}/projects/{p}/slides", headers=owner).json()[0]
    s = slide["id"]
    assert slide["superpixels"] > 50

    table = http.get(f"{SL}/projects/{p}/slides/{s}/superpixels", headers=owner).json()
    fraction, ids = np.asarray(table["tissue_fraction"]), np.asarray(table["ids"])
    for chosen, category in ((ids[fraction > 0.9][:15], tissue), (ids[fraction < 0.1][:15], glass)):
        labelled = http.put(f"{SL}/projects/{p}/slides/{s}/labels", headers=owner,
                            json={"superpixels": chosen.tolist(), "category_id": category})
        assert labelled.status_code == 200, labelled.text
    assert http.post(f"{SL}/projects/{p}/epochs", headers=owner).status_code == 202
    assert {job.state for job in run_queued_jobs()} == {JobState.done}
    queue = http.get(f"{SL}/projects/{p}/queue", headers=owner, params={"n": 4}).json()
    assert queue["epoch"] == 1 and len(queue["items"]) == 4

    # The jobs in Girder's job list, finished, owned by the Girder user who asked for them.
    database = Database(Settings().database_url)
    assert job_list.mirror_jobs(database) >= 2
    database.dispose()
    mirrored = list(GirderJob().find({job_list.JOB_LINK: {"$exists": True}}))
    assert mirrored and {j["status"] for j in mirrored} == {JobStatus.SUCCESS}
    assert {j["userId"] for j in mirrored} == {user["_id"]}

    # Labels and predictions as large_image annotations with a pixelmap on the item.
    item = next(Folder().childItems(slide_folder))
    assert item[SLIDE_LINK] == s
    for source in ("labels", "predictions"):
        saved = http.post(f"{API}/item/{item['_id']}/slidelabel/annotation", headers=owner,
                          params={"source": source})
        assert saved.status_code == 200, saved.text
    annotations = http.get(f"{API}/annotation", params={"itemId": str(item["_id"])}, headers=owner).json()
    assert len(annotations) == 2
    for summary in annotations:
        document = http.get(f"{API}/annotation/{summary['_id']}", headers=owner).json()["annotation"]
        jsonschema.validate(document, AnnotationSchema.annotationSchema)
        (pixelmap,) = document["elements"]
        assert pixelmap["type"] == "pixelmap" and len(pixelmap["values"]) == slide["superpixels"] + 1
    pixels = [i for i in Folder().childItems(slide_folder) if SUPERPIXELS_OF in i]
    assert len(pixels) == 1 and str(pixels[0]["_id"]) == pixelmap["girderId"] and "largeImage" in pixels[0]
    # The superpixel image is no slide: adding the folder's new items again finds nothing.
    again = http.put(f"{API}/folder/{slide_folder['_id']}/slidelabel/slides", headers=owner).json()
    assert again == {"added": {}, "skipped": []}


def test_folder_access_levels_are_project_roles(http, admin, user, project, slide_folder):
    p = project["project"]["id"]
    reader, writer, outsider = make_user("reader"), make_user("writer"), make_user("outsider")
    Folder().setUserAccess(slide_folder, reader, AccessType.READ, save=True)
    Folder().setUserAccess(slide_folder, writer, AccessType.WRITE, save=True)
    s = http.get(f"{SL}/projects/{p}/slides", headers=headers(user)).json()[0]["id"]
    label = {"superpixels": [1, 2], "category_id": project["project"]["categories"][0]["id"]}

    assert http.get(f"{SL}/projects/{p}", headers=headers(outsider)).status_code == 404
    assert http.get(f"{SL}/projects", headers=headers(outsider)).json() == []
    assert http.get(f"{SL}/projects/{p}", headers=headers(reader)).json()["role"] == "viewer"
    assert http.put(f"{SL}/projects/{p}/slides/{s}/labels", headers=headers(reader), json=label).status_code == 403
    assert http.get(f"{SL}/projects/{p}", headers=headers(writer)).json()["role"] == "annotator"
    assert http.get(f"{SL}/projects/{p}", headers=headers(admin)).json()["role"] == "owner"
    # Girder wins: access taken away in Girder is membership taken away in slidelabel.
    Folder().setUserAccess(slide_folder, reader, None, save=True)
    assert http.get(f"{SL}/projects/{p}", headers=headers(reader)).status_code == 404
    # Only folder admins make projects; a folder has one project.
    body = {"name": "second"}
    assert http.post(f"{API}/folder/{slide_folder['_id']}/slidelabel", headers=headers(writer),
                     json=body).status_code == 403
    assert http.post(f"{API}/folder/{slide_folder['_id']}/slidelabel", headers=headers(user),
                     json=body).status_code == 409
