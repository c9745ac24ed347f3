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
are slidelabel admins (owners of every project). Deleting a project's folder ends every role in
the project (:func:`end_roles_of_deleted_folder`). The rest is slidelabel's, as on its own
server: an account the admin disabled is refused at its next request, ``?token=`` is taken on
reads only. So is a Girder account that Girder disabled or has not approved, whatever token it
sends (an API key's token included, which Girder still issues to it).
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from fastapi import Request
from girder import events
from girder.constants import AccessType, TokenScope
from girder.models.folder import Folder
from girder.models.token import Token
from girder.models.user import User as GirderUser
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from girder_slidelabel.links import linked_folders, project_of
from slidelabel.errors import AuthenticationError, ConflictError
from slidelabel.server.request_checks import MAX_ID
from slidelabel.services.accounts import DISABLED, create_user
from slidelabel.services.names import look_alike_key
from slidelabel.store.database import Database
from slidelabel.store.models import Membership, Role, User

#: Field of a Girder user document holding the id of its slidelabel user.
USER_LINK = "slidelabelUserId"
#: The project role of each Girder access level.
ROLE_OF_LEVEL: dict[int, Role] = {AccessType.READ: Role.viewer, AccessType.WRITE: Role.annotator,
                                  AccessType.ADMIN: Role.owner}
#: Roles slidelabel may give beyond the Girder level, by level: a reviewer needs write access.
KEPT_ABOVE_LEVEL: dict[int, frozenset[Role]] = {AccessType.WRITE: frozenset({Role.reviewer})}
#: Requests that may authenticate with Girder's login cookie or ``?token=``: only reads, as Girder
#: refuses cookies on writes and slidelabel's server query tokens (a cross-site form or link could
#: send them).
READ_METHODS = frozenset({"GET", "HEAD"})
#: The Girder user status of an account that may use slidelabel ('disabled' and 'pending' may not).
ENABLED = "enabled"
#: Path ids as FastAPI reads them (``+1``, `` 1`` and ``01`` are 1), so the roles brought up to
#: date are those of the project the route acts on.
_PATH_ID = TypeAdapter(int)


def token_of(request: Request) -> str | None:
    """The Girder token of a request: ``Girder-Token`` header, ``Authorization: Bearer``, or on
    reads the ``token`` query parameter (tile URLs) or the ``girderToken`` cookie."""
    header = request.headers.get("authorization", "")
    bearer = header[7:].strip() if header.lower().startswith("bearer ") else None
    sent = request.headers.get("girder-token") or bearer
    if sent or request.method in READ_METHODS:
        return sent or request.query_params.get("token") or request.cookies.get("girderToken")
    if request.query_params.get("token"):
        raise AuthenticationError("?token= is accepted on reads only: send the token of a write as 'Girder-Token: ...'")
    return None


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
    """``login``, or ``login-2``, ``login-3`` ... when a slidelabel user already has it or one that
    looks like it (:func:`~slidelabel.services.names.look_alike_key`), the names read once (a scan
    of every name for each suffix tried took 2,000 suffixes over 4,000 users 5.8 s, the
    twenty-fourth attack)."""
    taken = {look_alike_key(username) for username in session.scalars(select(User.username))}
    name, n = login, 1
    while look_alike_key(name) in taken:
        n += 1
        name = f"{login}-{n}"
    return name


def slidelabel_user(database: Database, girder_user: dict) -> User:
    """The slidelabel user linked to ``girder_user``, made on its first request. Its password is
    random and never shown: the account is reached through Girder only. A disabled account, in
    slidelabel or in Girder (status not 'enabled'), is refused (:class:`AuthenticationError`), as
    slidelabel's server refuses its tokens. Written only when something changed: on SQLite a write
    at each request queued every reader behind any long write (a viewer's tile 3.06 s instead of
    0.017 s, the nineteenth attack)."""
    status = girder_user.get("status", ENABLED)  # Girder reads a missing status as enabled
    if status != ENABLED:
        raise AuthenticationError(f"this Girder account is {status}: a Girder site admin can enable it")
    admin = bool(girder_user.get("admin"))
    with database.session() as session:
        user = session.get(User, girder_user[USER_LINK]) if USER_LINK in girder_user else None
    if user is None or user.is_admin != admin:
        with database.session(write=True) as session:
            user = session.get(User, girder_user[USER_LINK]) if USER_LINK in girder_user else None
            if user is None:
                try:
                    user = create_user(session, _free_username(session, girder_user["login"]),
                                       secrets.token_urlsafe(32))
                except ConflictError:  # a concurrent first request took the name; the next one links
                    raise AuthenticationError("your account is being set up: try again") from None
                GirderUser().update({"_id": girder_user["_id"]}, {"$set": {USER_LINK: user.id}})
            user.is_admin = admin
    if user.disabled:
        raise AuthenticationError(DISABLED)
    return user


def role_of(girder_user: dict, folder: dict, current: Role | None) -> Role | None:
    """The role ``girder_user`` has in the project of ``folder``, given its ``current`` one."""
    level = Folder().getAccessLevel(folder, girder_user)
    role = ROLE_OF_LEVEL.get(level)
    if role is not None and current in KEPT_ABOVE_LEVEL.get(level, frozenset()):
        return current
    return role


def sync_memberships(database: Database, girder_user: dict, user: User, folders: list[dict]) -> None:
    """Make ``user``'s memberships of the projects of the linked ``folders`` match its access to
    them: read first, written only where a role changed (see :func:`slidelabel_user`)."""
    with database.session() as session:
        changed: dict[int, Role | None] = {}
        for folder in folders:
            project_id = project_of(folder)
            membership = session.get(Membership, (project_id, user.id))
            current = membership.role if membership else None
            if (role := role_of(girder_user, folder, current)) != current:
                changed[project_id] = role
    if not changed:
        return
    with database.session(write=True) as session:
        for project_id, role in changed.items():
            membership = session.get(Membership, (project_id, user.id))
            if membership is not None and role is None:
                session.delete(membership)
            elif membership is None and role is not None:
                session.add(Membership(project_id=project_id, user_id=user.id, role=role))
            elif membership is not None:
                membership.role = role


def end_roles_of_deleted_folder(database: Database, event: events.Event) -> None:
    """Bound to Girder's ``model.folder.remove``: the folder of a project is going, so every
    membership of the project goes with it, and only Girder site admins (owners of every project)
    still reach it. Roles follow the folder's access, and a folder that is gone grants none: left
    alone, the roles of the last request would stay for good, as no folder is left to re-read.
    The project itself stays (its labels and epochs are work a site admin may export or delete,
    and a folder restored from a MongoDB backup brings its link, and the roles, back)."""
    project_id = project_of(event.info)
    if project_id is None:
        return
    with database.session(write=True) as session:
        session.execute(delete(Membership).where(Membership.project_id == project_id))


def member(database: Database, girder_user: dict, project_id: int) -> User:
    """The slidelabel user of ``girder_user``, its role in the project brought up to date."""
    user = slidelabel_user(database, girder_user)
    sync_memberships(database, girder_user, user, linked_folders(project_id))
    return user


def _path_project_id(raw: str) -> int | None:
    """The project id FastAPI reads from the path; None where it reads none (the route answers 422)
    or one no project has (no id goes beyond ``MAX_ID``)."""
    try:
        project_id = _PATH_ID.validate_python(raw)
    except ValidationError:
        return None
    return project_id if 0 < project_id <= MAX_ID else None


def girder_current_user(request: Request) -> User:
    """FastAPI dependency replacing slidelabel's ``current_user``: the request's Girder user as a
    slidelabel user, its roles in the project the path names (in every linked project when it
    names none) brought up to date first."""
    girder_user = girder_user_of_token(token_of(request))
    database: Database = request.app.state.database
    user = slidelabel_user(database, girder_user)
    raw = request.path_params.get("project_id")
    project_id = _path_project_id(raw) if raw is not None else None
    folders = linked_folders(project_id) if raw is None or project_id is not None else []
    sync_memberships(database, girder_user, user, folders)
    return user


def gallery_maker_still_known(database: Database, maker_id: int, project_id: int) -> bool:
    """slidelabel's gallery check (its ``link_maker_check`` dependency, overridden): before a link
    opens, its maker's account and roles are brought up to date from Girder, as at the maker's own
    requests, so the link stops as soon as Girder withdraws the maker's admin access to the
    folder, disables the account, takes its site admin flag or deletes it, not at the maker's
    next request (which may never come). False, the link stops, when no Girder user is linked to
    the maker (deleted), Girder or slidelabel disabled it, or its slidelabel user is gone."""
    girder_user = GirderUser().findOne({USER_LINK: maker_id})
    if girder_user is None:
        return False
    with database.session() as session:
        if session.get(User, maker_id) is None:  # else slidelabel_user would make a new account
            return False
    try:
        user = slidelabel_user(database, girder_user)
    except AuthenticationError:
        return False
    sync_memberships(database, girder_user, user, linked_folders(project_id))
    return True
