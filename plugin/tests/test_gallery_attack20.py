"""Twentieth attack, high, under Girder: a gallery link kept opening (page and thumbnail 200) after
its maker lost every right in Girder (admin access to the folder withdrawn, the account disabled
or deleted, the site admin flag taken), as long as the maker made no request of their own:
slidelabel's check read the roles and account flags the plugin brought up to date only at the
maker's requests. A link's request now brings them up to date from Girder first."""

from __future__ import annotations

import pytest
import test_plugin
from girder.constants import AccessType
from girder.models.folder import Folder
from girder.models.user import User
from test_plugin import SL, headers, make_user

project, slide_folder = test_plugin.project, test_plugin.slide_folder
pytestmark = pytest.mark.plugin("slidelabel")


def _link(http, who: dict, project_id: int) -> str:
    made = http.post(f"{SL}/projects/{project_id}/gallery", headers=headers(who),
                     json={"overlay": "labels", "slide_ids": []})
    assert made.status_code == 201, made.text
    return made.json()["token"]


def _opens(http, token: str) -> tuple[int, int | None]:
    """The page's status and its first slide's thumbnail's (None when the page is refused)."""
    page = http.get(f"{SL}/gallery/{token}")
    if page.status_code != 200:
        return page.status_code, None
    slide = page.json()["slides"][0]["id"]
    return 200, http.get(f"{SL}/gallery/{token}/slides/{slide}/thumbnail.jpg").status_code


@pytest.mark.parametrize("change", ["access_withdrawn", "access_lowered", "girder_disabled", "girder_user_deleted"])
def test_a_link_stops_when_girder_withdraws_its_makers_rights(http, admin, user, project, slide_folder, change):
    p = project["project"]["id"]
    maker = make_user("maker")
    Folder().setUserAccess(slide_folder, maker, AccessType.ADMIN, save=True)
    token = _link(http, maker, p)
    assert _opens(http, token) == (200, 200)
    if change == "access_withdrawn":
        Folder().setUserAccess(slide_folder, maker, None, save=True)
    elif change == "access_lowered":
        Folder().setUserAccess(slide_folder, maker, AccessType.WRITE, save=True)
    elif change == "girder_disabled":
        User().update({"_id": maker["_id"]}, {"$set": {"status": "disabled"}})
    else:
        User().remove(User().load(maker["_id"], force=True))
    # The maker makes no request: the link's own requests see the change.
    assert _opens(http, token) == (404, None), change
    assert http.get(f"{SL}/gallery/{token}").json()["detail"] == "this gallery link was revoked or never existed"
    if change in ("access_withdrawn", "access_lowered"):  # given back, the link opens again
        Folder().setUserAccess(slide_folder, maker, AccessType.ADMIN, save=True)
        assert _opens(http, token) == (200, 200)


def test_a_former_site_admins_link_stops(http, admin, user, project, slide_folder):
    p = project["project"]["id"]
    boss = make_user("boss")
    User().update({"_id": boss["_id"]}, {"$set": {"admin": True}})
    token = _link(http, User().load(boss["_id"], force=True), p)
    assert _opens(http, token) == (200, 200)
    User().update({"_id": boss["_id"]}, {"$set": {"admin": False}})
    assert _opens(http, token) == (404, None)


def test_an_owners_link_opens_while_girder_keeps_their_rights(http, admin, user, project, slide_folder):
    token = _link(http, user, project["project"]["id"])  # the folder's owner
    assert [_opens(http, token) for _ in range(2)] == [(200, 200), (200, 200)]
