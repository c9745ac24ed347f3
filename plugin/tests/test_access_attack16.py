"""Access under Girder as slidelabel's own server grants it (sixteenth attack): a copy of a
project's folder or of a slide item grants nothing, ids are read as FastAPI reads them, disabled
accounts stop, creating projects is a granted right, other users' job messages carry no server
paths, and ``?token=`` authenticates reads only."""

from __future__ import annotations

import pytest
from girder.constants import AccessType
from girder.models.folder import Folder
from girder.models.item import Item
from girder.models.token import Token
from girder_jobs.models.job import Job as GirderJob
from sqlalchemy import select

import test_plugin
from girder_slidelabel import job_list
from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.models import Job, JobState
from test_plugin import (
    API,
    SL,
    grant_project_creation,
    headers,
    make_user,
    run_queued_jobs,
)

# test_plugin's fixtures, used here too.
project, slide_folder = test_plugin.project, test_plugin.slide_folder

pytestmark = pytest.mark.plugin("slidelabel")


def _own_folder(user: dict) -> dict:
    return Folder().createFolder(user, "mine", parentType="user", creator=user)


@pytest.mark.parametrize("shown_id", ["+{}", "0{}", "%20{}"])
def test_a_copy_of_the_project_folder_grants_its_copier_nothing(http, user, project, slide_folder, shown_id):
    p = project["project"]["id"]
    reader = make_user("reader")
    Folder().setUserAccess(slide_folder, reader, AccessType.READ, save=True)
    # Girder's copy keeps the folder's own fields; the reader is admin of its copy.
    copy = Folder().copyFolder(Folder().load(slide_folder["_id"], user=reader, level=AccessType.READ),
                               parent=_own_folder(reader), parentType="folder", creator=reader)

    assert [(x["id"], x["role"]) for x in http.get(f"{SL}/projects", headers=headers(reader)).json()] == [(p, "viewer")]
    path = f"{SL}/projects/{shown_id.format(p)}"  # FastAPI reads each as p
    assert http.get(path, headers=headers(reader)).json()["role"] == "viewer"
    assert http.patch(path, headers=headers(reader), json={"name": "renamed"}).status_code == 403
    assert http.delete(path, headers=headers(reader)).status_code == 403
    assert http.get(f"{API}/folder/{copy['_id']}/slidelabel", headers=headers(reader)).json() == {"projectId": None}
    assert http.put(f"{API}/folder/{copy['_id']}/slidelabel/slides", headers=headers(reader)).status_code == 404
    assert http.get(f"{SL}/projects/{p}", headers=headers(user)).json()["name"] == "skin"


# The link made before copies were told apart: test_access_attack17.py (it holds on the folder
# made before its project, not on the oldest).


def test_an_annotation_needs_a_role_and_the_item_the_slide_was_added_from(http, user, project, slide_folder):
    p = project["project"]["id"]
    assert http.post(f"{SL}/projects/{p}/jobs/prepare", headers=headers(user)).status_code == 202
    run_queued_jobs()
    s = http.get(f"{SL}/projects/{p}/slides", headers=headers(user)).json()[0]["id"]
    label = {"superpixels": [1, 2, 3], "category_id": project["project"]["categories"][0]["id"]}
    assert http.put(f"{SL}/projects/{p}/slides/{s}/labels", headers=headers(user), json=label).status_code == 200
    item = next(Folder().childItems(slide_folder))
    reader = make_user("reader")
    Folder().setUserAccess(slide_folder, reader, AccessType.READ, save=True)
    export = {"source": "labels", "elements": "polygons"}

    def annotate(item_id, who: dict) -> int:
        return http.post(f"{API}/item/{item_id}/slidelabel/annotation", headers=headers(who), params=export).status_code

    def copy(who: dict) -> str:
        made = http.post(f"{API}/item/{item['_id']}/copy", headers=headers(who),
                         params={"folderId": str(_own_folder(who)["_id"])})
        assert made.status_code == 200, made.text
        return made.json()["_id"]

    # A copy keeps the item's fields but is no slide: not for a former reader, nor for the owner.
    readers_copy = copy(reader)
    Folder().setUserAccess(slide_folder, reader, None, save=True)
    assert annotate(readers_copy, reader) == 404
    assert annotate(copy(user), user) == 404
    assert annotate(item["_id"], user) == 200
    # Write access to the item is no role in its project: the slide item moved where the reader writes.
    shared = Folder().createFolder(user, "shared", parentType="user", creator=user)
    Folder().setUserAccess(shared, reader, AccessType.WRITE, save=True)
    Item().move(item, shared)
    assert annotate(item["_id"], reader) == 404


def test_a_disabled_account_is_refused_at_its_next_request(http, admin, user, project, slide_folder):
    p = project["project"]["id"]
    me = http.get(f"{SL}/auth/me", headers=headers(user)).json()
    assert http.patch(f"{SL}/users/{me['id']}", headers=headers(admin), json={"disabled": True}).status_code == 200
    refused = http.get(f"{SL}/projects/{p}", headers=headers(user))
    assert refused.status_code == 401 and "disabled" in refused.json()["detail"]
    assert http.put(f"{API}/folder/{slide_folder['_id']}/slidelabel/slides", headers=headers(user)).status_code == 401
    item = next(Folder().childItems(slide_folder))
    assert http.post(f"{API}/item/{item['_id']}/slidelabel/annotation", headers=headers(user)).status_code == 401
    other = Folder().createFolder(user, "more", parentType="user", creator=user)
    assert http.post(f"{API}/folder/{other['_id']}/slidelabel", headers=headers(user), json={"name": "x"}).status_code == 401


def test_a_folder_project_needs_the_right_to_create_projects(http, admin):
    other = make_user("other")
    folder = _own_folder(other)
    assert http.post(f"{API}/folder/{folder['_id']}/slidelabel", headers=headers(other),
                     json={"name": "mine"}).status_code == 403
    assert http.post(f"{SL}/projects", headers=headers(other), json={"name": "direct"}).status_code == 403
    grant_project_creation(http, admin, other)
    assert http.post(f"{API}/folder/{folder['_id']}/slidelabel", headers=headers(other),
                     json={"name": "mine"}).status_code == 200


def test_the_job_list_shows_no_internal_error_text(http, user, project):
    p = project["project"]["id"]
    assert http.post(f"{SL}/projects/{p}/jobs/prepare", headers=headers(user)).status_code == 202
    database = Database(Settings().database_url)
    with database.session(write=True) as session:
        job = session.scalars(select(Job).where(Job.project_id == p)).first()
        job.state = JobState.failed
        job.message = "internal error: OSError: [Errno 28] No space left on device: '/srv/lab/data/projects/1/x.zarr'"
        job_id = job.id
    job_list.mirror_jobs(database)
    database.dispose()
    shown = http.get(f"{SL}/projects/{p}/jobs/{job_id}", headers=headers(user)).json()["message"]
    doc = GirderJob().findOne({job_list.JOB_LINK: job_id})
    mirrored = http.get(f"{API}/job/{doc['_id']}", headers=headers(user)).json()["progress"]["message"]
    assert mirrored == shown and "/srv/lab" not in mirrored


def test_a_query_token_authenticates_reads_only(http, user, project):
    p = project["project"]["id"]
    token = {"token": str(Token().createToken(user)["_id"])}
    assert http.get(f"{SL}/projects/{p}", params=token).status_code == 200
    refused = http.patch(f"{SL}/projects/{p}", params=token, json={"description": "via ?token="})
    assert refused.status_code == 401 and "reads only" in refused.json()["detail"]
    assert http.get(f"{SL}/projects/{p}", headers=headers(user)).json()["description"] == ""


@pytest.mark.parametrize(("raw", "read"), [("1", 1), ("+1", 1), (" 1", 1), ("01", 1), ("1_0", 10), ("²", None),
                                           ("x", None), ("0", None), ("99999999999", None)])
def test_the_project_id_of_the_path_is_read_as_fastapi_reads_it(raw, read):
    from girder_slidelabel.users import _path_project_id

    assert _path_project_id(raw) == read
