"""FastAPI dependencies: settings, database sessions, the logged-in user and project access.

Routes declare what they need as ``Annotated`` aliases (``ReadSession``, ``CurrentUser``,
``Viewer``, ``Annotator`` ...), so the access rule of a route is visible in its signature.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Hashable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import select
from sqlalchemy.orm import Session

from slidelabel.errors import AuthenticationError, NotFoundError
from slidelabel.services import accounts, gallery, smart, tiles
from slidelabel.services.access import Action, ProjectAccess, check_access
from slidelabel.services.accounts import require_project_creation, user_for_token
from slidelabel.services.exports import export_turn_waiting
from slidelabel.services.gallery import token_digest
from slidelabel.services.login_limits import LoginThrottle
from slidelabel.settings import Settings
from slidelabel.store.database import Database
from slidelabel.store.models import GalleryLink, User

_bearer = HTTPBearer(auto_error=False)


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_database(request: Request) -> Database:
    return request.app.state.database


def read_session(database: Annotated[Database, Depends(get_database)]) -> Iterator[Session]:
    with database.session() as session:
        yield session


async def write_session(database: Annotated[Database, Depends(get_database)]) -> AsyncIterator[Session]:
    """A write session, opened on the event loop; its transaction begins (and on SQLite the
    process's write turn is taken) at its first statement, in the route's thread, and commits when
    the route returns, in that thread (:mod:`slidelabel.server.routing`). Nothing that holds the
    turn ever waits for another request thread: with every thread waiting for the turn, its holder
    could otherwise never commit (41 concurrent logins froze the server for 60 s, before). What
    the route left uncommitted (an error: rolled back) ends here."""
    with database.session(write=True) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
# Scope "function": a session ends (a write session commits) when the route returns, before the
# answer is sent. FastAPI's default ends it after the answer, so a client could be told 201 and
# then read the old state, or lose the write to a crash in between.
ReadSession = Annotated[Session, Depends(read_session, scope="function")]
WriteSession = Annotated[Session, Depends(write_session, scope="function")]


def _held_while_the_route_runs(waiting: Callable[[Hashable | None], AbstractAsyncContextManager[None]],
                               holder: Callable[..., Hashable | None]) -> Any:
    """A dependency holding the turn ``waiting(holder)`` gives from before the route runs until it
    returns, before the answer is sent; waited for on the event loop, so a waiting request holds
    no request thread. ``holder`` is a dependency naming who holds it (None: nobody in
    particular)."""
    # A default, not an Annotated type: annotations are strings here, read in the module's globals.
    async def hold(who: Hashable | None = Depends(holder)) -> AsyncIterator[None]:  # noqa: B008
        async with waiting(who):
            yield

    return Depends(hold, scope="function")


# Methods whose URLs a browser loads itself (images, downloads): only these take ``?token=``,
# so that a link or a form on another site cannot make a logged-in browser write.
_QUERY_TOKEN_METHODS = frozenset({"GET", "HEAD"})


def token_of(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The bearer token, or, on reads only, the ``token`` query parameter for URLs a browser
    loads itself (tile images, downloads)."""
    if credentials:
        return credentials.credentials
    query_token = request.query_params.get("token")
    if query_token and request.method not in _QUERY_TOKEN_METHODS:
        raise AuthenticationError("?token= is accepted on reads only: send the token of a write "
                                  "as 'Authorization: Bearer ...'")
    if not query_token:
        raise AuthenticationError("not logged in: send the token from /api/v1/auth/login as 'Authorization: Bearer ...'")
    return query_token


Token = Annotated[str, Depends(token_of)]


def bearer_of(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str | None:
    """The bearer token a request sends, None without one (the Girder plugin's requests may send
    Girder's instead): for a route that keeps the caller's own session, not to authenticate."""
    return credentials.credentials if credentials else None


BearerToken = Annotated[str | None, Depends(bearer_of)]


def release_connection(session: Session) -> None:
    """End a check's read transaction so that its connection goes back to the pool (what it
    loaded stays usable: sessions do not expire on commit). Otherwise a write route holds two
    connections, and as many concurrent writers as the pool has connections wait forever for
    their second one."""
    session.commit()


def current_user(session: ReadSession, token: Token) -> User:
    user = user_for_token(session, token)
    release_connection(session)
    return user


CurrentUser = Annotated[User, Depends(current_user)]


def _user_id(user: CurrentUser) -> int:
    return user.id


def client_address(request: Request) -> str:
    """The client's address (behind a proxy: what it forwards, see docs/server.md)."""
    return request.client.host if request.client else "unknown"


def _gallery_link(session: ReadSession, token: Annotated[str, Path(max_length=256)]) -> Hashable:
    """Who a gallery link's request holds its page or overlay turn for: :func:`gallery.link_line`
    of its maker, never the maker's export line (whoever holds a link would otherwise keep its
    maker's exports 503, the twentieth attack). A token that opens nothing is a 404 before it waits
    for any turn (requests of random tokens, each a line of its own, kept real links' pages 10 s,
    the twenty-fourth attack)."""
    maker = session.scalar(select(GalleryLink.created_by).where(
        GalleryLink.token_sha256 == token_digest(token), GalleryLink.revoked_at.is_(None)))
    release_connection(session)  # no connection held while waiting for the turn
    if maker is None:  # no such link, or its maker is gone (it opens nothing)
        raise NotFoundError(gallery.UNKNOWN)
    return gallery.link_line(maker)


ClientAddress = Annotated[str, Depends(client_address)]
# The turns are looked up at each request (tests replace them). One user holds at most one export
# turn, and two smart-tool turns, at once; one gallery link one overlay turn, in a line apart, and
# all links together one export turn.
ExportTurn = Annotated[None, _held_while_the_route_runs(lambda user_id: export_turn_waiting(user_id), _user_id)]


@asynccontextmanager
async def _overlay_turns(link: Hashable) -> AsyncIterator[None]:
    """The link's overlay turn, in its own line, then an export turn for all links together."""
    async with gallery.overlay_turn_waiting(link), export_turn_waiting(gallery.GALLERIES):
        yield


GalleryExportTurn = Annotated[None, _held_while_the_route_runs(_overlay_turns, _gallery_link)]
GalleryPageTurn = Annotated[None, _held_while_the_route_runs(gallery.page_turn_waiting, _gallery_link)]


def export_turn_when(needed: Callable[..., bool]) -> Any:
    """:data:`ExportTurn` for the requests the dependency ``needed`` says need one (a route whose
    heavy form is asked for by a query parameter); none for the others."""
    # A default, not an Annotated type: annotations are strings here, read in the module's globals.
    async def hold(user: CurrentUser, need: bool = Depends(needed)) -> AsyncIterator[None]:  # noqa: B008
        if not need:
            yield
            return
        async with export_turn_waiting(user.id):
            yield

    return Depends(hold, scope="function")


SmartTurn = Annotated[None, _held_while_the_route_runs(smart.smart_turn_waiting, _user_id)]
PictureTurn = Annotated[None, _held_while_the_route_runs(tiles.picture_turn_waiting, _user_id)]
PasswordCheckTurn = Annotated[None, _held_while_the_route_runs(accounts.password_check_turn, client_address)]


def project_creator(user: CurrentUser, settings: SettingsDep) -> User:
    """The logged-in user, when it may create projects (403 otherwise)."""
    require_project_creation(user, open_creation=settings.open_project_creation)
    return user


ProjectCreator = Annotated[User, Depends(project_creator)]


def get_login_throttle(request: Request) -> LoginThrottle:
    return request.app.state.login_throttle


LoginThrottleDep = Annotated[LoginThrottle, Depends(get_login_throttle)]


def _access(action: Action):
    def dependency(session: ReadSession, user: CurrentUser,
                   project_id: Annotated[int, Path(description="project id")]) -> ProjectAccess:
        access = check_access(session, user, project_id, action)
        release_connection(session)
        return access

    return dependency


Viewer = Annotated[ProjectAccess, Depends(_access(Action.view))]
Annotator = Annotated[ProjectAccess, Depends(_access(Action.label))]
Trainer = Annotated[ProjectAccess, Depends(_access(Action.train))]
Reviewer = Annotated[ProjectAccess, Depends(_access(Action.review))]
Owner = Annotated[ProjectAccess, Depends(_access(Action.manage))]
