"""Users, passwords, login tokens, and the rights the admin grants beyond project roles.

Passwords are hashed with Argon2id; a token is 32 random bytes shown to the user once and stored
as its SHA-256 only. A disabled account cannot log in and its tokens are refused at their next
request. Creating projects and reading the server's slide folders are rights of the admin and of
the accounts it grants them to (:func:`update_user`).
"""

from __future__ import annotations

import hashlib
import secrets
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import delete, select, text
from sqlalchemy.orm import Session

from slidelabel.errors import (
    AuthenticationError,
    ConflictError,
    NotFoundError,
    ParameterError,
    PermissionDeniedError,
)
from slidelabel.services.names import check_printable_name, look_alike, shown_input
from slidelabel.services.turns import Turns
from slidelabel.store.models import Token, User

ADMIN = "admin"
DISABLED = "this account is disabled: ask the admin to enable it"
MIN_PASSWORD = 8
#: Longest password taken (a passphrase, not a file).
PASSWORD_CHARS = 1024
#: Tokens an account keeps (browsers, scripts, devices at once): each login past them ends the
#: oldest session, so logins in a loop cannot fill the database.
TOKENS_PER_USER = 100
#: Longest username (characters).
USERNAME_CHARS = 150
_HASHER = PasswordHasher()
# Verifying against a real hash when the user does not exist keeps the time of a failed login
# from telling whether a username exists.
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(session: Session, username: str, password: str, *, is_admin: bool = False) -> User:
    """A new user; :class:`ParameterError` for a name that is not 1 to :data:`USERNAME_CHARS`
    printable characters (an invisible or bidi character would make a lookalike of another
    account: :func:`~slidelabel.services.names.check_printable_name`), :class:`ConflictError` if
    the name is taken or looks like one that is (:func:`username_taken`)."""
    username = check_printable_name(username, what="username", max_chars=USERNAME_CHARS)
    _check_password(password)
    _lock_usernames(session)
    if (taken := username_taken(session, username)) is not None:
        same = "is taken" if taken == username else f"looks like the existing username {shown_input(taken)}"
        raise ConflictError(f"the username {shown_input(username)} {same}; choose another")
    user = User(username=username, password_hash=_HASHER.hash(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


#: The PostgreSQL advisory lock (a transaction's) that new usernames are checked and added under.
USERNAMES_LOCK = 0x51_1DE_1ABE1


def _lock_usernames(session: Session) -> None:
    """Hold :data:`USERNAMES_LOCK` until the transaction ends, so that accounts are created one at a
    time and none looks like one created meanwhile: on PostgreSQL 'zoe', 'ＺＯＥ' and Cyrillic 'zое'
    created at once were all made (20 of 20 tries, the twenty-fourth attack). SQLite's write
    transaction excludes other writers already."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": USERNAMES_LOCK})


def username_taken(session: Session, username: str) -> str | None:
    """The existing username that ``username`` is or looks like (the same
    :func:`~slidelabel.services.names.look_alike_key`: 'Admin', 'ａｄｍｉｎ' and Cyrillic 'аdmin'
    look like 'admin'), or None."""
    return look_alike(username, session.scalars(select(User.username)))


def _check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise ParameterError(f"a password must have at least {MIN_PASSWORD} characters")


def set_password(session: Session, user: User, password: str, *, keep_token: str | None = None) -> None:
    """Give ``user`` a new ``password`` (:class:`ParameterError` when too short) and end its
    sessions, all but the one of ``keep_token``: whoever knew the old password is logged out."""
    _check_password(password)
    user.password_hash = _HASHER.hash(password)
    ended = delete(Token).where(Token.user_id == user.id)
    if keep_token is not None:
        ended = ended.where(Token.token_sha256 != _digest(keep_token))
    session.execute(ended)
    session.flush()


def ensure_admin(session: Session, password: str | None) -> str | None:
    """Create the ``admin`` user when there is none; returns the password to print when one was
    generated, else None."""
    if session.scalar(select(User).where(User.username == ADMIN)) is not None:
        return None
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    create_user(session, ADMIN, password, is_admin=True)
    return password if generated else None


#: Password checks at once per process: each Argon2id check holds 64 MiB for about 0.1-0.3 s.
PASSWORD_CHECKS = Turns(2, per_holder=1)
#: Seconds a login waits for a password check before it is answered busy.
PASSWORD_CHECK_WAIT_S = 30.0


def password_check_turn(address: str | None = None) -> AbstractAsyncContextManager[None]:
    """One of the :data:`PASSWORD_CHECKS` turns, waited for on the event loop (a login route's);
    one client ``address`` holds one at a time, so that one client's flood of logins (right
    passwords are not throttled) leaves the other turn to everyone else."""
    return PASSWORD_CHECKS.waiting(PASSWORD_CHECK_WAIT_S, "too many logins at once: try again in a few seconds",
                                   holder=address)


def authenticate(session: Session, username: str, password: str) -> User:
    """The user whose name and password these are; :class:`AuthenticationError` on a wrong name
    or password (both take one password check, so timing tells neither apart), or a disabled
    account (said only to whoever knows the password). Callers bound how many run at once
    (:func:`password_check_turn`)."""
    user = session.scalar(select(User).where(User.username == username.strip()))
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerifyMismatchError, InvalidHashError):
        user = None
    if user is None:
        raise AuthenticationError("wrong username or password")
    if user.disabled:
        raise AuthenticationError(DISABLED)
    return user


def issue_token(session: Session, user: User, *, hours: float) -> str:
    """A new token for ``user`` (as :func:`authenticate` found it, in another transaction), valid
    ``hours``; expired tokens are deleted on the way, and the user's oldest ones past
    :data:`TOKENS_PER_USER` (the sessions longest open end first). :class:`AuthenticationError`
    when the password checked is no longer the account's, or the account was disabled since: a
    login checked with the old password while it was changed got a session that outlived the
    change (the nineteenth attack, 6 of 6 tries). The user's row is locked until the commit, so
    that a change waits for this token, then ends it."""
    current = session.execute(select(User.password_hash, User.disabled).where(User.id == user.id)
                              .with_for_update()).one_or_none()
    if current is None or current.password_hash != user.password_hash:
        raise AuthenticationError("the password was changed while you logged in: log in with the new one")
    if current.disabled:
        raise AuthenticationError(DISABLED)
    user_id = user.id
    now = datetime.now(UTC)
    session.execute(delete(Token).where(Token.expires_at < now))
    kept = select(Token.token_sha256).where(Token.user_id == user_id).order_by(Token.expires_at.desc())
    session.execute(delete(Token).where(Token.token_sha256.in_(kept.offset(TOKENS_PER_USER - 1))))
    token = secrets.token_urlsafe(32)
    session.add(Token(token_sha256=_digest(token), user_id=user_id, expires_at=now + timedelta(hours=hours)))
    return token


def logout(session: Session, token: str) -> None:
    session.execute(delete(Token).where(Token.token_sha256 == _digest(token)))


def user_for_token(session: Session, token: str) -> User:
    """The user a token belongs to; :class:`AuthenticationError` when unknown or expired."""
    row = session.get(Token, _digest(token))
    if row is None or _aware(row.expires_at) < datetime.now(UTC):
        raise AuthenticationError("not logged in, or the session expired: log in again")
    if row.user.disabled:
        raise AuthenticationError(DISABLED)
    return row.user


def acting(session: Session, user: User) -> User:
    """``user``, as read when its request was authenticated, read again in this write transaction
    with its row locked until the commit: the account as it is now (:class:`AuthenticationError`
    when it was disabled or deleted meanwhile). Write routes act as this, never as a merge of the
    object read before: merging copied its old values back over an admin's change made in between
    (the twentieth attack: a password reset, a disable or a withdrawn right undone by the user's
    own requests in flight, in 6 of 6, 3 of 5 and 1 of 4 tries)."""
    current = session.scalars(select(User).where(User.id == user.id).with_for_update()).one_or_none()
    if current is None:
        raise AuthenticationError("this account no longer exists")
    if current.disabled:
        raise AuthenticationError(DISABLED)
    return current


def update_user(session: Session, actor: User, user_id: int, *, disabled: bool | None = None,
                can_create_projects: bool | None = None, can_read_slide_folders: bool | None = None,
                password: str | None = None, actor_token: str | None = None) -> User:
    """Enable or disable an account, grant or withdraw its rights, or give it a new password
    (None leaves each as it is; a new password ends the account's sessions, but for the admin's
    own of ``actor_token`` when it changes its own password).

    Only the admin may (:class:`PermissionDeniedError`), and never disable its own account
    (:class:`ParameterError`); :class:`NotFoundError` for an unknown id. A disabled account's
    tokens are refused with a message that says so; enabling it again deletes them, so that it
    logs in afresh.
    """
    # Both rows locked, in the order of their ids (two admins acting on each other at once must
    # not deadlock), and the actor read as it is now: two admins disabling each other at once left
    # no admin enabled.
    rows = {row.id: row for row in session.scalars(select(User).where(User.id.in_({actor.id, user_id}))
                                                   .order_by(User.id).with_for_update())}
    actor = rows.get(actor.id)
    if actor is None or actor.disabled:
        raise AuthenticationError(DISABLED if actor is not None else "this account no longer exists")
    if not actor.is_admin:
        raise PermissionDeniedError("only the admin changes accounts")
    user = rows.get(user_id)
    if user is None:
        raise NotFoundError(f"there is no user {user_id}")
    if disabled and user.id == actor.id:
        raise ParameterError("the admin cannot disable its own account: another admin may")
    if disabled is False and user.disabled:
        session.execute(delete(Token).where(Token.user_id == user.id))
    if password is not None:
        set_password(session, user, password, keep_token=actor_token if user.id == actor.id else None)
    changes = {"disabled": disabled, "can_create_projects": can_create_projects,
               "can_read_slide_folders": can_read_slide_folders}
    for name, value in changes.items():
        if value is not None:
            setattr(user, name, value)
    session.flush()
    return user


def require_project_creation(user: User, *, open_creation: bool) -> None:
    """:class:`PermissionDeniedError` unless ``user`` may create projects (the admin, an account
    granted it, or everyone when ``open_creation``, i.e. ``Settings.open_project_creation``)."""
    if not (open_creation or user.is_admin or user.can_create_projects):
        raise PermissionDeniedError("creating projects is a right the admin grants: ask the admin")


def may_read_slide_folders(user: User) -> bool:
    """True for the admin and the accounts granted the server's slide folders."""
    return user.is_admin or user.can_read_slide_folders


def require_slide_folders(user: User) -> None:
    """:class:`PermissionDeniedError` unless ``user`` may read the server's slide folders."""
    if not may_read_slide_folders(user):
        raise PermissionDeniedError("reading the server's slide folders is a right the admin grants: ask the admin, "
                                    "or upload the slide")


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
