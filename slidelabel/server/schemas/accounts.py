"""Bodies of the login and user routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from slidelabel.services.accounts import MIN_PASSWORD, PASSWORD_CHARS, USERNAME_CHARS


class LoginRequest(BaseModel):
    username: str
    password: str


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    created_at: datetime
    is_admin: bool | None = Field(None, description="this and the other flags: shown to the admin and to the "
                                  "account itself, None to others")
    disabled: bool | None = None
    can_create_projects: bool | None = None
    can_read_slide_folders: bool | None = None

    def for_others(self) -> UserPublic:
        """The account as other users see it: its name, not its rights."""
        return UserPublic(id=self.id, username=self.username, created_at=self.created_at)


class LoginResponse(BaseModel):
    token: str
    token_type: str = "bearer"
    user: UserPublic


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=USERNAME_CHARS,
                          description="printable text: no control, invisible, bidi or unassigned character")
    password: str = Field(min_length=MIN_PASSWORD, max_length=PASSWORD_CHARS)
    is_admin: bool = False


class UserUpdate(BaseModel):
    """What the admin changes of an account; a field left out stays as it is."""

    model_config = ConfigDict(extra="forbid")

    disabled: bool | None = None
    can_create_projects: bool | None = None
    can_read_slide_folders: bool | None = None
    password: str | None = Field(None, min_length=MIN_PASSWORD, max_length=PASSWORD_CHARS,
                                 description="a new password; the account's sessions end")


class PasswordChange(BaseModel):
    """An account's own new password, with its current one."""

    current_password: str = Field(max_length=PASSWORD_CHARS)
    new_password: str = Field(min_length=MIN_PASSWORD, max_length=PASSWORD_CHARS)
