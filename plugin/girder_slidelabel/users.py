"""Girder accounts as slidelabel users, and Girder folder access as project roles.

slidelabel's API authenticates through one FastAPI dependency, ``current_user``; the plugin
overrides it (FastAPI's ``dependency_overrides``, no change in slidelabel) with
:func:`girder_current_user`, which accepts a Girder token where a browser or client sends one
and answers with the slidelabel user linked to that Girder user, so nobody logs in twice.

The link is the slidelabel user id kept on the Girder user document (:data:`USER_LINK`), so a
renamed Girder login keeps its labels. Roles in a project linked to a Girder folder follow the
folder's access, re-read at every request of the user: read = viewer, write = annotator,
admin = owner. Girder wins: a user without access to the folder is no member (404 for
everything in the project); the one role Girder has no level for, reviewer, may be given in
slidelabel to a user with write access and is kept while that access lasts. Girder site admins
are slidelabel admins (owners of every project).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from fastapi import Request
from girder.constants import AccessType, TokenScope
from girder.models.folder import Folder
from girder.models.token import Token
from girder.models.user import User as GirderUser
from sqlalchemy import select
from sqlalchemy.orm import Session

from girder_slidelabel.links import PROJECT_LINK, linked_folder
from slidelabel.errors import AuthenticationError, ConflictError
from slidelabel.services.accounts import create_user
from slidelabel.store.database import Database
from slidelabel.store.models import Membership, Role, User

#: Field of a Girder user document holding the id of its slidelabel user.
USER_LINK = "slidelabelUserId"
#: The project role of each Girder access level.
ROLE_OF_LEVEL: dict[int, Role] = {AccessType.READ: Role.viewer, AccessType.WRITE: Role.annotator,
                                  AccessType.ADMIN: Role.owner}
#: Roles slidelabel may give beyond the Girder level, by level: a reviewer needs write access.
KEPT_ABOVE_LEVEL: dict[int, frozenset[Role]] = {AccessType.WRITE: frozenset({Role.reviewer})}
#: Requests that may authenticate with Girder's login cookie: only reads, as Girder itself
#: refuses cookies on writes (a cross-site form could send them).
COOKIE_METHODS = frozenset({"GET", "HEAD"})


def token_of(request: Request) -> str | None:
    """The Girder token of a request: ``Girder-Token`` header, ``Authorization: Bearer``, the
    ``token`` query parameter (tile URLs), or on reads the ``girderToken`` cookie."""
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header.lower().startswith("bearer ") else None
    cookie = request.cookies.get("girderToken") if request.method in COOKIE_METHODS else None
    return request.headers.get("girder-token") or bearer or request.query_params.get("token") or cookie


def girder_user_of_token(token: str | None) -> dict:
    """The Girder user of a valid, unexpired user-authentication token."""
    document = Token().load(token, force=True, objectId=False, exc=False) if token else None
    if document is None or "userId" not in document or not Token().hasScope(document, TokenScope.USER_AUTH):
        raise AuthenticationError("not logged in to Girder: send a Girder token as 'Girder-Token: ...'")
    expires = document["expires"]
    if (expires if expires.tzinfo else expires.replace(tzinfo=UTC)) < datetime.now(UTC):
        raise AuthenticationError("the Girder token expired: log in to Girder again")
    user = GirderUser().load(document["userId"], force=True)
    if user is None:
        raise AuthenticationError("the Girder user of this token no longer exists")
    return user


def _free_username(session: Session, login: str) -> str:
    """``login``, or ``login-2``, ``login-3`` ... when a slidelabel user already has it."""
    name, n = login, 1
    while session.scalar(select(User.id).where(User.username == name)) is not None:
        n += 1
        name = f"{login}-{n}"
    return name


def slidelabel_user(database: Database, girder_user: dict) -> User:
    """The slidelabel user linked to ``girder_user``, made on its first request. Its password is
    random and never shown: the account is reached through Girder only."""
    with database.session(write=True) as session:
        user = session.get(User, girder_user[USER_LINK]) if USER_LINK in girder_user else None
        if user is None:
            try:
                user = create_user(session, _free_username(session, girder_user["login"]), secrets.token_urlsafe(32))
            except ConflictError:  # a concurrent first request took the name; the next one links
                raise AuthenticationError("your account is being set up: try again") from None
            GirderUser().update({"_id": girder_user["_id"]}, {"$set": {USER_LINK: user.id}})
        user.is_admin = bool(girder_user.get("admin"))
        return user


def role_of(girder_user: dict, folder: dict, current: Role | None) -> Role | None:
    """The role ``girder_user`` has in the project of ``folder``, given its ``current`` one."""
    level = Folder().getAccessLevel(folder, girder_user)
    role = ROLE_OF_LEVEL.get(level)
    if role is not None and current in KEPT_ABOVE_LEVEL.get(level, frozenset()):
        return current
    return role


def sync_memberships(database: Database, girder_user: dict, user: User, project_id: int | None) -> None:
    """Make ``user``'s memberships of Girder-linked projects match its folder access: of the
    project ``project_id`` when the request names one, else of every linked project."""
    if project_id is not None:
        folder = linked_folder(project_id)
        folders = [folder] if folder is not None else []
    else:
        folders = list(Folder().find({PROJECT_LINK: {"$exists": True}}))
    if not folders:
        return
    with database.session(write=True) as session:
        for folder in folders:
            key = (folder[PROJECT_LINK], user.id)
            membership = session.get(Membership, key)
            role = role_of(girder_user, folder, membership.role if membership else None)
            if membership is not None and role is None:
                session.delete(membership)
            elif membership is None and role is not None:
                session.add(Membership(project_id=key[0], user_id=user.id, role=role))
            elif membership is not None:
                membership.role = role


def girder_current_user(request: Request) -> User:
    """FastAPI dependency replacing slidelabel's ``current_user``: the request's Girder user as a
    slidelabel user, its roles in the project the path names brought up to date first."""
    girder_user = girder_user_of_token(token_of(request))
    database: Database = request.app.state.database
    user = slidelabel_user(database, girder_user)
    raw = request.path_params.get("project_id")
    sync_memberships(database, girder_user, user, int(raw) if raw is not None and str(raw).isdigit() else None)
    return user
