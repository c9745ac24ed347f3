"""Bodies of the slide, slide-folder and tile routes."""

from __future__ import annotations

from datetime import datetime
from typing import Self

from pydantic import BaseModel, ConfigDict, Field

from slidelabel.services.jobs import shown_to
from slidelabel.store.models import Job, JobState


class SlideAdd(BaseModel):
    path: str = Field(max_length=4096, description="absolute path of a slide file, a folder (its slide files) or a glob pattern, "
                                  "inside one of the server's slide folders")


class StepJob(BaseModel):
    """The latest job of one step of a slide."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    state: JobState
    progress: float
    message: str

    @classmethod
    def shown(cls, job: Job | None, *, admin: bool) -> Self | None:
        """The job as the admin (``admin``) or another member may see it, as every job answer
        shows it (:func:`slidelabel.services.jobs.shown_to`: no server path, no error text of a
        bug); None for no job."""
        if job is None:
            return None
        message, _log = shown_to(job, admin=admin)
        return cls.model_validate(job).model_copy(update={"message": message})


class SlidePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    uploaded: bool
    width: int = Field(description="level-0 pixels")
    height: int = Field(description="level-0 pixels")
    mpp: float | None = Field(description="micrometres per level-0 pixel; null when the slide does not say")
    superpixels: int | None = Field(description="number of superpixels once computed")
    added_at: datetime
    superpixels_job: StepJob | None = None
    features_job: StepJob | None = None


class SkippedPath(BaseModel):
    path: str
    reason: str


class SlidesAdded(BaseModel):
    added: list[SlidePublic]
    skipped: list[SkippedPath] = Field(description="files of a folder or pattern that were not added, and why")


class FolderSlidePublic(BaseModel):
    path: str
    size_bytes: int


class SlideFolderPublic(BaseModel):
    path: str
    slides: list[FolderSlidePublic]
    truncated: bool = Field(description="more slide files exist than are listed")
    warnings: list[str] = Field(default_factory=list, description="files that cannot be offered, and why")


class TileMetadata(BaseModel):
    """The tile pyramid in large_image's deep-zoom convention: level 0 is the whole slide in about
    one tile, level ``levels - 1`` is full resolution; tile (x, y) of level z covers level-0 pixels
    from ``x * tile_width * 2 ** (levels - 1 - z)`` on."""

    levels: int
    tile_width: int
    tile_height: int
    width: int = Field(description="level-0 pixels")
    height: int = Field(description="level-0 pixels")
    mpp: float | None = Field(description="micrometres per level-0 pixel")


class SuperpixelTablePublic(BaseModel):
    """Row i describes superpixel ids[i] (ids are exactly 1..N)."""

    ids: list[int]
    bbox_level0: list[list[int]] = Field(description="x_min, y_min, x_max, y_max in level-0 px, max exclusive")
    centroid_level0: list[list[float]] = Field(description="x, y in level-0 px")
    area_px: list[int] = Field(description="working-level pixels")
    area_um2: list[float] | None = Field(description="square micrometres; null when the slide has no pixel size")
    tissue_fraction: list[float] = Field(description="share of the superpixel's pixels that are tissue, 0-1")
