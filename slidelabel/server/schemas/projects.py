"""Bodies of the project, category and member routes."""

from __future__ import annotations

from datetime import datetime

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from slidelabel.services.projects import (
    CATEGORY_NAME_CHARS,
    DEFAULT_EXTRACTOR,
    DEFAULT_MODEL,
    DEFAULT_NORMALISATION,
    DEFAULT_STRATEGY,
    MAX_CATEGORIES,
    PROJECT_NAME_CHARS,
    NewCategory,
    ProjectChoices,
    superpixel_options,
)
from slidelabel.services.superpixels import OPTION_RANGES, SIZE_RANGES, SuperpixelSize
from slidelabel.store.models import Project, Role

#: Longest project description (characters): a paragraph or two, not a document.
DESCRIPTION_CHARS = 10_000
#: Longest name of a registered extractor, model, strategy or normalisation a request may give
#: (GET /registry lists them; ``imported-<name>`` extractors have at most 64 characters): a
#: longer one is refused before a registry lookup could name it in its error.
CHOICE_CHARS = 100


class CategoryCreate(BaseModel):
    name: str = Field(min_length=1, max_length=CATEGORY_NAME_CHARS,
                      description=f"printable text; a project has at most {MAX_CATEGORIES} categories")
    color: str | None = Field(None, description="#rrggbb; a colour-blind-safe one when left out")
    hotkey: str | None = Field(None, description="one character; 1-9 by position when left out")
    excluded: bool = False


class CategoryUpdate(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=CATEGORY_NAME_CHARS)
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


def _bounded(name: str, description: str) -> Any:
    """An optional numeric option with its range from :data:`OPTION_RANGES`."""
    return Field(None, **OPTION_RANGES[name].field(), description=description)


class SuperpixelChoices(BaseModel):
    """A project's superpixel options, each in its range; left out: the default of
    ``slidelabel superpixels``."""

    model_config = ConfigDict(extra="forbid")

    magnification: float | None = _bounded("magnification", "objective power to work at; 0: the slide's level 0")
    mpp: float | None = _bounded("mpp", "um per working pixel, instead of magnification")
    size: str | None = Field(None, max_length=32, description=f"superpixel side: um {SIZE_RANGES['um']}, "
                             f"px {SIZE_RANGES['px']}, e.g. 50um or 32px")
    compactness: float | None = _bounded("compactness", "higher: squarer superpixels")
    iterations: int | None = _bounded("iterations", "SLIC iterations")
    tile_size: int | None = _bounded("tile_size", "working tile side (px)")
    tissue_only: bool | None = None
    base_mpp: float | None = _bounded("base_mpp", "um per level-0 pixel, for slides without it")
    source: str | None = Field(None, max_length=100, description="slide reader to force")

    @field_validator("size")
    @classmethod
    def _size(cls, value: str | None) -> str | None:
        if value is None:
            return None
        size = SuperpixelSize.parse(value)
        size.check()
        return str(size)

    @model_validator(mode="after")
    def _together(self) -> SuperpixelChoices:
        superpixel_options(self.chosen())  # what no single field shows: mpp and magnification both
        return self

    def chosen(self) -> dict:
        """The options given, as a project stores them."""
        return self.model_dump(exclude_none=True)


class ProjectCreate(BaseModel):
    # A misspelt field ("catgories", "superpixel_options") is refused, not silently left out.
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=PROJECT_NAME_CHARS)
    description: str = Field("", max_length=DESCRIPTION_CHARS)
    extractor: str = Field(DEFAULT_EXTRACTOR, max_length=CHOICE_CHARS)
    model: str = Field(DEFAULT_MODEL, max_length=CHOICE_CHARS)
    strategy: str = Field(DEFAULT_STRATEGY, max_length=CHOICE_CHARS)
    normalisation: str = Field(DEFAULT_NORMALISATION, max_length=CHOICE_CHARS, description="how stain and scanner differences between "
                               "slides are removed; GET /registry lists the choices")
    superpixels: SuperpixelChoices = Field(default_factory=SuperpixelChoices,
                                           description="superpixel options, e.g. {'size': '50um', 'magnification': 10}")
    categories: list[CategoryCreate] = Field(default_factory=list)

    def choices(self) -> ProjectChoices:
        return ProjectChoices(self.extractor, self.model, self.strategy, self.normalisation)

    def new_categories(self) -> list[NewCategory]:
        return [NewCategory(c.name, c.color, c.hotkey, c.excluded) for c in self.categories]


class ProjectUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=PROJECT_NAME_CHARS)
    description: str | None = Field(None, max_length=DESCRIPTION_CHARS)
    extractor: str | None = Field(None, max_length=CHOICE_CHARS)
    model: str | None = Field(None, max_length=CHOICE_CHARS)
    strategy: str | None = Field(None, max_length=CHOICE_CHARS)
    normalisation: str | None = Field(None, max_length=CHOICE_CHARS)


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

    @classmethod
    def of(cls, project: Project, role: Role) -> ProjectPublic:
        """What ``project`` looks like to a member with ``role``."""
        return cls.model_validate({**{name: getattr(project, name) for name in cls.model_fields
                                      if name not in ("role", "categories")},
                                   "role": role, "categories": project.categories})


class MemberSet(BaseModel):
    username: str
    role: Role


class MemberPublic(BaseModel):
    user_id: int
    username: str
    role: Role
