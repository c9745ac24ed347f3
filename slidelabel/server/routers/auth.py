"""Login (rate-limited per account and client address), logout, one's own password and who am I."""

from __future__ import annotations

from fastapi import APIRouter

from slidelabel.errors import AuthenticationError
from slidelabel.server.deps import (
    ClientAddress,
    CurrentUser,
    LoginThrottleDep,
    PasswordCheckTurn,
    ReadSession,
    SettingsDep,
    Token,
    WriteSession,
)
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.accounts import LoginRequest, LoginResponse, PasswordChange, UserPublic
from slidelabel.services import accounts

router = APIRouter(route_class=CommitInRouteThread, prefix="/auth", tags=["auth"])


@router.post("/login")
def login(body: LoginRequest, throttle: LoginThrottleDep, _turn: PasswordCheckTurn, read: ReadSession,
          session: WriteSession, settings: SettingsDep, address: ClientAddress) -> LoginResponse:
    """A token for the account; 429 with Retry-After after too many failures of the account (from this
    address, or from all) or of the address; 503 while too many logins are being checked at once."""
    throttle.check(body.username, address)
    try:
        user = accounts.authenticate(read, body.username, body.password)
    except AuthenticationError:
        throttle.failed(body.username, address)
        raise
    throttle.succeeded(body.username, address)
    # The password is checked outside the write transaction: only the token's row needs SQLite's write turn.
    token = accounts.issue_token(session, user, hours=settings.token_hours)
    return LoginResponse(token=token, user=UserPublic.model_validate(user))


@router.post("/logout", status_code=204)
def logout(session: WriteSession, token: Token) -> None:
    accounts.logout(session, token)


@router.post("/password", status_code=204)
def change_password(body: PasswordChange, throttle: LoginThrottleDep, _turn: PasswordCheckTurn, read: ReadSession,
                    session: WriteSession, user: CurrentUser, token: Token, address: ClientAddress) -> None:
    """Change your own password, giving the current one (checked and rate-limited as a login is);
    your other sessions end, this one goes on."""
    throttle.check(user.username, address)
    try:
        accounts.authenticate(read, user.username, body.current_password)
    except AuthenticationError:
        throttle.failed(user.username, address)
        raise
    throttle.succeeded(user.username, address)
    accounts.set_password(session, accounts.acting(session, user), body.new_password, keep_token=token)


@router.get("/me")
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
