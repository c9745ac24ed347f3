"""Under Girder, a request of a user whose account and roles are up to date writes nothing to
slidelabel's database (nineteenth attack, low: each request opened a write session for the user's
admin flag and its roles, so on SQLite every reader queued behind any long write: a viewer's tile
took 3.06 s instead of 0.017 s while another connection held a 3 s write)."""

from __future__ import annotations

import pytest
from girder.constants import AccessType
from girder.models.folder import Folder

import test_plugin
from slidelabel.store.database import Database
from test_plugin import SL, headers, make_user

# test_plugin's fixtures, used here too.
project, slide_folder = test_plugin.project, test_plugin.slide_folder

pytestmark = pytest.mark.plugin("slidelabel")


def test_a_request_of_a_user_already_up_to_date_writes_nothing(http, user, project, slide_folder, monkeypatch):
    viewer = make_user("reader19")
    Folder().setUserAccess(slide_folder, viewer, AccessType.READ, save=True)
    url = f"{SL}/projects/{project['project']['id']}"
    for who in (user, viewer):  # the first requests link the accounts and give the roles
        assert http.get(url, headers=headers(who)).status_code == 200
    writes: list[bool] = []
    opened = Database.session

    def counted(self, *, write: bool = False):
        writes.append(write)
        return opened(self, write=write)

    monkeypatch.setattr(Database, "session", counted)
    for who in (user, viewer):
        assert http.get(url, headers=headers(who)).status_code == 200
    assert writes and not any(writes), writes
    Folder().setUserAccess(slide_folder, viewer, AccessType.WRITE, save=True)  # a role that changed is written
    assert http.get(url, headers=headers(viewer)).json()["role"] == "annotator"
    assert any(writes)
