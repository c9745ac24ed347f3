"""Login, logout and who am I."""

from __future__ import annotations

from fastapi import APIRouter

from slidelabel.server.deps import CurrentUser, SettingsDep, Token, WriteSession
from slidelabel.server.schemas.accounts import LoginRequest, LoginResponse, UserPublic
from slidelabel.services import accounts

router = APIRouter(prefix="/auth", tags=["auth"])


@router.post("/login")
def login(body: LoginRequest, session: WriteSession, settings: SettingsDep) -> LoginResponse:
    token = accounts.login(session, body.username, body.password, hours=settings.token_hours)
    return LoginResponse(token=token, user=UserPublic.model_validate(accounts.user_for_token(session, token)))


@router.post("/logout", status_code=204)
def logout(session: WriteSession, token: Token) -> None:
    accounts.logout(session, token)


@router.get("/me")
def me(user: CurrentUser) -> UserPublic:
    return UserPublic.model_validate(user)
