"""Bodies of the project, category and member routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from slidelabel.services.projects import DEFAULT_EXTRACTOR, DEFAULT_MODEL, DEFAULT_NORMALISATION, DEFAULT_STRATEGY
from slidelabel.store.models import Role


class CategoryCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    color: str | None = Field(None, description="#rrggbb; a colour-blind-safe one when left out")
    hotkey: str | None = Field(None, description="one character; 1-9 by position when left out")
    excluded: bool = False


class CategoryUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=100)
    color: str | None = None
    hotkey: str | None = None
    excluded: bool | None = None


class CategoryMerge(BaseModel):
    into: int = Field(description="id of the category that takes over the labels")


class CategoryPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    color: str
    hotkey: str | None
    excluded: bool
    position: int


class ProjectCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    extractor: str = DEFAULT_EXTRACTOR
    model: str = DEFAULT_MODEL
    strategy: str = DEFAULT_STRATEGY
    normalisation: str = Field(DEFAULT_NORMALISATION, description="how stain and scanner differences between "
                               "slides are removed; GET /registry lists the choices")
    superpixels: dict = Field(default_factory=dict, description="superpixel options, e.g. {'size': '50um', 'magnification': 10}")
    categories: list[CategoryCreate] = Field(default_factory=list)


class ProjectUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    description: str | None = None
    extractor: str | None = None
    model: str | None = None
    strategy: str | None = None
    normalisation: str | None = None


class ProjectPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    description: str
    extractor: str
    model: str
    strategy: str
    normalisation: str
    superpixel_options: dict
    created_at: datetime
    role: Role
    categories: list[CategoryPublic]


class MemberSet(BaseModel):
    username: str
    role: Role


class MemberPublic(BaseModel):
    user_id: int
    username: str
    role: Role
