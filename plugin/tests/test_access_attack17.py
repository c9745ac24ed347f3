"""Access under Girder after the seventeenth attack: deleting a project's folder ends the roles
Girder gave in it, an account Girder disabled (or has not approved) is refused whatever its
token, an API key's included, and a link made before copies were told apart is marked only on
the document older than the row it names, never on a copy left where the original was deleted."""

from __future__ import annotations

import logging

import pytest
from girder.constants import AccessType
from girder.models.api_key import ApiKey
from girder.models.folder import Folder
from girder.models.item import Item
from girder.models.setting import Setting
from girder.models.user import User
from girder.settings import SettingKey

import test_plugin
from girder_slidelabel import links
from slidelabel.settings import Settings
from slidelabel.store.database import Database
from test_plugin import API, SL, headers, make_user

# test_plugin's fixtures, used here too.
project, slide_folder = test_plugin.project, test_plugin.slide_folder

pytestmark = pytest.mark.plugin("slidelabel")


def _roles(http, who: dict) -> list[tuple[int, str]]:
    listed = http.get(f"{SL}/projects", headers=headers(who))
    assert listed.status_code == 200, listed.text
    return [(x["id"], x["role"]) for x in listed.json()]


def _unmark(model, document: dict) -> None:
    """``document``'s link as the plugin made it before :data:`links.LINKED_ON`."""
    model.update({"_id": document["_id"]}, {"$unset": {links.LINKED_ON: ""}})


def _mark_old_links() -> None:
    database = Database(Settings().database_url)
    try:
        links.ensure_indexes(database)  # at Girder's start
    finally:
        database.dispose()


def test_deleting_the_project_folder_ends_the_roles_girder_gave(http, admin, user, project, slide_folder):
    p = project["project"]["id"]
    writer = make_user("writer")
    Folder().setUserAccess(slide_folder, writer, AccessType.WRITE, save=True)
    assert _roles(http, writer) == [(p, "annotator")]
    # The owner withdraws the writer's access, then deletes the folder before the writer's next request.
    Folder().setUserAccess(slide_folder, writer, None, save=True)
    Folder().remove(Folder().load(slide_folder["_id"], force=True))

    assert _roles(http, writer) == []
    assert http.get(f"{SL}/projects/{p}", headers=headers(writer)).status_code == 404
    assert _roles(http, user) == []  # the folder's owner too: no folder, no Girder role
    assert http.get(f"{SL}/projects/{p}", headers=headers(admin)).json()["name"] == "skin"  # site admins keep it


@pytest.mark.parametrize("status", ["disabled", "pending"])
def test_an_account_girder_refuses_is_refused_with_its_api_key_too(http, admin, user, project, slide_folder, status):
    p = project["project"]["id"]
    Setting().set(SettingKey.API_KEYS, True)
    key = ApiKey().createApiKey(user, name="k")
    User().update({"_id": user["_id"]}, {"$set": {"status": status}})
    made = http.post(f"{API}/api_key/token", params={"key": key["key"]})
    assert made.status_code == 200  # Girder still issues the token
    token = {"Girder-Token": made.json()["authToken"]["token"]}

    refused = http.get(f"{SL}/projects/{p}", headers=token)
    assert refused.status_code == 401 and f"Girder account is {status}" in refused.json()["detail"]
    assert http.put(f"{API}/folder/{slide_folder['_id']}/slidelabel/slides", headers=token).status_code == 401
    User().update({"_id": user["_id"]}, {"$set": {"status": "enabled"}})
    assert http.get(f"{SL}/projects/{p}", headers=token).status_code == 200


def _readers_copy(slide_folder: dict) -> dict:
    """A copy of ``slide_folder`` in the own space of a new user who may read it."""
    reader = make_user("reader")
    Folder().setUserAccess(slide_folder, reader, AccessType.READ, save=True)
    mine = Folder().createFolder(reader, "mine", parentType="user", creator=reader)
    return Folder().copyFolder(Folder().load(slide_folder["_id"], force=True), parent=mine, parentType="folder",
                               creator=reader)


def test_an_old_link_is_marked_on_the_document_older_than_its_row(server, user, project, slide_folder):
    p = project["project"]["id"]
    item = next(Folder().childItems(slide_folder))
    _unmark(Folder(), slide_folder)
    _unmark(Item(), item)
    copy = _readers_copy(slide_folder)
    _mark_old_links()

    assert [folder["_id"] for folder in links.linked_folders(p)] == [slide_folder["_id"]]
    assert links.slide_of(Item().load(item["_id"], force=True)) is not None
    assert links.project_of(Folder().load(copy["_id"], force=True)) is None
    assert all(links.slide_of(copied) is None for copied in Folder().childItems(copy))


def test_an_old_link_left_only_on_a_copy_is_marked_nowhere(server, user, project, slide_folder, caplog):
    p = project["project"]["id"]
    _unmark(Folder(), slide_folder)
    copy = _readers_copy(slide_folder)
    Folder().remove(Folder().load(slide_folder["_id"], force=True))  # before the upgrade
    with caplog.at_level(logging.WARNING, logger=links.__name__):
        _mark_old_links()

    assert links.linked_folders(p) == []
    assert links.project_of(Folder().load(copy["_id"], force=True)) is None
    assert f"project {p}" in caplog.text
