"""Users, passwords and login tokens.

Passwords are hashed with Argon2id; a token is 32 random bytes shown to the user once and stored
as its SHA-256 only.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from slidelabel.errors import AuthenticationError, ConflictError, ParameterError
from slidelabel.store.models import Token, User

ADMIN = "admin"
MIN_PASSWORD = 8
_HASHER = PasswordHasher()
# Verifying against a real hash when the user does not exist keeps the time of a failed login
# from telling whether a username exists.
_DUMMY_HASH = _HASHER.hash("not a password of anyone")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_user(session: Session, username: str, password: str, *, is_admin: bool = False) -> User:
    """A new user; :class:`ConflictError` if the name is taken."""
    username = username.strip()
    if not username or len(username) > 150:
        raise ParameterError("a username must be 1 to 150 characters")
    if len(password) < MIN_PASSWORD:
        raise ParameterError(f"a password must have at least {MIN_PASSWORD} characters")
    if session.scalar(select(User).where(User.username == username)) is not None:
        raise ConflictError(f"the username {username!r} is taken")
    user = User(username=username, password_hash=_HASHER.hash(password), is_admin=is_admin)
    session.add(user)
    session.flush()
    return user


def ensure_admin(session: Session, password: str | None) -> str | None:
    """Create the ``admin`` user when there is none; returns the password to print when one was
    generated, else None."""
    if session.scalar(select(User).where(User.username == ADMIN)) is not None:
        return None
    generated = password is None
    password = password or secrets.token_urlsafe(12)
    create_user(session, ADMIN, password, is_admin=True)
    return password if generated else None


def login(session: Session, username: str, password: str, *, hours: float) -> str:
    """A new token for ``username``; :class:`AuthenticationError` on a wrong name or password."""
    user = session.scalar(select(User).where(User.username == username.strip()))
    try:
        _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
    except (VerifyMismatchError, InvalidHashError):
        user = None
    if user is None:
        raise AuthenticationError("wrong username or password")
    now = datetime.now(UTC)
    session.execute(delete(Token).where(Token.expires_at < now))
    token = secrets.token_urlsafe(32)
    session.add(Token(token_sha256=_digest(token), user_id=user.id, expires_at=now + timedelta(hours=hours)))
    return token


def logout(session: Session, token: str) -> None:
    session.execute(delete(Token).where(Token.token_sha256 == _digest(token)))


def user_for_token(session: Session, token: str) -> User:
    """The user a token belongs to; :class:`AuthenticationError` when unknown or expired."""
    row = session.get(Token, _digest(token))
    if row is None or _aware(row.expires_at) < datetime.now(UTC):
        raise AuthenticationError("not logged in, or the session expired: log in again")
    return row.user


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
