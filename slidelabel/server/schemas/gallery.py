"""Bodies of the gallery routes: an owner's links, and what a link's page reads without an account."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from slidelabel.services.gallery import MAX_SLIDES
from slidelabel.store.models import GalleryOverlay


class GalleryLinkCreate(BaseModel):
    overlay: GalleryOverlay = Field(GalleryOverlay.labels, description="labels (reviews, else the users' "
                                    "majority) or the latest epoch's predictions")
    slide_ids: list[int] = Field(default_factory=list, max_length=MAX_SLIDES,
                                 description="the slides shown; empty: every slide, those added later too")


class GalleryLinkPublic(BaseModel):
    """A link as its project's owners see it: never its token, which only the creation shows."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    overlay: GalleryOverlay
    slide_ids: list[int] = Field(description="empty: every slide of the project")
    created_by: int | None = Field(description="the user who published it; the link opens only while that user is "
                                               "an owner of the project (or the admin) with an enabled account")
    created_at: datetime
    revoked_at: datetime | None


class GalleryLinkCreated(GalleryLinkPublic):
    token: str = Field(description="shown once: the page is #/gallery/<token>; only its SHA-256 is kept")


class GalleryCategory(BaseModel):
    """A legend entry."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    color: str = Field(description="#rrggbb")
    excluded: bool


class GallerySlide(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    width: int = Field(description="level-0 pixels")
    height: int = Field(description="level-0 pixels")
    mpp: float | None = Field(description="micrometres per level-0 pixel")
    superpixels: int | None = Field(description="number of superpixels N; null before they are computed")


class GalleryEpoch(BaseModel):
    number: int
    labels: int = Field(description="labelled superpixels the model was trained on")
    created_at: datetime
    metrics: dict = Field(description="what the figures draw: cross-validated scores, calibration, estimated "
                                      "accuracy, changed share, stopping sentence, label counts per category")


class GalleryPublic(BaseModel):
    """What a gallery page shows, read with the link's token alone."""

    project: str = Field(description="the project's name")
    overlay: GalleryOverlay
    categories: list[GalleryCategory] = Field(description="the legend, in its order")
    slides: list[GallerySlide]
    epochs: list[GalleryEpoch] = Field(description="oldest first; the figures are the latest's")
