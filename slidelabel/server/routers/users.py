"""User accounts: the admin creates, disables and grants rights to them; owners may list names (to add
members)."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import select

from slidelabel.errors import PermissionDeniedError
from slidelabel.server.deps import BearerToken, CurrentUser, ReadSession, WriteSession
from slidelabel.server.routing import CommitInRouteThread
from slidelabel.server.schemas.accounts import UserCreate, UserPublic, UserUpdate
from slidelabel.services import accounts
from slidelabel.store.models import Membership, Role, User

router = APIRouter(route_class=CommitInRouteThread, prefix="/users", tags=["users"])


@router.get("")
def list_users(session: ReadSession, user: CurrentUser) -> list[UserPublic]:
    """Every account for the admin; the enabled accounts' names for the owners of a project (to add
    members); a 403 for others, who add no one (any account listed every name, the twenty-third
    attack)."""
    if user.is_admin:
        return [UserPublic.model_validate(u) for u in session.scalars(select(User).order_by(User.username))]
    owns = select(Membership.project_id).where(Membership.user_id == user.id, Membership.role == Role.owner)
    if session.scalar(owns.limit(1)) is None:
        raise PermissionDeniedError("only the admin and the owners of a project list accounts (to add members)")
    return [UserPublic.model_validate(u).for_others()
            for u in session.scalars(select(User).where(User.disabled.is_(False)).order_by(User.username))]


@router.post("", status_code=201)
def create_user(body: UserCreate, session: WriteSession, user: CurrentUser) -> UserPublic:
    if not user.is_admin:
        raise PermissionDeniedError("only the admin creates users")
    return UserPublic.model_validate(accounts.create_user(session, body.username, body.password, is_admin=body.is_admin))


@router.patch("/{user_id}")
def update_user(user_id: int, body: UserUpdate, session: WriteSession, user: CurrentUser,
                token: BearerToken) -> UserPublic:
    """Disable or enable an account, grant or withdraw creating projects and reading slide folders,
    or set its password (admin; its other sessions end, and the admin's own but this one)."""
    return UserPublic.model_validate(accounts.update_user(session, user, user_id, actor_token=token,
                                                          **body.model_dump(exclude_none=True)))
